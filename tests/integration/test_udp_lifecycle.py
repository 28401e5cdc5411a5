"""UDP flows across reloads (SIGHUP) and the drain (SIGTERM).

Reload:
* a UDP service that the new file keeps (the same file, or another service
  added) keeps its sockets (same inodes in /proc/net/udp*) and its flows: a
  client's next datagram reaches the backend through the same flow, the
  backend sees the same peer port before and after the SIGHUP;
* a UDP service that the new file removes: its flows end at once with
  end=removed, its port is closed (ICMP port unreachable), its metrics
  series are gone; the other service's flows carry on.

Drain:
* from SIGTERM on no new flow is made (a new client's datagram reaches no
  backend and draws no answer), live flows keep relaying both ways; a flow
  idle for 2 s is over; the daemon exits 0 when the last flow and the last
  TCP connection are gone;
* drain_timeout cuts busy flows (end=shutdown), exit 0.

Configs live in a world-readable directory (started as root the daemon runs
as nobody when it reads the file again)."""

import signal
import socket
import time

import pytest

from conftest import (V4, V6, T, connect, flow_log, flow_logs, free_port,
                      free_udp_dual_port, ini, recv_exact, recv_line, scrape,
                      sock_addr, udp_ask, udp_quiet, udp_tcp_backends,
                      udp_refused, udp_sockets, udp_tag, wait_closed,
                      distinct_udp_dual_ports)


FAMILY = {V4: socket.AF_INET, V6: socket.AF_INET6}


def tag_of(host, tag=None):
    return udp_tag(tag or ("v4" if host == V4 else "v6"), FAMILY[host])


def service(name, port, b4, b6, protocol="udp"):
    return ini("""
        [%s]
        listen = %d
        protocol = %s
        backend4 = %s
        backend6 = %s
    """ % (name, port, protocol, b4.fmt(), b6.fmt()))


# a short drain: a test that leaves flows open ends quickly
GLOBAL = ini("""
    [global]
    log_level = debug
    drain_timeout = 300ms
""")


def open_flows(port, udp_socks, backends_by_host):
    """One flow per family: {host: (sock, backend peer)}."""
    flows = {}
    for host in (V4, V6):
        s = udp_socks(host)
        assert udp_ask(s, (host, port), b"before")[0] == tag_of(host) + b"before"
        peers = backends_by_host[host].peers()
        flows[host] = (s, peers[-1])
    return flows


# --------------------------------------------------------------------------
# reload

@pytest.mark.parametrize("change", ["unchanged", "service added"])
def test_reload_keeps_udp_sockets_and_flows(proxy_factory, udp_tagged, udp_socks, change):
    b4, b6 = udp_tagged
    port, other = distinct_udp_dual_ports(2)
    proxy = proxy_factory(GLOBAL + service("dns", port, b4, b6), readable=True)
    before = udp_sockets(port)
    assert {a for a, _ in before} == {"0.0.0.0:%d" % port, "[::]:%d" % port}
    flows = open_flows(port, udp_socks, {V4: b4, V6: b6})

    text = GLOBAL + service("dns", port, b4, b6)
    if change == "service added":
        text += service("other", other, b4, b6)
    proxy.reload_ok(text)
    assert udp_sockets(port) == before, "the UDP sockets of a kept service changed"
    for host, (s, peer) in flows.items():
        b = b4 if host == V4 else b6
        for i in range(3):
            assert udp_ask(s, (host, port), b"after %d" % i)[0] == tag_of(host) + b"after %d" % i
        assert b.peers()[-1] == peer and len(b.peers()) == 1, \
            "%s: the flow changed across the reload: peers %r" % (host, b.peers())
    assert not flow_logs(proxy), "a kept flow ended: %r" % flow_logs(proxy)
    if change == "service added":
        for host in (V4, V6):
            assert udp_ask(udp_socks(host), (host, other), b"new")[0] == tag_of(host) + b"new"


