"""UDP relay (`protocol = udp`, `protocol = tcp, udp`): the path of a datagram.

* A flow is one client address and port: it gets its own connected socket to
  the backend of the client's family (IPv4 client to backend4, IPv6 to
  backend6; with one backend, both families go there). The backend sees one
  peer, one source port, per client, for every datagram of the flow.
* `protocol = tcp, udp` relays both on the same port and addresses.
* Datagrams pass whole: 0 bytes, and up to 65,507 bytes over IPv4 and 65,527
  over IPv6, both ways; none is counted as truncated. A burst of 64 passes
  whole and in order both ways; GSO segments stay separate datagrams.
* A flow ends after idle_timeout without a datagram either way (a datagram
  from the backend alone keeps it), with its debug line `flow service=...
  client=... backend=... up=N down=N datagrams_up=N datagrams_down=N
  duration=S.SSSs end=idle-timeout`; the client's next datagram starts a new
  flow. Without an explicit idle_timeout: 30 s until the backend has
  answered, longer once it has (conntrack's 30 s / 120 s).
* An ICMP port unreachable from the backend ends the flow: end=connect-refused,
  dualproxy_backend_errors_total{reason="refused",protocol="udp"}.
* The allowlist is checked before a flow exists: a denied client's datagrams
  never reach a backend and count in dualproxy_denied_total{protocol="udp"},
  one per datagram.
* Metrics: the per-service series carry protocol="tcp"/"udp";
  dualproxy_datagrams_total{service,family,direction,protocol="udp"}.

Backends are UDP servers in this process on 127.0.0.1 and ::1 (tagged ones
answer b'TAG FAMILY|' + the datagram). The module is skipped while the binary
under test refuses `protocol = udp` (`dualproxy -t`)."""

import select
import socket
import time

import pytest

from conftest import (MAX_UDP4, MAX_UDP6, UDP_BUF, UDP_SEGMENT, V4, V6, T, fmt_addr, flow_log,
                      flow_logs, free_port, free_udp_dual_port,
                      ini, listen_sockets, metric_or_zero, pattern,
                      scrape, sock_addr, tagged_echo, udp_tcp_backends,
                      udp_ask, udp_quiet, udp_sockets, udp_tag, unused_udp_port,
                      wait_metric, wait_until)


FAMILY = {V4: socket.AF_INET, V6: socket.AF_INET6}
FAMILY_LABEL = {V4: "ipv4", V6: "ipv6"}


def tag_of(host):
    return udp_tag("v4" if host == V4 else "v6", FAMILY[host])


def udp_service(port, b4=None, b6=None, name="dns", protocol="udp", extra=""):
    """A service section: listen = `port` (a bare port or a list), the
    backends' addresses, `protocol`, and `extra` lines."""
    lines = ["[%s]" % name, "listen = %s" % port, "protocol = %s" % protocol]
    if b4 is not None:
        lines.append("backend4 = %s" % b4.fmt())
    if b6 is not None:
        lines.append("backend6 = %s" % b6.fmt())
    lines += [l.strip() for l in extra.splitlines() if l.strip()]
    return "\n".join(lines) + "\n"


def start(proxy_factory, services, global_lines="", metrics=None):
    """dualproxy with log_level = debug, a short drain (a test that leaves
    flows open ends quickly), `global_lines` in [global], and `services`."""
    lines = ["[global]", "log_level = debug", "drain_timeout = 300ms"]
    lines += [l.strip() for l in global_lines.splitlines() if l.strip()]
    if metrics is not None:
        lines.append("metrics_listen = 127.0.0.1:%d" % metrics)
    return proxy_factory("\n".join(lines) + "\n" + services)


# --------------------------------------------------------------------------
# routing

