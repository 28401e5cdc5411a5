"""Data integrity through the relay: 32 MiB in both directions at the same
time over both families (SHA-256), transfers of many sizes (0 .. 1 MiB+3) in
both directions, half-close relayed both ways (client SHUT_WR -> backend
sees EOF after all data and can still answer; backend SHUT_WR -> client sees
EOF after all data and can still send), and 8 MiB each way while the user's
pipe buffers are used up (no pipe below 64 KiB is kept)."""

import fcntl
import hashlib
import os
import pwd
import socket
import subprocess
import sys

import pytest

from conftest import (V4, V6, T, connect, do_xfer, fmt_addr, free_dual_port,
                      ini, local_addr, pattern, recv_until_eof, sha256)

MIB = 1 << 20


def start_xfer_proxy(proxy_factory, backends, log_level="info"):
    b4 = backends.start_xfer(V4)
    b6 = backends.start_xfer(V6)
    port = free_dual_port()
    proxy = proxy_factory(ini("""
        [global]
        log_level = %s
        [xfer]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (log_level, port, fmt_addr(*b4), fmt_addr(*b6))))
    return proxy, port, b4, b6


def check_xfer(backends, host, port, up, down, seed):
    r = do_xfer(host, port, up, down, seed)
    assert r["down_count"] == down, "client got %d of %d bytes" % (r["down_count"], down)
    assert r["down_sha"] == sha256(pattern(down, seed)), "backend->client data differ"
    res = backends.results.get(timeout=T(5))
    assert res["count"] == up, "backend got %d of %d bytes" % (res["count"], up)
    assert res["sha256"] == r["up_sha"], "client->backend data differ"
    want_family = socket.AF_INET if host == V4 else socket.AF_INET6
    assert res["family"] == want_family
    return r


@pytest.mark.parametrize("host", [V4, V6], ids=["ipv4", "ipv6"])
def test_32mib_full_duplex(proxy_factory, backends, host):
    _, port, _, _ = start_xfer_proxy(proxy_factory, backends)
    check_xfer(backends, host, port, 32 * MIB, 32 * MIB, seed=1000 + len(host))


def test_32mib_full_duplex_both_families_at_once(proxy_factory, backends):
    import threading
    _, port, _, _ = start_xfer_proxy(proxy_factory, backends)
    out = {}

    def run(host, seed):
        try:
            out[host] = do_xfer(host, port, 32 * MIB, 32 * MIB, seed)
        except Exception as e:  # reported below
            out[host] = e

    threads = [threading.Thread(target=run, args=(h, s)) for h, s in ((V4, 7), (V6, 8))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T(40))
    for host, seed in ((V4, 7), (V6, 8)):
        r = out.get(host)
        assert isinstance(r, dict), "%s transfer failed: %r" % (host, r)
        assert r["down_count"] == 32 * MIB
        assert r["down_sha"] == sha256(pattern(32 * MIB, seed))
    got = sorted(backends.results.get(timeout=T(5))["sha256"] for _ in range(2))
    assert got == sorted(out[h]["up_sha"] for h in (V4, V6))


SIZES = [0, 1, 100, 4095, 65536, 65537, MIB + 3]


@pytest.mark.parametrize("host", [V4, V6], ids=["ipv4", "ipv6"])
def test_many_sizes(proxy_factory, backends, host):
    _, port, _, _ = start_xfer_proxy(proxy_factory, backends)
    for i, size in enumerate(SIZES):
        # the same size both ways at once, then each way alone
        check_xfer(backends, host, port, size, size, seed=10 * i)
        check_xfer(backends, host, port, size, 0, seed=10 * i + 1)
        check_xfer(backends, host, port, 0, size, seed=10 * i + 2)


@pytest.mark.parametrize("host", [V4, V6], ids=["ipv4", "ipv6"])
def test_half_close_client_to_backend(proxy_factory, backends, host):
    """Client sends data then SHUT_WR: the sink backend sees EOF only after
    all of it (its hash matches), and its answer still reaches the client,
    followed by EOF."""
    s4 = backends.start_sink(V4)
    s6 = backends.start_sink(V6)
    port = free_dual_port()
    proxy = proxy_factory(ini("""
        [global]
        log_level = debug
        [sink]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (port, fmt_addr(*s4), fmt_addr(*s6))))
    data = pattern(3 * MIB + 17, 42)
    with connect(host, port) as s:
        client = local_addr(s)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = recv_until_eof(s)
    assert reply == ("%d %s\n" % (len(data), sha256(data))).encode(), reply
    log = proxy.conn_log(client)
    assert log["up"] == len(data)
    assert log["down"] == len(reply)
    assert log["end"] == "closed"


