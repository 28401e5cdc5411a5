"""Per-family routing: an IPv4 client is served by backend4 and an IPv6 client
by backend6 (tagged backends on 127.0.0.1 and ::1 say who served and over
which family); a service with only one family's backend serves both client
families through it; a bare port listens on 0.0.0.0 and [::] (and says so in
the log), explicit listen lists work; a port that cannot be bound stops
start-up with exit 71 and a message naming the address."""

import socket

import pytest

from conftest import (EX_OSERR, V4, V6, T, connect, fmt_addr, distinct_dual_ports, free_dual_port,
                      free_port, ini, recv_exact, recv_line, run_dualproxy)


def ask(host, port, payload=b"ping\n"):
    """Connect, read the backend tag line, check echo. Returns the tag."""
    with connect(host, port) as s:
        tag = recv_line(s).decode().strip()
        s.sendall(payload)
        assert recv_exact(s, len(payload)) == payload
        return tag


def test_family_routing_bare_port(proxy_factory, tagged):
    (h4, p4), (h6, p6) = tagged
    port = free_dual_port()
    proxy = proxy_factory(ini("""
        [global]
        log_level = debug
        [web]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (port, fmt_addr(h4, p4), fmt_addr(h6, p6))))
    proxy.wait_for(r"listening on 0\.0\.0\.0:%d \(web\)" % port, timeout=0)
    proxy.wait_for(r"listening on \[::\]:%d \(web\)" % port, timeout=0)

    assert ask(V4, port) == "v4 AF_INET"
    assert ask(V6, port) == "v6 AF_INET6"
    # and again, in the other order, several times
    for _ in range(3):
        assert ask(V6, port) == "v6 AF_INET6"
        assert ask(V4, port) == "v4 AF_INET"


def test_v4_client_not_mapped(proxy_factory, tagged):
    """The [::] listener is V6ONLY: an IPv4 client shows up as 127.0.0.1
    (not ::ffff:127.0.0.1) in the connection log, and goes to backend4."""
    (h4, p4), (h6, p6) = tagged
    port = free_dual_port()
    proxy = proxy_factory(ini("""
        [global]
        log_level = debug
        [web]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (port, fmt_addr(h4, p4), fmt_addr(h6, p6))))
    with connect(V4, port) as s:
        client = fmt_addr(*s.getsockname()[:2])
        assert recv_line(s) == b"v4 AF_INET\n"
    log = proxy.conn_log(client)
    assert log["client"] == client
    assert log["backend"] == fmt_addr(h4, p4)


def test_family_routing_explicit_listen(proxy_factory, tagged):
    (h4, p4), (h6, p6) = tagged
    port = free_dual_port()
    proxy_factory(ini("""
        [web]
        listen = 127.0.0.1:%d, [::1]:%d
        backend4 = %s
        backend6 = %s
    """ % (port, port, fmt_addr(h4, p4), fmt_addr(h6, p6))))
    assert ask(V4, port) == "v4 AF_INET"
    assert ask(V6, port) == "v6 AF_INET6"


def test_explicit_listen_binds_only_that_address(proxy_factory, tagged):
    """listen = [::1]:P binds only ::1 (IPv4 127.0.0.1:P is refused)."""
    (h4, p4), (h6, p6) = tagged
    port = free_dual_port()
    proxy_factory(ini("""
        [web]
        listen = [::1]:%d
        backend4 = %s
        backend6 = %s
    """ % (port, fmt_addr(h4, p4), fmt_addr(h6, p6))))
    assert ask(V6, port) == "v6 AF_INET6"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((V4, port), timeout=T(2)).close()


def test_fallback_to_other_family(proxy_factory, tagged):
    """only4 has just backend4: an IPv6 client is served through it.
    only6 has just backend6: an IPv4 client is served through it."""
    (h4, p4), (h6, p6) = tagged
    port4, port6 = distinct_dual_ports(2)
    proxy_factory(ini("""
        [only4]
        listen = %d
        backend4 = %s
        [only6]
        listen = %d
        backend6 = %s
    """ % (port4, fmt_addr(h4, p4), port6, fmt_addr(h6, p6))))
    assert ask(V6, port4) == "v4 AF_INET"
    assert ask(V4, port4) == "v4 AF_INET"
    assert ask(V4, port6) == "v6 AF_INET6"
    assert ask(V6, port6) == "v6 AF_INET6"


def test_several_services(proxy_factory, backends):
    """Two services side by side each reach their own backends."""
    a4 = backends.start_tagged(V4, "a4")
    a6 = backends.start_tagged(V6, "a6")
    b4 = backends.start_tagged(V4, "b4")
    b6 = backends.start_tagged(V6, "b6")
    pa, pb = distinct_dual_ports(2)
    proxy = proxy_factory(ini("""
        [alpha]
        listen = %d
        backend4 = %s
        backend6 = %s
        [beta]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (pa, fmt_addr(*a4), fmt_addr(*a6), pb, fmt_addr(*b4), fmt_addr(*b6))))
    proxy.wait_for(r"listening on 0\.0\.0\.0:%d \(alpha\)" % pa, timeout=0)
    proxy.wait_for(r"listening on \[::\]:%d \(beta\)" % pb, timeout=0)
    assert ask(V4, pa) == "a4 AF_INET"
    assert ask(V6, pa) == "a6 AF_INET6"
    assert ask(V4, pb) == "b4 AF_INET"
    assert ask(V6, pb) == "b6 AF_INET6"


@pytest.mark.parametrize("host", [V4, V6])
def test_bind_failure(host, write_config):
    busy = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        busy.bind((host, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        path = write_config(ini("""
            [web]
            listen = %s
            backend4 = 127.0.0.1:%d
        """ % (fmt_addr(host, port), free_port())))
        r = run_dualproxy("-c", path)
        assert r.returncode == EX_OSERR, (r.returncode, r.stderr)
        assert fmt_addr(host, port) in r.stderr, r.stderr
        # -t does not bind: the same file is a valid configuration
        r = run_dualproxy("-t", "-c", path)
        assert r.returncode == 0, r.stderr
    finally:
        busy.close()
