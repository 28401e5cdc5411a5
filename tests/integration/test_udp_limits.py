"""UDP flows at scale and at the limits.

* 2,000 concurrent flows (2,000 client sockets, both families, all open at
  once), each answered by its family's echo backend; each backend sees one
  peer per client.
* Each flow costs one descriptor: /proc/PID/fd grows by one per flow and
  comes back to where it was after idle_timeout.
* max_connections and max_connections_per_source count flows: at the limit a
  new client's datagrams are dropped (never reach a backend) and counted per
  datagram (dualproxy_refused_total{reason="full"} /
  dualproxy_source_limited_total, protocol="udp"); existing flows keep
  working; once flows have ended new clients are served.
* Nothing spins: the daemon's CPU time stays low while a client floods from
  new ports at the limit, and at RLIMIT_NOFILE 128 (more clients than
  descriptors).

The tests marked `reliability` (CPU time, a lowered descriptor limit) are
left out under valgrind by `make check-valgrind` (VALGRIND_SKIP)."""

import socket
import time

import pytest

from conftest import (V4, V6, T, connect, expect_rst, flow_log, free_port,
                      free_udp_dual_port, metric_or_zero, nofile_wrapper,
                      proc_cpu_seconds, proc_fds_but_pipes, recv_line, scrape, sock_addr,
                      udp_ask, udp_exchange, udp_quiet, udp_tag, udp_tcp_backends,
                      wait_fds_back, wait_metric)


FAMILY = {V4: socket.AF_INET, V6: socket.AF_INET6}


def tag_of(host):
    return udp_tag("v4" if host == V4 else "v6", FAMILY[host])


def config(port, b4, b6, global_lines=(), extra=(), metrics=None):
    lines = ["[global]", "drain_timeout = 300ms", *global_lines]
    if metrics is not None:
        lines.append("metrics_listen = 127.0.0.1:%d" % metrics)
    lines += ["[dns]", "listen = %d" % port, "protocol = udp"]
    if b4 is not None:
        lines.append("backend4 = %s" % b4.fmt())
    if b6 is not None:
        lines.append("backend6 = %s" % b6.fmt())
    lines += list(extra)
    return "\n".join(lines) + "\n"


def open_socks(udp_socks, n):
    """n client sockets, alternating IPv4 and IPv6; returns (socks, hosts)."""
    hosts = [V4 if i % 2 == 0 else V6 for i in range(n)]
    return [udp_socks(h) for h in hosts], hosts


# --------------------------------------------------------------------------
# scale

