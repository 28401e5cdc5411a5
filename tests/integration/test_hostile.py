"""Hostile clients, all at once over both families, against an echo and a
sink service:

  * normal transfers of random sizes (1 B .. 4 MiB) echoed back, checked by
    SHA-256, and half-closers that send up to 1 MiB, shutdown(SHUT_WR) and
    then read the sink's verdict (count and SHA-256) and EOF;
  * clients that reset (SO_LINGER 0) in the middle of a transfer;
  * slow readers that read 1 KiB every 50 ms from a large echo (the relay
    must stop reading the backend, and the backend the client), then either
    read the rest at full speed (it must be exact) or go away;
  * clients that connect, send nothing and close (FIN or RST).

Every normal transfer must be exact, every partial echo a prefix of what was
sent, every connection must end with its one log line (never end=error),
and afterwards the daemon gives back every descriptor and its RSS stays
within 8 MiB of what it was after a warm-up round of the same mix."""

import asyncio
import collections
import hashlib
import random
import socket
import struct

from conftest import (V4, V6, T, distinct_dual_ports, fmt_addr, ini, proc_fd_kinds,
                      proc_fds_but_pipes, proc_rss_kib, wait_fds_back, wait_until)

WARMUP = 2.5        # seconds
MAIN = 10.0         # seconds
MAX_SIZE = 4 << 20
RSS_SLACK_KIB = 8 << 10


class Run:
    """Counters and failures of one round."""

    def __init__(self):
        self.ok = collections.Counter()
        self.connections = 0
        self.failures = []

    def fail(self, what, err):
        self.failures.append("%s: %r" % (what, err))


async def open_conn(host, port, run):
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, limit=1 << 16), T(5))
    run.connections += 1
    return reader, writer


def abort(writer):
    sock = writer.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


async def write_all(writer, data, step=1 << 18):
    view = memoryview(data)
    for off in range(0, len(data), step):
        writer.write(view[off:off + step])
        await writer.drain()


async def normal(host, port, run, rng, size):
    """Echo `size` bytes, sent and received concurrently; exact by SHA-256."""
    data = rng.randbytes(size)
    reader, writer = await open_conn(host, port, run)
    try:
        async def send():
            await write_all(writer, data)
            writer.write_eof()

        async def receive():
            h = hashlib.sha256()
            n = 0
            while True:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    return n, h.hexdigest()
                n += len(chunk)
                h.update(chunk)
        _, (n, digest) = await asyncio.wait_for(
            asyncio.gather(send(), receive()), T(20 + size / (1 << 20)))
        assert n == size, "echo of %d bytes returned %d" % (size, n)
        assert digest == hashlib.sha256(data).hexdigest(), "echo of %d bytes differs" % size
    finally:
        writer.close()
    run.ok["normal"] += 1


async def half_closer(host, port, run, rng):
    """To the sink: send, SHUT_WR, then read '<count> <sha256>\\n' and EOF."""
    size = rng.choice((0, 1, rng.randrange(1, 1 << 20)))
    data = rng.randbytes(size)
    reader, writer = await open_conn(host, port, run)
    try:
        await write_all(writer, data)
        writer.write_eof()
        reply = await asyncio.wait_for(reader.read(), T(20))
        want = ("%d %s\n" % (size, hashlib.sha256(data).hexdigest())).encode()
        assert reply == want, "sink verdict %r, expected %r" % (reply, want)
    finally:
        writer.close()
    run.ok["half-close"] += 1


async def resetter(host, port, run, rng):
    """Send a random amount, read part of the echo, then reset."""
    data = rng.randbytes(rng.randrange(1, 2 << 20))
    want = rng.randrange(0, len(data) + 1)
    reader, writer = await open_conn(host, port, run)
    sender = None
    try:
        sender = asyncio.ensure_future(write_all(writer, data))
        got = bytearray()
        while len(got) < want:
            chunk = await asyncio.wait_for(reader.read(min(65536, want - len(got))), T(20))
            assert chunk, "EOF after %d of %d echoed bytes" % (len(got), want)
            got += chunk
        assert data.startswith(got), "partial echo is not a prefix of what was sent"
    finally:
        if sender is not None:
            sender.cancel()
        abort(writer)
    run.ok["reset"] += 1


async def slow_reader(host, port, run, rng, finish):
    """Send 4 MiB, read 1 KiB every 50 ms for ~1.5 s (backpressure all the
    way to the sender), then either read the rest at full speed (exact) or
    go away (RST, with data unread)."""
    data = rng.randbytes(4 << 20)
    reader, writer = await open_conn(host, port, run)
    sender = asyncio.ensure_future(write_all(writer, data, 1 << 16))
    try:
        got = bytearray()
        for _ in range(30):
            chunk = await asyncio.wait_for(reader.read(1024), T(10))
            assert chunk, "EOF after %d bytes of a slow read" % len(got)
            got += chunk
            await asyncio.sleep(0.05)
        assert data.startswith(got), "slow read is not a prefix of what was sent"
        if not finish:
            run.ok["slow-abandoned"] += 1
            return
        await asyncio.wait_for(sender, T(20))
        writer.write_eof()
        got += await asyncio.wait_for(reader.read(), T(20))
        assert len(got) == len(data) and got == data, \
            "slow reader got %d bytes, differs from the %d sent" % (len(got), len(data))
        run.ok["slow-complete"] += 1
    finally:
        sender.cancel()
        if finish:
            writer.close()
        else:
            abort(writer)