@pytest.mark.parametrize("host", [V4, V6], ids=["ipv4", "ipv6"])
def test_half_close_backend_to_client(proxy_factory, backends, host):
    """The backend sends N bytes then SHUT_WR: the client sees all N bytes
    then EOF; afterwards the client->backend direction still works."""
    proxy, port, _, _ = start_xfer_proxy(proxy_factory, backends, log_level="debug")
    down = 2 * MIB + 5
    with connect(host, port) as s:
        client = local_addr(s)
        header = ("%d 77\n" % down).encode()
        s.sendall(header)
        h = hashlib.sha256()
        n = recv_until_eof(s, hasher=h)
        assert n == down
        assert h.hexdigest() == sha256(pattern(down, 77))
        # the backend has half-closed; our direction must still be open
        assert backends.results.empty()
        up = pattern(MIB + 1, 78)
        s.sendall(up)
        s.sendall(b"tail")
        s.shutdown(socket.SHUT_WR)
        res = backends.results.get(timeout=T(5))
        assert res["count"] == len(up) + 4
        assert res["sha256"] == sha256(up + b"tail")
        # both directions are closed now: the connection ends
        assert recv_until_eof(s, timeout=T(5)) == b""
    log = proxy.conn_log(client)
    assert log["up"] == len(header) + len(up) + 4
    assert log["down"] == down
    assert log["end"] == "closed"


@pytest.mark.parametrize("host", [V4, V6], ids=["ipv4", "ipv6"])
def test_half_close_backend_first_then_slow_client(proxy_factory, backends, host):
    """Backend half-closes right away (N=0): the client sees EOF at once,
    then sends in several pieces; every piece arrives."""
    _, port, _, _ = start_xfer_proxy(proxy_factory, backends)
    with connect(host, port) as s:
        s.sendall(b"0 5\n")
        assert recv_until_eof(s, timeout=T(5)) == b""
        pieces = [pattern(1000 + i, i) for i in range(10)]
        for p in pieces:
            s.sendall(p)
        s.shutdown(socket.SHUT_WR)
        res = backends.results.get(timeout=T(5))
        assert res["sha256"] == sha256(b"".join(pieces))


# Holds pipes as the user it runs as until the kernel makes short ones (the
# user's pipe buffers, fs.pipe-user-pages-soft, are used up); prints how many.
PIPE_HOG = r"""
import fcntl, os, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
pipes = []
while 2 * len(pipes) + 16 < hard:
    pipes.append(os.pipe())
    if fcntl.fcntl(pipes[-1][0], fcntl.F_GETPIPE_SZ) < 65536:
        print("short", len(pipes), flush=True)
        break
else:
    print("never short", len(pipes), flush=True)
sys.stdin.read()
"""


def pipe_sizes(pid):
    """The sizes of the pipes process pid holds, each end once."""
    sizes = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        path = "/proc/%d/fd/%s" % (pid, fd)
        try:
            if not os.readlink(path).startswith("pipe:"):
                continue
            own = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            sizes.append(fcntl.fcntl(own, fcntl.F_GETPIPE_SZ))
        finally:
            os.close(own)
    return sizes


@pytest.mark.parametrize("host", [V4, V6], ids=["ipv4", "ipv6"])
def test_bulk_when_the_users_pipe_buffers_are_used_up(proxy_factory, backends, host):
    """Another process of the user dualproxy runs as holds that user's whole
    pipe-buffer allowance: the kernel then makes new pipes of 2 pages, and
    splicing through one would take a wake-up per 8 KiB. dualproxy refuses
    such pipes: it holds none below 64 KiB, bulk data goes through its
    buffers and arrives whole, and the log says why."""
    if os.geteuid() != 0:
        pytest.skip("needs root: dualproxy and the pipe holder run as nobody")
    with open("/proc/sys/fs/pipe-user-pages-soft") as f:
        if int(f.read()) == 0:
            pytest.skip("fs.pipe-user-pages-soft is 0: no per-user pipe limit")
    nobody = pwd.getpwnam("nobody")
    hog = subprocess.Popen([sys.executable, "-c", PIPE_HOG], user=nobody.pw_uid,
                           group=nobody.pw_gid, extra_groups=[],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        state = hog.stdout.readline().split()
        if state[:1] != ["short"]:
            pytest.skip("the descriptor limit is too low to use up the pipe "
                        "buffers (%s)" % " ".join(state))
        proxy, port, _, _ = start_xfer_proxy(proxy_factory, backends)
        check_xfer(backends, host, port, 8 * MIB, 8 * MIB, seed=2000 + len(host))
        sizes = pipe_sizes(proxy.proc.pid)
        assert all(s >= 65536 for s in sizes), "pipes of %r bytes" % sizes
        proxy.wait_for(r"the kernel made a pipe of \d+ bytes")
    finally:
        hog.stdin.close()
        hog.wait(timeout=T(5))
