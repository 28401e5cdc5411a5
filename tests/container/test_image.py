"""The image built from contrib/container/Containerfile.

* Its default is what K3s runs: an entry point and no command, so a container
  started with no command and no arguments runs dualproxy alone, which reads
  /etc/dualproxy/dualproxy.ini, or serves SRC_PORT when it is set.
* The runtime holds the base image plus libev, inih and libcap-ng only, and the
  binary links nothing else (a binary built on the host, with libsystemd or a
  sanitizer, would show up here).
* The build context (.containerignore) carries the sources and none of what a
  build in the tree leaves there; checked on a copy of the tree with such
  leftovers planted in it.
"""

import configparser
import json
import re
import shutil

import pytest

from conftest import RUN, SRCDIR, it, podman

BASE = "debian:12-slim"
RUNTIME_PACKAGES = {"libev4", "libinih1", "libcap-ng0"}
ALLOWED_LIBS = {"linux-vdso.so.1", "libev.so.4", "libinih.so.1", "libcap-ng.so.0",
                "libc.so.6", "libm.so.6", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}


def run_in(image, *args, entrypoint=None):
    extra = ["--entrypoint", entrypoint] if entrypoint else []
    return podman("run", "--rm", "--network", "none", *extra, image, *args).stdout


@pytest.fixture
def detached(image):
    """detached(*env) -> name: the image started in the background with no
    command and no arguments, in a network namespace of its own; removed after
    the test."""
    names = []

    def start(*env):
        name = "dpc%s-image-%d" % (RUN, len(names))
        names.append(name)
        opts = [x for var in env for x in ("-e", var)]
        podman("run", "-d", "--name", name, "--network", "none", *opts, image)
        return name
    yield start
    for name in names:
        podman("rm", "-f", "-t", "0", name, check=False)


def wait_logged(name, pattern, timeout=10.0):
    """The container's log once it has a line matching `pattern`."""
    def logged():
        proc = podman("logs", name, check=False)
        text = proc.stdout + proc.stderr
        return text if re.search(pattern, text, re.M) else None
    try:
        return it.wait_until(logged, timeout, what="/%s/ in %s's log" % (pattern, name))
    except AssertionError as e:
        proc = podman("logs", name, check=False)
        raise AssertionError("%s:\n%s%s" % (e, proc.stdout, proc.stderr)) from None


def stop_ok(name):
    podman("stop", "-t", "30", name, timeout=60)
    state = podman("inspect", "--type", "container", "--format",
                   "{{.State.ExitCode}}", name).stdout.strip()
    assert state == "0", "%s exited %s on SIGTERM" % (name, state)


def test_default_is_an_entrypoint_without_command(image):
    cfg = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert cfg.get("Entrypoint") == ["/usr/sbin/dualproxy"], cfg.get("Entrypoint")
    assert not cfg.get("Cmd"), "the image has a CMD %r: K3s' svclb containers would " \
        "run it instead of environment mode" % cfg.get("Cmd")
    assert cfg.get("User", "") in ("", "root", "0"), cfg.get("User")
    assert cfg.get("StopSignal") == "SIGTERM"


def test_no_arguments_reads_the_ini(detached):
    """No SRC_PORT: the example INI at /etc/dualproxy/dualproxy.ini."""
    ini = configparser.ConfigParser(inline_comment_prefixes=(";",), interpolation=None)
    ini.read(SRCDIR / "etc" / "dualproxy.ini")
    name = detached()
    log = wait_logged(name, r"\bready\b")
    for section in ini.sections():
        if section == "global":
            continue
        port = ini[section]["listen"].strip()
        assert re.search(r"listening on 0\.0\.0\.0:%s \(%s\)" % (port, section), log), log
        assert re.search(r"listening on \[::\]:%s \(%s\)" % (port, section), log), log
    assert "lb-tcp-" not in log
    stop_ok(name)


