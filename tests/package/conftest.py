"""Fixtures of the package test: the .deb built twice from the release tarball,
and a Debian 12 container that boots systemd as PID 1 (podman).

DUALPROXY_TARBALL is the tarball of `make dist` (the make target check-package
makes it); DUALPROXY_SRCDIR the source tree (tests/container/setup.sh). The
build happens in a scratch directory, never in the source tree: dpkg-buildpackage
cleans the tree it builds in (dh_auto_clean runs `make distclean`).

The packages, built with the nocheck profile (CI has just run `make check` on
the same sources; this suite tests the package, not the daemon):
  v1  the release as it is: dualproxy_VERSION_ARCH.deb
  v2  the same tree with a higher version (VERSION+ci1) and one more comment
      line in the shipped example configuration, for the upgrade of a changed
      conffile
The container image localhost/dualproxy-package-test:bookworm (FROM the base
image of tests/container/setup.sh) stays in podman's storage as a cache; the
container and the scratch directory are removed at the end."""

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SRCDIR = Path(os.environ.get("DUALPROXY_SRCDIR") or HERE.parents[1])
IMAGE = "localhost/dualproxy-package-test:bookworm"
V2_SUFFIX = "+ci1"
V2_MARK = "; (rebuilt for the upgrade test)"

# what the make that runs this suite would hand to debian/rules' make
MAKE_VARS = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "MAKE_TERMOUT",
             "MAKE_TERMERR")


def run(argv, check=True, timeout=600, **kw):
    """subprocess.run with text output; on failure the message shows the
    command and everything it printed."""
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        pytest.fail("%s exited with %d\n--- stdout\n%s\n--- stderr\n%s"
                    % (" ".join(map(str, argv)), r.returncode, r.stdout[-6000:],
                       r.stderr[-6000:]), pytrace=False)
    return r


class Package:
    """One built .deb and the directory it was built in."""

    def __init__(self, builddir, deb, changes):
        self.builddir = builddir
        self.deb = deb
        self.changes = changes
        self.version = run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()

    def in_container(self):
        """The .deb's path inside the container (the scratch directory is
        mounted at /pkg)."""
        return "/pkg/%s/%s" % (self.deb.parent.name, self.deb.name)


def build(tarball, dest, bump=False):
    dest.mkdir()
    with tarfile.open(tarball) as t:
        t.extractall(dest)
    tree, = [p for p in dest.iterdir() if p.is_dir()]
    if bump:
        changelog = tree / "debian" / "changelog"
        text = changelog.read_text()
        m = re.match(r"(\S+) \(([^)]+)\) (\S+); urgency=\S+\n", text)
        assert m, "cannot read the first line of %s" % changelog
        maintainer = re.search(r"^ -- (.+?)  ", text, re.M).group(1)
        entry = ("%s (%s%s) %s; urgency=medium\n\n"
                 "  * Rebuilt by tests/package for the upgrade test.\n\n"
                 " -- %s  %s\n\n" % (m.group(1), m.group(2), V2_SUFFIX, m.group(3),
                                     maintainer, time.strftime("%a, %d %b %Y %H:%M:%S +0000",
                                                               time.gmtime())))
        changelog.write_text(entry + text)
        with open(tree / "etc" / "dualproxy.ini", "a") as f:
            f.write(V2_MARK + "\n")
    env = {k: v for k, v in os.environ.items() if k not in MAKE_VARS}
    r = run(["dpkg-buildpackage", "-b", "-us", "-uc", "-Pnocheck"], cwd=tree, env=env,
            check=False)
    (dest / "build.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        pytest.fail("dpkg-buildpackage -b -us -uc -Pnocheck failed in %s (exit %d):\n%s"
                    % (tree, r.returncode, (r.stdout + r.stderr)[-6000:]), pytrace=False)
    debs = [p for p in dest.glob("dualproxy_*.deb")]
    changes = list(dest.glob("dualproxy_*.changes"))
    assert len(debs) == 1 and len(changes) == 1, (
        "expected one dualproxy_*.deb and one .changes in %s, found %s"
        % (dest, sorted(p.name for p in dest.iterdir())))
    return Package(tree, debs[0], changes[0])


