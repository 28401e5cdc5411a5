"""Backend failures and timeouts: a refused backend closes the client at once
(end=connect-refused); a backend whose SYNs are dropped closes the client
after connect_timeout (end=connect-timeout); idle connections are closed after
idle_timeout (end=idle-timeout) while active ones are kept; a reset from
either side ends the connection with end=client-reset / end=backend-reset.
Global values and per-service overrides are both exercised."""

import socket
import struct
import threading
import time

import pytest

from conftest import (V4, V6, T, connect, family_of, fmt_addr, free_dual_port,
                      ini, local_addr, pattern, recv_exact, unused_port,
                      wait_closed, wait_until)


def start_proxy(proxy_factory, name, b4=None, b6=None, glob="", svc="", port=None,
                wrapper=()):
    """dualproxy at log_level debug with one service `name` on port (default:
    a free port of both families), to backends b4 and b6 (either may be
    None); glob and svc are more lines for [global] and for the service;
    wrapper as for proxy_factory. Returns (proxy, port)."""
    if port is None:
        port = free_dual_port()
    lines = ["[global]", "log_level = debug", glob, "[%s]" % name, "listen = %d" % port]
    for key, b in (("backend4", b4), ("backend6", b6)):
        if b is not None:
            lines.append("%s = %s" % (key, fmt_addr(*b)))
    lines.append(svc)
    return proxy_factory(ini("\n".join(lines)), wrapper=wrapper), port


def of_family(host, b):
    """(b4, b6) for start_proxy: b as the backend of host's family only."""
    return (b, None) if family_of(host) == socket.AF_INET else (None, b)


