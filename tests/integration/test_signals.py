"""Signals: SIGTERM and SIGINT make a running dualproxy exit with code 0,
after which its ports are closed."""

import signal
import socket

import pytest

from conftest import (V4, V6, T, connect, fmt_addr, free_dual_port, ini,
                      recv_exact)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_zero(proxy_factory, backends, sig):
    e4 = backends.start_echo(V4)
    port = free_dual_port()
    proxy = proxy_factory(ini("""
        [echo]
        listen = %d
        backend4 = %s
    """ % (port, fmt_addr(*e4))))
    # it works before the signal (both families, via backend4)
    for host in (V4, V6):
        with connect(host, port) as s:
            s.sendall(b"ok")
            assert recv_exact(s, 2) == b"ok"
            s.shutdown(socket.SHUT_WR)
            assert s.recv(1) == b""
    proxy.signal(sig)
    rc = proxy.wait_exit(T(5))
    assert rc is not None, "dualproxy still running 5s after %s" % sig.name
    assert rc == 0, "exit code %s after %s; stderr:\n%s" % (rc, sig.name, proxy.stderr_text())
    for host in (V4, V6):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=T(2)).close()


def test_sigterm_right_after_start(proxy_factory):
    port = free_dual_port()
    proxy = proxy_factory(ini("""
        [idle]
        listen = %d
        backend6 = [::1]:9
    """ % port))
    proxy.signal(signal.SIGTERM)
    assert proxy.wait_exit(T(5)) == 0, proxy.stderr_text()
