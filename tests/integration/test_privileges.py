"""Privileges: started as root, dualproxy binds every listener and then
switches to `user` (default nobody): all four uids and gids are that user's,
supplementary groups are dropped, no capability is left (or exactly
CAP_NET_BIND_SERVICE with keep_net_bind = yes), the bounding set is cleared,
no_new_privs is set, and it logs `running as user NAME (uid U, gid G)`.
Traffic still relays. `user = root` keeps root with a warning; an unknown
user is a config error (exit 78, `FILE:LINE: user: no such user 'NAME'`).
Started as an ordinary user with an ambient CAP_NET_BIND_SERVICE (a systemd
unit with User= and AmbientCapabilities=), it only drops capabilities.

The daemon's state is read from /proc/PID/status. Most tests need root."""

import pwd
import re
import shutil

import pytest

from conftest import (CAP_NET_BIND_SERVICE, EX_CONFIG, V4, V6, fmt_addr,
                      free_dual_port, ini, low_dual_port, needs_root,
                      run_dualproxy, status_caps, status_ids, tagged_echo)

INFO = r"(?:\binfo: |<6>)"
WARNING = r"(?:\bwarning: |<4>)"

# supplementary groups the daemon is started with (as root): it must drop them
START_GROUPS = (4, 27, 100)


def setpriv():
    path = shutil.which("setpriv")
    if path is None:
        pytest.fail("setpriv (util-linux) is needed to start dualproxy with "
                    "supplementary groups or as an ordinary user", pytrace=False)
    return path


def with_groups():
    """A wrapper that execs dualproxy as root with supplementary groups."""
    return [setpriv(), "--groups=" + ",".join(map(str, START_GROUPS)), "--"]


def other_user():
    """A system account other than root and nobody, preferably with
    uid != gid (so that a uid/gid mix-up shows), e.g. Debian's 'games'
    (5:60). Falls back to nobody."""
    users = [p for p in pwd.getpwall()
             if p.pw_uid not in (0, 65534) and p.pw_uid < 1000 and p.pw_name != "nobody"]
    users.sort(key=lambda p: (p.pw_uid == p.pw_gid, p.pw_uid))
    return users[0] if users else pwd.getpwnam("nobody")