def test_udp_family_routing(proxy_factory, udp_tagged, udp_socks):
    """Three clients per family, three datagrams each: each answered by its
    family's backend; each backend sees one peer per client, always the same
    source port, of its own family; a bare port binds UDP on 0.0.0.0 and
    [::] and no TCP."""
    b4, b6 = udp_tagged
    port = free_udp_dual_port()
    start(proxy_factory, udp_service(port, b4, b6))
    assert {a for a, _ in udp_sockets(port)} == {"0.0.0.0:%d" % port, "[::]:%d" % port}
    assert listen_sockets(port) == set(), "protocol = udp listens on TCP too"

    clients = {V4: [udp_socks(V4) for _ in range(3)], V6: [udp_socks(V6) for _ in range(3)]}
    for rnd in range(3):
        for host in (V6, V4):
            for i, s in enumerate(clients[host]):
                msg = b"round %d client %d over %s" % (rnd, i, host.encode())
                data, src = udp_ask(s, (host, port), msg)
                assert data == tag_of(host) + msg
                assert src == (host, port), "answer from %s" % fmt_addr(*src)
    for host, b in ((V4, b4), (V6, b6)):
        peers = b.peers()
        assert len(peers) == 3, "%s backend saw peers %r for 3 clients" % (host, peers)
        assert all(p[0] == host for p in peers), peers
        assert b.count() == 9
        # every datagram of one client came from the same peer
        by_peer = {}
        for peer, data in b.received():
            by_peer.setdefault(peer, set()).add(data.split(b" over ")[0].split(b"client ")[1])
        assert all(len(v) == 1 for v in by_peer.values()), by_peer


def test_udp_explicit_listen(proxy_factory, udp_tagged, udp_socks):
    """listen = 127.0.0.1:P, [::1]:P binds exactly those two."""
    b4, b6 = udp_tagged
    port = free_udp_dual_port()
    start(proxy_factory, udp_service("127.0.0.1:%d, [::1]:%d" % (port, port), b4, b6))
    assert {a for a, _ in udp_sockets(port)} == {"127.0.0.1:%d" % port, "[::1]:%d" % port}
    for host in (V4, V6):
        data, _ = udp_ask(udp_socks(host), (host, port), b"hi")
        assert data == tag_of(host) + b"hi"


def test_udp_fallback_to_other_family(proxy_factory, udp_tagged, udp_socks):
    """A service with one backend sends both client families there (INI
    mode)."""
    b4, b6 = udp_tagged
    p4, p6 = free_udp_dual_port(), free_udp_dual_port()
    while p6 == p4:
        p6 = free_udp_dual_port()
    start(proxy_factory, udp_service(p4, b4=b4, name="only4") +
          udp_service(p6, b6=b6, name="only6"))
    for host in (V4, V6):
        data, _ = udp_ask(udp_socks(host), (host, p4), b"to only4")
        assert data == tag_of(V4) + b"to only4", (host, data)
        data, _ = udp_ask(udp_socks(host), (host, p6), b"to only6")
        assert data == tag_of(V6) + b"to only6", (host, data)
    assert sorted(p[0] for p in b4.peers()) == [V4, V4]
    assert sorted(p[0] for p in b6.peers()) == [V6, V6]


def test_tcp_and_udp_on_one_port(proxy_factory, backends, udp_backends, udp_socks):
    """protocol = tcp, udp: TCP connections and UDP datagrams on the same
    port and addresses, each family to its own backends."""
    u4 = udp_tcp_backends(backends, udp_backends, V4, "v4")
    u6 = udp_tcp_backends(backends, udp_backends, V6, "v6")
    port = free_udp_dual_port()
    start(proxy_factory, udp_service(port, u4, u6, name="both", protocol="tcp, udp"))
    assert {a for a, _ in udp_sockets(port)} == {"0.0.0.0:%d" % port, "[::]:%d" % port}
    assert {a for a, _ in listen_sockets(port)} == {"0.0.0.0:%d" % port, "[::]:%d" % port}
    for _ in range(2):
        for host in (V4, V6):
            tag = "v4 AF_INET" if host == V4 else "v6 AF_INET6"
            assert tagged_echo(host, port, b"over tcp\n") == tag
            data, _ = udp_ask(udp_socks(host), (host, port), b"over udp")
            assert data == tag_of(host) + b"over udp"
    assert (len(u4.peers()), len(u6.peers())) == (2, 2)


# --------------------------------------------------------------------------
# datagrams

