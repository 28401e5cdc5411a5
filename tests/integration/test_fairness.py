"""max_connections_per_source: one client address cannot take the whole
proxy. With a limit of 50, source A (127.0.0.1) opens 2,000 connections as
fast as it can and holds them: exactly 50 reach the backend, the other 1,950
are reset at once, logged ("source-limited service=... client=...") and
counted (dualproxy_source_limited_total); meanwhile source B (127.0.0.2)
and an IPv6 source (::1) are served byte-exact. Once A lets go, its count is
released: it gets 50 relayed connections again, and the 51st is refused.
With max_connections_per_source = 0 (or not set) there is no limit."""

import select
import socket

import pytest

from conftest import (V4, V6, T, connect, fmt_addr, free_dual_port, free_port, ini,
                      recv_exact, scrape, serve_at, wait_closed, wait_metric, wait_until)

PER_SOURCE = 50
FLOOD = 2000
B_ADDR = "127.0.0.2"


def counted_echo(backends, host):
    async def handler(reader, writer, buf, record):
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    return serve_at(backends, host, 0, handler)


def config(port, mport, b4, b6, per_source):
    key = "" if per_source is None else "max_connections_per_source = %s" % per_source
    return ini("""
        [global]
        log_level = debug
        drain_timeout = 1s
        max_connections = 10000
        %s
        metrics_listen = 127.0.0.1:%d
        [svc]
        listen = 127.0.0.1:%d, [::1]:%d
        backend4 = %s
        backend6 = %s
    """ % (key, mport, port, port, fmt_addr(*b4), fmt_addr(*b6)))


def open_from(src, host, port):
    """A connection to host:port from address `src` (None: any). Returns the
    socket, or None when the proxy's reset beat the end of connect()."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    if src is not None:
        s.bind((src, 0))
    s.settimeout(T(5))
    try:
        s.connect((host, port))
    except ConnectionResetError:
        s.close()
        return None
    return s


def closed_by_peer(socks):
    """{sock: 'reset'|'eof'} for the sockets the peer has closed."""
    p = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        p.register(fd, select.POLLIN)
    out = {}
    for fd, _ in p.poll(0):
        s = by_fd[fd]
        s.setblocking(False)
        try:
            data = s.recv(4096)
            if data:
                raise AssertionError("unexpected data %r from the proxy" % data[:50])
            out[s] = "eof"
        except ConnectionResetError:
            out[s] = "reset"
        except BlockingIOError:
            pass
        finally:
            s.settimeout(T(5))
    return out


def echo_on(socks, tag):
    """An exact echo on every socket of `socks` (all sent first, then read)."""
    for i, s in enumerate(socks):
        s.sendall(b"%s-%d;" % (tag, i))
    for i, s in enumerate(socks):
        msg = b"%s-%d;" % (tag, i)
        assert recv_exact(s, len(msg), timeout=T(5)) == msg, "%s %d: echo differs" % (tag, i)


def metric(mport, name):
    return scrape(V4, mport).value(name, protocol="tcp", service="svc")


def test_per_source_limit(proxy_factory, backends):
    (b4, rec4), (b6, rec6) = counted_echo(backends, V4), counted_echo(backends, V6)
    port, mport = free_dual_port(), free_port(V4)
    proxy = proxy_factory(config(port, mport, b4, b6, PER_SOURCE))

    a = []
    early_resets = 0
    try:
        for _ in range(FLOOD):
            s = open_from(None, V4, port)
            if s is None:
                early_resets += 1
            else:
                a.append(s)
        limited = FLOOD - PER_SOURCE
        wait_metric(V4, mport, "dualproxy_source_limited_total", limited,
                    timeout=T(15), protocol="tcp", service="svc")
        wait_until(lambda: rec4.accepted >= PER_SOURCE, T(5), what="A's relays")

        closed = {}
        wait_until(lambda: closed.update(closed_by_peer([s for s in a if s not in closed]))
                   or len(closed) + early_resets >= limited, T(5),
                   what="%d of A's connections closed" % limited)
        open_a = [s for s in a if s not in closed]
        assert len(closed) + early_resets == limited, \
            "%d of A's %d connections closed, expected %d" % (
                len(closed) + early_resets, FLOOD, limited)
        eofs = sum(1 for k in closed.values() if k == "eof")
        assert eofs == 0, "%d of A's refused connections got a FIN, not a reset" % eofs
        assert rec4.accepted == PER_SOURCE, \
            "the backend got %d of A's connections, limit %d" % (rec4.accepted, PER_SOURCE)
        echo_on(open_a, b"A")

        # B and an IPv6 client are not affected by A
        b = []
        try:
            for _ in range(20):
                s = open_from(B_ADDR, V4, port)
                assert s is not None, "source B was reset"
                b.append(s)
            echo_on(b, b"B")
            six = [connect(V6, port) for _ in range(5)]
            b += six
            echo_on(six, b"six")
        finally:
            for s in b:
                s.close()
        assert rec4.accepted == PER_SOURCE + 20
        assert rec6.accepted == 5
        assert metric(mport, "dualproxy_source_limited_total") == limited

        lines = proxy.grep(r"source-limited service=svc client=")
        assert len(lines) == limited, \
            "%d source-limited lines, expected %d" % (len(lines), limited)
        assert all("client=127.0.0.1:" in l for l in lines), \
            [l for l in lines if "client=127.0.0.1:" not in l][:3]
        # limited clients never reached a backend: no connection line for them
        relayed = {d["client"] for d in proxy.conn_logs()}
        assert not relayed & {l.split("client=")[1].strip() for l in lines}
    finally:
        for s in a:
            s.close()

    # A lets go: its count returns to zero, and the limit applies afresh
    wait_metric(V4, mport, "dualproxy_connections_active", 0, timeout=T(10), protocol="tcp",
                service="svc")
    again = []
    try:
        for _ in range(PER_SOURCE):
            s = open_from(None, V4, port)
            assert s is not None, "A was reset below its limit after its connections ended"
            again.append(s)
        echo_on(again, b"again")
        extra = open_from(None, V4, port)
        if extra is not None:
            again.append(extra)
            kind, _, data = wait_closed(extra, T(3))
            assert (kind, data) == ("reset", b""), \
                "connection %d of A: %s with %r, expected a reset" % (PER_SOURCE + 1, kind, data)
        wait_metric(V4, mport, "dualproxy_source_limited_total", limited + 1, protocol="tcp", service="svc")
        assert rec4.accepted == 2 * PER_SOURCE + 20
    finally:
        for s in again:
            s.close()


@pytest.mark.parametrize("per_source", ["0", None], ids=["zero", "unset"])
def test_per_source_unlimited(proxy_factory, backends, per_source):
    (b4, rec4), (b6, _) = counted_echo(backends, V4), counted_echo(backends, V6)
    port, mport = free_dual_port(), free_port(V4)
    proxy = proxy_factory(config(port, mport, b4, b6, per_source))
    a = []
    try:
        for _ in range(200):
            s = open_from(None, V4, port)
            assert s is not None, "reset without a per-source limit"
            a.append(s)
        wait_until(lambda: rec4.accepted >= 200, T(10), what="200 relayed connections")
        echo_on(a, b"A")
        assert closed_by_peer(a) == {}
        assert rec4.accepted == 200
        assert metric(mport, "dualproxy_source_limited_total") == 0
        assert metric(mport, "dualproxy_connections_active") == 200
        assert not proxy.grep("source-limited")
    finally:
        for s in a:
            s.close()
