"""The Debian package under a real systemd: built with dpkg-buildpackage,
checked by lintian, installed with apt in a Debian 12 container that boots
systemd 252 as PID 1, then run, reloaded, stopped, upgraded, removed and
purged there.

The steps run in this order and build on each other (run with -x: after a
failure the container's state is unknown). Traffic stays on the container's
loopback: clients and backends (helper.py) connect to 127.0.0.1 and ::1.

Hardening in the container: every directive of the unit applies (the
container keeps CAP_SYS_ADMIN for it, see conftest.py) and test_sandbox checks
the daemon's mounts. LimitNOFILE=65536 is above this host's hard limit; no
drop-in lowers it: systemd sets the closest limit it can (setrlimit_closest)
and test_start checks the daemon got the container's hard limit."""

import hashlib
import re
import time

import pytest

from conftest import V2_MARK, run

CONF = "/etc/dualproxy/dualproxy.ini"
EXAMPLE = "/usr/share/dualproxy/dualproxy.ini"
UNIT = "/lib/systemd/system/dualproxy.service"
BACKENDS = {"A4": ("127.0.0.1", 9001), "A6": ("::1", 9002),
            "B4": ("127.0.0.1", 9011), "B6": ("::1", 9012),
            # a port another program holds, which no service relays to
            "T4": ("127.0.0.1", 9021)}
HARD_NOFILE_UNIT = 65536  # LimitNOFILE= of the unit

CONFIG_A = """\
; the test's first configuration: port 80 to the A backends
[global]
user = dualproxy
keep_net_bind = yes
log_level = debug
drain_timeout = 30s

[web]
listen = 80
backend4 = 127.0.0.1:9001
backend6 = [::1]:9002
"""

# port 80 moves to the B backends; port 81 (below 1024, bound after the
# privilege drop: keep_net_bind) is new and goes to the A backends
CONFIG_B = CONFIG_A.replace("9001\nbackend6 = [::1]:9002", "9011\nbackend6 = [::1]:9012") + """
[extra]
listen = 81
backend4 = 127.0.0.1:9001
backend6 = [::1]:9002
"""

# what the steps hand on to the later ones
state = {}


def apt(ct, *args, check=True):
    return ct.run("env", "DEBIAN_FRONTEND=noninteractive", "apt", *args, check=check,
                  timeout=300)


def expect_route(ct, port, tags):
    """A client on 127.0.0.1 and one on ::1 reach the backends `tags` (v4, v6),
    and each backend saw the proxy's connection come from its own family."""
    for host, tag in zip(("127.0.0.1", "::1"), tags):
        rc, answer = ct.ask(host, port, "via-%s" % port)
        want = "%s %s via-%s" % (tag, host, port)
        assert rc == 0 and answer == want, (
            "client %s -> port %d: expected %r (backend %s), got %r (exit %d)\n%s"
            % (host, port, want, tag, answer, rc, ct.status()))


def expect_refused(ct, port):
    for host in ("127.0.0.1", "::1"):
        rc, answer = ct.ask(host, port)
        assert rc == 3, "%s port %d should refuse connections, got %r (exit %d)" % (
            host, port, answer, rc)


def reload(ct, config):
    ct.write(CONF, config)
    cursor = ct.cursor()
    r = ct.run("systemctl", "reload", "dualproxy", check=False)
    return cursor, r


def messages(entries, pid=None):
    return [e["MESSAGE"] for e in entries
            if pid is None or e.get("_PID") == str(pid)]


def wait_message(ct, pattern, after, pid=None, timeout=10.0, match=()):
    """The first journal entry after `after` whose MESSAGE matches."""
    deadline = time.monotonic() + timeout
    while True:
        for e in ct.journal(*match, after=after):
            if (pid is None or e.get("_PID") == str(pid)) and re.search(pattern, e["MESSAGE"]):
                return e
        if time.monotonic() > deadline:
            pytest.fail("no journal message matching %r within %.0fs; after the cursor:\n%s"
                        % (pattern, timeout,
                           "\n".join(messages(ct.journal(*match, after=after))[-40:])),
                        pytrace=False)
        time.sleep(0.2)