@pytest.mark.parametrize("host", [V4, V6])
def test_udp_datagram_sizes(proxy_factory, udp_backends, udp_socks, host):
    """0 bytes, 1, around the Ethernet MTU, jumbo, and the largest datagram
    of the family pass whole both ways (an echo backend returns each as it
    came); none counts as truncated."""
    b = udp_backends(host, "echo")
    port = free_udp_dual_port()
    mport = free_port()
    proxy = start(proxy_factory, udp_service(port, b4=b if host == V4 else None,
                                             b6=b if host == V6 else None), metrics=mport)
    largest = MAX_UDP4 if host == V4 else MAX_UDP6
    sizes = [0, 1, 0, 1472, 1473, 9000, 32768, largest - 1, largest, 0, largest]
    s = udp_socks(host)
    for i, n in enumerate(sizes):
        payload = pattern(n, 1000 + i)
        data, _ = udp_ask(s, (host, port), payload)
        assert len(data) == n and data == payload, \
            "%d-byte datagram came back as %d bytes" % (n, len(data))
    got = [len(d) for _, d in b.received()]
    assert got == sizes, "the backend received sizes %r" % got
    assert b.truncated == 0
    m = scrape(V4, mport)
    fam = FAMILY_LABEL[host]
    for direction in ("up", "down"):
        assert m.value("dualproxy_datagrams_total", service="dns", family=fam,
                       direction=direction, protocol="udp") == len(sizes)
        assert metric_or_zero(m, "dualproxy_datagrams_dropped_total", service="dns",
                              family=fam, direction=direction, protocol="udp",
                              reason="truncated") == 0
    assert m.value("dualproxy_bytes_total", service="dns", direction="up",
                   protocol="udp") == sum(sizes)
    assert m.value("dualproxy_bytes_total", service="dns", direction="down",
                   protocol="udp") == sum(sizes)
    assert proxy.running()


def recv_all(sock, quiet=0.5):
    """Every datagram that arrives until none has for `quiet` seconds."""
    got = []
    while True:
        r, _, _ = select.select([sock], [], [], quiet)
        if not r:
            return got
        got.append(sock.recv(UDP_BUF))


def gso_send(sock, data, dest, segment):
    """One send of `data` that the kernel cuts into datagrams of `segment`
    bytes (UDP_SEGMENT); False where the kernel has no UDP GSO."""
    try:
        sock.setsockopt(socket.SOL_UDP, UDP_SEGMENT, segment)
    except OSError:
        return False
    try:
        sock.sendto(data, dest)
    finally:
        sock.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 0)
    return True


@pytest.mark.parametrize("host", [V4, V6])
def test_udp_bursts_pass_whole_and_in_order(proxy_factory, udp_backends, udp_socks, host):
    """64 datagrams of 1,200 bytes sent back to back (a burst that fits the
    default socket buffers, as a QUIC server's flight) reach the other side,
    each whole and in order, both ways; datagrams the sender's kernel made
    with UDP GSO (one 9,500-byte send cut into 1,000-byte segments) arrive
    as the same 10 datagrams, not coalesced."""
    b = udp_backends(host, "silent")
    port = free_udp_dual_port()
    mport = free_port()
    start(proxy_factory, udp_service(port, b4=b if host == V4 else None,
                                     b6=b if host == V6 else None), metrics=mport)
    c = udp_socks(host)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    c.sendto(b"hello", (host, port))
    wait_until(lambda: b.count() == 1, T(3), what="the first datagram at the backend")
    peer = b.received()[0][0]
    burst = [b"%04d" % i + pattern(1196, i) for i in range(64)]
    for d in burst:  # down
        b.sock.sendto(d, peer)
    got = recv_all(c)
    assert [g[:4] for g in got] == [d[:4] for d in burst], \
        "down: %d of 64 datagrams, in the order %r" % (len(got), [g[:4] for g in got][:20])
    assert got == burst
    for d in burst:  # up
        c.sendto(d, (host, port))
    wait_until(lambda: b.count() == 65, T(3), what="64 datagrams at the backend")
    assert [d for _, d in b.received()[1:]] == burst
    big = pattern(9500, 95)
    segments = [big[i:i + 1000] for i in range(0, 9500, 1000)]
    if gso_send(b.sock, big, peer, 1000):
        got = recv_all(c)
        assert [len(g) for g in got] == [len(s) for s in segments] and got == segments, \
            "GSO down: datagrams of %r bytes" % [len(g) for g in got]
    if gso_send(c, big, (host, port), 1000):
        wait_until(lambda: b.count() >= 65 + 10, T(3), what="the GSO segments at the backend")
        time.sleep(0.1)
        got = [d for _, d in b.received()[65:]]
        assert [len(g) for g in got] == [len(s) for s in segments] and got == segments, \
            "GSO up: datagrams of %r bytes" % [len(g) for g in got]
    m = scrape(V4, mport)
    for reason in ("truncated", "no-socket", "buffer-full", "error"):
        for direction in ("up", "down"):
            assert metric_or_zero(m, "dualproxy_datagrams_dropped_total", service="dns",
                                  family=FAMILY_LABEL[host], direction=direction,
                                  protocol="udp", reason=reason) == 0, (reason, direction)


