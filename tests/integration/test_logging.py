"""Logging: the per-connection debug line
`connection service=NAME client=IP:PORT backend=IP:PORT up=N down=N
duration=Ss end=REASON` with exact byte counts, real client/backend
addresses (IPv6 in brackets), a plausible duration and end=closed; the
start-up lines `listening on ADDR:PORT (NAME)` before `ready`."""

import re
import time

import pytest

from conftest import (V4, V6, T, connect, do_xfer, fmt_addr, distinct_dual_ports,
                      free_dual_port, ini, local_addr, pattern, recv_exact, sha256)


@pytest.mark.parametrize("host", [V4, V6], ids=["ipv4", "ipv6"])
def test_connection_log_line(proxy_factory, backends, host):
    b4 = backends.start_xfer(V4)
    b6 = backends.start_xfer(V6)
    port = free_dual_port()
    proxy = proxy_factory(ini("""
        [global]
        log_level = debug
        [my-service_1]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (port, fmt_addr(*b4), fmt_addr(*b6))))
    up, down = 123457, 654321
    t0 = time.monotonic()
    r = do_xfer(host, port, up, down, seed=99)
    elapsed = time.monotonic() - t0
    assert r["down_count"] == down
    assert r["down_sha"] == sha256(pattern(down, 99))
    res = backends.results.get(timeout=T(5))
    assert res["count"] == up and res["sha256"] == r["up_sha"]

    log = proxy.conn_log(r["client"])
    assert log["service"] == "my-service_1"
    assert log["client"] == r["client"]
    if host == V6:
        assert log["client"].startswith("[::1]:")
    assert log["backend"] == fmt_addr(*(b4 if host == V4 else b6))
    assert log["up"] == r["header_len"] + up
    assert log["down"] == down
    assert log["end"] == "closed"
    assert 0 <= log["duration"] <= elapsed + T(1)
    # exactly one line for this connection
    assert [l["client"] for l in proxy.conn_logs()].count(r["client"]) == 1


def test_connection_log_line_format(proxy_factory, backends):
    """The whole line, field by field, in this order (anything before
    'connection' such as a timestamp or level is allowed)."""
    e4 = backends.start_echo(V4)
    port = free_dual_port()
    proxy = proxy_factory(ini("""
        [global]
        log_level = debug
        [echo]
        listen = 127.0.0.1:%d
        backend4 = %s
    """ % (port, fmt_addr(*e4))))
    with connect(V4, port) as s:
        addr = local_addr(s)
        s.sendall(b"0123456789")
        assert recv_exact(s, 10) == b"0123456789"
    m = proxy.wait_for(r"connection service=echo client=%s backend=%s up=10 down=10 "
                       r"duration=[0-9]+(\.[0-9]+)?s end=closed$"
                       % (re.escape(addr), re.escape(fmt_addr(*e4))))
    assert m


def test_startup_lines(proxy_factory, backends):
    e4 = backends.start_echo(V4)
    e6 = backends.start_echo(V6)
    p1, p2 = distinct_dual_ports(2)
    proxy = proxy_factory(ini("""
        [global]
        log_level = info
        [one]
        listen = %d
        backend4 = %s
        [two]
        listen = 127.0.0.1:%d, [::1]:%d
        backend6 = %s
    """ % (p1, fmt_addr(*e4), p2, p2, fmt_addr(*e6))))
    lines = proxy.stderr_text().splitlines()
    want = ["listening on 0.0.0.0:%d (one)" % p1,
            "listening on [::]:%d (one)" % p1,
            "listening on 127.0.0.1:%d (two)" % p2,
            "listening on [::1]:%d (two)" % p2]
    idx_ready = max(i for i, l in enumerate(lines) if "ready" in l)
    for w in want:
        hits = [i for i, l in enumerate(lines) if l.endswith(w)]
        assert len(hits) == 1, "expected one line ending in %r:\n%s" % (w, "\n".join(lines))
        assert hits[0] < idx_ready, "%r logged after ready" % w