def test_no_arguments_with_src_port_is_environment_mode(detached):
    name = detached("SRC_PORT=8080", "DEST_PROTO=TCP", "DEST_PORT=8081",
                    "DEST_IPS=10.43.206.211,fd45:a71:55a6:1:2:1:0:db1",
                    "SRC_RANGES=0.0.0.0/0,::/0")
    log = wait_logged(name, r"\bready\b")
    assert re.search(r"listening on 0\.0\.0\.0:8080 \(lb-tcp-8080\)", log), log
    assert re.search(r"listening on \[::\]:8080 \(lb-tcp-8080\)", log), log
    assert "(web)" not in log
    stop_ok(name)


def test_runtime_adds_only_the_three_libraries(image):
    """dpkg in the image against dpkg in the base image."""
    fmt = "${Package}\n"
    have = set(run_in(image, "-W", "-f", fmt, entrypoint="/usr/bin/dpkg-query").split())
    base = set(run_in(BASE, "-W", "-f", fmt, entrypoint="/usr/bin/dpkg-query").split())
    assert RUNTIME_PACKAGES <= have, "missing: %s" % sorted(RUNTIME_PACKAGES - have)
    assert have - base <= RUNTIME_PACKAGES, "packages beyond the three libraries: %s" % (
        sorted(have - base - RUNTIME_PACKAGES))


def test_binary_links_only_its_libraries(image):
    out = run_in(image, "/usr/sbin/dualproxy", entrypoint="/usr/bin/ldd")
    libs = {line.split()[0].rsplit("/", 1)[-1] for line in out.splitlines() if line.strip()}
    assert {"libev.so.4", "libinih.so.1", "libcap-ng.so.0"} <= libs, out
    assert libs <= ALLOWED_LIBS, "links %s:\n%s" % (sorted(libs - ALLOWED_LIBS), out)
    version = run_in(image, "-V")
    assert version.startswith("dualproxy "), version


# What a build in the tree leaves behind, planted into a copy of the tree.
LEFTOVERS = [
    "Makefile", "Makefile.in", "configure", "config.status", "config.log", "aclocal.m4",
    "autoconfig.h", "stamp-h1", "build-aux/install-sh", "autom4te.cache/output.0",
    "src/dualproxy", "src/dualproxy-relay.o", "src/.deps/dualproxy-relay.Po",
    "src/.dirstamp", "tests/unit/test_addr", "tests/unit/test_addr-test_addr.o",
    "_sanitizers/dualproxy-0.1.0/src/main.c", "_sanitizers/dualproxy-0.1.0/src/dualproxy",
    "dualproxy-0.1.0.tar.gz", "tests/integration/__pycache__/conftest.cpython-311.pyc",
    "tests/integration/.pytest_cache/README.md", "contrib/systemd/dualproxy.service",
    "tests/integration/test-suite.log",
]
NEEDED = ["autogen.sh", "configure.ac", "Makefile.am", "src/main.c", "src/relay.c",
          "src/relay.h", "etc/dualproxy.ini", "doc/dualproxy.8", "doc/dualproxy.ini.5",
          "contrib/systemd/dualproxy.service.in"]


def test_build_context_holds_only_sources(tmp_path):
    """The Containerfile's context, through .containerignore, on a copy of
    the tree with an in-tree build's leftovers in it: sources in, leftovers
    out."""
    tree = tmp_path / "tree"
    shutil.copytree(SRCDIR, tree, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", "_sanitizers", "__pycache__"))
    for rel in LEFTOVERS:
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"left over from a build in the tree\n")
    lister = tmp_path / "Containerfile.context"
    lister.write_text("FROM %s\nCOPY . /context\n" % BASE)
    tag = "localhost/dualproxy-context:%s" % RUN
    try:
        podman("build", "--quiet", "-f", str(lister), "-t", tag, str(tree))
        listed = run_in(tag, "/context", "-type", "f", entrypoint="/usr/bin/find")
    finally:
        podman("rmi", "-f", tag, check=False)
    files = {line[len("/context/"):] for line in listed.split() if line.startswith("/context/")}
    leaked = sorted(set(LEFTOVERS) & files)
    assert not leaked, "build leftovers in the image's build context: %s" % leaked
    missing = sorted(set(NEEDED) - files)
    assert not missing, "sources missing from the build context: %s" % missing
    for rel in files:
        assert (SRCDIR / rel).is_file(), "%s in the context is not a file of the tree" % rel
