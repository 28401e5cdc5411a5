"""Client allowlists: klipper-lb's SRC_RANGES (environment mode) and the
per-service `allow = CIDR[, CIDR...]` key (repeatable; a bare address is a
host prefix).

A client outside the list is closed with RST before any backend connection:
the backend (which counts its accepts) sees nothing, the client's recv()
fails with ECONNRESET, the attempt is counted in
dualproxy_denied_total{service} (and not in connections_total), and logged
at debug as `denied service=NAME client=ADDR`.

SRC_RANGES follows klipper-lb (its `entry` accepts only the listed sources
and drops the rest): a family with no range in the list is refused entirely.
dualproxy refuses at once (RST) where klipper-lb's DROP lets the client time
out. SRC_RANGES unset or empty: every client is served."""

import time

import pytest

from conftest import (V4, V6, T, connect, expect_rst, fmt_addr, distinct_dual_ports, free_dual_port,
                      free_port, ini, klipper_env, klipper_ports, scrape, start_counted_tagged,
                      tagged_echo, wait_metric)



def denied_attempt(host, port):
    """A client outside the allowlist: RST before any byte."""
    return expect_rst(host, port)


def assert_backend_untouched(*records_and_addrs):
    """After a short settle, no backend saw a connection. Then a direct
    connection to each backend proves its counting works (exactly 1)."""
    time.sleep(T(0.3))
    for rec, addr in records_and_addrs:
        assert rec.accepted == 0, "backend %s saw %d connection(s) from denied clients" % (
            fmt_addr(*addr), rec.accepted)
    for rec, addr in records_and_addrs:
        with connect(*addr) as s:
            s.recv(64)
        deadline = time.monotonic() + T(3)
        while rec.accepted < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rec.accepted == 1, (fmt_addr(*addr), rec.accepted)


# --------------------------------------------------------------------------
# environment mode: SRC_RANGES

def test_src_ranges_deny_both_families(env_proxy_factory, backends):
    src, dest, rec4, rec6 = klipper_ports(backends)
    env_proxy_factory(klipper_env(SRC_PORT=src, DEST_PORT=dest, DEST_IPS="127.0.0.1,::1",
                                  SRC_RANGES="10.0.0.0/8,2001:db8::/32"))
    for _ in range(3):
        denied_attempt(V4, src)
        denied_attempt(V6, src)
    assert_backend_untouched((rec4, (V4, dest)), (rec6, (V6, dest)))


@pytest.mark.parametrize("ranges", ["127.0.0.0/8,::1/128", "::1/128, 127.0.0.1/32",
                                    "10.0.0.0/8,127.0.0.0/8,2001:db8::/32,::/0"])
def test_src_ranges_allow(env_proxy_factory, backends, ranges):
    src, dest, rec4, rec6 = klipper_ports(backends)
    env_proxy_factory(klipper_env(SRC_PORT=src, DEST_PORT=dest, DEST_IPS="127.0.0.1,::1",
                                  SRC_RANGES=ranges))
    assert tagged_echo(V4, src, b"allowed v4\n") == "v4 AF_INET"
    assert tagged_echo(V6, src, b"allowed v6\n") == "v6 AF_INET6"
    assert (rec4.accepted, rec6.accepted) == (1, 1)


@pytest.mark.parametrize("ranges,denied_host,allowed_host", [
    ("127.0.0.0/8", V6, V4),
    ("10.0.0.0/8,127.0.0.1/32", V6, V4),
    ("::1/128", V4, V6),
    ("2001:db8::/32 ::1", V4, V6),
])
def test_src_ranges_unnamed_family_refused(env_proxy_factory, backends, ranges,
                                           denied_host, allowed_host):
    """A family SRC_RANGES names no range of is refused: IPv4-only
    loadBalancerSourceRanges on a dual-stack Service must not open it to
    every IPv6 client (and the other way round). The client inside a named
    range is served."""
    src, dest, rec4, rec6 = klipper_ports(backends)
    env_proxy_factory(klipper_env(SRC_PORT=src, DEST_PORT=dest, DEST_IPS="127.0.0.1,::1",
                                  SRC_RANGES=ranges))
    tag = "v4 AF_INET" if allowed_host == V4 else "v6 AF_INET6"
    assert tagged_echo(allowed_host, src, b"allowed\n") == tag
    denied_attempt(denied_host, src)
    time.sleep(T(0.3))
    denied_rec = rec4 if denied_host == V4 else rec6
    allowed_rec = rec6 if denied_host == V4 else rec4
    assert denied_rec.accepted == 0
    assert allowed_rec.accepted == 1