def connect_expect_close(host, port, timeout):
    """Connect (from a known local address) and wait for the proxy to close
    the connection. The RST may even beat the end of connect(). Returns
    (local address, 'eof'|'reset', data received)."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        s.bind((host, 0))
        addr = local_addr(s)
        s.settimeout(T(5))
        try:
            s.connect((host, port))
        except ConnectionResetError:
            return addr, "reset", b""
        kind, _, data = wait_closed(s, timeout)
        return addr, kind, data
    finally:
        s.close()


BOTH = pytest.mark.parametrize("host", [V4, V6], ids=["ipv4", "ipv6"])


def test_refused_backend(proxy_factory):
    dead4 = (V4, unused_port(V4))
    dead6 = (V6, unused_port(V6))
    proxy, port = start_proxy(proxy_factory, "dead", dead4, dead6, glob="connect_timeout = 5s")
    for host, dead in ((V4, dead4), (V6, dead6)):
        client, kind, data = connect_expect_close(host, port, T(1.0))
        assert data == b""
        assert kind in ("eof", "reset")
        log = proxy.conn_log(client)
        assert log["service"] == "dead"
        assert log["backend"] == fmt_addr(*dead)
        assert log["end"] == "connect-refused", log
        assert log["up"] == 0 and log["down"] == 0, log


def test_refused_backend_many(proxy_factory):
    """50 refused connections in a row: each closed at once, the daemon
    stays up and still serves (checked by the teardown)."""
    dead = (V4, unused_port(V4))
    port = free_dual_port()
    proxy_factory(ini("""
        [dead]
        listen = 127.0.0.1:%d
        backend4 = %s
    """ % (port, fmt_addr(*dead))))
    start = time.monotonic()
    for _ in range(50):
        _, kind, data = connect_expect_close(V4, port, T(1.0))
        assert data == b""
    assert time.monotonic() - start < T(10)


@pytest.mark.parametrize("where", ["global", "service"])
def test_connect_timeout(proxy_factory, backends, where):
    hole4 = backends.start_blackhole(V4)
    hole6 = backends.start_blackhole(V6)
    if where == "global":
        glob, svc = "connect_timeout = 500ms", ""
    else:
        glob, svc = "connect_timeout = 30s", "connect_timeout = 500ms"
    proxy, port = start_proxy(proxy_factory, "hole", hole4, hole6, glob, svc)

    results = {}

    def client(host):
        t0 = time.monotonic()
        s = connect(host, port)
        try:
            addr = local_addr(s)
            kind, _, data = wait_closed(s, T(3.0))
            results[host] = (addr, kind, time.monotonic() - t0, data)
        except AssertionError as e:
            results[host] = e
        finally:
            s.close()

    threads = [threading.Thread(target=client, args=(h,)) for h in (V4, V6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T(10))
    for host, hole in ((V4, hole4), (V6, hole6)):
        r = results.get(host)
        assert isinstance(r, tuple), "%s: %r" % (host, r)
        addr, kind, elapsed, data = r
        assert data == b""
        assert 0.4 <= elapsed <= T(2.0), "%s: closed after %.3fs" % (host, elapsed)
        log = proxy.conn_log(addr)
        assert log["backend"] == fmt_addr(*hole)
        assert log["end"] == "connect-timeout", log


@BOTH
def test_connect_timeout_with_data_waiting(proxy_factory, backends, host):
    """A client that speaks at once while the backend's SYNs are dropped: its
    bytes wait in the relay, and connect_timeout still ends the connection
    (the waiting data does not turn it into an open relay)."""
    hole = backends.start_blackhole(host)
    proxy, port = start_proxy(proxy_factory, "hole", *of_family(host, hole),
                              glob="connect_timeout = 500ms")
    t0 = time.monotonic()
    s = connect(host, port)
    try:
        addr = local_addr(s)
        s.sendall(b"q" * 20000)
        kind, _, data = wait_closed(s, T(3.0))
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert data == b""
    assert kind in ("eof", "reset")
    assert 0.4 <= elapsed <= T(2.0), "closed after %.3fs" % elapsed
    log = proxy.conn_log(addr)
    assert log["end"] == "connect-timeout", log
    assert log["up"] == 0 and log["down"] == 0, log


@BOTH
def test_silent_connection_outlives_connect_timeout(proxy_factory, backends, host):
    """The backend accepted, and neither side says anything for longer than
    connect_timeout: the connection stays open (connect_timeout is about the
    connect only) and relays once the client speaks."""
    proxy, port = start_proxy(proxy_factory, "echo", backends.start_echo(V4),
                              backends.start_echo(V6), glob="connect_timeout = 300ms")
    with connect(host, port) as s:
        addr = local_addr(s)
        time.sleep(1.0)
        payload = bytes(range(256)) * 400
        s.sendall(payload)
        assert recv_exact(s, len(payload), timeout=T(5)) == payload
        s.shutdown(socket.SHUT_WR)
        kind, _, data = wait_closed(s, T(3.0))
        assert kind == "eof" and data == b""
    log = proxy.conn_log(addr)
    assert log["end"] == "closed", log
    assert log["up"] == len(payload) and log["down"] == len(payload), log


@BOTH
def test_data_waits_for_a_slow_handshake(proxy_factory, netns, host):
    """In a network namespace of the test's own, a netfilter rule drops every
    SYN to the backend until the proxy's first one has been dropped, so the
    backend's handshake completes only with the SYN retransmitted about 1 s
    later (as with a backend on another node, the connect is not over when
    connect() returns): what the client sent meanwhile waits in the relay,
    reaches the backend whole, and the answer comes back."""
    fam = family_of(host)
    tables = "ip6tables" if fam == socket.AF_INET6 else "iptables"
    port, bport = 8080, 8081  # the namespace's ports are all free
    rule = ("INPUT", "-p", "tcp", "--dport", str(bport), "--syn", "-j", "DROP")
    lst = netns.call(socket.create_server, (host, bport), family=fam)
    try:
        netns.run(tables, "-w", "-A", *rule)

        def dropped():
            out = netns.run(tables, "-w", "-L", "INPUT", "-n", "-v", "-x").stdout
            return sum(int(line.split()[0]) for line in out.splitlines()
                       if "dpt:%d" % bport in line)

        proxy, _ = start_proxy(proxy_factory, "slow", *of_family(host, (host, bport)),
                               glob="connect_timeout = 5s", port=port,
                               wrapper=netns.wrapper())
        payload = pattern(100000, 31)
        c = netns.call(socket.create_connection, (host, port), T(5))
        with c:
            addr = local_addr(c)
            c.sendall(payload)
            wait_until(lambda: dropped() >= 1, T(5), what="the proxy's first SYN dropped")
            netns.run(tables, "-w", "-D", *rule)
            lst.settimeout(T(5))
            b, peer = lst.accept()
            with b:
                assert recv_exact(b, len(payload), timeout=T(5)) == payload
                b.sendall(b"done")
            assert recv_exact(c, 4, timeout=T(5)) == b"done"
        log = proxy.conn_log(addr)
        assert log["end"] == "closed", log
        assert log["up"] == len(payload) and log["down"] == 4, log
    finally:
        lst.close()


@pytest.mark.parametrize("where", ["global", "service"])
def test_idle_timeout(proxy_factory, backends, where):
    e4 = backends.start_echo(V4)
    e6 = backends.start_echo(V6)
    if where == "global":
        glob, svc = "idle_timeout = 300ms", ""
    else:
        glob, svc = "idle_timeout = 15m", "idle_timeout = 300ms"
    proxy, port = start_proxy(proxy_factory, "echo", e4, e6, glob, svc)

    # an active connection (a message every 100 ms for 1.2 s) is kept open,
    # in parallel with the idle ones below
    active_err = []

    def active():
        try:
            with connect(V4, port) as s:
                for i in range(12):
                    msg = b"tick %d\n" % i
                    s.sendall(msg)
                    assert recv_exact(s, len(msg), timeout=T(1)) == msg
                    time.sleep(0.1)
        except Exception as e:
            active_err.append(e)

    t = threading.Thread(target=active)
    t.start()
    for host in (V4, V6):
        s = connect(host, port)
        try:
            addr = local_addr(s)
            s.sendall(b"x")
            assert recv_exact(s, 1) == b"x"
            kind, elapsed, data = wait_closed(s, T(3.0))
        finally:
            s.close()
        assert data == b""
        assert 0.25 <= elapsed <= T(1.5), "%s: closed after %.3fs" % (host, elapsed)
        log = proxy.conn_log(addr)
        assert log["end"] == "idle-timeout", log
        assert log["up"] == 1 and log["down"] == 1, log
    t.join(T(10))
    assert not active_err, "active connection was disturbed: %r" % active_err


@BOTH
def test_client_reset(proxy_factory, backends, host):
    proxy, port = start_proxy(proxy_factory, "echo", backends.start_echo(V4),
                              backends.start_echo(V6))
    s = connect(host, port)
    addr = local_addr(s)
    s.sendall(b"abc")
    assert recv_exact(s, 3) == b"abc"
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST
    log = proxy.conn_log(addr)
    assert log["end"] == "client-reset", log
    assert log["up"] == 3 and log["down"] == 3, log


@BOTH
def test_backend_reset(proxy_factory, backends, host):
    proxy, port = start_proxy(proxy_factory, "rst", backends.start_reset_after(V4, b"bye"),
                              backends.start_reset_after(V6, b"bye"))
    s = connect(host, port)
    try:
        addr = local_addr(s)
        s.sendall(b"hello")
        assert recv_exact(s, 3) == b"bye"
        kind, _, data = wait_closed(s, T(2.0))
        assert data == b""
    finally:
        s.close()
    log = proxy.conn_log(addr)
    assert log["end"] == "backend-reset", log
    assert log["up"] == 5 and log["down"] == 3, log