def test_udp_one_flow_per_client_port(proxy_factory, udp_tagged, udp_socks):
    """Two sockets on the same client address are two flows; one socket
    sending many datagrams is one flow (one peer at the backend)."""
    b4, _ = udp_tagged
    port = free_udp_dual_port()
    mport = free_port()
    start(proxy_factory, udp_service(port, b4=b4), metrics=mport)
    a, c = udp_socks(V4), udp_socks(V4)
    for i in range(20):
        assert udp_ask(a, (V4, port), b"a%d" % i)[0] == tag_of(V4) + b"a%d" % i
    assert udp_ask(c, (V4, port), b"c")[0] == tag_of(V4) + b"c"
    assert len(b4.peers()) == 2, b4.peers()
    m = scrape(V4, mport)
    assert m.value("dualproxy_connections_total", service="dns", family="ipv4",
                   protocol="udp") == 2
    assert m.value("dualproxy_connections_active", service="dns", protocol="udp") == 2


# --------------------------------------------------------------------------
# the end of a flow: idle, ICMP, and its log line

@pytest.mark.parametrize("host", [V4, V6])
def test_udp_flow_log_line(proxy_factory, udp_backends, udp_socks, host):
    """One line per flow when it ends, with its byte and datagram counts."""
    b = udp_backends(host, "echo")
    port = free_udp_dual_port()
    proxy = start(proxy_factory, udp_service(port, b4=b if host == V4 else None,
                                             b6=b if host == V6 else None,
                                             extra="idle_timeout = 1s"))
    s = udp_socks(host)
    sizes = [10, 200, 3000, 0]
    t0 = time.monotonic()
    for i, n in enumerate(sizes):
        payload = pattern(n, i)
        assert udp_ask(s, (host, port), payload)[0] == payload
    client = sock_addr(s)
    log = flow_log(proxy, client, timeout=T(4))
    elapsed = time.monotonic() - t0
    assert log["service"] == "dns"
    assert log["backend"] == b.fmt()
    assert (log["up"], log["down"]) == (sum(sizes), sum(sizes)), log
    assert (log["datagrams_up"], log["datagrams_down"]) == (4, 4), log
    assert log["end"] == "idle-timeout", log
    assert 1.0 <= log["duration"] <= elapsed + 0.1, (log, elapsed)
    assert len([f for f in flow_logs(proxy) if f["client"] == client]) == 1


@pytest.mark.parametrize("where", ["global", "service"])
def test_udp_idle_timeout_ends_flow(proxy_factory, udp_tagged, udp_socks, where):
    """With idle_timeout set ([global] or the service), an answered flow ends
    after that long without a datagram either way; the client's next
    datagram starts a new flow (a new peer at the backend)."""
    b4, b6 = udp_tagged
    port = free_udp_dual_port()
    mport = free_port()
    svc = udp_service(port, b4, b6, extra="idle_timeout = 1s" if where == "service" else "")
    proxy = start(proxy_factory, svc, metrics=mport,
                  global_lines="idle_timeout = %s" % ("1s" if where == "global" else "15m"))
    socks = {h: udp_socks(h) for h in (V4, V6)}
    t0 = time.monotonic()
    for host, s in socks.items():
        assert udp_ask(s, (host, port), b"first")[0] == tag_of(host) + b"first"
    for host, s in socks.items():
        log = flow_log(proxy, sock_addr(s), timeout=T(4))
        assert log["end"] == "idle-timeout", log
        assert log["duration"] >= 1.0, log
    assert time.monotonic() - t0 < 1 + T(2)
    m = scrape(V4, mport)
    assert m.value("dualproxy_connections_active", service="dns", protocol="udp") == 0
    for host, s in socks.items():
        assert udp_ask(s, (host, port), b"again")[0] == tag_of(host) + b"again"
    m = scrape(V4, mport)
    for fam in ("ipv4", "ipv6"):
        assert m.value("dualproxy_connections_total", service="dns", family=fam,
                       protocol="udp") == 2, "the datagram after the idle end made no new flow"
    assert m.value("dualproxy_connections_active", service="dns", protocol="udp") == 2