def test_reload_removing_a_udp_service_ends_its_flows(proxy_factory, udp_backends, udp_socks):
    g4, g6 = udp_backends(V4, "tagged", "g4"), udp_backends(V6, "tagged", "g6")
    s4, s6 = udp_backends(V4, "tagged", "s4"), udp_backends(V6, "tagged", "s6")
    gone, stay = distinct_udp_dual_ports(2)
    mport = free_port()
    metrics = "metrics_listen = 127.0.0.1:%d\n" % mport
    proxy = proxy_factory(GLOBAL + metrics + service("gone", gone, g4, g6) +
                          service("stay", stay, s4, s6), readable=True)
    gone_flows, stay_flows = {}, {}
    for host in (V4, V6):
        a, b = udp_socks(host), udp_socks(host)
        assert udp_ask(a, (host, gone), b"g")[0] == \
            tag_of(host, "g4" if host == V4 else "g6") + b"g"
        assert udp_ask(b, (host, stay), b"s")[0] == \
            tag_of(host, "s4" if host == V4 else "s6") + b"s"
        gone_flows[host], stay_flows[host] = a, b
    stay_peers = s4.peers() + s6.peers()

    since = proxy.mark()
    t0 = time.monotonic()
    proxy.reload_ok(GLOBAL + metrics + service("stay", stay, s4, s6))
    for host, s in gone_flows.items():
        log = flow_log(proxy, sock_addr(s), timeout=T(2), since=since)
        assert log["service"] == "gone" and log["end"] == "removed", log
        assert (log["datagrams_up"], log["datagrams_down"]) == (1, 1), log
    assert time.monotonic() - t0 < T(2), "the removed service's flows did not end at once"
    assert udp_sockets(gone) == set(), "the removed service's port is still bound"
    for host in (V4, V6):
        assert udp_refused(host, gone), "%s: port %d still answers" % (host, gone)
    for host, s in gone_flows.items():
        s.sendto(b"still there?", (host, gone))
        udp_quiet(s, 0.2)
    assert len(g4.received()) == 1 and len(g6.received()) == 1
    for host, s in stay_flows.items():
        tag = "s4" if host == V4 else "s6"
        assert udp_ask(s, (host, stay), b"on")[0] == tag_of(host, tag) + b"on"
    assert s4.peers() + s6.peers() == stay_peers, "the kept service's flows changed"
    assert not [f for f in flow_logs(proxy) if f["service"] == "stay"]
    # the removed service's series are gone with its last flow
    m = scrape(V4, mport)
    left = [(n, dict(l)) for (n, l) in m.samples if dict(l).get("service") == "gone"]
    assert not left, "series of the removed service: %r" % left[:5]
    assert m.value("dualproxy_connections_active", service="stay", protocol="udp") == 2


# --------------------------------------------------------------------------
# drain

def draining(proxy):
    return proxy.wait_for(r"draining \d+ (?:connections?|flows?)", timeout=T(3))


