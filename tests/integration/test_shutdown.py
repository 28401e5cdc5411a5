"""Shutdown with drain: SIGTERM/SIGINT close every listener at once (new
connections are refused on both families, nothing listens any more), log
`draining N connections for up to Xs`, let live connections finish
(byte-exact, both directions, half-close included) and exit 0 as soon as the
last one ends. drain_timeout cuts connections that do not end (exit 0, their
connection line says end=shutdown). A second SIGTERM during the drain exits
at once with 0."""

import signal
import socket
import time

import pytest

from conftest import (V4, V6, T, assert_refused, connect, fmt_addr,
                      free_dual_port, ini, listen_sockets,
                      local_addr, pattern, recv_exact, recv_line, wait_closed)


def draining_re(n, seconds):
    return r"draining %d connections? for up to %s(?:\.0+)?s\b" % (n, seconds)


def start(proxy_factory, tagged, drain):
    (h4, p4), (h6, p6) = tagged
    port = free_dual_port()
    proxy = proxy_factory(ini("""
        [global]
        log_level = debug
        %s
        [web]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % ("drain_timeout = %s" % drain if drain else "", port,
           fmt_addr(h4, p4), fmt_addr(h6, p6))))
    return proxy, port


def open_live(port, clients):
    """One live connection per family, tag read and a first echo done.
    Returns {host: (sock, client address, tag length, bytes echoed)}."""
    live = {}
    for host in (V4, V6):
        s = connect(host, port)
        clients.append(s)
        tag = recv_line(s)
        assert tag == (b"v4 AF_INET\n" if host == V4 else b"v6 AF_INET6\n"), tag
        first = pattern(50000, len(host))
        s.sendall(first)
        assert recv_exact(s, len(first)) == first
        live[host] = (s, local_addr(s), len(tag), len(first))
    return live


def assert_closed_for_new(port):
    for host in (V4, V6):
        assert_refused(host, port, "(during the drain)")
    assert listen_sockets(port) == set(), "still listening during the drain"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_drain_lets_live_connections_finish(proxy_factory, tagged, clients, sig):
    proxy, port = start(proxy_factory, tagged, None)  # default drain_timeout 30s
    live = open_live(port, clients)
    proxy.signal(sig)
    proxy.wait_for(draining_re(2, 30))
    assert_closed_for_new(port)

    # the live connections carry on, both directions, byte-exact; the
    # IPv4 one ends first, and dualproxy waits for the IPv6 one
    for i, host in enumerate((V4, V6)):
        s, client, tag_len, sent = live[host]
        more = pattern(400000, 10 + i)
        s.sendall(more)
        assert recv_exact(s, len(more)) == more
        s.shutdown(socket.SHUT_WR)
        kind, _, rest = wait_closed(s, T(5))
        assert (kind, rest) == ("eof", b""), (kind, rest[:50])
        s.close()
        ended = time.monotonic()
        log = proxy.conn_log(client)
        assert log["end"] == "closed", log
        assert log["up"] == sent + len(more)
        assert log["down"] == tag_len + sent + len(more)
        if host == V4:
            time.sleep(T(0.3))
            assert proxy.running(), "exited with a connection still live"

    rc = proxy.wait_exit(T(3))
    assert rc is not None, "still running after the last connection ended"
    assert time.monotonic() - ended < T(2), "exit took too long after the last connection"
    assert rc == 0, "exit code %s; stderr:\n%s" % (rc, proxy.stderr_text())


def test_drain_timeout_cuts_connections(proxy_factory, tagged, clients):
    proxy, port = start(proxy_factory, tagged, "1s")
    live = open_live(port, clients)
    t0 = time.monotonic()
    proxy.signal(signal.SIGTERM)
    proxy.wait_for(draining_re(2, 1))
    assert_closed_for_new(port)
    # still relaying during the drain
    for host, (s, _, _, _) in live.items():
        s.sendall(b"during the drain")
        assert recv_exact(s, 16) == b"during the drain"
    # then cut
    for host, (s, _, _, _) in live.items():
        kind, _, rest = wait_closed(s, T(4))
        assert rest == b""
    rc = proxy.wait_exit(T(4))
    elapsed = time.monotonic() - t0
    assert rc == 0, "exit code %s; stderr:\n%s" % (rc, proxy.stderr_text())
    assert elapsed >= 0.8, "exited after %.2fs, before drain_timeout" % elapsed
    assert elapsed < 1 + T(1.5), "exited after %.2fs with drain_timeout = 1s" % elapsed
    for host, (s, client, _, _) in live.items():
        s.close()
        log = proxy.conn_log(client, timeout=T(1))
        assert log["end"] == "shutdown", log


def test_second_sigterm_exits_at_once(proxy_factory, tagged, clients):
    proxy, port = start(proxy_factory, tagged, "30s")
    live = open_live(port, clients)
    proxy.signal(signal.SIGTERM)
    proxy.wait_for(draining_re(2, 30))
    time.sleep(T(0.2))
    assert proxy.running(), "did not wait for the live connections"
    t0 = time.monotonic()
    proxy.signal(signal.SIGTERM)
    rc = proxy.wait_exit(T(3))
    elapsed = time.monotonic() - t0
    assert rc is not None, "still running 3s after the second SIGTERM"
    assert rc == 0, "exit code %s; stderr:\n%s" % (rc, proxy.stderr_text())
    assert elapsed < T(1), "second SIGTERM took %.2fs" % elapsed
    for s, _, _, _ in live.values():
        wait_closed(s, T(2))
        s.close()


def test_drain_without_connections_exits_at_once(proxy_factory, tagged):
    proxy, port = start(proxy_factory, tagged, "30s")
    t0 = time.monotonic()
    proxy.signal(signal.SIGTERM)
    rc = proxy.wait_exit(T(3))
    assert rc == 0, (rc, proxy.stderr_text())
    assert time.monotonic() - t0 < T(1)