def test_udp_traffic_either_way_keeps_a_flow(proxy_factory, udp_backends, udp_socks):
    """idle_timeout = 1s: a client sending every 0.3 s keeps its flow for 2 s;
    so do datagrams from the backend alone (they reach the client)."""
    b = udp_backends(V4, "echo")
    port = free_udp_dual_port()
    proxy = start(proxy_factory, udp_service(port, b4=b, extra="idle_timeout = 1s"))
    up, down = udp_socks(V4), udp_socks(V4)
    assert udp_ask(up, (V4, port), b"hello")[0] == b"hello"
    assert udp_ask(down, (V4, port), b"hello")[0] == b"hello"
    up_peer, down_peer = b.peers()
    deadline = time.monotonic() + 2.0
    i = 0
    while time.monotonic() < deadline:
        assert udp_ask(up, (V4, port), b"up %d" % i)[0] == b"up %d" % i
        b.sock.sendto(b"push %d" % i, down_peer)  # the backend alone
        down.settimeout(T(2))
        data, _ = down.recvfrom(65536)
        assert data == b"push %d" % i
        time.sleep(0.3)
        i += 1
    assert not [f for f in flow_logs(proxy)
                if f["client"] in (sock_addr(up), sock_addr(down))], \
        "a flow with traffic every 0.3 s ended: %r" % flow_logs(proxy)
    assert b.peers() == [up_peer, down_peer], "the flows changed: %r" % b.peers()
    log = flow_log(proxy, sock_addr(down), timeout=T(3))
    assert log["datagrams_up"] == 1 and log["datagrams_down"] == 1 + i, log


def test_udp_default_idle_timeouts(proxy_factory, udp_backends, udp_socks):
    """No idle_timeout anywhere: a flow whose backend never answered ends
    after 30 s; one whose backend answered is still the same flow then
    (its timeout is longer: 120 s)."""
    silent = udp_backends(V4, "silent")
    echo = udp_backends(V4, "echo")
    p1, p2 = free_udp_dual_port(), free_udp_dual_port()
    while p2 == p1:
        p2 = free_udp_dual_port()
    proxy = proxy_factory(ini("""
        [global]
        log_level = debug
        drain_timeout = 300ms
        [quiet]
        listen = 127.0.0.1:%d
        backend4 = %s
        protocol = udp
        [answered]
        listen = 127.0.0.1:%d
        backend4 = %s
        protocol = udp
    """ % (p1, silent.fmt(), p2, echo.fmt())))
    q, a = udp_socks(V4), udp_socks(V4)
    t0 = time.monotonic()
    q.sendto(b"anyone?", (V4, p1))
    assert udp_ask(a, (V4, p2), b"hello")[0] == b"hello"
    wait_until(lambda: silent.count() == 1, T(2), what="the silent backend's datagram")
    time.sleep(max(0, 25 - (time.monotonic() - t0)))
    assert not flow_logs(proxy), "a flow ended before 25 s: %r" % flow_logs(proxy)
    log = flow_log(proxy, sock_addr(q), timeout=T(8))
    assert log["end"] == "idle-timeout", log
    assert 29.5 <= log["duration"] <= 30 + T(2), log
    assert time.monotonic() - t0 < 30 + T(3)
    # 30+ s idle, but answered: still the same flow
    assert udp_ask(a, (V4, p2), b"still there?")[0] == b"still there?"
    assert len(echo.peers()) == 1, "the answered flow ended within 30 s: %r" % echo.peers()
    assert not [f for f in flow_logs(proxy) if f["client"] == sock_addr(a)]


