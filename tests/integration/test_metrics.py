"""The Prometheus endpoint: `[global] metrics_listen = ADDR:PORT` (or a bare
port: 0.0.0.0 and [::]).

* Exact counters: a known number of connections per family, each moving a
  known number of bytes up and down, give exactly that in
  dualproxy_connections_total{family} and dualproxy_bytes_total{direction};
  with proxy_protocol on, the header is not counted as payload;
  connections_active counts open relays and returns to 0.
* A refused backend: dualproxy_backend_errors_total{reason="refused"}.
* Reloads: reloads_total{result="success"|"failure"}; counters survive.
* HELP and TYPE for every series; build_info carries the version of -V.
* HTTP: GET/HEAD /metrics, GET /healthz, 404, 405, 400, 431, HTTP/1.0,
  Connection: close; junk, binary, oversized heads, half requests, and more
  silent clients than the endpoint serves at once: each gets a sane status
  line or is closed, and afterwards /metrics still answers and the proxy
  still relays."""

import random
import re
import socket
import threading
import time

import pytest

from conftest import (V4, V6, T, HttpResponse, connect, expect_rst, fmt_addr,
                      free_dual_port, free_port, http_get, http_raw, ini, pattern,
                      proxy_header_v1, proxy_header_v2, recv_exact, recv_until_eof,
                      run_dualproxy, scrape, start_recorder, unused_port, wait_closed,
                      wait_metric, wait_until)

UP = 1000
DOWN = 2500

SERIES = {
    "dualproxy_connections_total": "counter",
    "dualproxy_connections_active": "gauge",
    "dualproxy_bytes_total": "counter",
    "dualproxy_backend_errors_total": "counter",
    "dualproxy_denied_total": "counter",
    "dualproxy_reloads_total": "counter",
    "dualproxy_build_info": "gauge",
}
REASONS = ("refused", "timeout", "unreachable", "failed", "reset")


def down_reply(data):
    """The recorder's answer after the client's EOF: DOWN bytes."""
    return pattern(DOWN, 99)


@pytest.fixture
def sinks(backends):
    """Recorder backends that answer DOWN bytes: {V4: (addr, rec), V6: ...}."""
    return {V4: start_recorder(backends, V4, down_reply),
            V6: start_recorder(backends, V6, down_reply)}


