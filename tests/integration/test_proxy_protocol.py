"""PROXY protocol (HAProxy spec) to the backend: `proxy_protocol = off|v1|v2`.

The backend (a recorder) keeps every byte it receives. The expected header is
built here from the client socket's own getsockname() (source) and the
address/port the client connected to (destination: for a 0.0.0.0 / [::]
listener, 127.0.0.1 / ::1), and compared byte for byte:

  v1: "PROXY TCP4 127.0.0.1 127.0.0.1 CPORT LPORT\\r\\n" (TCP6 for IPv6)
  v2: 12-byte signature, 0x21, 0x11 (TCP4, length 12) / 0x21 (TCP6,
      length 36), the addresses and the ports in network order.

The header must arrive before any client byte, also when the client has not
sent anything yet (server-speaks-first protocols) and when the client sends
at once; then the client's payload follows exactly, and the backend's reply
comes back to the client unchanged."""

import hashlib
import socket

import pytest

from conftest import (V4, V6, T, connect, fmt_addr, distinct_dual_ports, free_dual_port, ini,
                      pattern, proxy_header_v1, proxy_header_v2, recv_until_eof, start_recorder,
                      wait_until)

FAMILY = {V4: "ipv4", V6: "ipv6"}


def reply(data):
    """What the recorder sends back after the client's EOF: a digest of all
    it received (header included) and a deterministic body."""
    return b"ACK " + hashlib.sha256(data).hexdigest().encode() + b"\n" + pattern(5000, len(data))


@pytest.fixture
def recorders(backends):
    return {V4: start_recorder(backends, V4, reply), V6: start_recorder(backends, V6, reply)}


def pp_config(port, recorders, version, listen=None):
    return ini("""
        [pp]
        listen = %s
        backend4 = %s
        backend6 = %s
        proxy_protocol = %s
    """ % (listen or port, fmt_addr(*recorders[V4][0]), fmt_addr(*recorders[V6][0]),
           version))


def expected_header(version, sock):
    src = sock.getsockname()[:2]
    dst = sock.getpeername()[:2]
    if version == "v1":
        return proxy_header_v1(src, dst)
    if version == "v2":
        return proxy_header_v2(src, dst)
    return b""


def one_connection(host, port, version, record, index, payload, client_first):
    """One client through the proxy; checks header + payload at the backend
    and the reply at the client."""
    with connect(host, port) as s:
        header = expected_header(version, s)
        if client_first:
            s.sendall(payload)
        else:
            # nothing sent yet: the header alone must reach the backend
            wait_until(lambda: len(record.conns) > index
                       and len(record.data(index)) >= len(header),
                       T(5), what="the PROXY header at the backend")
            if version != "off":
                got = record.data(index)
                assert got == header, "header differs:\n got %r\nwant %r" % (got, header)
            s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        back = recv_until_eof(s)
    got = record.data(index)
    want = header + payload
    assert got[:len(header)] == header, \
        "header differs:\n got %r\nwant %r" % (got[:len(header) + 8], header)
    assert len(got) == len(want), "backend received %d bytes, expected %d" % (len(got), len(want))
    assert got == want, "payload after the header differs"
    assert back == reply(want), "reply relayed back differs (%d bytes)" % len(back)


@pytest.mark.parametrize("host", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("version", ["v1", "v2", "off"])
@pytest.mark.parametrize("client_first", [False, True], ids=["backend-first", "client-first"])
def test_proxy_header(proxy_factory, recorders, host, version, client_first):
    port = free_dual_port()
    proxy_factory(pp_config(port, recorders, version))
    record = recorders[host][1]
    payload = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n" + pattern(20000, 7) \
        + b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"
    # two connections in a row: each has its own client port in its header
    for i in range(2):
        one_connection(host, port, version, record, i, payload, client_first)
    other = recorders[V6 if host == V4 else V4][1]
    assert other.accepted == 0


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_header_literal(proxy_factory, recorders, version):
    """The header spelled out by hand (not with the helper), for both
    families: a check of the helper as much as of the daemon."""
    port = free_dual_port()
    proxy_factory(pp_config(port, recorders, version))
    for i, host in enumerate([V4, V6]):
        record = recorders[host][1]
        with connect(host, port) as s:
            cport = s.getsockname()[1]
            s.sendall(b"hi")
            s.shutdown(socket.SHUT_WR)
            recv_until_eof(s)
        got = record.data(0)
        if version == "v1":
            want = ("PROXY %s %s %s %d %d\r\n" % ("TCP4" if host == V4 else "TCP6",
                                                  host, host, cport, port)).encode()
        elif host == V4:
            want = (b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a" + b"\x21\x11\x00\x0c"
                    + bytes([127, 0, 0, 1]) * 2 + cport.to_bytes(2, "big")
                    + port.to_bytes(2, "big"))
        else:
            want = (b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a" + b"\x21\x21\x00\x24"
                    + (b"\x00" * 15 + b"\x01") * 2 + cport.to_bytes(2, "big")
                    + port.to_bytes(2, "big"))
        assert got == want + b"hi", "%s %s:\n got %r\nwant %r" % (version, host, got, want + b"hi")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_header_explicit_listen(proxy_factory, recorders, version):
    """Explicit listen addresses: the destination is that address."""
    port = free_dual_port()
    proxy_factory(pp_config(port, recorders, version,
                            listen="127.0.0.1:%d, [::1]:%d" % (port, port)))
    payload = b"x" * 100
    one_connection(V4, port, version, recorders[V4][1], 0, payload, True)
    one_connection(V6, port, version, recorders[V6][1], 0, payload, False)


def test_proxy_protocol_per_service(proxy_factory, recorders):
    """Two services on the same backends: only the one that asks for it
    sends a header."""
    p1, p2 = distinct_dual_ports(2)
    proxy_factory(ini("""
        [with]
        listen = %d
        backend4 = %s
        proxy_protocol = v1
        [without]
        listen = %d
        backend4 = %s
    """ % (p1, fmt_addr(*recorders[V4][0]), p2, fmt_addr(*recorders[V4][0]))))
    rec = recorders[V4][1]
    one_connection(V4, p1, "v1", rec, 0, b"first", True)
    one_connection(V4, p2, "off", rec, 1, b"second", True)