def sha256(ct, path):
    return hashlib.sha256(ct.read(path).encode()).hexdigest()


# ---- the package as built --------------------------------------------------

def test_lintian(packages):
    """lintian finds nothing in the .deb, pedantic tags included, apart from
    the two overrides of debian/dualproxy.lintian-overrides, each with its
    reason."""
    changes = str(packages["v1"].changes)
    r = run(["lintian", "--pedantic", "-I", "-E",
             "--fail-on", "error,warning,info,pedantic", changes], check=False)
    assert r.returncode == 0, "lintian reports tags:\n" + r.stdout + r.stderr
    # --show-overrides makes lintian fail on the overridden tags, so the
    # overrides are listed by a second run
    out = run(["lintian", "--pedantic", "-I", "-E", "--show-overrides",
               "--fail-on", "none", changes]).stdout
    overridden = re.findall(r"^O: dualproxy: (\S+)", out, re.M)
    assert sorted(overridden) == ["initial-upload-closes-no-bugs",
                                  "package-supports-alternative-init-but-no-init.d-script"], (
        "unexpected set of overridden tags:\n" + out)
    reasons = re.findall(r"((?:^N: .*\n)+)^O: ", out, re.M)
    assert len(reasons) == len(overridden), "an override without a reason:\n" + out


# ---- installation ------------------------------------------------------------

def test_install(container, packages):
    """`apt install ./dualproxy_*.deb` pulls in what the unit calls (procps'
    /bin/kill), enables the unit, and does not start it on the example
    configuration."""
    ct = container
    assert not ct.exists("/bin/kill"), "the image already has /bin/kill: the test of Depends: procps means nothing"
    r = apt(ct, "install", "-y", packages["v1"].in_container())
    out = r.stdout + r.stderr
    assert ct.exists("/bin/kill"), "installing the package did not bring /bin/kill (procps)"
    assert "is the example configuration" in out, (
        "postinst did not say why dualproxy was not started:\n" + out)
    assert ct.run("systemctl", "is-enabled", "dualproxy").stdout.strip() == "enabled"
    assert ct.prop("ActiveState") == "inactive", ct.status()
    assert ct.prop("ExecMainStartTimestampMonotonic") == "0", (
        "dualproxy was started on the example configuration:\n" + ct.status())


def test_files(container, packages):
    """The binary, the conffile, both manual pages, the unit, and the pristine
    example that postinst compares the conffile with."""
    ct = container
    listed = set(ct.run("dpkg", "-L", "dualproxy").stdout.split())
    for path in ("/usr/sbin/dualproxy", CONF, EXAMPLE, UNIT,
                 "/usr/share/man/man8/dualproxy.8.gz",
                 "/usr/share/man/man5/dualproxy.ini.5.gz",
                 "/usr/share/doc/dualproxy/copyright"):
        assert path in listed, "%s is not in the package:\n%s" % (path, sorted(listed))
        assert ct.exists(path), "%s is listed but not installed" % path
    assert ct.run("test", "-x", "/usr/sbin/dualproxy", check=False).returncode == 0
    version = ct.run("dualproxy", "-V").stdout.strip()
    assert version == "dualproxy " + packages["v1"].version.split("-")[0], version
    conffiles = ct.run("dpkg-query", "-W", "-f", "${Conffiles}", "dualproxy").stdout.split()
    assert CONF in conffiles, "%s is not a conffile: %r" % (CONF, conffiles)
    for section, page in (("8", "dualproxy"), ("5", "dualproxy.ini")):
        where = ct.run("man", "-w", section, page).stdout.strip()
        assert where == "/usr/share/man/man%s/%s.%s.gz" % (section, page, section), where


def test_user(container):
    """A system account and group `dualproxy`, no home, no login shell."""
    ct = container
    entry = ct.run("getent", "passwd", "dualproxy").stdout.strip().split(":")
    name, _, uid, gid, _, home, shell = entry
    assert 0 < int(uid) < 1000, "dualproxy is not a system account: %r" % entry
    group = ct.run("getent", "group", "dualproxy").stdout.strip().split(":")
    assert group[2] == gid, "the primary group of dualproxy is not dualproxy: %r %r" % (entry, group)
    assert home == "/nonexistent" and not ct.exists(home), entry
    assert shell == "/usr/sbin/nologin", entry


