"""klipper-lb environment mode with DEST_PROTO=UDP: one service
`lb-udp-<SRC_PORT>` relaying datagrams (and no TCP).

* DEST_IPS with both families: UDP on 0.0.0.0:SRC_PORT and [::]:SRC_PORT,
  nothing on TCP; an IPv4 client reaches the IPv4 backend and an IPv6
  client the IPv6 one (tagged UDP backends on 127.0.0.1:DEST_PORT and
  [::1]:DEST_PORT), each backend seeing one peer per client.
* Single stack (DEST_IPS=127.0.0.1, or DEST_IP6=::1 alone): only that
  family's port is bound; the other answers with ICMP port unreachable.
* SRC_RANGES: datagrams from outside the ranges never reach a backend.
* `dualproxy -t` accepts the environment."""

import signal
import socket

import pytest

from conftest import (V4, V6, T, free_udp_dual_port, free_udp_loopback_port, klipper_env,
                      listen_sockets, run_dualproxy_env, udp_ask, udp_quiet,
                      udp_refused, udp_sockets, udp_tag)


FAMILY = {V4: socket.AF_INET, V6: socket.AF_INET6}


def tag_of(host):
    return udp_tag("v4" if host == V4 else "v6", FAMILY[host])


@pytest.fixture
def same_port_udp(udp_backends):
    """Tagged UDP backends on 127.0.0.1:P and [::1]:P (klipper-lb has one
    DEST_PORT); returns (P, backend4, backend6)."""
    for _ in range(20):
        port = free_udp_loopback_port()
        try:
            b4 = udp_backends(V4, "tagged", "v4", port=port)
            b6 = udp_backends(V6, "tagged", "v6", port=port)
        except OSError:
            continue
        return port, b4, b6
    raise RuntimeError("no UDP port free on 127.0.0.1 and ::1")


def src_port(dest):
    p = free_udp_dual_port()
    while p == dest:
        p = free_udp_dual_port()
    return p


def bound(port):
    return {a for a, _ in udp_sockets(port)}


def wait_named(proxy, src):
    proxy.wait_for(r"\blb-udp-%d\b" % src, timeout=T(2))


def stop_now(proxy):
    """SIGTERM, then a second one once draining (environment mode drains
    for 25 s, its open flows for 2 s): exit 0 at once."""
    since = proxy.mark()
    proxy.signal(signal.SIGTERM)
    proxy.wait_for(r"draining", timeout=T(3), since=since)
    proxy.signal(signal.SIGTERM)
    rc = proxy.wait_exit(T(5))
    assert rc == 0, "exit %s; stderr:\n%s" % (rc, proxy.stderr_text())


@pytest.mark.parametrize("dest_ips", ["127.0.0.1,::1", "::1 127.0.0.1"])
def test_env_udp_both_families(env_proxy_factory, same_port_udp, udp_socks, dest_ips):
    dest, b4, b6 = same_port_udp
    src = src_port(dest)
    proxy = env_proxy_factory(klipper_env(SRC_PORT=src, DEST_PORT=dest, DEST_PROTO="UDP",
                                          DEST_IPS=dest_ips))
    wait_named(proxy, src)
    assert bound(src) == {"0.0.0.0:%d" % src, "[::]:%d" % src}
    assert listen_sockets(src) == set(), "DEST_PROTO=UDP listens on TCP too"
    assert not proxy.grep(r"\blb-tcp-%d\b" % src)
    for _ in range(2):
        for host in (V4, V6):
            for i in range(2):
                s = udp_socks(host)
                for j in range(2):
                    msg = b"%s %d %d" % (host.encode(), i, j)
                    data, sender = udp_ask(s, (host, src), msg)
                    assert data == tag_of(host) + msg
                    assert sender == (host, src)
    assert (len(b4.peers()), len(b6.peers())) == (4, 4)
    assert all(p[0] == V4 for p in b4.peers()) and all(p[0] == V6 for p in b6.peers())
    stop_now(proxy)


@pytest.mark.parametrize("variables,host", [
    ({"DEST_IPS": "127.0.0.1"}, V4),
    ({"DEST_IPS": "::1"}, V6),
    ({"DEST_IP": "127.0.0.1"}, V4),
    ({"DEST_IP6": "::1"}, V6),
], ids=["DEST_IPS-v4", "DEST_IPS-v6", "DEST_IP", "DEST_IP6"])
def test_env_udp_single_stack(env_proxy_factory, same_port_udp, udp_socks, variables, host):
    dest, b4, b6 = same_port_udp
    src = src_port(dest)
    proxy = env_proxy_factory(klipper_env(SRC_PORT=src, DEST_PORT=dest, DEST_PROTO="UDP",
                                          **variables))
    wait_named(proxy, src)
    other = V6 if host == V4 else V4
    assert bound(src) == {("0.0.0.0:%d" if host == V4 else "[::]:%d") % src}
    data, _ = udp_ask(udp_socks(host), (host, src), b"published")
    assert data == tag_of(host) + b"published"
    assert udp_refused(other, src), "%s: port %d answers without a destination" % (other, src)
    assert (b4 if other == V4 else b6).peers() == []
    stop_now(proxy)


def test_env_udp_src_ranges(env_proxy_factory, same_port_udp, udp_socks):
    """SRC_RANGES=127.0.0.2/32: datagrams from 127.0.0.1, and from ::1 (no
    IPv6 range listed), never reach a backend; 127.0.0.2 is served."""
    dest, b4, b6 = same_port_udp
    src = src_port(dest)
    proxy = env_proxy_factory(klipper_env(SRC_PORT=src, DEST_PORT=dest, DEST_PROTO="UDP",
                                          DEST_IPS="127.0.0.1,::1", SRC_RANGES="127.0.0.2/32"))
    wait_named(proxy, src)
    ok = udp_socks(V4, bind="127.0.0.2")
    assert udp_ask(ok, (V4, src), b"in range")[0] == tag_of(V4) + b"in range"
    for host in (V4, V6):
        s = udp_socks(host)
        for i in range(2):
            s.sendto(b"out of range %d" % i, (host, src))
        udp_quiet(s, 0.3)
    assert [d for _, d in b4.received()] == [b"in range"] and b6.received() == []
    stop_now(proxy)


def test_env_udp_check(same_port_udp):
    dest, _, _ = same_port_udp
    r = run_dualproxy_env(klipper_env(SRC_PORT=src_port(dest), DEST_PORT=dest,
                                      DEST_PROTO="UDP", DEST_IPS="10.43.0.10,fd45::a"), "-t")
    assert r.returncode == 0, r.stderr
    assert "environment: configuration ok" in r.stdout + r.stderr