@pytest.fixture(scope="session")
def scratch():
    path = Path(tempfile.mkdtemp(prefix="dualproxy-package-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def packages(scratch):
    tarball = os.environ.get("DUALPROXY_TARBALL")
    assert tarball and Path(tarball).is_file(), (
        "DUALPROXY_TARBALL must name the tarball of `make dist` (run `make "
        "check-package`), got %r" % tarball)
    v1 = build(tarball, scratch / "v1")
    v2 = build(tarball, scratch / "v2", bump=True)
    assert v2.version == v1.version + V2_SUFFIX, (v1.version, v2.version)
    return {"v1": v1, "v2": v2}


class Container:
    """A running container with systemd as PID 1."""

    def __init__(self, name):
        self.name = name

    def run(self, *argv, check=True, input=None, timeout=120):
        cmd = ["podman", "exec"] + (["-i"] if input is not None else []) + \
              [self.name] + list(argv)
        return run(cmd, check=check, input=input, timeout=timeout)

    def sh(self, script, **kw):
        return self.run("sh", "-ec", script, **kw)

    def write(self, path, text):
        self.run("sh", "-c", 'cat > "$1"', "-", path, input=text)

    def read(self, path):
        return self.run("cat", path).stdout

    def exists(self, path):
        return self.run("test", "-e", path, check=False).returncode == 0

    def prop(self, name, unit="dualproxy.service"):
        return self.run("systemctl", "show", "-p", name, "--value", unit).stdout.strip()

    def wait_prop(self, name, want, timeout=10.0, unit="dualproxy.service"):
        deadline = time.monotonic() + timeout
        while True:
            got = self.prop(name, unit)
            if got == want:
                return
            if time.monotonic() > deadline:
                pytest.fail("%s of %s is %r after %.0fs, expected %r\n%s"
                            % (name, unit, got, timeout, want, self.status(unit)),
                            pytrace=False)
            time.sleep(0.1)

    def status(self, unit="dualproxy.service"):
        r = self.run("systemctl", "status", "--no-pager", "-l", "-n", "30", unit,
                     check=False)
        return r.stdout + r.stderr

    def main_pid(self):
        return int(self.prop("MainPID"))

    def cursor(self):
        out = self.run("journalctl", "--show-cursor", "-n", "0", "--no-pager").stdout
        m = re.search(r"^-- cursor: (\S+)", out, re.M)
        assert m, "no journal cursor in %r" % out
        return m.group(1)

    def journal(self, *match, after=None):
        """Journal entries (dicts) after a cursor, matching journalctl's
        arguments; MESSAGE is decoded when journald stored it as bytes."""
        self.run("journalctl", "--sync", check=False)
        args = ["journalctl", "-o", "json", "--no-pager"]
        if after:
            args.append("--after-cursor=" + after)
        entries = []
        for line in self.run(*(args + list(match))).stdout.splitlines():
            e = json.loads(line)
            if isinstance(e.get("MESSAGE"), list):
                e["MESSAGE"] = bytes(e["MESSAGE"]).decode("utf-8", "replace")
            entries.append(e)
        return entries

    def ask(self, host, port, line="hello"):
        """(exit status, answer) of helper.py ask inside the container."""
        r = self.run("python3", "/t/helper.py", "ask", host, str(port), line,
                     check=False)
        return r.returncode, r.stdout.strip()

    def hold(self, host, port):
        """A helper.py hold process: a connection kept open from inside the
        container, driven through its stdin and stdout."""
        p = subprocess.Popen(["podman", "exec", "-i", self.name, "python3",
                              "/t/helper.py", "hold", host, str(port)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first = p.stdout.readline().strip()
        assert first == "connected", "hold %s %s: %r" % (host, port, first)
        return p


@pytest.fixture(scope="session")
def container(packages, scratch):
    r = run(["sh", str(SRCDIR / "tests" / "container" / "setup.sh"),
             str(scratch / "podman")], check=False)
    assert r.returncode == 0, "tests/container/setup.sh failed:\n%s%s" % (r.stdout, r.stderr)
    m = re.search(r"^CONTAINERS_CONF=(.+)$", r.stdout, re.M)
    assert m, "tests/container/setup.sh printed no CONTAINERS_CONF line:\n" + r.stdout
    os.environ["CONTAINERS_CONF"] = m.group(1)

    depends = run(["dpkg-deb", "-f", str(packages["v1"].deb), "Depends"]).stdout
    names = " ".join(re.sub(r"\([^)]*\)", "", d).split("|")[0].strip()
                     for d in depends.split(","))
    run(["podman", "build", "-v", "/etc/apt:/etc/apt:ro",
         "--build-arg", "PACKAGE_DEPENDS=" + names,
         "-t", IMAGE, "-f", str(HERE / "Containerfile"), str(HERE)], timeout=900)

    name = "dualproxy-package-test-%d" % os.getpid()
    # --cap-add=SYS_ADMIN: systemd needs it to give a service the mount and UTS
    # namespaces of ProtectSystem=, ProtectHome=, PrivateTmp=, PrivateDevices=,
    # ProtectKernelTunables=, ProtectControlGroups=, ProtectHostname= and the
    # like. Without it (podman's default) systemd 252 skips all of them
    # silently ("assuming containerized execution", at debug level), and the
    # test would pass on a sandbox that is not there. systemd's container
    # interface asks container managers to leave CAP_SYS_ADMIN in place.
    # --network=none: the container has only its loopback interface; apt
    # installs the package's dependencies from the cache the image holds.
    run(["podman", "run", "-d", "--name", name, "--systemd=always", "--network=none",
         "--cap-add=SYS_ADMIN",
         "-v", "/etc/apt:/etc/apt:ro",
         "-v", "%s:/pkg:ro" % scratch,
         "-v", "%s:/t:ro" % HERE,
         IMAGE])
    ct = Container(name)
    try:
        # until PID 1 has set up its socket, systemctl cannot reach it
        deadline = time.monotonic() + 60
        while True:
            r = ct.run("systemctl", "is-system-running", "--wait", check=False, timeout=120)
            state = r.stdout.strip()
            if state or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        failed = ct.run("systemctl", "--failed", "--no-pager", check=False).stdout
        assert state == "running", (
            "systemd in the container is %r, not running:\n%s%s" % (state, r.stderr, failed))
        yield ct
    finally:
        run(["podman", "rm", "-f", "-t", "0", name], check=False)