async def silent(host, port, run, rng):
    """Connect, send nothing, close (FIN or RST) after 0-100 ms."""
    _, writer = await open_conn(host, port, run)
    await asyncio.sleep(rng.random() * 0.1)
    if rng.random() < 0.5:
        writer.close()
    else:
        abort(writer)
    run.ok["silent"] += 1


async def worker(kind, idx, ports, run, deadline, seed):
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    n = 0
    while loop.time() < deadline:
        host = (V4, V6)[(idx + n) % 2]
        n += 1
        what = "%s#%d.%d %s" % (kind, idx, n, host)
        try:
            if kind == "normal":
                # the extremes first, then log-uniform sizes
                size = {1: 1, 2: MAX_SIZE}.get(n, min(MAX_SIZE, int(2 ** rng.uniform(0, 22))))
                await normal(host, ports["echo"], run, rng, size)
            elif kind == "half":
                await half_closer(host, ports["sink"], run, rng)
            elif kind == "reset":
                await resetter(host, ports["echo"], run, rng)
            elif kind == "slow":
                await slow_reader(host, ports["echo"], run, rng, finish=n % 2 == 1)
            else:
                await silent(host, ports["echo"], run, rng)
        except (AssertionError, OSError, asyncio.TimeoutError, EOFError) as e:
            run.fail(what, e)


PLAN = {"normal": 4, "half": 2, "reset": 2, "slow": 2, "silent": 2}


def round_of(ports, seconds, seed):
    run = Run()

    async def main():
        deadline = asyncio.get_running_loop().time() + seconds
        await asyncio.gather(*(worker(kind, i, ports, run, deadline, seed * 1000 + 17 * i + j)
                               for j, (kind, n) in enumerate(PLAN.items())
                               for i in range(n)))
    asyncio.run(asyncio.wait_for(main(), seconds + T(60)))
    return run


def test_hostile_clients(proxy_factory, backends):
    e4, e6 = backends.start_echo(V4), backends.start_echo(V6)
    s4, s6 = backends.start_sink(V4), backends.start_sink(V6)
    echo, sink = distinct_dual_ports(2)
    proxy = proxy_factory(ini("""
        [global]
        log_level = debug
        drain_timeout = 1s
        [echo]
        listen = 127.0.0.1:%d, [::1]:%d
        backend4 = %s
        backend6 = %s
        [sink]
        listen = 127.0.0.1:%d, [::1]:%d
        backend4 = %s
        backend6 = %s
    """ % (echo, echo, fmt_addr(*e4), fmt_addr(*e6),
           sink, sink, fmt_addr(*s4), fmt_addr(*s6))))
    pid = proxy.proc.pid
    started = proxy.mark()
    ports = {"echo": echo, "sink": sink}
    baseline = proc_fds_but_pipes(pid)
    pipes_at_start = proc_fd_kinds(pid)["pipe"]
    budget = int(proxy.wait_for(r"pipe budget (\d+)").group(1))

    def settled(run, logged_before):
        """Every connection of the round ended (one log line each) and
        gave its descriptors back."""
        wait_until(lambda: len(proxy.conn_logs()) >= logged_before + run.connections,
                   T(10), what="%d connection lines" % run.connections)
        wait_fds_back(pid, baseline, T(10))
        logs = proxy.conn_logs()
        assert len(logs) == logged_before + run.connections, \
            "%d connection lines for %d connections" % (len(logs) - logged_before,
                                                       run.connections)
        return logs[logged_before:]

    warm = round_of(ports, WARMUP, 1)
    assert not warm.failures, "warm-up: %d failures, first: %s" % (
        len(warm.failures), warm.failures[:5])
    settled(warm, 0)
    rss_warm = proc_rss_kib(pid)

    main = round_of(ports, MAIN, 2)
    assert proxy.running(), "dualproxy died:\n%s" % proxy._tail()
    assert not main.failures, "%d failures (of %d connections), first: %s" % (
        len(main.failures), main.connections, main.failures[:5])
    for kind in ("normal", "half-close", "reset", "slow-complete", "slow-abandoned", "silent"):
        assert main.ok[kind] > 0, "no %s client completed: %r" % (kind, main.ok)
    logs = settled(main, warm.connections)

    ends = collections.Counter(d["end"] for d in logs)
    assert set(ends) <= {"closed", "client-reset"}, "unexpected ends: %r" % ends
    assert ends["closed"] >= main.ok["normal"] + main.ok["half-close"] + main.ok["slow-complete"]
    assert ends["client-reset"] >= main.ok["reset"] + main.ok["slow-abandoned"]
    problems = proxy.grep(r" (warning|error): ", since=started)
    assert not problems, problems[:5]

    rss = proc_rss_kib(pid)
    assert rss <= rss_warm + RSS_SLACK_KIB, \
        "RSS %d KiB after the run, %d KiB after the warm-up" % (rss, rss_warm)
    pipes = proc_fd_kinds(pid)["pipe"]
    assert pipes <= pipes_at_start + 2 * budget, \
        "%d pipe descriptors, budget %d pipes" % (pipes, budget)