def test_shipped_config(container):
    """The conffile is the upstream example with `user = dualproxy`, and
    `dualproxy -t` accepts it."""
    ct = container
    text = ct.read(CONF)
    assert re.search(r"^user = dualproxy\s", text, re.M), text
    assert "10.43.206.211" in text, "not the example configuration:\n" + text
    assert ct.read(EXAMPLE) == text
    r = ct.run("dualproxy", "-t", "-c", CONF)
    assert "%s: configuration ok" % CONF in r.stderr, r.stderr


def test_unit(container):
    """systemd-analyze verify is silent (its man page check included); the
    unit is Type=notify after network-online.target, reload checks the file
    and then signals outside the sandbox, and the hardening is in place."""
    ct = container
    r = ct.run("systemd-analyze", "verify", "dualproxy.service", check=False)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (
        "systemd-analyze verify (exit %d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
    text = ct.read(UNIT)
    reloads = re.findall(r"^ExecReload=(.*)$", text, re.M)
    assert reloads == ["/usr/sbin/dualproxy -t -c %s" % CONF, "+/bin/kill -HUP $MAINPID"], reloads
    want = {"Type": "notify", "After": "network-online.target",
            "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
            "PrivateTmp": "yes", "PrivateDevices": "yes",
            "CapabilityBoundingSet": "cap_setgid cap_setuid cap_setpcap cap_net_bind_service"}
    for name, value in want.items():
        got = ct.prop(name)
        assert value in got.split() or got == value, "%s=%r, expected %r" % (name, got, value)
    assert "network-online.target" in ct.prop("Wants").split()


# ---- running under systemd ---------------------------------------------------

def test_start(container):
    """With a real configuration `systemctl start` succeeds: Type=notify
    readiness with a STATUS= line, dualproxy running as its account with only
    CAP_NET_BIND_SERVICE, and the descriptor limit the container allows."""
    ct = container
    specs = ["%s=%s:%d" % (tag, host, port) for tag, (host, port) in BACKENDS.items()]
    ct.run("systemd-run", "--unit=test-backends", "--property=Type=exec",
           "python3", "/t/helper.py", "backends", *specs)
    for tag, (host, port) in BACKENDS.items():
        wait_backend(ct, tag, host, port)
    ct.write(CONF, CONFIG_A)
    state["boot"] = ct.cursor()
    r = ct.run("systemctl", "start", "dualproxy", check=False)
    assert r.returncode == 0, "systemctl start failed:\n%s%s" % (r.stderr, ct.status())
    assert ct.prop("ActiveState") == "active" and ct.prop("SubState") == "running", ct.status()
    # Type=notify: `systemctl start` returned once READY=1 came, and the
    # STATUS= line sent with it is the unit's status text
    status = ct.prop("StatusText")
    assert status == "0 connections, listening on 2 addresses", status
    pid = ct.main_pid()
    state["pid"] = pid
    proc = ct.read("/proc/%d/status" % pid)
    uid = ct.run("id", "-u", "dualproxy").stdout.strip()
    gid = ct.run("id", "-g", "dualproxy").stdout.strip()
    fields = dict(line.split(":\t", 1) for line in proc.splitlines() if ":\t" in line)
    assert fields["Uid"].split() == [uid] * 4 and fields["Gid"].split() == [gid] * 4, proc
    assert fields["Groups"].strip() == "", proc
    assert int(fields["CapEff"], 16) == 1 << 10 and int(fields["CapPrm"], 16) == 1 << 10, (
        "expected only CAP_NET_BIND_SERVICE (keep_net_bind = yes):\n" + proc)
    assert int(fields["CapBnd"], 16) == 0 and fields["NoNewPrivs"].strip() == "1", proc
    assert fields["Seccomp"].strip() == "2", "no system call filter:\n" + proc
    hard = int(ct.sh("ulimit -Hn").stdout)
    limits = ct.read("/proc/%d/limits" % pid)
    m = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.M)
    assert m and int(m.group(2)) == min(hard, HARD_NOFILE_UNIT), (
        "LimitNOFILE: expected min(%d, the container's %d):\n%s" % (HARD_NOFILE_UNIT, hard, limits))


