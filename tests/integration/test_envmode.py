"""klipper-lb environment mode: with no -c and SRC_PORT set, dualproxy builds
one service `lb-tcp-<SRC_PORT>` from K3s servicelb's variables.

* SRC_PORT: listen on 0.0.0.0:P and [::]:P; DEST_PORT: the backends' port.
* DEST_IPS (comma, blank or newline separated, IPv6 where it holds ':', at
  most one per family), or the older DEST_IP (either family) / DEST_IP6: an
  IPv4 client reaches the IPv4 backend, an IPv6 client the IPv6 one (tagged
  backends on 127.0.0.1:DEST_PORT and [::1]:DEST_PORT say which served). Only
  the families that have a destination are published: the other family's
  port is closed, as with klipper-lb.
* DEST_PROTO: TCP or unset, or UDP (service lb-udp-PORT); SCTP is refused with
  an error that names it.
* Any bad variable: `environment: VAR: message` on stderr, exit 78, with and
  without -t; `-t` on a good environment prints `environment: configuration ok`.
* -c wins over the environment.

The environment of each daemon is built explicitly (klipper_env()): no stray
SRC_PORT from the caller's environment. SRC_RANGES is in test_allow.py."""

import pytest

from conftest import (EX_CONFIG, V4, V6, T, assert_refused, free_dual_port, ini,
                      klipper_env, klipper_ports, listen_sockets, run_dualproxy_env,
                      tagged_echo)


def check_listening(proxy, src):
    name = "lb-tcp-%d" % src
    proxy.wait_for(r"listening on 0\.0\.0\.0:%d \(%s\)" % (src, name), timeout=0)
    proxy.wait_for(r"listening on \[::\]:%d \(%s\)" % (src, name), timeout=0)
    addrs = {a for a, _ in listen_sockets(src)}
    assert addrs == {"0.0.0.0:%d" % src, "[::]:%d" % src}, addrs


@pytest.mark.parametrize("dest_ips", ["127.0.0.1,::1", "::1,127.0.0.1",
                                      "127.0.0.1, ::1", "::1 127.0.0.1"])
@pytest.mark.parametrize("proto", [None, "TCP"])
def test_env_dest_ips(env_proxy_factory, backends, dest_ips, proto):
    src, dest, rec4, rec6 = klipper_ports(backends)
    proxy = env_proxy_factory(klipper_env(SRC_PORT=src, DEST_PORT=dest,
                                          DEST_IPS=dest_ips, DEST_PROTO=proto))
    check_listening(proxy, src)
    assert tagged_echo(V4, src, b"hello over IPv4\n") == "v4 AF_INET"
    assert tagged_echo(V6, src, b"hello over IPv6\n") == "v6 AF_INET6"
    for _ in range(2):
        assert tagged_echo(V6, src, b"6" * 3000) == "v6 AF_INET6"
        assert tagged_echo(V4, src, b"4" * 3000) == "v4 AF_INET"
    assert (rec4.accepted, rec6.accepted) == (3, 3)


def test_env_dest_ip_and_dest_ip6(env_proxy_factory, backends):
    """The older pair of variables (klipper-lb before DEST_IPS)."""
    src, dest, rec4, rec6 = klipper_ports(backends)
    proxy = env_proxy_factory(klipper_env(SRC_PORT=src, DEST_PROTO="TCP", DEST_PORT=dest,
                                          DEST_IP="127.0.0.1", DEST_IP6="::1"))
    check_listening(proxy, src)
    assert tagged_echo(V4, src, b"hello over IPv4\n") == "v4 AF_INET"
    assert tagged_echo(V6, src, b"hello over IPv6\n") == "v6 AF_INET6"
    assert (rec4.accepted, rec6.accepted) == (1, 1)


@pytest.mark.parametrize("variables,served", [
    ({"DEST_IP": "127.0.0.1"}, V4),
    ({"DEST_IPS": "127.0.0.1"}, V4),
    ({"DEST_IP6": "::1"}, V6),
    ({"DEST_IP": "::1"}, V6),
    ({"DEST_IPS": "::1"}, V6),
], ids=["DEST_IP-v4", "DEST_IPS-v4", "DEST_IP6", "DEST_IP-v6", "DEST_IPS-v6"])
def test_env_single_stack_publishes_one_family(env_proxy_factory, backends, variables,
                                               served):
    """A single-stack Service (one family's ClusterIP) is published on that
    family only: the other family's port is closed (connection refused), as
    klipper-lb programs rules for the given family only."""
    src, dest, rec4, rec6 = klipper_ports(backends)
    proxy = env_proxy_factory(klipper_env(SRC_PORT=src, DEST_PORT=dest, **variables))
    closed = V6 if served == V4 else V4
    tag = "v4 AF_INET" if served == V4 else "v6 AF_INET6"
    assert tagged_echo(served, src, b"from the served family\n") == tag
    assert_refused(closed, src, "(no %s destination)" % ("IPv6" if closed == V6 else "IPv4"))
    want = {"0.0.0.0:%d" % src} if served == V4 else {"[::]:%d" % src}
    assert {a for a, _ in listen_sockets(src)} == want
    proxy.wait_for(r"listening on %s \(lb-tcp-%d\)" % (
        r"0\.0\.0\.0:%d" % src if served == V4 else r"\[::\]:%d" % src, src), timeout=0)
    assert (rec4.accepted, rec6.accepted) == ((1, 0) if served == V4 else (0, 1))