def test_udp_2000_concurrent_flows(proxy_factory, udp_tagged, udp_socks):
    b4, b6 = udp_tagged
    port = free_udp_dual_port()
    mport = free_port()
    proxy = proxy_factory(config(port, b4, b6, metrics=mport))
    n = 2000
    room = scrape(V4, mport).value("dualproxy_connections_max")
    assert room >= n, ("the daemon's descriptor limit leaves room for %d connections, "
                       "fewer than %d flows (raise the hard RLIMIT_NOFILE)" % (room, n))
    socks, hosts = open_socks(udp_socks, n)
    payloads = [b"client %05d " % i + b"x" * (i % 300) for i in range(n)]
    dests = [(h, port) for h in hosts]
    t0 = time.monotonic()
    answers = udp_exchange(socks, dests, payloads, timeout=T(30), retry=T(1))
    elapsed = time.monotonic() - t0
    wrong = [(i, a) for i, a in enumerate(answers) if a != tag_of(hosts[i]) + payloads[i]]
    assert not wrong, "%d of %d clients got no or a wrong answer, first: %r" % (
        len(wrong), n, wrong[:3])
    # all flows at the same time: every socket is still open, every flow live
    for host, b in ((V4, b4), (V6, b6)):
        peers = b.peers()
        assert len(peers) == n // 2, "%s backend saw %d peers for %d clients" % (
            host, len(peers), n // 2)
        assert all(p[0] == host for p in peers)
    m = scrape(V4, mport)
    assert m.value("dualproxy_connections_active", service="dns", protocol="udp") == n
    assert m.value("dualproxy_connections_total", service="dns", family="ipv4",
                   protocol="udp") == n // 2
    assert m.value("dualproxy_connections_total", service="dns", family="ipv6",
                   protocol="udp") == n // 2
    # a second round through the same 2,000 flows: no new peer
    answers = udp_exchange(socks, dests, [p + b"again" for p in payloads],
                           timeout=T(30), retry=T(1))
    assert all(a == tag_of(hosts[i]) + payloads[i] + b"again" for i, a in enumerate(answers))
    assert (len(b4.peers()), len(b6.peers())) == (n // 2, n // 2)
    assert elapsed < T(20), "2,000 flows took %.1fs" % elapsed
    assert proxy.running()


def test_udp_idle_flows_give_descriptors_back(proxy_factory, udp_tagged, udp_socks):
    """200 flows: one descriptor each while they live, all back after
    idle_timeout = 1s."""
    b4, b6 = udp_tagged
    port = free_udp_dual_port()
    mport = free_port()
    proxy = proxy_factory(config(port, b4, b6, global_lines=["idle_timeout = 1s"],
                                 metrics=mport))
    pid = proxy.proc.pid
    baseline = proc_fds_but_pipes(pid)
    n = 200
    socks, hosts = open_socks(udp_socks, n)
    payloads = [b"%d" % i for i in range(n)]
    answers = udp_exchange(socks, [(h, port) for h in hosts], payloads, timeout=T(10))
    assert all(a == tag_of(hosts[i]) + payloads[i] for i, a in enumerate(answers))
    during = proc_fds_but_pipes(pid)
    assert during == baseline + n, \
        "%d flows: %d descriptors, %d before" % (n, during, baseline)
    wait_fds_back(pid, baseline, 1 + T(3), what="descriptors back after idle_timeout")
    m = scrape(V4, mport)
    assert m.value("dualproxy_connections_active", service="dns", protocol="udp") == 0
    # and the same clients are served again, by new flows
    answers = udp_exchange(socks, [(h, port) for h in hosts], payloads, timeout=T(10))
    assert all(a == tag_of(hosts[i]) + payloads[i] for i, a in enumerate(answers))
    m = scrape(V4, mport)
    for fam in ("ipv4", "ipv6"):
        assert m.value("dualproxy_connections_total", service="dns", family=fam,
                       protocol="udp") == n, fam


# --------------------------------------------------------------------------
# max_connections, max_connections_per_source

def test_udp_max_connections(proxy_factory, udp_tagged, udp_socks):
    """max_connections = 3: a fourth client's datagrams are dropped and
    counted (refused_total{reason="full",protocol="udp"}, one per datagram);
    the three flows keep working; when they have ended, the fourth is
    served."""
    b4, b6 = udp_tagged
    port = free_udp_dual_port()
    mport = free_port()
    proxy_factory(config(port, b4, b6, metrics=mport,
                         global_lines=["max_connections = 3", "idle_timeout = 1s"]))
    live = [(V4, udp_socks(V4)), (V6, udp_socks(V6)), (V4, udp_socks(V4))]
    for host, s in live:
        assert udp_ask(s, (host, port), b"in")[0] == tag_of(host) + b"in"
    fourth = udp_socks(V6)
    for i in range(4):
        fourth.sendto(b"let me in %d" % i, (V6, port))
        udp_quiet(fourth, 0.1)
        # the live flows go on meanwhile
        for host, s in live:
            assert udp_ask(s, (host, port), b"%d" % i)[0] == tag_of(host) + b"%d" % i
    m = wait_metric(V4, mport, "dualproxy_refused_total", 4, service="dns", reason="full",
                    protocol="udp")
    assert m.value("dualproxy_connections_active", service="dns", protocol="udp") == 3
    assert len(b6.peers()) == 1, "the fourth client reached the backend: %r" % b6.peers()
    # the three flows end after 1 s idle; then the fourth gets a flow
    wait_metric(V4, mport, "dualproxy_connections_active", 0, timeout=1 + T(3),
                service="dns", protocol="udp")
    assert udp_ask(fourth, (V6, port), b"now")[0] == tag_of(V6) + b"now"
    m = scrape(V4, mport)
    assert m.value("dualproxy_refused_total", service="dns", reason="full",
                   protocol="udp") == 4


def test_udp_max_connections_per_source(proxy_factory, udp_tagged, udp_socks):
    """max_connections_per_source = 2: a third flow from 127.0.0.1 is
    dropped and counted (source_limited_total{protocol="udp"}, per
    datagram); 127.0.0.2 and ::1 are other sources; the first two flows keep
    working."""
    b4, b6 = udp_tagged
    port = free_udp_dual_port()
    mport = free_port()
    proxy_factory(config(port, b4, b6, metrics=mport,
                         global_lines=["max_connections_per_source = 2"]))
    first = [udp_socks(V4), udp_socks(V4)]
    for s in first:
        assert udp_ask(s, (V4, port), b"one of two")[0] == tag_of(V4) + b"one of two"
    third = udp_socks(V4)
    for i in range(3):
        third.sendto(b"third %d" % i, (V4, port))
    udp_quiet(third, 0.3)
    other4 = udp_socks(V4, bind="127.0.0.2")
    assert udp_ask(other4, (V4, port), b"other")[0] == tag_of(V4) + b"other"
    for _ in range(2):
        s6 = udp_socks(V6)
        assert udp_ask(s6, (V6, port), b"six")[0] == tag_of(V6) + b"six"
    for s in first:
        assert udp_ask(s, (V4, port), b"still")[0] == tag_of(V4) + b"still"
    m = wait_metric(V4, mport, "dualproxy_source_limited_total", 3, service="dns",
                    protocol="udp")
    assert m.value("dualproxy_connections_active", service="dns", protocol="udp") == 5
    got = [d for _, d in b4.received()]
    assert not [d for d in got if d.startswith(b"third")], got
    assert got.count(b"other") == 1 and len(b4.peers()) == 3, got
    assert metric_or_zero(m, "dualproxy_refused_total", service="dns", reason="full",
                          protocol="udp") == 0


def test_udp_per_source_slots_come_back(proxy_factory, backends, udp_backends, udp_socks):
    """max_connections_per_source = 2, idle_timeout = 1s, protocol = tcp, udp:
    two flows from 127.0.0.1 take its slots (a TCP connection from there is
    closed with RST and counted under protocol="tcp"); when they have ended,
    two new flows from 127.0.0.1 are served and a third is refused again."""
    u4 = udp_tcp_backends(backends, udp_backends, V4, "v4")
    port = free_udp_dual_port()
    mport = free_port()
    lines = ["[global]", "log_level = debug", "drain_timeout = 300ms",
             "max_connections_per_source = 2", "idle_timeout = 1s",
             "metrics_listen = 127.0.0.1:%d" % mport,
             "[both]", "listen = %d" % port, "protocol = tcp, udp", "backend4 = %s" % u4.fmt()]
    proxy = proxy_factory("\n".join(lines) + "\n")
    for rnd in range(2):
        since = proxy.mark()
        two = [udp_socks(V4), udp_socks(V4)]
        for s in two:
            assert udp_ask(s, (V4, port), b"round %d" % rnd)[0] == tag_of(V4) + b"round %d" % rnd
        extra = udp_socks(V4)
        extra.sendto(b"one too many", (V4, port))
        udp_quiet(extra, 0.2)
        wait_metric(V4, mport, "dualproxy_source_limited_total", rnd + 1, service="both",
                    protocol="udp")
        if rnd == 0:
            expect_rst(V4, port)
            wait_metric(V4, mport, "dualproxy_source_limited_total", 1, service="both",
                        protocol="tcp")
        for s in two:
            assert flow_log(proxy, sock_addr(s), timeout=1 + T(3), since=since)["end"] == \
                "idle-timeout"
    assert not [d for _, d in u4.received() if d == b"one too many"]


def test_flows_and_tcp_connections_share_the_limits(proxy_factory, backends, udp_backends,
                                                   udp_socks, clients):
    """protocol = tcp, udp: a TCP connection and a UDP flow from one address
    count together against max_connections_per_source = 2 and
    max_connections = 3."""
    u4 = udp_tcp_backends(backends, udp_backends, V4, "v4")
    u6 = udp_tcp_backends(backends, udp_backends, V6, "v6")
    port = free_udp_dual_port()
    mport = free_port()
    lines = ["[global]", "drain_timeout = 300ms", "max_connections_per_source = 2",
             "max_connections = 3", "metrics_listen = 127.0.0.1:%d" % mport,
             "[both]", "listen = %d" % port, "protocol = tcp, udp",
             "backend4 = %s" % u4.fmt(), "backend6 = %s" % u6.fmt()]
    proxy_factory("\n".join(lines) + "\n")
    tcp4 = connect(V4, port)
    clients.append(tcp4)
    assert recv_line(tcp4) == b"v4 AF_INET\n"
    flow4 = udp_socks(V4)
    assert udp_ask(flow4, (V4, port), b"second of 127.0.0.1")[0] == \
        tag_of(V4) + b"second of 127.0.0.1"
    third = udp_socks(V4)
    third.sendto(b"third of 127.0.0.1", (V4, port))
    udp_quiet(third, 0.3)
    m = wait_metric(V4, mport, "dualproxy_source_limited_total", 1, service="both",
                    protocol="udp")
    # ::1 is another source: one flow; that makes 3 in all, the limit
    flow6 = udp_socks(V6)
    assert udp_ask(flow6, (V6, port), b"six")[0] == tag_of(V6) + b"six"
    fourth = udp_socks(V6)
    fourth.sendto(b"fourth in all", (V6, port))
    udp_quiet(fourth, 0.3)
    m = wait_metric(V4, mport, "dualproxy_refused_total", 1, service="both", reason="full",
                    protocol="udp")
    assert m.value("dualproxy_connections_active", service="both", protocol="udp") == 2
    assert m.value("dualproxy_connections_active", service="both", protocol="tcp") == 1
    assert [d for _, d in u6.received()] == [b"six"]
    assert not [d for _, d in u4.received() if d.startswith(b"third")]
    # the TCP connection ends: its slot goes to the next flow from 127.0.0.1
    tcp4.close()
    wait_metric(V4, mport, "dualproxy_connections_active", 0, service="both", protocol="tcp")
    assert udp_ask(third, (V4, port), b"now third")[0] == tag_of(V4) + b"now third"


# --------------------------------------------------------------------------
# nothing spins

@pytest.mark.reliability
def test_udp_flood_at_the_limit_does_not_spin(proxy_factory, udp_tagged, udp_socks):
    """max_connections = 2, two live flows; 400 new client ports send 3,200
    datagrams within about 1.5 s: every one is dropped and counted, the
    live flows are answered throughout, and the daemon's CPU time stays far
    below the wall time (during the flood) and near zero (after it)."""
    b4, b6 = udp_tagged
    port = free_udp_dual_port()
    mport = free_port()
    proxy = proxy_factory(config(port, b4, b6, metrics=mport,
                                 global_lines=["max_connections = 2"]))
    pid = proxy.proc.pid
    live = [(V4, udp_socks(V4)), (V6, udp_socks(V6))]
    for host, s in live:
        assert udp_ask(s, (host, port), b"in")[0] == tag_of(host) + b"in"
    flood, hosts = open_socks(udp_socks, 400)
    cpu0, w0 = proc_cpu_seconds(pid), time.monotonic()
    sent = 0
    for rnd in range(8):  # 8 rounds of one datagram from each of 400 ports
        for s, h in zip(flood, hosts):
            s.sendto(b"flood %d" % sent, (h, port))
            sent += 1
        for host, s in live:
            assert udp_ask(s, (host, port), b"r%d" % rnd)[0] == tag_of(host) + b"r%d" % rnd
        time.sleep(0.15)
    cpu1, w1 = proc_cpu_seconds(pid), time.monotonic()
    time.sleep(1.0)
    cpu2, w2 = proc_cpu_seconds(pid), time.monotonic()
    assert cpu1 - cpu0 < 0.5 * (w1 - w0), \
        "%.2fs CPU in %.2fs of flood" % (cpu1 - cpu0, w1 - w0)
    assert cpu2 - cpu1 < 0.1 * (w2 - w1), \
        "%.2fs CPU in the %.2fs after the flood: spinning?" % (cpu2 - cpu1, w2 - w1)
    for host, s in live:
        assert udp_ask(s, (host, port), b"after")[0] == tag_of(host) + b"after"
    m = scrape(V4, mport)
    refused = m.value("dualproxy_refused_total", service="dns", reason="full", protocol="udp")
    assert 0.9 * sent <= refused <= sent, "%d datagrams refused of %d sent" % (refused, sent)
    assert (len(b4.peers()), len(b6.peers())) == (1, 1)
    for s in flood:
        udp_quiet(s, 0)


@pytest.mark.reliability
def test_udp_descriptor_limit_does_not_spin(proxy_factory, udp_tagged, udp_socks):
    """RLIMIT_NOFILE 128 and 300 clients (more than descriptors): some are
    served, the others dropped and counted, the daemon does not spin, and
    once the flows have ended (idle_timeout = 2s) its descriptors are back
    and new clients are served."""
    b4, b6 = udp_tagged
    port = free_udp_dual_port()
    mport = free_port()
    proxy = proxy_factory(config(port, b4, b6, metrics=mport,
                                 global_lines=["idle_timeout = 2s"]),
                          wrapper=nofile_wrapper(128))
    pid = proxy.proc.pid
    baseline = proc_fds_but_pipes(pid)
    socks, hosts = open_socks(udp_socks, 300)
    payloads = [b"c%d" % i for i in range(300)]
    dests = [(h, port) for h in hosts]
    cpu0, w0 = proc_cpu_seconds(pid), time.monotonic()
    answers = udp_exchange(socks, dests, payloads, timeout=0.8, retry=0.2)
    served = [i for i, a in enumerate(answers) if a is not None]
    assert all(answers[i] == tag_of(hosts[i]) + payloads[i] for i in served)
    assert 10 <= len(served) < 128, "%d of 300 clients served at 128 descriptors" % len(served)
    time.sleep(0.3)  # flows still live, nobody sends
    cpu1, w1 = proc_cpu_seconds(pid), time.monotonic()
    assert cpu1 - cpu0 < 0.5 * (w1 - w0), "%.2fs CPU in %.2fs" % (cpu1 - cpu0, w1 - w0)
    m = scrape(V4, mport)
    assert m.value("dualproxy_connections_active", service="dns",
                   protocol="udp") == len(served)
    dropped = (metric_or_zero(m, "dualproxy_refused_total", service="dns", reason="full",
                              protocol="udp") +
               sum(metric_or_zero(m, "dualproxy_datagrams_dropped_total", service="dns",
                                  family=f, direction="up", protocol="udp",
                                  reason="no-socket") for f in ("ipv4", "ipv6")))
    assert dropped >= 300 - len(served), "%d datagrams counted as dropped" % dropped
    assert proc_fds_but_pipes(pid) <= 128
    wait_fds_back(pid, baseline, 2 + T(3), what="descriptors back after idle_timeout")
    cpu2 = proc_cpu_seconds(pid)
    time.sleep(0.5)
    assert proc_cpu_seconds(pid) - cpu2 < 0.1, "CPU time while idle"
    # the ones refused before are served now
    waiting = [i for i in range(300) if answers[i] is None][:40]
    again = udp_exchange([socks[i] for i in waiting], [dests[i] for i in waiting],
                         [payloads[i] for i in waiting], timeout=T(5))
    assert all(a == tag_of(hosts[i]) + payloads[i] for i, a in zip(waiting, again))
    assert proxy.running()
