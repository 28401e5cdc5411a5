"""UDP: no loss goes uncounted, and replies follow the address a client
writes to.

* A burst that overflows one of dualproxy's own sockets while it cannot
  read (the daemon stopped with SIGSTOP, then continued) is dropped by the
  kernel; dualproxy reads the kernel's drop count (SO_RXQ_OVFL, which the
  kernel hands over with the next datagram queued after the drops) and adds
  it to dualproxy_datagrams_dropped_total{reason="buffer-full"}, towards the
  backend at the listening socket and towards the client at the flow's
  socket. What was relayed plus what was counted dropped is what was sent.
* One client socket of a wildcard listener that writes to another of the
  host's addresses gets its replies from that address."""

import os
import signal
import socket
import time

import pytest

from conftest import (V4, T, free_udp_dual_port, ini, scrape, free_port,
                      wait_until)


SIZE = 1200


def burst_size():
    """Datagrams of SIZE bytes far more than dualproxy's receive buffer
    holds: it asks for 4 MiB, which the kernel caps at net.core.rmem_max
    and then doubles; each datagram takes more than SIZE bytes of it."""
    with open("/proc/sys/net/core/rmem_max") as f:
        rmem_max = int(f.read())
    return 2 * 2 * min(4 << 20, rmem_max) // SIZE + 1000


BURST = burst_size()


def dropped(mport, direction, family="ipv4"):
    return scrape(V4, mport).value("dualproxy_datagrams_dropped_total", service="u",
                                   family=family, direction=direction, protocol="udp",
                                   reason="buffer-full")


def relayed(mport, direction, family="ipv4"):
    return scrape(V4, mport).value("dualproxy_datagrams_total", service="u", family=family,
                                   direction=direction, protocol="udp")


@pytest.fixture
def stopped_proxy(proxy_factory, udp_backends):
    """A UDP service in front of a silent backend, and a way to stop the
    daemon (SIGSTOP) for the length of a with-block."""
    backend = udp_backends(V4, "silent")
    port, mport = free_udp_dual_port(), free_port(V4)
    proxy = proxy_factory(ini("""
        [global]
        metrics_listen = 127.0.0.1:%d
        [u]
        listen = 127.0.0.1:%d
        protocol = udp
        backend4 = %s
    """ % (mport, port, backend.fmt())))
    return proxy, backend, port, mport


def udp_quiet_for(backend, seconds):
    """True when the backend got nothing more for this long."""
    before = backend.count()
    time.sleep(seconds)
    return backend.count() == before


class Stopped:
    def __init__(self, pid):
        self.pid = pid

    def __enter__(self):
        os.kill(self.pid, signal.SIGSTOP)

    def __exit__(self, *exc):
        os.kill(self.pid, signal.SIGCONT)


def test_overflow_towards_backend_is_counted(stopped_proxy):
    proxy, backend, port, mport = stopped_proxy
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.sendto(b"first", (V4, port))
    wait_until(lambda: backend.count() == 1, T(5), what="the flow")
    with Stopped(proxy.proc.pid):
        for i in range(BURST):
            client.sendto(b"%05d" % i + b"u" * (SIZE - 5), (V4, port))
    wait_until(lambda: relayed(mport, "up") == backend.count() and
               backend.count() > 1 and udp_quiet_for(backend, 0.3), T(10),
               what="the queued datagrams relayed")
    client.sendto(b"last", (V4, port))  # carries the drop count
    wait_until(lambda: backend.count() + dropped(mport, "up") == 2 + BURST, T(10),
               what="every datagram relayed or counted dropped")
    assert dropped(mport, "up") > 0, "the burst fitted: the test proves nothing"
    assert relayed(mport, "up") == backend.count()
    client.close()


def test_overflow_towards_client_is_counted(stopped_proxy):
    proxy, backend, port, mport = stopped_proxy
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: take it all
    client.sendto(b"first", (V4, port))
    wait_until(lambda: backend.count() == 1, T(5), what="the flow")
    (peer, _), = backend.received()
    with Stopped(proxy.proc.pid):
        for i in range(BURST):
            backend.sock.sendto(b"%05d" % i + b"d" * (SIZE - 5), peer)
    got = 0
    client.settimeout(T(1))
    try:
        while True:
            client.recv(SIZE + 100)
            got += 1
    except socket.timeout:
        pass
    backend.sock.sendto(b"last", peer)  # carries the drop count
    assert client.recv(SIZE) == b"last"
    got += 1
    wait_until(lambda: relayed(mport, "down") + dropped(mport, "down") == BURST + 1, T(10),
               what="every reply relayed or counted dropped")
    assert dropped(mport, "down") > 0, "the burst fitted: the test proves nothing"
    assert relayed(mport, "down") == got, (relayed(mport, "down"), got)
    client.close()


def test_reply_from_the_address_written_to(proxy_factory, udp_backends):
    """127.0.0.1 and 127.0.0.2 are both this host's: one client socket
    writes to each in turn through a wildcard listener; every reply comes
    from the address the datagram before it went to."""
    backend = udp_backends(V4, "echo")
    port = free_udp_dual_port()
    proxy_factory(ini("""
        [u]
        listen = %d
        protocol = udp
        backend4 = %s
    """ % (port, backend.fmt())))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(T(3))
    for i, dest in enumerate(["127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2"]):
        client.sendto(b"to %s %d" % (dest.encode(), i), (dest, port))
        data, source = client.recvfrom(100)
        assert data == b"to %s %d" % (dest.encode(), i)
        assert source == (dest, port), "the reply came from %r, not %s:%d" % (source, dest, port)
        time.sleep(0.01)
    assert len(backend.peers()) == 1, "one client, one flow"
    client.close()