def test_drain_lets_flows_finish(proxy_factory, backends, udp_backends, udp_socks, clients):
    """protocol = tcp, udp; one busy flow, one idle flow and one TCP
    connection when SIGTERM comes (drain_timeout 30 s): no new flow, the
    busy flow is relayed until it falls idle for 2 s, the idle one ends
    within 2 s, and the daemon exits 0 once the flow and the TCP connection
    are gone."""
    u4 = udp_tcp_backends(backends, udp_backends, V4, "v4")
    u6 = udp_tcp_backends(backends, udp_backends, V6, "v6")
    port = free_udp_dual_port()
    proxy = proxy_factory(ini("""
        [global]
        log_level = debug
        [both]
        listen = %d
        protocol = tcp, udp
        backend4 = %s
        backend6 = %s
    """ % (port, u4.fmt(), u6.fmt())))
    busy, idle = udp_socks(V4), udp_socks(V6)
    assert udp_ask(busy, (V4, port), b"busy")[0] == tag_of(V4) + b"busy"
    assert udp_ask(idle, (V6, port), b"idle")[0] == tag_of(V6) + b"idle"
    tcp = connect(V6, port)
    clients.append(tcp)
    assert recv_line(tcp) == b"v6 AF_INET6\n"

    t0 = time.monotonic()
    proxy.signal(signal.SIGTERM)
    draining(proxy)
    newcomer = udp_socks(V4)
    newcomer.sendto(b"new flow?", (V4, port))
    deadline = t0 + 3.0
    i = 0
    while time.monotonic() < deadline:
        assert udp_ask(busy, (V4, port), b"during %d" % i)[0] == tag_of(V4) + b"during %d" % i
        last_busy = time.monotonic()
        time.sleep(0.4)
        i += 1
    udp_quiet(newcomer, 0)
    assert [p for p, _ in u4.received()] == [u4.peers()[0]] * (i + 1), \
        "a new flow was made during the drain: %r" % u4.peers()
    log = flow_log(proxy, sock_addr(idle), timeout=T(1))
    assert log["end"] in ("idle-timeout", "shutdown"), log
    # the TCP connection still relays; it ends, then the busy flow idles out
    tcp.sendall(b"tcp during the drain")
    assert recv_exact(tcp, 20) == b"tcp during the drain"
    tcp.shutdown(socket.SHUT_WR)
    assert wait_closed(tcp, T(3))[0] == "eof"
    assert proxy.running(), "exited with a flow still busy"
    rc = proxy.wait_exit(2 + T(2))
    assert rc == 0, "exit %s; stderr:\n%s" % (rc, proxy.stderr_text())
    ended = time.monotonic() - last_busy
    assert 1.7 <= ended <= 2 + T(1.5), "exited %.2fs after the last datagram" % ended
    log = flow_log(proxy, sock_addr(busy), timeout=0)
    assert log["datagrams_up"] == i + 1 and log["datagrams_down"] == i + 1, log
    assert log["end"] in ("idle-timeout", "shutdown"), log


def test_drain_timeout_cuts_busy_flows(proxy_factory, udp_tagged, udp_socks):
    """drain_timeout = 1s with a flow that never falls idle: exit 0 after
    about 1 s, its line says end=shutdown."""
    b4, b6 = udp_tagged
    port = free_udp_dual_port()
    proxy = proxy_factory(GLOBAL.replace("300ms", "1s") + service("dns", port, b4, b6))
    socks = {h: udp_socks(h) for h in (V4, V6)}
    for host, s in socks.items():
        assert udp_ask(s, (host, port), b"hi")[0] == tag_of(host) + b"hi"
    t0 = time.monotonic()
    proxy.signal(signal.SIGTERM)
    rc = None
    while time.monotonic() - t0 < 1 + T(2):
        for host, s in socks.items():
            s.sendto(b"busy", (host, port))
        time.sleep(0.1)
        rc = proxy.proc.poll()
        if rc is not None:
            break
    elapsed = time.monotonic() - t0
    rc = proxy.wait_exit(T(2)) if rc is None else rc
    assert rc == 0, "exit %s; stderr:\n%s" % (rc, proxy.stderr_text())
    assert 0.8 <= elapsed <= 1 + T(1.5), "exited %.2fs after SIGTERM" % elapsed
    for host, s in socks.items():
        log = flow_log(proxy, sock_addr(s), timeout=T(1))
        assert log["end"] == "shutdown", log


def test_drain_without_flows_exits_at_once(proxy_factory, udp_tagged):
    b4, b6 = udp_tagged
    port = free_udp_dual_port()
    proxy = proxy_factory(GLOBAL + service("dns", port, b4, b6))
    t0 = time.monotonic()
    proxy.signal(signal.SIGTERM)
    rc = proxy.wait_exit(T(3))
    assert rc == 0, (rc, proxy.stderr_text())
    assert time.monotonic() - t0 < T(1)