def wait_backend(ct, tag, host, port):
    deadline = time.monotonic() + 10
    while True:
        rc, answer = ct.ask(host, port)
        if rc == 0 and answer.startswith(tag + " "):
            return
        if time.monotonic() > deadline:
            pytest.fail("backend %s on %s:%d does not answer: %r\n%s"
                        % (tag, host, port, answer, ct.status("test-backends.service")),
                        pytrace=False)
        time.sleep(0.1)


def parse_mountinfo(text):
    """{mount point: (root, per-mount options, fs type)} of the topmost mounts."""
    mounts = {}
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        f = left.split()
        mounts[f[4]] = (f[3], f[5].split(","), right.split()[0])
    return mounts


def test_sandbox(container):
    """The unit's file system sandbox is real: the daemon sees a read-only
    root, an inaccessible /home, its own /tmp and /dev, read-only kernel
    tunables and cgroups; systemd skipped no namespace."""
    ct = container
    mounts = parse_mountinfo(ct.read("/proc/%d/mountinfo" % state["pid"]))
    listing = "\n".join("%s %s %s" % (k, v[0], ",".join(v[1])) for k, v in sorted(mounts.items()))
    checks = [("/", "ro", None, "ProtectSystem=strict"),
              ("/home", "ro", "inaccessible", "ProtectHome=yes"),
              ("/tmp", None, "dualproxy.service", "PrivateTmp=yes"),
              ("/dev", "ro", None, "PrivateDevices=yes"),
              ("/proc/sys", "ro", None, "ProtectKernelTunables=yes"),
              ("/sys/fs/cgroup", "ro", None, "ProtectControlGroups=yes")]
    for point, option, root_has, directive in checks:
        assert point in mounts, "%s: no mount on %s:\n%s" % (directive, point, listing)
        root, options, _ = mounts[point]
        assert option is None or option in options, (
            "%s: %s is mounted %s:\n%s" % (directive, point, ",".join(options), listing))
        assert root_has is None or root_has in root, (
            "%s: %s comes from %s:\n%s" % (directive, point, root, listing))
    # e.g. "ProtectHostname=yes is configured, but UTS namespace setup is
    # prohibited (container manager?), ignoring namespace setup."
    skipped = [m for m in messages(ct.journal("-u", "dualproxy", after=state["boot"]))
               if re.search(r"prohibited|ignoring namespace|Failed to set up namespace", m)]
    assert not skipped, "systemd skipped parts of the sandbox:\n" + "\n".join(skipped)


def test_traffic(container):
    """An IPv4 client reaches the IPv4 backend, an IPv6 client the IPv6 one."""
    expect_route(container, 80, ("A4", "A6"))


def test_reload(container):
    """`systemctl reload` succeeds: the daemon keeps its PID, systemd receives
    RELOADING=1 (with MONOTONIC_USEC) and then READY=1, the state returns to
    active with a fresh STATUS=, and the new mapping serves, including a new
    port below 1024."""
    ct = container
    pid = state["pid"]
    # PID 1 logs each notification message it receives at debug level. Only
    # for this step: while PID 1 logs at debug level, journald in this
    # container files the first lines of a newly started process under
    # init.scope instead of its unit.
    level = ct.run("systemd-analyze", "log-level").stdout.strip()
    ct.run("systemd-analyze", "log-level", "debug")
    try:
        cursor, r = reload(ct, CONFIG_B)
        assert r.returncode == 0, "systemctl reload failed:\n%s%s" % (r.stderr, ct.status())
        assert ct.prop("ReloadResult") == "success"
        reloading = wait_message(ct, r"Got notification message from PID %d "
                                 r"\(RELOADING=1, MONOTONIC_USEC=\d+\)" % pid, cursor,
                                 match=["_PID=1"])
        # READY=1 comes with the new STATUS= in the same message
        wait_message(ct, r"Got notification message from PID %d \(READY=1, STATUS=\d+ "
                     r"connections, \d+ accepted, 0 backend errors\)" % pid,
                     reloading["__CURSOR"], match=["_PID=1"])
    finally:
        ct.run("systemd-analyze", "log-level", level)
    wait_message(ct, r"^reload: 2 added, 2 kept, 0 removed$", cursor, pid=pid,
                 match=["-u", "dualproxy"])
    ct.wait_prop("ActiveState", "active")
    assert re.fullmatch(r"\d+ connections, \d+ accepted, 0 backend errors",
                        ct.prop("StatusText")), ct.prop("StatusText")
    assert ct.main_pid() == pid, "reload restarted dualproxy"
    expect_route(ct, 80, ("B4", "B6"))
    expect_route(ct, 81, ("A4", "A6"))