def test_env_dest_ips_newlines(env_proxy_factory, backends):
    """A YAML block scalar puts newlines into DEST_IPS: they separate too."""
    src, dest, rec4, rec6 = klipper_ports(backends)
    env_proxy_factory(klipper_env(SRC_PORT=src, DEST_PORT=dest, DEST_IPS="127.0.0.1\n::1\n"))
    assert tagged_echo(V4, src, b"x\n") == "v4 AF_INET"
    assert tagged_echo(V6, src, b"y\n") == "v6 AF_INET6"


def test_env_logs_unset_src_ranges(env_proxy_factory, backends):
    src, dest, _, _ = klipper_ports(backends)
    proxy = env_proxy_factory(klipper_env(SRC_PORT=src, DEST_PORT=dest,
                                          DEST_IPS="127.0.0.1,::1"))
    proxy.wait_for(r"SRC_RANGES not set or empty: clients from every address are served", timeout=0)


def test_env_dest_ips_wins_over_dest_ip(env_proxy_factory, backends):
    """DEST_IPS set: DEST_IP / DEST_IP6 are not used (they could not be
    connected: nothing listens on 127.0.0.2:DEST_PORT)."""
    src, dest, rec4, rec6 = klipper_ports(backends)
    env_proxy_factory(klipper_env(SRC_PORT=src, DEST_PORT=dest, DEST_IPS="127.0.0.1,::1",
                                  DEST_IP="127.0.0.2"))
    assert tagged_echo(V4, src, b"x\n") == "v4 AF_INET"
    assert tagged_echo(V6, src, b"y\n") == "v6 AF_INET6"


def test_env_check_only(backends):
    src, dest, _, _ = klipper_ports(backends)
    r = run_dualproxy_env(klipper_env(SRC_PORT=src, DEST_PORT=dest,
                                      DEST_IPS="10.43.206.211,fd45:a71:55a6:1:2:1:0:db1"),
                          "-t")
    assert r.returncode == 0, r.stderr
    assert "environment: configuration ok" in r.stderr, r.stderr
    assert not listen_sockets(src), "-t must not bind"


def test_config_file_wins_over_environment(proxy_factory, backends):
    """With -c, the file is used even though SRC_PORT is set."""
    src, dest, rec4, rec6 = klipper_ports(backends)
    port = free_dual_port()
    while port in (src, dest):
        port = free_dual_port()
    proxy_factory(ini("""
        [file]
        listen = %d
        backend4 = 127.0.0.1:%d
        backend6 = [::1]:%d
    """ % (port, dest, dest)),
        env=klipper_env(SRC_PORT=src, DEST_PORT=dest, DEST_IPS="127.0.0.1,::1"))
    assert tagged_echo(V4, port, b"x\n") == "v4 AF_INET"
    assert tagged_echo(V6, port, b"x\n") == "v6 AF_INET6"
    assert_refused(V4, src, "(SRC_PORT is ignored with -c)")
    assert_refused(V6, src, "(SRC_PORT is ignored with -c)")


def test_env_sighup_rereads_environment(env_proxy_factory, backends):
    """A reload in environment mode keeps the same listeners and backends."""
    src, dest, rec4, rec6 = klipper_ports(backends)
    proxy = env_proxy_factory(klipper_env(SRC_PORT=src, DEST_PORT=dest,
                                          DEST_IPS="127.0.0.1,::1"))
    before = listen_sockets(src)
    assert proxy.reload_ok() == (0, 2, 0)
    assert listen_sockets(src) == before
    assert tagged_echo(V4, src, b"x\n") == "v4 AF_INET"
    assert tagged_echo(V6, src, b"x\n") == "v6 AF_INET6"


# --------------------------------------------------------------------------
# errors: `environment: VAR: message`, exit 78, with and without -t

GOOD = {"DEST_PORT": "8080", "DEST_IPS": "10.43.206.211,fd45:a71:55a6:1:2:1:0:db1"}

