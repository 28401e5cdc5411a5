"""The `protocol` key (`dualproxy -t`).

* `protocol = tcp` (the default), `udp`, `tcp, udp` (either order) are
  accepted; a UDP listen address does not collide with a TCP one of the same
  address and port (in the same or another service), but two UDP ones do.
* Bad values are `FILE:LINE: message` errors with exit 78: an unknown
  protocol (sctp, quic, upper case), one given twice, an empty value.
* `proxy_protocol` (v1 or v2) on a service with `protocol = udp` or
  `tcp, udp` is an error on the line of one of the two keys, whichever order
  they come in; `proxy_protocol = off` is fine."""

import re

import pytest

from conftest import EX_CONFIG, ini, run_dualproxy


def check(write_config, text):
    path = write_config(text)
    return path, run_dualproxy("-t", "-c", path)


def assert_error_at(write_config, text, lines, what):
    """-t fails with exit 78 and `FILE:LINE: ...` naming one of `lines`
    and matching the regex `what`."""
    path, r = check(write_config, text)
    assert r.returncode == EX_CONFIG, (r.returncode, r.stdout, r.stderr)
    m = re.search(r"^%s:(\d+): (.*)$" % re.escape(path), r.stderr, re.M)
    assert m, "no FILE:LINE: message in %r" % r.stderr
    assert int(m.group(1)) in lines, "error on line %s, expected %r: %s" % (
        m.group(1), lines, r.stderr)
    assert re.search(what, m.group(2)), "%r does not say %r" % (m.group(2), what)


def dns(*lines):
    """A one-service file: line 1 [dns], 2 listen, 3 backend4, then `lines`
    from line 4 on."""
    return "".join(l + "\n" for l in ("[dns]", "listen = 127.0.0.1:5353",
                                        "backend4 = 127.0.0.1:53", *lines))


# --------------------------------------------------------------------------
# errors (whatever the binary)

@pytest.mark.parametrize("value", ["sctp", "quic", "TCP", "UDP", "tcp, sctp", "udp, quic",
                                   "tcp/udp", "tcpudp"])
def test_bad_protocol_value(write_config, value):
    assert_error_at(write_config, dns("protocol = %s" % value), [4],
                    r"protocol: .*'(?:sctp|quic|TCP|UDP|tcp/udp|tcpudp)'")


@pytest.mark.parametrize("value", ["tcp, tcp", "udp, udp"])
def test_protocol_given_twice(write_config, value):
    assert_error_at(write_config, dns("protocol = %s" % value), [4], r"protocol: .*twice")


def test_empty_protocol(write_config):
    assert_error_at(write_config, dns("protocol ="), [4], r"protocol: ")


@pytest.mark.parametrize("protocol", ["udp", "tcp, udp", "udp, tcp"])
@pytest.mark.parametrize("pp", ["v1", "v2"])
@pytest.mark.parametrize("order", ["protocol first", "proxy_protocol first"])
def test_proxy_protocol_with_udp(write_config, protocol, pp, order):
    """No PROXY header on UDP: an error naming proxy_protocol and UDP."""
    first, second = "protocol = %s" % protocol, "proxy_protocol = %s" % pp
    if order == "proxy_protocol first":
        first, second = second, first
    assert_error_at(write_config, dns(first, second), [4, 5],
                    r"proxy_protocol.*(?:udp|UDP)|(?:udp|UDP).*proxy_protocol")


def test_proxy_protocol_with_udp_in_a_later_service(write_config):
    text = ini("""
        [web]
        listen = 127.0.0.1:8080
        backend4 = 127.0.0.1:80
        proxy_protocol = v2
        [dns]
        listen = 127.0.0.1:5353
        backend4 = 127.0.0.1:53
        proxy_protocol = v1
        protocol = udp
    """)
    assert_error_at(write_config, text, [8, 9], r"\[dns\].*proxy_protocol|proxy_protocol.*udp")


# --------------------------------------------------------------------------
# accepted

@pytest.mark.parametrize("value", ["tcp", "udp", "tcp, udp", "udp, tcp", "tcp,udp"])
def test_good_protocol_values(write_config, value):
    path, r = check(write_config, dns("protocol = %s" % value))
    assert r.returncode == 0, r.stderr
    assert "configuration ok" in r.stdout + r.stderr


def test_proxy_protocol_off_with_udp(write_config):
    path, r = check(write_config, dns("protocol = udp", "proxy_protocol = off"))
    assert r.returncode == 0, r.stderr


def test_udp_and_tcp_of_one_address_do_not_collide(write_config):
    text = ini("""
        [web]
        listen = 5353
        backend4 = 127.0.0.1:80
        [dns]
        listen = 5353
        backend4 = 127.0.0.1:53
        protocol = udp
    """)
    path, r = check(write_config, text)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("a,b", [("udp", "udp"), ("tcp, udp", "udp"), ("udp", "udp, tcp")])
def test_two_udp_listens_collide(write_config, a, b):
    text = ini("""
        [dns]
        listen = 5353
        backend4 = 127.0.0.1:53
        protocol = %s
        [dns2]
        listen = 127.0.0.1:5353
        backend4 = 127.0.0.1:54
        protocol = %s
    """ % (a, b))
    assert_error_at(write_config, text, [6], r"conflicts with .*\[dns\]")


def test_example_file_with_udp(write_config):
    """Traefik's 443/tcp + 443/udp, the README's case."""
    text = ini("""
        [global]
        user = nobody
        idle_timeout = 15m
        [websecure]
        listen = 443
        backend4 = 10.43.206.211:443
        backend6 = [fd45:a71:55a6:1:2:1:0:db1]:443
        protocol = tcp, udp
        allow = 0.0.0.0/0, ::/0
        [dns]
        listen = 53
        backend4 = 10.43.0.10:53
        protocol = udp
    """)
    path, r = check(write_config, text)
    assert r.returncode == 0, r.stderr