@pytest.mark.parametrize("host", [V4, V6])
def test_udp_icmp_unreachable_ends_flow(proxy_factory, udp_socks, host):
    """The backend's port is closed: its ICMP port unreachable ends the flow
    (end=connect-refused, backend_errors_total{reason="refused",
    protocol="udp"}); the client's next datagram is a new flow, refused too;
    no answer reaches the client."""
    dead = (host, unused_udp_port(host))
    port = free_udp_dual_port()
    mport = free_port()
    key = "backend4" if host == V4 else "backend6"
    proxy = start(proxy_factory, ini("""
        [dead]
        listen = %d
        %s = %s
        protocol = udp
    """ % (port, key, fmt_addr(*dead))), metrics=mport)
    s = udp_socks(host)
    client = sock_addr(s)
    t0 = time.monotonic()
    s.sendto(b"hello?", (host, port))
    log = flow_log(proxy, client, timeout=T(3))
    assert time.monotonic() - t0 < T(2), "the ICMP error did not end the flow at once"
    assert log["end"] == "connect-refused", log
    assert log["backend"] == fmt_addr(*dead)
    assert log["datagrams_up"] == 1 and log["datagrams_down"] == 0, log
    wait_metric(V4, mport, "dualproxy_backend_errors_total", 1, service="dead",
                reason="refused", protocol="udp")
    since = proxy.mark()
    s.sendto(b"hello again?", (host, port))
    log = flow_log(proxy, client, timeout=T(3), since=since)
    assert log["end"] == "connect-refused", log
    m = wait_metric(V4, mport, "dualproxy_backend_errors_total", 2, service="dead",
                    reason="refused", protocol="udp")
    assert m.value("dualproxy_connections_total", service="dead",
                   family=FAMILY_LABEL[host], protocol="udp") == 2
    assert m.value("dualproxy_connections_active", service="dead", protocol="udp") == 0
    udp_quiet(s, 0.2)
    assert proxy.running()


# --------------------------------------------------------------------------
# the allowlist

def test_udp_allowlist_before_flow(proxy_factory, udp_tagged, udp_socks):
    """allow = 127.0.0.2/32: a client from 127.0.0.2 is served; 127.0.0.1
    and ::1 (a family with no listed prefix) are denied: no flow, nothing
    reaches a backend, nothing comes back, denied_total{protocol="udp"}
    counts each datagram."""
    b4, b6 = udp_tagged
    port = free_udp_dual_port()
    mport = free_port()
    proxy = start(proxy_factory, udp_service(port, b4, b6, extra="allow = 127.0.0.2/32"),
                  metrics=mport)
    ok = udp_socks(V4, bind="127.0.0.2")
    assert udp_ask(ok, (V4, port), b"allowed")[0] == tag_of(V4) + b"allowed"
    denied4, denied6 = udp_socks(V4), udp_socks(V6)
    for i in range(3):
        denied4.sendto(b"denied %d" % i, (V4, port))
        denied6.sendto(b"denied %d" % i, (V6, port))
    udp_quiet(denied4, 0.3)
    udp_quiet(denied6, 0.1)
    m = wait_metric(V4, mport, "dualproxy_denied_total", 6, service="dns", protocol="udp")
    assert [d for _, d in b4.received()] == [b"allowed"] and b6.received() == []
    assert m.value("dualproxy_connections_total", service="dns", family="ipv4",
                   protocol="udp") == 1
    assert m.value("dualproxy_connections_total", service="dns", family="ipv6",
                   protocol="udp") == 0
    assert m.value("dualproxy_connections_active", service="dns", protocol="udp") == 1
    # the allowed flow is unaffected
    assert udp_ask(ok, (V4, port), b"still")[0] == tag_of(V4) + b"still"
    assert len(b4.peers()) == 1
    assert not [f for f in flow_logs(proxy) if f["client"] != sock_addr(ok)]


# --------------------------------------------------------------------------
# metrics