def test_reload_bad_config(container):
    """A file `dualproxy -t` rejects fails `systemctl reload`; the daemon is
    not signalled and serves the old mapping."""
    ct = container
    bad = CONFIG_B + "\n[broken]\nlisten = 82\n"  # a service without a backend
    cursor, r = reload(ct, bad)
    assert r.returncode != 0, "systemctl reload succeeded on a bad file:\n" + ct.status()
    assert "failed" in r.stderr, r.stderr
    assert ct.prop("ReloadResult") == "exit-code"
    wait_message(ct, r"Control process exited, code=exited, status=78/CONFIG", cursor,
                 match=["-u", "dualproxy"])
    # the check's own message (journald files the output of this short-lived
    # process under its identifier, not always under the unit)
    wait_message(ct, r"^%s:\d+: " % re.escape(CONF), cursor, match=["-t", "dualproxy"])
    ct.wait_prop("ActiveState", "active")
    assert ct.main_pid() == state["pid"]
    got = messages(ct.journal("-u", "dualproxy", after=cursor), state["pid"])
    assert not any(m.startswith("reloading") for m in got), (
        "the daemon was signalled although the check failed:\n" + "\n".join(got))
    expect_route(ct, 80, ("B4", "B6"))
    expect_refused(ct, 82)


def test_reload_failure_in_daemon(container):
    """A file that passes the check but cannot be applied (its new port is
    taken) is logged by the daemon as an error and leaves the running
    configuration in place. `systemctl reload` cannot know: the unit says so.
    (The port is not a backend's: listening on a backend's own address is a
    loop, which the check refuses.)"""
    ct = container
    taken = CONFIG_B + "\n[taken]\nlisten = 127.0.0.1:%d\nbackend4 = 127.0.0.1:9011\n" \
        % BACKENDS["T4"][1]
    cursor, r = reload(ct, taken)
    assert r.returncode == 0, (
        "systemctl reload now reports the daemon's own failure: update the unit's "
        "comment and this test\n" + r.stderr)
    wait_message(ct, r"^reload failed: keeping the running configuration$", cursor,
                 pid=state["pid"], match=["-u", "dualproxy"])
    ct.wait_prop("ActiveState", "active")
    expect_route(ct, 80, ("B4", "B6"))
    expect_route(ct, 81, ("A4", "A6"))


def test_reload_user_refused(container):
    """A running dualproxy cannot switch users: a reload that changes
    `user` is refused with the file's line and the running mapping stays
    (`systemctl reload` succeeds, since `dualproxy -t` accepts the file).
    A configuration file its group may write draws a warning."""
    ct = container
    cursor, r = reload(ct, CONFIG_B.replace("user = dualproxy", "user = nobody"))
    assert r.returncode == 0, r.stderr
    wait_message(ct, r"^%s:\d+: user: changed from 'dualproxy' to 'nobody': .*restart" % CONF,
                 cursor, pid=state["pid"], match=["-u", "dualproxy"])
    wait_message(ct, r"^reload failed: keeping the running configuration$", cursor,
                 pid=state["pid"], match=["-u", "dualproxy"])
    expect_route(ct, 80, ("B4", "B6"))
    ct.write(CONF, CONFIG_B)
    ct.run("chmod", "g+w", CONF)
    try:
        cursor = ct.cursor()
        r = ct.run("systemctl", "reload", "dualproxy", check=False)
        assert r.returncode == 0, r.stderr
        wait_message(ct, r"^%s is writable by its group" % CONF, cursor, pid=state["pid"],
                     match=["-u", "dualproxy"])
        wait_message(ct, r"^reload: 0 added, 4 kept, 0 removed$", cursor, pid=state["pid"],
                     match=["-u", "dualproxy"])
    finally:
        ct.run("chmod", "g-w", CONF)