# --------------------------------------------------------------------------
# INI: allow

@pytest.fixture
def counted(backends):
    """Counting tagged backends: {'v4': (addr, record), 'v6': (addr, record)}."""
    return {"v4": start_counted_tagged(backends, V4, "v4"),
            "v6": start_counted_tagged(backends, V6, "v6")}


def service(name, port, counted, allow_lines):
    return """
        [%s]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (name, port, fmt_addr(*counted["v4"][0]), fmt_addr(*counted["v6"][0])) \
        + "".join("allow = %s\n" % a for a in allow_lines)


def test_ini_allow_denies(proxy_factory, counted):
    port = free_dual_port()
    mport = free_port()
    proxy = proxy_factory(ini("""
        [global]
        log_level = debug
        metrics_listen = 127.0.0.1:%d
    """ % mport + service("web", port, counted,
                          ["10.0.0.0/8, 2001:db8::/32", "192.168.1.1"])))
    clients = [denied_attempt(V4, port) for _ in range(3)]
    clients += [denied_attempt(V6, port) for _ in range(2)]
    for c in clients:
        proxy.wait_for(r"denied service=web client=%s$" % c.replace("[", r"\[")
                       .replace("]", r"\]").replace(".", r"\."))
    assert_backend_untouched((counted["v4"][1], counted["v4"][0]),
                             (counted["v6"][1], counted["v6"][0]))
    m = wait_metric(V4, mport, "dualproxy_denied_total", 5, protocol="tcp", service="web")
    assert m.value("dualproxy_connections_total", protocol="tcp", service="web", family="ipv4") == 0
    assert m.value("dualproxy_connections_total", protocol="tcp", service="web", family="ipv6") == 0
    assert m.value("dualproxy_connections_active", protocol="tcp", service="web") == 0
    assert m.value("dualproxy_bytes_total", protocol="tcp", service="web", direction="up") == 0
    for reason in ("refused", "timeout", "unreachable", "failed", "reset"):
        assert m.value("dualproxy_backend_errors_total", protocol="tcp", service="web", reason=reason) == 0
    assert proxy.conn_logs() == [], "denied clients must not be relayed"


def test_ini_allow_permits(proxy_factory, counted):
    """Bare addresses are host prefixes; the list may mix families."""
    port = free_dual_port()
    mport = free_port()
    proxy_factory(ini("""
        [global]
        metrics_listen = 127.0.0.1:%d
    """ % mport + service("web", port, counted, ["10.0.0.0/8, 127.0.0.1", "::1"])))
    assert tagged_echo(V4, port, b"ok v4\n") == "v4 AF_INET"
    assert tagged_echo(V6, port, b"ok v6\n") == "v6 AF_INET6"
    assert (counted["v4"][1].accepted, counted["v6"][1].accepted) == (1, 1)
    m = scrape(V4, mport)
    assert m.value("dualproxy_denied_total", protocol="tcp", service="web") == 0


def test_ini_allow_bare_address_is_host_prefix(proxy_factory, counted):
    """allow = 127.0.0.2 is 127.0.0.2/32: 127.0.0.1 is outside; allow = ::2
    is ::2/128: ::1 is outside."""
    port = free_dual_port()
    proxy_factory(ini(service("web", port, counted, ["127.0.0.2", "::2"])))
    denied_attempt(V4, port)
    denied_attempt(V6, port)
    assert_backend_untouched((counted["v4"][1], counted["v4"][0]),
                             (counted["v6"][1], counted["v6"][0]))


def test_ini_allow_is_repeatable_and_per_family(proxy_factory, counted):
    """Repeated keys add up. Unlike SRC_RANGES, an INI list that names only
    IPv4 prefixes does not let IPv6 clients in (and vice versa)."""
    p1, p2 = distinct_dual_ports(2)
    proxy_factory(ini(service("only6", p1, counted, ["10.0.0.0/8", "::1/128"])
                      + service("only4", p2, counted, ["127.0.0.0/8"])))
    assert tagged_echo(V6, p1, b"in\n") == "v6 AF_INET6"
    denied_attempt(V4, p1)
    assert tagged_echo(V4, p2, b"in\n") == "v4 AF_INET"
    denied_attempt(V6, p2)
    time.sleep(T(0.3))
    assert (counted["v4"][1].accepted, counted["v6"][1].accepted) == (1, 1)


def test_allow_applies_per_service(proxy_factory, counted):
    """A denying service next to an open one: only its clients are refused,
    and only its denied counter moves."""
    p1, p2 = distinct_dual_ports(2)
    mport = free_port()
    proxy_factory(ini("""
        [global]
        metrics_listen = 127.0.0.1:%d
    """ % mport + service("closed", p1, counted, ["203.0.113.0/24", "2001:db8::/32"])
        + service("open", p2, counted, [])))
    denied_attempt(V4, p1)
    assert tagged_echo(V4, p2, b"x\n") == "v4 AF_INET"
    denied_attempt(V6, p1)
    assert tagged_echo(V6, p2, b"x\n") == "v6 AF_INET6"
    m = wait_metric(V4, mport, "dualproxy_denied_total", 2, protocol="tcp", service="closed")
    assert m.value("dualproxy_denied_total", protocol="tcp", service="open") == 0
    assert m.value("dualproxy_connections_total", protocol="tcp", service="open", family="ipv4") == 1
    assert m.value("dualproxy_connections_total", protocol="tcp", service="open", family="ipv6") == 1
    assert m.value("dualproxy_connections_total", protocol="tcp", service="closed", family="ipv4") == 0
    assert m.value("dualproxy_connections_total", protocol="tcp", service="closed", family="ipv6") == 0


def test_allow_follows_reload(proxy_factory, counted):
    """A reload changes the allowlist of a kept listener; the denied counter
    carries on across reloads."""
    port = free_dual_port()
    mport = free_port()
    head = """
        [global]
        metrics_listen = 127.0.0.1:%d
    """ % mport
    deny = ini(head + service("web", port, counted, ["10.0.0.0/8", "2001:db8::/32"]))
    allow = ini(head + service("web", port, counted, ["127.0.0.0/8", "::1"]))
    proxy = proxy_factory(deny, readable=True)
    denied_attempt(V4, port)
    denied_attempt(V6, port)
    wait_metric(V4, mport, "dualproxy_denied_total", 2, protocol="tcp", service="web")

    assert proxy.reload_ok(allow) == (0, 2, 0)
    assert tagged_echo(V4, port, b"now in\n") == "v4 AF_INET"
    assert tagged_echo(V6, port, b"now in\n") == "v6 AF_INET6"

    # no allow at all: everybody
    assert proxy.reload_ok(ini(head + service("web", port, counted, []))) == (0, 2, 0)
    assert tagged_echo(V4, port, b"open\n") == "v4 AF_INET"

    assert proxy.reload_ok(deny) == (0, 2, 0)
    denied_attempt(V6, port)
    m = wait_metric(V4, mport, "dualproxy_denied_total", 3, protocol="tcp", service="web")
    assert m.value("dualproxy_connections_total", protocol="tcp", service="web", family="ipv4") == 2
    assert m.value("dualproxy_connections_total", protocol="tcp", service="web", family="ipv6") == 1
    assert (counted["v4"][1].accepted, counted["v6"][1].accepted) == (2, 1)