def svc(name, port, sinks, extra=""):
    return """
        [%s]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (name, port, fmt_addr(*sinks[V4][0]), fmt_addr(*sinks[V6][0])) + extra


def ports(n):
    out = []
    while len(out) < n:
        p = free_dual_port()
        if p not in out:
            out.append(p)
    return out


def open_clients(plan, port):
    """plan: a list of hosts. Opens one connection per entry and sends UP
    bytes on each (no EOF yet). Returns the sockets."""
    socks = []
    for i, host in enumerate(plan):
        s = connect(host, port)
        s.sendall(pattern(UP, i))
        socks.append(s)
    return socks


def finish_clients(socks):
    """EOF on each, then read the DOWN bytes and EOF back."""
    for s in socks:
        s.shutdown(socket.SHUT_WR)
    for s in socks:
        got = recv_until_eof(s)
        assert got == pattern(DOWN, 99), "client got %d bytes, expected %d" % (len(got), DOWN)
        s.close()


def check_headers(m):
    for name in m.names():
        assert name in m.help and m.help[name], "no HELP for %s" % name
        assert name in m.type, "no TYPE for %s" % name
    for name, typ in SERIES.items():
        assert name in m.names(), "series %s missing:\n%s" % (name, m.text)
        assert m.type[name] == typ, (name, m.type[name])
    # the HELP/TYPE lines precede the samples of their family
    seen = set()
    for line in m.text.splitlines():
        if line.startswith("# TYPE "):
            seen.add(line.split()[2])
        elif line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            assert name in seen, "sample before its TYPE line: %r" % line


def assert_service_zero(m, name):
    for fam in ("ipv4", "ipv6"):
        assert m.value("dualproxy_connections_total", protocol="tcp", service=name, family=fam) == 0
    assert m.value("dualproxy_connections_active", protocol="tcp", service=name) == 0
    for d in ("up", "down"):
        assert m.value("dualproxy_bytes_total", protocol="tcp", service=name, direction=d) == 0
    for r in REASONS:
        assert m.value("dualproxy_backend_errors_total", protocol="tcp", service=name, reason=r) == 0
    assert m.value("dualproxy_denied_total", protocol="tcp", service=name) == 0


# --------------------------------------------------------------------------
# exact counters

def test_metrics_exact_counts(proxy_factory, sinks):
    plain, pp = ports(2)
    mport = free_port()
    proxy_factory(ini("""
        [global]
        metrics_listen = 127.0.0.1:%d
    """ % mport + svc("plain", plain, sinks) + svc("pp", pp, sinks, "proxy_protocol = v2\n")))

    m = scrape(V4, mport)
    check_headers(m)
    assert_service_zero(m, "plain")
    assert_service_zero(m, "pp")
    assert m.value("dualproxy_reloads_total", result="success") == 0
    assert m.value("dualproxy_reloads_total", result="failure") == 0

    plan = [V4, V6, V4, V6, V4]  # 3 IPv4 + 2 IPv6
    socks_plain = open_clients(plan, plain)
    socks_pp = open_clients(plan, pp)
    # all ten are open: the gauge sees them (the backends have their bytes)
    # (each backend serves both services: 3 + 3 IPv4, 2 + 2 IPv6 connections)
    for host, n in ((V4, 6), (V6, 4)):
        rec = sinks[host][1]
        wait_until(lambda: rec.accepted == n, T(5), what="%d backend accepts" % n)
    m = scrape(V4, mport)
    assert m.value("dualproxy_connections_active", protocol="tcp", service="plain") == 5
    assert m.value("dualproxy_connections_active", protocol="tcp", service="pp") == 5
    finish_clients(socks_plain)
    finish_clients(socks_pp)

    wait_metric(V4, mport, "dualproxy_connections_active", 0, protocol="tcp", service="plain")
    m = wait_metric(V4, mport, "dualproxy_connections_active", 0, protocol="tcp", service="pp")
    check_headers(m)
    for name in ("plain", "pp"):
        assert m.value("dualproxy_connections_total", protocol="tcp", service=name, family="ipv4") == 3, name
        assert m.value("dualproxy_connections_total", protocol="tcp", service=name, family="ipv6") == 2, name
        assert m.value("dualproxy_bytes_total", protocol="tcp", service=name, direction="up") == 5 * UP, name
        assert m.value("dualproxy_bytes_total", protocol="tcp", service=name, direction="down") == 5 * DOWN, name
        for r in REASONS:
            assert m.value("dualproxy_backend_errors_total", protocol="tcp", service=name, reason=r) == 0
        assert m.value("dualproxy_denied_total", protocol="tcp", service=name) == 0

    # the pp backends did get the headers (16 + 12 for IPv4, 16 + 36 for IPv6):
    # so the header was sent and yet not counted
    _, conns4, _ = sinks[V4][1].snapshot()
    _, conns6, _ = sinks[V6][1].snapshot()
    assert sorted(len(c) for c in conns4) == [UP] * 3 + [UP + 28] * 3
    assert sorted(len(c) for c in conns6) == [UP] * 2 + [UP + 52] * 2


@pytest.mark.parametrize("pp", ["off", "v1", "v2"])
def test_metrics_counts_large_transfer(proxy_factory, backends, pp):
    """Bulk transfers (the splice path) are counted exactly too; the client
    sends at once, so with proxy_protocol the header and the first client
    bytes may share a buffer: only the payload is counted, and the backend
    gets header + payload exactly."""
    up, down = 3_000_000, 5_000_001
    b4, rec = start_recorder(backends, V4, lambda d: pattern(down, 5))
    port = free_dual_port()
    mport = free_port()
    proxy_factory(ini("""
        [global]
        metrics_listen = 127.0.0.1:%d
        [bulk]
        listen = %d
        backend4 = %s
        proxy_protocol = %s
    """ % (mport, port, fmt_addr(*b4), pp)))
    for i, host in enumerate((V4, V6)):
        with connect(host, port) as s:
            src, dst = s.getsockname()[:2], s.getpeername()[:2]
            data = pattern(up, 6 + i)
            t = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
            t.start()
            got = recv_until_eof(s, timeout=T(30))
            t.join(T(30))
            assert len(got) == down and got == pattern(down, 5)
        header = {"off": b"", "v1": proxy_header_v1(src, dst),
                  "v2": proxy_header_v2(src, dst)}[pp]
        received = rec.data(i)
        assert len(received) == len(header) + up
        assert received == header + data
    m = wait_metric(V4, mport, "dualproxy_connections_active", 0, protocol="tcp", service="bulk")
    assert m.value("dualproxy_bytes_total", protocol="tcp", service="bulk", direction="up") == 2 * up
    assert m.value("dualproxy_bytes_total", protocol="tcp", service="bulk", direction="down") == 2 * down
    assert m.value("dualproxy_connections_total", protocol="tcp", service="bulk", family="ipv4") == 1
    assert m.value("dualproxy_connections_total", protocol="tcp", service="bulk", family="ipv6") == 1


def test_backend_refused_counted(proxy_factory):
    port = free_dual_port()
    mport = free_port()
    proxy_factory(ini("""
        [global]
        metrics_listen = 127.0.0.1:%d
        [dead]
        listen = %d
        backend4 = 127.0.0.1:%d
        backend6 = [::1]:%d
    """ % (mport, port, unused_port(V4), unused_port(V6))))
    for i, host in enumerate([V4, V6, V4]):
        expect_rst(host, port)  # closed with RST, not a byte
        wait_metric(V4, mport, "dualproxy_backend_errors_total", i + 1,
                    protocol="tcp", service="dead", reason="refused")
    m = wait_metric(V4, mport, "dualproxy_connections_active", 0, protocol="tcp", service="dead")
    for r in REASONS:
        if r != "refused":
            assert m.value("dualproxy_backend_errors_total", protocol="tcp", service="dead", reason=r) == 0, r
    assert m.value("dualproxy_bytes_total", protocol="tcp", service="dead", direction="up") == 0
    assert m.value("dualproxy_bytes_total", protocol="tcp", service="dead", direction="down") == 0


def test_backend_timeout_counted(proxy_factory, backends):
    hole4 = backends.start_blackhole(V4)
    hole6 = backends.start_blackhole(V6)
    port = free_dual_port()
    mport = free_port()
    proxy_factory(ini("""
        [global]
        metrics_listen = 127.0.0.1:%d
        [hole]
        listen = %d
        backend4 = %s
        backend6 = %s
        connect_timeout = 300ms
    """ % (mport, port, fmt_addr(*hole4), fmt_addr(*hole6))))
    socks = [connect(V4, port), connect(V6, port)]
    m = scrape(V4, mport)
    assert m.value("dualproxy_connections_active", protocol="tcp", service="hole") == 2
    for s in socks:
        try:
            wait_closed(s, T(5))
        except ConnectionResetError:
            pass
        s.close()
    m = wait_metric(V4, mport, "dualproxy_backend_errors_total", 2,
                    protocol="tcp", service="hole", reason="timeout")
    assert m.value("dualproxy_backend_errors_total", protocol="tcp", service="hole", reason="refused") == 0
    wait_metric(V4, mport, "dualproxy_connections_active", 0, protocol="tcp", service="hole")


def test_backend_reset_counted(proxy_factory, backends):
    """A backend that resets mid-connection: reason="reset"; the bytes that
    did flow are counted."""
    b4 = backends.start_reset_after(V4, reply=b"bye")
    port = free_dual_port()
    mport = free_port()
    proxy_factory(ini("""
        [global]
        metrics_listen = 127.0.0.1:%d
        [flaky]
        listen = %d
        backend4 = %s
    """ % (mport, port, fmt_addr(*b4))))
    with connect(V4, port) as s:
        s.sendall(b"hello")
        assert recv_exact(s, 3) == b"bye"
        wait_closed(s, T(5))
    m = wait_metric(V4, mport, "dualproxy_backend_errors_total", 1,
                    protocol="tcp", service="flaky", reason="reset")
    m = wait_metric(V4, mport, "dualproxy_connections_active", 0, protocol="tcp", service="flaky")
    assert m.value("dualproxy_bytes_total", protocol="tcp", service="flaky", direction="up") == 5
    assert m.value("dualproxy_bytes_total", protocol="tcp", service="flaky", direction="down") == 3
    for r in ("refused", "timeout", "unreachable", "failed"):
        assert m.value("dualproxy_backend_errors_total", protocol="tcp", service="flaky", reason=r) == 0


def test_build_info_matches_binary(proxy_factory, sinks):
    port = free_dual_port()
    mport = free_port()
    proxy_factory(ini("""
        [global]
        metrics_listen = 127.0.0.1:%d
    """ % mport + svc("web", port, sinks)))
    version = run_dualproxy("-V").stdout.split()[-1]
    m = scrape(V4, mport)
    assert m.value("dualproxy_build_info", version=version) == 1, m.text


# --------------------------------------------------------------------------
# reloads

def traffic(port, hosts):
    finish_clients(open_clients(hosts, port))


def test_reload_counters(proxy_factory, sinks, write_config):
    web, extra = ports(2)
    mport = free_port()
    head = """
        [global]
        metrics_listen = 127.0.0.1:%d
    """ % mport
    proxy = proxy_factory(ini(head + svc("web", web, sinks)), readable=True)
    traffic(web, [V4, V6, V6])
    wait_metric(V4, mport, "dualproxy_connections_active", 0, protocol="tcp", service="web")

    # a good reload that adds a service
    assert proxy.reload_ok(ini(head + svc("web", web, sinks) + svc("extra", extra, sinks))) \
        == (2, 2, 0)
    m = scrape(V4, mport)
    assert m.value("dualproxy_reloads_total", result="success") == 1
    assert m.value("dualproxy_reloads_total", result="failure") == 0
    assert m.value("dualproxy_connections_total", protocol="tcp", service="web", family="ipv4") == 1
    assert m.value("dualproxy_connections_total", protocol="tcp", service="web", family="ipv6") == 2
    assert m.value("dualproxy_bytes_total", protocol="tcp", service="web", direction="up") == 3 * UP
    assert m.value("dualproxy_bytes_total", protocol="tcp", service="web", direction="down") == 3 * DOWN
    assert_service_zero(m, "extra")
    check_headers(m)

    # a broken file: failure counted, nothing lost
    ok, lines = proxy.reload(ini(head + svc("web", web, sinks) + "\n[broken\n"))
    assert not ok, "\n".join(lines)
    m = scrape(V4, mport)
    assert m.value("dualproxy_reloads_total", result="success") == 1
    assert m.value("dualproxy_reloads_total", result="failure") == 1
    assert m.value("dualproxy_connections_total", protocol="tcp", service="web", family="ipv6") == 2

    # the counters carry on from where they were
    traffic(web, [V4])
    traffic(extra, [V6])
    wait_metric(V4, mport, "dualproxy_connections_active", 0, protocol="tcp", service="web")
    m = wait_metric(V4, mport, "dualproxy_connections_active", 0, protocol="tcp", service="extra")
    assert m.value("dualproxy_connections_total", protocol="tcp", service="web", family="ipv4") == 2
    assert m.value("dualproxy_connections_total", protocol="tcp", service="web", family="ipv6") == 2
    assert m.value("dualproxy_bytes_total", protocol="tcp", service="web", direction="up") == 4 * UP
    assert m.value("dualproxy_bytes_total", protocol="tcp", service="web", direction="down") == 4 * DOWN
    assert m.value("dualproxy_connections_total", protocol="tcp", service="extra", family="ipv6") == 1

    # a second good reload, back to a good file
    assert proxy.reload_ok(ini(head + svc("web", web, sinks) + svc("extra", extra, sinks))) \
        == (0, 4, 0)
    m = scrape(V4, mport)
    assert m.value("dualproxy_reloads_total", result="success") == 2
    assert m.value("dualproxy_reloads_total", result="failure") == 1
    assert m.value("dualproxy_bytes_total", protocol="tcp", service="web", direction="up") == 4 * UP


def test_reload_failure_keeps_endpoint(proxy_factory, sinks):
    """A reload that fails validation keeps the metrics endpoint answering."""
    web, = ports(1)
    mport = free_port()
    head = """
        [global]
        metrics_listen = 127.0.0.1:%d
    """ % mport
    proxy = proxy_factory(ini(head + svc("web", web, sinks)), readable=True)
    ok, lines = proxy.reload(ini(head + """
        [web]
        listen = %d
        backend4 = 127.0.0.1:notaport
    """ % web))
    assert not ok
    m = scrape(V4, mport)
    assert m.value("dualproxy_reloads_total", result="failure") == 1
    assert m.value("dualproxy_reloads_total", result="success") == 0
    traffic(web, [V4])


# --------------------------------------------------------------------------
# HTTP

@pytest.fixture
def endpoint(proxy_factory, sinks):
    """A proxy with metrics on 127.0.0.1:M and one service 'web' on P.
    Returns (M, P)."""
    port, = ports(1)
    mport = free_port()
    proxy_factory(ini("""
        [global]
        metrics_listen = 127.0.0.1:%d
    """ % mport + svc("web", port, sinks)))
    return mport, port


def test_http_routes(endpoint):
    mport, _ = endpoint
    r = http_get(V4, mport, "/metrics")
    assert r.status == 200
    assert r.headers.get("connection", "").lower() == "close"
    assert int(r.headers["content-length"]) == len(r.body)
    assert "dualproxy_connections_total" in r.text()

    h = http_get(V4, mport, "/metrics", method="HEAD")
    assert h.status == 200 and h.body == b""
    assert int(h.headers["content-length"]) > 0

    r = http_get(V4, mport, "/healthz")
    assert r.status == 200 and r.body == b"ok\n"

    r = http_get(V4, mport, "/metrics", version="HTTP/1.0")
    assert r.status == 200 and "dualproxy_build_info" in r.text()

    assert http_get(V4, mport, "/").status == 404
    assert http_get(V4, mport, "/metricsx").status == 404
    assert http_get(V4, mport, "/nope").status == 404
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        assert http_get(V4, mport, "/metrics", method=method).status == 405, method


def test_bare_port_serves_both_families(proxy_factory, sinks):
    port, = ports(1)
    mport = free_dual_port()
    proxy_factory(ini("""
        [global]
        metrics_listen = %d
    """ % mport + svc("web", port, sinks)))
    assert scrape(V4, mport).value("dualproxy_denied_total", protocol="tcp", service="web") == 0
    assert scrape(V6, mport).value("dualproxy_denied_total", protocol="tcp", service="web") == 0
    assert http_get(V6, mport, "/healthz").body == b"ok\n"


def expect_status_or_closed(raw_response, allowed, what):
    """A response is either nothing (closed) or starts with a valid status
    line whose code is in `allowed`."""
    if raw_response == b"":
        return None
    r = HttpResponse(raw_response)
    assert r.status in allowed, "%s: got %r" % (what, r.status_line)
    return r.status


def send_and_collect(port, data, timeout=None):
    """Send `data` (ignoring a reset while sending), then read until the
    server closes. Returns (bytes received, 'eof'|'reset')."""
    s = connect(V4, port)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        kind, _, got = wait_closed(s, T(8) if timeout is None else timeout)
        return got, kind
    finally:
        s.close()


def test_http_junk(endpoint):
    mport, port = endpoint
    rnd = random.Random(1234)
    cases = [
        ("garbage", b"hello world, this is not HTTP\r\n\r\n", {400}),
        ("no version", b"GET /metrics\r\n\r\n", {400}),
        ("bad version", b"GET /metrics HTTP/2.0\r\n\r\n", {400}),
        ("empty head", b"\r\n\r\n", {400}),
        ("bare LF", b"GET /healthz HTTP/1.1\n\n", {200}),
        ("binary", bytes(rnd.randrange(256) for _ in range(2000)) + b"\r\n\r\n", {400, 405}),
        ("nul bytes", b"\x00" * 300 + b"\r\n\r\n", {400}),
        ("lowercase", b"get /metrics HTTP/1.1\r\n\r\n", {400, 405}),
        ("http/1.0", b"GET /metrics HTTP/1.0\r\n\r\n", {200}),
    ]
    for what, data, allowed in cases:
        got, kind = send_and_collect(mport, data)
        status = expect_status_or_closed(got, allowed, what)
        assert status is not None, "%s: closed without a response" % what

    # a head of 10 KB without end: 431 (the rest of our request may make the
    # close a reset; then whatever arrived must still be that 431)
    big = b"GET /metrics HTTP/1.1\r\nX-Filler: " + b"a" * 10240 + b"\r\n\r\n"
    got, kind = send_and_collect(mport, big)
    expect_status_or_closed(got, {431}, "10 KB head")
    big = b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 2000
    got, kind = send_and_collect(mport, big)
    expect_status_or_closed(got, {431}, "10 KB of header lines")

    # half a request, then close
    for part in (b"GET /metr", b"GET /metrics HTTP/1.1\r\nHost: x\r\n", b"\x16\x03\x01"):
        with connect(V4, mport) as s:
            s.sendall(part)

    # still serving
    assert scrape(V4, mport).value("dualproxy_connections_active", protocol="tcp", service="web") == 0
    traffic(port, [V4, V6])
    assert http_get(V4, mport, "/healthz").body == b"ok\n"


def test_http_binary_without_end_is_closed(endpoint):
    """Bytes that never form a head: closed at the 5 s timeout (or answered
    with an error status), never hanging forever."""
    mport, _ = endpoint
    data = bytes(random.Random(9).randrange(1, 256) for _ in range(1000)).replace(b"\n", b"")
    start = time.monotonic()
    got, kind = send_and_collect(mport, data, timeout=T(5) + 3)
    expect_status_or_closed(got, {400, 405, 408, 431}, "binary without end")
    assert time.monotonic() - start < T(5) + 3


def test_http_silent_clients(endpoint):
    """40 parallel clients that send nothing: each is closed (at most 32
    are served at once, a silent one is closed after 5 s); meanwhile and
    afterwards the proxy relays, and /metrics answers again."""
    mport, port = endpoint
    socks = [connect(V4, mport) for _ in range(40)]
    opened = time.monotonic()
    closed_at = [None] * len(socks)
    results = [None] * len(socks)

    def watch(i, s):
        try:
            kind, _, data = wait_closed(s, T(5) + 5)
            results[i] = (kind, data)
        except AssertionError as e:
            results[i] = ("open", str(e))
        closed_at[i] = time.monotonic() - opened

    threads = [threading.Thread(target=watch, args=(i, s)) for i, s in enumerate(socks)]
    for t in threads:
        t.start()
    # relaying goes on while the endpoint is saturated
    traffic(port, [V4, V6])
    for t in threads:
        t.join(T(5) + 10)
    for s in socks:
        s.close()
    still_open = [i for i, r in enumerate(results) if r is None or r[0] == "open"]
    assert not still_open, "%d silent clients never closed" % len(still_open)
    for kind, data in results:
        expect_status_or_closed(data, {400, 408, 503}, "silent client")
    early = [t for t in closed_at if t < 2.0]
    late = [t for t in closed_at if t >= 4.0]
    assert len(early) >= 8, "at most 32 clients at once: %d of 40 closed early" % len(early)
    assert late, "no silent client was kept until the 5 s timeout: %r" % sorted(closed_at)
    assert max(closed_at) < T(5) + 4, sorted(closed_at)
    m = scrape(V4, mport)
    assert m.value("dualproxy_connections_total", protocol="tcp", service="web", family="ipv4") == 1
    assert m.value("dualproxy_connections_total", protocol="tcp", service="web", family="ipv6") == 1
    traffic(port, [V4])


def test_http_many_sequential_scrapes(endpoint):
    """No leak of endpoint slots: more than 32 scrapes in a row all work."""
    mport, _ = endpoint
    for _ in range(100):
        assert http_get(V4, mport, "/healthz").status == 200


def test_http_request_in_pieces(endpoint):
    """A head that arrives in several segments is answered once complete."""
    mport, _ = endpoint
    with connect(V4, mport) as s:
        for piece in (b"GET /met", b"rics HTTP/1.1\r\nHo", b"st: x\r\n", b"\r\n"):
            s.sendall(piece)
            time.sleep(0.05)
        r = HttpResponse(recv_until_eof(s))
    assert r.status == 200 and b"dualproxy_build_info" in r.body


def test_http_one_request_per_connection(endpoint):
    """Pipelined requests: only the first is answered, then the server closes."""
    mport, _ = endpoint
    raw = http_raw(V4, mport, b"GET /healthz HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n")
    r = HttpResponse(raw)
    assert r.status == 200 and r.body == b"ok\n", raw
    assert raw.count(b"HTTP/1.") == 1, raw


@pytest.mark.parametrize("size,status", [(4096, 200), (4097, 431)])
def test_http_head_size_limit(endpoint, size, status):
    """A head of 4096 bytes (end included) is served; one byte more is 431."""
    mport, _ = endpoint
    start = b"GET /healthz HTTP/1.1\r\nX-Pad: "
    end = b"\r\n\r\n"
    head = start + b"p" * (size - len(start) - len(end)) + end
    assert len(head) == size
    got, kind = send_and_collect(mport, head)
    assert got, "closed without a response (%s)" % kind
    assert HttpResponse(got).status == status, got[:80]