def test_journal_priorities(container):
    """The daemon's lines reach the journal with the priorities of their
    <N> prefixes, which journald strips: error 3, warning 4, info 6, debug 7;
    `journalctl -p warning` shows the warnings and errors only."""
    ct = container
    pid = str(state["pid"])
    entries = [e for e in ct.journal("-u", "dualproxy", after=state["boot"])
               if e.get("_PID") == pid]
    assert entries, "no journal entries of PID %s" % pid
    listing = "\n".join("%s %s" % (e["PRIORITY"], e["MESSAGE"]) for e in entries)
    prefixed = [e["MESSAGE"] for e in entries if re.match(r"<\d>", e["MESSAGE"])]
    assert not prefixed, "prefixes not taken by journald:\n" + "\n".join(prefixed)
    expected = [(r"^ready: ", "6"),
                (r"^running as user dualproxy ", "6"),
                (r"^connection service=web client=127\.0\.0\.1:\d+ ", "7"),
                (r"^connection service=web client=\[::1\]:\d+ ", "7"),
                (r"user: changed from 'dualproxy' to 'nobody'", "3"),
                (r"is writable by its group", "4"),
                (r"cannot listen on 127\.0\.0\.1:%d" % BACKENDS["T4"][1], "3"),
                (r"^reload failed: keeping the running configuration$", "3")]
    for pattern, priority in expected:
        found = [e for e in entries if re.search(pattern, e["MESSAGE"])]
        assert found, "no line matching %r:\n%s" % (pattern, listing)
        assert {e["PRIORITY"] for e in found} == {priority}, (
            "%r: priority %s, expected %s:\n%s"
            % (pattern, sorted({e["PRIORITY"] for e in found}), priority, listing))
    important = {e["MESSAGE"] for e in ct.journal("-u", "dualproxy", "-p", "warning",
                                                  after=state["boot"])
                 if e.get("_PID") == pid}
    assert important == {e["MESSAGE"] for e in entries if int(e["PRIORITY"]) <= 4}, (
        "journalctl -p warning shows:\n%s\nall lines:\n%s" % ("\n".join(sorted(important)), listing))
    assert any(m.startswith("reload failed") for m in important)


def test_stop_drains(container):
    """`systemctl stop` closes the listeners at once, lets a live connection
    finish, and ends cleanly as soon as it has."""
    ct = container
    held = ct.hold("127.0.0.1", 80)
    try:
        held.stdin.write("before\n")
        held.stdin.flush()
        assert held.stdout.readline().strip() == "B4 127.0.0.1 before"
        cursor = ct.cursor()
        ct.run("systemctl", "stop", "--no-block", "dualproxy")
        ct.wait_prop("ActiveState", "deactivating")
        wait_message(ct, r"^SIGTERM: draining 1 connections for up to 30s$", cursor,
                     pid=state["pid"], match=["-u", "dualproxy"])
        expect_refused(ct, 80)
        expect_refused(ct, 81)
        held.stdin.write("during\n")
        held.stdin.flush()
        answer = held.stdout.readline().strip()
        assert answer == "B4 127.0.0.1 during", (
            "the live connection did not carry on while draining: %r" % answer)
        assert ct.prop("ActiveState") == "deactivating", ct.status()
    finally:
        held.stdin.close()
        held.wait(timeout=10)
    ct.wait_prop("ActiveState", "inactive", timeout=10)
    assert ct.prop("Result") == "success", ct.status()
    assert ct.prop("ExecMainStatus") == "0", ct.status()
    wait_message(ct, r"^stopped$", cursor, pid=state["pid"], match=["-u", "dualproxy"])