def test_udp_metrics_series_and_values(proxy_factory, backends, udp_backends, udp_socks):
    """A `protocol = tcp, udp` service: the per-service series carry
    protocol="tcp" and protocol="udp" with the traffic of each;
    dualproxy_datagrams_total counts by family and direction; active flows
    go back to 0 when they end."""
    u4 = udp_tcp_backends(backends, udp_backends, V4, "v4")
    u6 = udp_tcp_backends(backends, udp_backends, V6, "v6")
    port = free_udp_dual_port()
    mport = free_port()
    proxy = start(proxy_factory, udp_service(port, u4, u6, name="both", protocol="tcp, udp",
                                             extra="idle_timeout = 1s"), metrics=mport)
    # UDP: two flows over IPv4 (2 and 3 datagrams), one over IPv6 (1)
    plan = [(V4, [b"a" * 10, b"b" * 20]), (V4, [b"c" * 30, b"d" * 40, b""]), (V6, [b"e" * 50])]
    up = {V4: 0, V6: 0}
    dgrams = {V4: 0, V6: 0}
    socks = []
    for host, payloads in plan:
        s = udp_socks(host)
        socks.append(s)
        for p in payloads:
            assert udp_ask(s, (host, port), p)[0] == tag_of(host) + p
            up[host] += len(p)
            dgrams[host] += 1
    down = sum(up.values()) + sum(dgrams[h] * len(tag_of(h)) for h in (V4, V6))
    # TCP: one connection per family
    assert tagged_echo(V4, port, b"tcp four\n") == "v4 AF_INET"
    assert tagged_echo(V6, port, b"tcp six\n") == "v6 AF_INET6"
    tcp_up = len(b"tcp four\n") + len(b"tcp six\n")
    tcp_down = tcp_up + len("v4 AF_INET\n") + len("v6 AF_INET6\n")

    m = wait_metric(V4, mport, "dualproxy_connections_active", 0, service="both",
                    protocol="tcp")
    assert m.type.get("dualproxy_datagrams_total") == "counter"
    assert m.value("dualproxy_connections_total", service="both", family="ipv4",
                   protocol="udp") == 2
    assert m.value("dualproxy_connections_total", service="both", family="ipv6",
                   protocol="udp") == 1
    assert m.value("dualproxy_connections_total", service="both", family="ipv4",
                   protocol="tcp") == 1
    assert m.value("dualproxy_connections_total", service="both", family="ipv6",
                   protocol="tcp") == 1
    assert m.value("dualproxy_connections_active", service="both", protocol="udp") == 3
    assert m.value("dualproxy_bytes_total", service="both", direction="up",
                   protocol="udp") == sum(up.values())
    assert m.value("dualproxy_bytes_total", service="both", direction="down",
                   protocol="udp") == down
    assert m.value("dualproxy_bytes_total", service="both", direction="up",
                   protocol="tcp") == tcp_up
    assert m.value("dualproxy_bytes_total", service="both", direction="down",
                   protocol="tcp") == tcp_down
    for host in (V4, V6):
        for direction in ("up", "down"):
            assert m.value("dualproxy_datagrams_total", service="both",
                           family=FAMILY_LABEL[host], direction=direction,
                           protocol="udp") == dgrams[host], (host, direction)
    for reason in ("truncated", "no-socket", "buffer-full", "error"):
        for host in (V4, V6):
            for direction in ("up", "down"):
                assert metric_or_zero(m, "dualproxy_datagrams_dropped_total", service="both",
                                      family=FAMILY_LABEL[host], direction=direction,
                                      protocol="udp", reason=reason) == 0, reason
    for name in ("dualproxy_denied_total", "dualproxy_source_limited_total"):
        assert metric_or_zero(m, name, service="both", protocol="udp") == 0, name
    assert metric_or_zero(m, "dualproxy_refused_total", service="both", reason="full",
                          protocol="udp") == 0
    assert metric_or_zero(m, "dualproxy_backend_errors_total", service="both",
                          reason="refused", protocol="udp") == 0
    # every per-service series of the service names its protocol
    for (name, labels), _ in m.samples.items():
        d = dict(labels)
        if d.get("service") == "both":
            assert d.get("protocol") in ("tcp", "udp"), (name, d)
    # after idle_timeout: no flow left, the totals stay
    for s in socks:
        flow_log(proxy, sock_addr(s), timeout=T(4))
    m = wait_metric(V4, mport, "dualproxy_connections_active", 0, service="both",
                    protocol="udp")
    assert m.value("dualproxy_connections_total", service="both", family="ipv4",
                   protocol="udp") == 2
