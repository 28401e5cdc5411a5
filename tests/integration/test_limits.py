"""Scale and limits: 1,000 concurrent connections (both families, all open
at the same time) each echoing a unique payload; max_connections: above the
limit new clients wait in the kernel backlog (not refused, not closed) and
are served as soon as an earlier connection ends, on every listener."""

import asyncio
import socket
import time

from conftest import (V4, V6, T, connect, fmt_addr, free_dual_port, ini,
                      is_readable, pattern, recv_exact)

N_CLIENTS = 1000


async def _many_clients(port, n):
    done = 0
    all_received = asyncio.Event()

    async def one(i):
        nonlocal done
        host = V4 if i % 2 == 0 else V6
        payload = b"%06d:" % i + pattern(64 + (i * 37) % 2000, i)
        writer = None
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(payload)
            await writer.drain()
            got = await reader.readexactly(len(payload))
            assert got == payload, "client %d: echo differs" % i
        finally:
            done += 1
            if done == n:
                all_received.set()
        # hold the connection until every client has its echo
        await all_received.wait()
        writer.write_eof()
        rest = await reader.read()
        assert rest == b"", "client %d: extra data %r" % (i, rest[:50])
        writer.close()
        await writer.wait_closed()

    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    return results


def test_1000_concurrent_connections(proxy_factory, backends):
    e4 = backends.start_echo(V4)
    e6 = backends.start_echo(V6)
    port = free_dual_port()
    proxy_factory(ini("""
        [global]
        log_level = info
        [echo]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (port, fmt_addr(*e4), fmt_addr(*e6))))
    t0 = time.monotonic()
    results = asyncio.run(asyncio.wait_for(_many_clients(port, N_CLIENTS), T(30)))
    elapsed = time.monotonic() - t0
    failures = [(i, r) for i, r in enumerate(results) if r is not None]
    assert not failures, "%d of %d clients failed, first: %r" % (
        len(failures), N_CLIENTS, failures[:5])
    assert backends.accepted == N_CLIENTS
    assert elapsed < T(30)


def test_max_connections(proxy_factory, backends):
    e4 = backends.start_echo(V4)
    e6 = backends.start_echo(V6)
    port = free_dual_port()
    proxy_factory(ini("""
        [global]
        max_connections = 2
        [echo]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (port, fmt_addr(*e4), fmt_addr(*e6))))

    def served(s, msg):
        s.sendall(msg)
        return recv_exact(s, len(msg), timeout=T(3)) == msg

    c1 = connect(V4, port)
    c2 = connect(V6, port)
    socks = [c1, c2]
    try:
        assert served(c1, b"one")
        assert served(c2, b"two")
        # third client: the kernel completes the handshake (backlog), but
        # dualproxy must not accept/serve it while two connections are open
        c3 = connect(V4, port)
        socks.append(c3)
        c3.sendall(b"three")
        assert not is_readable(c3, 0.5), "third client served (or closed) above the limit"
        assert backends.accepted == 2

        c1.close()
        assert recv_exact(c3, 5, timeout=T(3)) == b"three"
        assert served(c2, b"two again")

        # still at the limit (c2, c3): a fourth one, on the other family,
        # waits too, until c2 ends
        c4 = connect(V6, port)
        socks.append(c4)
        c4.sendall(b"four")
        assert not is_readable(c4, 0.5), "fourth client served (or closed) above the limit"
        c2.close()
        assert recv_exact(c4, 4, timeout=T(3)) == b"four"
        assert served(c3, b"three again")
        assert backends.accepted == 4
    finally:
        for s in socks:
            s.close()


def test_max_connections_recovers(proxy_factory, backends):
    """With max_connections = 2, 20 sequential clients are all served."""
    e4 = backends.start_echo(V4)
    port = free_dual_port()
    proxy_factory(ini("""
        [global]
        max_connections = 2
        [echo]
        listen = 127.0.0.1:%d
        backend4 = %s
    """ % (port, fmt_addr(*e4))))
    for i in range(20):
        with connect(V4, port) as s:
            msg = b"client %d" % i
            s.sendall(msg)
            assert recv_exact(s, len(msg), timeout=T(3)) == msg
            s.shutdown(socket.SHUT_WR)
            assert s.recv(1) == b""