# ---- upgrade, removal, purge -------------------------------------------------

def test_upgrade_keeps_changed_conffile(container, packages):
    """Upgrading to a rebuilt package whose example changed keeps the edited
    conffile (the new example lands next to it as .dpkg-dist) and restarts the
    running dualproxy on the new binary."""
    ct = container
    ct.run("systemctl", "start", "dualproxy")
    before_pid = ct.main_pid()
    before = sha256(ct, CONF)
    r = apt(ct, "install", "-y", "-o", "Dpkg::Options::=--force-confold",
            packages["v2"].in_container())
    version = ct.run("dpkg-query", "-W", "-f", "${Version}", "dualproxy").stdout
    assert version == packages["v2"].version, (version, r.stdout)
    assert sha256(ct, CONF) == before, (
        "the upgrade replaced the edited conffile:\n" + ct.read(CONF))
    assert V2_MARK in ct.read(EXAMPLE), "the new example was not installed"
    assert ct.read(CONF + ".dpkg-dist") == ct.read(EXAMPLE)
    ct.wait_prop("ActiveState", "active")
    assert ct.main_pid() != before_pid, "the upgrade did not restart the running dualproxy"
    expect_route(ct, 80, ("B4", "B6"))


def test_reinstall_keeps_stopped_and_invalid_alone(container, packages):
    """postinst restarts only a running dualproxy, and not on a file that
    `dualproxy -t` rejects (it says so and leaves the running one alone)."""
    ct = container
    deb = packages["v2"].in_container()
    ct.run("systemctl", "stop", "dualproxy")
    apt(ct, "install", "--reinstall", "-y", deb)
    assert ct.prop("ActiveState") == "inactive", "a stopped dualproxy was started:\n" + ct.status()
    ct.run("systemctl", "start", "dualproxy")
    pid = ct.main_pid()
    ct.write(CONF, CONFIG_B + "bogus = 1\n")
    r = apt(ct, "install", "--reinstall", "-y", deb)
    assert "is not valid" in r.stdout + r.stderr, r.stdout + r.stderr
    assert ct.prop("ActiveState") == "active" and ct.main_pid() == pid, ct.status()
    ct.write(CONF, CONFIG_B)
    expect_route(ct, 80, ("B4", "B6"))


def test_remove(container):
    """`apt remove` stops dualproxy and removes everything but the conffile."""
    ct = container
    apt(ct, "remove", "-y", "dualproxy")
    assert ct.run("pgrep", "-x", "dualproxy", check=False).returncode == 1, (
        "dualproxy still runs after apt remove")
    assert ct.prop("LoadState") == "not-found"
    for path in ("/usr/sbin/dualproxy", UNIT, EXAMPLE):
        assert not ct.exists(path), "%s is left after apt remove" % path
    assert ct.exists(CONF), "apt remove deleted the conffile"
    status = ct.run("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "dualproxy").stdout
    assert status.strip() == "rc", status


def test_purge(container):
    """`apt purge` leaves no file of the package and no enablement behind.
    The dualproxy account stays, as Debian keeps system accounts (files it
    owns may remain; a reinstallation reuses it)."""
    ct = container
    apt(ct, "purge", "-y", "dualproxy")
    assert not ct.exists("/etc/dualproxy"), ct.run("ls", "-la", "/etc/dualproxy").stdout
    # /var/cache/man: man-db's formatted pages (systemd-analyze verify ran
    # man), man-db's own cache that its daily run expires
    left = ct.run("find", "/", "-xdev", "-path", "/var/cache/man", "-prune", "-o",
                  "-name", "*dualproxy*", "-print").stdout.split()
    assert not left, "left after apt purge:\n" + "\n".join(left)
    r = ct.run("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "dualproxy", check=False)
    assert r.returncode != 0 or r.stdout.strip() in ("", "un"), r.stdout
    assert ct.run("getent", "passwd", "dualproxy", check=False).returncode == 0, (
        "the dualproxy account was deleted")