def relay_config(tagged, port, global_lines=""):
    (h4, p4), (h6, p6) = tagged
    return ini("""
        [global]
        %s
        [web]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (global_lines, port, fmt_addr(h4, p4), fmt_addr(h6, p6)))


def check_relays(port):
    assert tagged_echo(V4, port, b"over ipv4\n" * 7) == "v4 AF_INET"
    assert tagged_echo(V6, port, b"over ipv6\n" * 9) == "v6 AF_INET6"


def check_dropped(status, user, kept):
    """The process runs as `user` (a pwd entry) with nothing else."""
    want_caps = CAP_NET_BIND_SERVICE if kept else 0
    assert status_ids(status, "Uid") == [user.pw_uid] * 4, status["Uid"]
    assert status_ids(status, "Gid") == [user.pw_gid] * 4, status["Gid"]
    groups = status_ids(status, "Groups")
    assert groups in ([], [user.pw_gid]), (
        "supplementary groups not dropped: Groups: %s" % status["Groups"])
    caps = status_caps(status)
    assert caps["CapEff"] == want_caps, "CapEff %#x, want %#x" % (caps["CapEff"], want_caps)
    assert caps["CapPrm"] == want_caps, "CapPrm %#x, want %#x" % (caps["CapPrm"], want_caps)
    # the bounding set is cleared: nothing beyond the kept capability
    assert caps["CapBnd"] & ~want_caps == 0, "CapBnd %#x not cleared" % caps["CapBnd"]
    assert caps["CapInh"] == 0, "CapInh %#x" % caps["CapInh"]
    assert caps["CapAmb"] == 0, "CapAmb %#x" % caps["CapAmb"]
    assert status["NoNewPrivs"] == "1", "NoNewPrivs: %s" % status["NoNewPrivs"]


def running_as_re(user, kept):
    return (INFO + r"running as user %s \(uid %d, gid %d\)%s$"
            % (re.escape(user.pw_name), user.pw_uid, user.pw_gid,
               ", keeping cap_net_bind_service" if kept else ""))


@needs_root
@pytest.mark.parametrize("keep", [False, True], ids=["drop-all", "keep_net_bind"])
@pytest.mark.parametrize("explicit", [False, True], ids=["default-user", "user-nobody"])
def test_switch_to_nobody(proxy_factory, tagged, keep, explicit):
    nobody = pwd.getpwnam("nobody")
    lines = []
    if explicit:
        lines.append("user = nobody")
    lines.append("keep_net_bind = %s" % ("yes" if keep else "no"))
    port = free_dual_port()
    proxy = proxy_factory(relay_config(tagged, port, "\n".join(lines)),
                          wrapper=with_groups())
    proxy.wait_for(running_as_re(nobody, keep))
    check_dropped(proxy.status(), nobody, keep)
    check_relays(port)
    # and nothing changed while relaying
    check_dropped(proxy.status(), nobody, keep)
    assert not proxy.grep(r"running as root")


@needs_root
def test_switch_to_other_user(proxy_factory, tagged):
    """The name is looked up: another account, with its own uid and its
    primary gid (which differs from the uid where possible)."""
    user = other_user()
    port = free_dual_port()
    proxy = proxy_factory(relay_config(tagged, port, "user = %s" % user.pw_name),
                          wrapper=with_groups())
    proxy.wait_for(running_as_re(user, False))
    check_dropped(proxy.status(), user, False)
    check_relays(port)


@needs_root
def test_user_root_keeps_root(proxy_factory, tagged):
    port = free_dual_port()
    proxy = proxy_factory(relay_config(tagged, port, "user = root"))
    proxy.wait_for(WARNING + r".*running as root")
    st = proxy.status()
    assert status_ids(st, "Uid") == [0, 0, 0, 0], st["Uid"]
    assert not proxy.grep(r"running as user ")
    check_relays(port)


@pytest.mark.parametrize("check", [True, False], ids=["with-t", "without-t"])
def test_no_such_user(write_config, check):
    port = free_dual_port()
    path = write_config(ini("""
        [global]
        log_level = info
        user = doesnotexist
        [web]
        listen = %d
        backend4 = 127.0.0.1:9
    """ % port))
    args = ["-t", "-c", path] if check else ["-c", path]
    r = run_dualproxy(*args)
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    want = "%s:3: user: no such user 'doesnotexist'" % path
    assert want in r.stderr, "expected %r on stderr:\n%s" % (want, r.stderr)
    assert "configuration ok" not in r.stderr
    assert "ready" not in r.stderr


@needs_root
@pytest.mark.parametrize("keep", [False, True], ids=["drop-all", "keep_net_bind"])
def test_not_started_as_root(proxy_factory, tagged, keep):
    """Started as nobody with CAP_NET_BIND_SERVICE in its ambient set (like
    systemd's User=nobody AmbientCapabilities=CAP_NET_BIND_SERVICE): it binds
    a port below 1024, stays nobody, and then holds no capability, or only
    CAP_NET_BIND_SERVICE with keep_net_bind = yes."""
    nobody = pwd.getpwnam("nobody")
    wrapper = [setpriv(), "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid,
               "--clear-groups", "--inh-caps=+net_bind_service",
               "--ambient-caps=+net_bind_service", "--"]
    low = low_dual_port()
    proxy = proxy_factory(relay_config(tagged, low, "keep_net_bind = %s"
                                       % ("yes" if keep else "no")),
                          wrapper=wrapper, readable=True)
    st = proxy.status()
    want = CAP_NET_BIND_SERVICE if keep else 0
    caps = status_caps(st)
    assert status_ids(st, "Uid") == [nobody.pw_uid] * 4, st["Uid"]
    assert status_ids(st, "Gid") == [nobody.pw_gid] * 4, st["Gid"]
    assert caps["CapEff"] == want, "CapEff %#x, want %#x" % (caps["CapEff"], want)
    assert caps["CapPrm"] == want, "CapPrm %#x, want %#x" % (caps["CapPrm"], want)
    assert caps["CapAmb"] & ~want == 0, "CapAmb %#x" % caps["CapAmb"]
    assert caps["CapInh"] & ~want == 0, "CapInh %#x" % caps["CapInh"]
    check_relays(low)
