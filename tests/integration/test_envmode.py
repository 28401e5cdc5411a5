"""klipper-lb environment mode: with no -c and SRC_PORT set, dualproxy builds
one service `lb-tcp-<SRC_PORT>` from K3s servicelb's variables.

* SRC_PORT: listen on 0.0.0.0:P and [::]:P; DEST_PORT: the backends' port.
* DEST_IPS (comma or blank separated, IPv6 where it holds ':', at most one per
  family), or the older DEST_IP / DEST_IP6: an IPv4 client reaches the IPv4
  backend, an IPv6 client the IPv6 one (tagged backends on 127.0.0.1:DEST_PORT
  and [::1]:DEST_PORT say which served).
* DEST_PROTO: TCP or unset; UDP is refused.
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


@pytest.mark.parametrize("variables,tag", [
    ({"DEST_IP": "127.0.0.1"}, "v4 AF_INET"),
    ({"DEST_IPS": "127.0.0.1"}, "v4 AF_INET"),
    ({"DEST_IP6": "::1"}, "v6 AF_INET6"),
    ({"DEST_IPS": "::1"}, "v6 AF_INET6"),
], ids=["DEST_IP", "DEST_IPS-v4", "DEST_IP6", "DEST_IPS-v6"])
def test_env_single_family_serves_both(env_proxy_factory, backends, variables, tag):
    """One family's ClusterIP only: clients of both families reach it."""
    src, dest, rec4, rec6 = klipper_ports(backends)
    env_proxy_factory(klipper_env(SRC_PORT=src, DEST_PORT=dest, **variables))
    assert tagged_echo(V4, src, b"from v4\n") == tag
    assert tagged_echo(V6, src, b"from v6\n") == tag


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
    ("DEST_IP", {"DEST_IPS": None, "DEST_IP": "::1"}, None),
    ("DEST_IP", {"DEST_IPS": None, "DEST_IP": "10.0.0.256"}, None),
    ("DEST_IP6", {"DEST_IPS": None, "DEST_IP6": "10.0.0.1"}, None),
    ("SRC_PORT", {"SRC_PORT": "0"}, None),
    ("SRC_PORT", {"SRC_PORT": "http"}, None),
    ("SRC_PORT", {"SRC_PORT": "65536"}, None),
    ("SRC_PORT", {"SRC_PORT": ""}, None),
    ("DEST_PROTO", {"DEST_PROTO": "UDP"},
     "environment: DEST_PROTO: UDP is not supported (only TCP)"),
    ("DEST_PROTO", {"DEST_PROTO": "ICMP"}, None),
    ("SRC_RANGES", {"SRC_RANGES": "10.0.0.0/33"}, None),
    ("SRC_RANGES", {"SRC_RANGES": "10.0.0.0/8,nonsense"}, None),
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