BAD = [
    ("DEST_PORT", {"DEST_PORT": "0"}, None),
    ("DEST_PORT", {"DEST_PORT": "x"}, None),
    ("DEST_PORT", {"DEST_PORT": "65536"}, None),
    ("DEST_PORT", {"DEST_PORT": None}, None),
    ("DEST_IPS", {"DEST_IPS": "10.0.0.300"}, None),
    ("DEST_IPS", {"DEST_IPS": "10.0.0.1,10.0.0.2"}, None),
    ("DEST_IPS", {"DEST_IPS": "fd00::1,::1"}, None),
    ("DEST_IPS", {"DEST_IPS": "10.0.0.1,fd00::zz"}, None),
    ("DEST_IPS", {"DEST_IPS": None}, None),
    ("DEST_IP", {"DEST_IPS": None, "DEST_IP": "10.0.0.256"}, None),
    ("DEST_IP6", {"DEST_IPS": None, "DEST_IP6": "10.0.0.1"}, None),
    ("SRC_PORT", {"SRC_PORT": "0"}, None),
    ("SRC_PORT", {"SRC_PORT": "http"}, None),
    ("SRC_PORT", {"SRC_PORT": "65536"}, None),
    ("SRC_PORT", {"SRC_PORT": ""}, None),
    ("DEST_PROTO", {"DEST_PROTO": "SCTP"},
     "environment: DEST_PROTO: SCTP is not supported"),
    ("DEST_PROTO", {"DEST_PROTO": "ICMP"}, None),
    ("SRC_RANGES", {"SRC_RANGES": "10.0.0.0/33"}, None),
    ("SRC_RANGES", {"SRC_RANGES": "10.0.0.0/8,nonsense"}, None),
    # destinations no connection reaches
    ("DEST_IPS", {"DEST_IPS": "0.0.0.0"},
     "environment: DEST_IPS: the unspecified address is not a backend: '0.0.0.0'"),
    ("DEST_IPS", {"DEST_IPS": "10.43.0.1,::"},
     "environment: DEST_IPS: the unspecified address is not a backend: '::'"),
    ("DEST_IPS", {"DEST_IPS": "255.255.255.255"},
     "environment: DEST_IPS: the broadcast address is not a backend"),
    ("DEST_IPS", {"DEST_IPS": "224.0.0.1"},
     "environment: DEST_IPS: a multicast address is not a backend: '224.0.0.1'"),
    ("DEST_IPS", {"DEST_IPS": "ff02::1"},
     "environment: DEST_IPS: a multicast address is not a backend: 'ff02::1'"),
    ("DEST_IPS", {"DEST_IPS": "::ffff:10.43.0.1"},
     "environment: DEST_IPS: IPv4-mapped address"),
    ("DEST_IPS", {"DEST_IPS": "fe80::1"},
     "environment: DEST_IPS: a link-local address is not a backend here"),
    ("DEST_IP", {"DEST_IPS": None, "DEST_IP": "0.0.0.0"},
     "environment: DEST_IP: the unspecified address"),
    ("DEST_IP6", {"DEST_IPS": None, "DEST_IP6": "ff05::2"},
     "environment: DEST_IP6: a multicast address"),
]


@pytest.mark.parametrize("check_only", [False, True], ids=["run", "t"])
@pytest.mark.parametrize("var,override,exact", BAD,
                         ids=["%s=%s" % (v, o.get(v)) for v, o, _ in BAD])
def test_env_errors(var, override, exact, check_only):
    src = free_dual_port()
    variables = dict(GOOD, SRC_PORT=str(src))
    variables.update(override)
    args = ("-t",) if check_only else ()
    r = run_dualproxy_env(klipper_env(**variables), *args, timeout=T(5))
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    assert "environment: %s:" % var in r.stderr, r.stderr
    if exact is not None:
        assert exact in r.stderr, r.stderr
    assert "configuration ok" not in r.stderr, r.stderr
    if not check_only:
        assert not listen_sockets(src), "bound although the environment is bad"


@pytest.mark.parametrize("check_only", [False, True], ids=["run", "t"])
def test_env_destination_is_dualproxy_itself(check_only):
    """DEST_IPS on this host with DEST_PORT = SRC_PORT: the service's own
    listener, a loop; the error names the variable."""
    src = free_dual_port()
    r = run_dualproxy_env(klipper_env(SRC_PORT=src, DEST_PORT=src, DEST_IPS="127.0.0.1,::1"),
                          *(("-t",) if check_only else ()), timeout=T(5))
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    assert ("environment: DEST_IPS: backend4 127.0.0.1:%d is an address of this host" % src
            in r.stderr), r.stderr
    assert "loop back" in r.stderr, r.stderr


def test_env_sighup_is_a_no_op(env_proxy_factory, backends):
    """The environment of a running process does not change: a SIGHUP makes
    the same text again and applies nothing."""
    src, dest, rec4, rec6 = klipper_ports(backends)
    proxy = env_proxy_factory(klipper_env(SRC_PORT=src, DEST_PORT=dest,
                                          DEST_IPS="127.0.0.1,::1"))
    for _ in range(3):
        ok, lines = proxy.reload()
        assert ok, lines
        assert "the environment is unchanged since the last reload: nothing to apply" \
            in "\n".join(lines), lines
