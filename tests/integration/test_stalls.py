"""The event loop never waits on anyone: a service manager that does not read
its notify socket, a log reader that does not read stderr, and metrics
clients that do not read their responses must not stall a single relay.

Each test runs two helper processes (this file run as a script, so that
neither shares an interpreter lock with the test or with the other):
  * a probe, with its own echo backend, that every PROBE_INTERVAL (5 ms)
    sends a small request through dualproxy on a keep-alive connection and
    on a fresh connection, alternating the families. It measures how long
    each request spent inside dualproxy: from its send to the kernel's
    receive timestamp (SO_TIMESTAMPNS) at the backend, plus from the
    backend's reply to the kernel's receive timestamp at the probe, plus a
    fresh connection's connect. A stalled loop holds the requests in flight
    for as long as it stalls; the probe's own waits for a processor (it
    shares the machine with the load) are not counted. The longest time
    between two answers as the probe saw them is printed too.
  * a load generator, with its own echo backends, that makes LOAD short
    connections (connect, 32 bytes there and back, close) through dualproxy,
    alternating the families, CONCURRENCY at a time.
No probe request may fail, none may spend more than GAP = T(0.1) inside
dualproxy: 100 ms, 300 ms for the sanitizer build (DUALPROXY_TIME_SCALE=3),
1 s under valgrind (10); no load connection may fail. LOAD is 10,000
connections in every build: under valgrind they take about 5 s a test (the
daemon, not the load generator, is then the bottleneck), so the load is not
scaled. Each test prints what it measured (run pytest with -s to see it).

  * test_notify_socket_never_read: NOTIFY_SOCKET is a datagram socket the
    test binds and does not read (the kernel queues
    net.unix.max_dgram_qlen datagrams, 10 by default), and 50 SIGHUP reloads
    (each adding or removing a service) are spread over the load: no probe
    gap, no failed connection, every reload applied,
    dualproxy_notify_dropped_total > 0; once the test reads the socket, the
    last message it gets carries READY=1 (the state that was dropped is
    sent again with the next status message, within a status interval).
  * test_stderr_never_read: stderr is a pipe, or a unix stream socket as
    journald gives, that the test does not read (it sees the daemon is up
    through /healthz), at log_level = debug (a line per
    connection), under the load: no probe gap, no failed connection; when
    the test reads the pipe, "N log lines dropped: stderr was not being
    read" appears, the N of such lines add up to
    dualproxy_log_lines_dropped_total, every line that arrives is whole, and
    every connection's line was either written or counted as dropped.
  * test_stderr_slow_reader_at_exit: with the log buffer full and a reader
    that takes 4 KiB every half second, dualproxy exits within a second or
    so of SIGTERM (the last lines get a moment, not the whole buffer's time).
  * test_metrics_clients_never_read: STUCK metrics clients with a tiny
    receive buffer and segment size send GET /metrics and never read (the
    response, made large by FILLER services, stays half-written in the
    daemon); under the load: no probe gap, no failed connection, /healthz
    from another client answered every time (within T(1), as the test
    sees it), and the daemon closes the stuck clients at the 5 s metrics
    timeout.
  * test_metrics_slots_full_of_stuck_clients: more stuck clients than the
    endpoint serves at once (32): /healthz is still answered.
"""

import json
import os
import re
import select
import signal
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time

PROBE_INTERVAL = 0.005     # seconds between probe requests
PROBE_MESSAGE = b"probe-0123456789"
LOAD_MESSAGE = b"L" * 32
LOAD_GIVE_UP = 50          # failed connections after which the load stops

# --------------------------------------------------------------------------
# the helper processes (run as `python3 test_stalls.py probe|load`); only
# the standard library, nothing shared with the test process


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # <asm-generic/socket.h>
STAMP = struct.Struct("!qq")  # the probe backend's arrival and reply times, ns


def _enable_stamps(sock):
    """Asks the kernel for the arrival time of what sock receives."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        pass


def _recv_stamped(sock, n):
    """Up to n bytes and the time (ns since the epoch) the kernel received
    them, or when they were read if it gives no timestamp."""
    data, anc, _, _ = sock.recvmsg(n, socket.CMSG_SPACE(16))
    now = time.time_ns()
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
            sec, nsec = struct.unpack("qq", payload[:16])
            return data, sec * 1000000000 + nsec
    return data, now


def _echo_server(host):
    lst = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _enable_stamps(lst)  # from now on the kernel stamps what it receives
    lst.bind((host, 0))
    lst.listen(4096)
    lst.setblocking(False)
    return lst


def _serve_probe(listeners):
    """The probe's backend, in this thread: for each PROBE_MESSAGE received it
    sends it back followed by STAMP (when the kernel received it, when the
    reply was sent)."""
    sel = selectors.DefaultSelector()
    for lst in listeners:
        sel.register(lst, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                try:
                    conn, _ = key.fileobj.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                _enable_stamps(conn)
                sel.register(conn, selectors.EVENT_READ, bytearray())
                continue
            conn, buf = key.fileobj, key.data
            try:
                data, arrived = _recv_stamped(conn, 65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(conn)
                conn.close()
                continue
            buf += data
            try:
                while len(buf) >= len(PROBE_MESSAGE):
                    msg = bytes(buf[:len(PROBE_MESSAGE)])
                    del buf[:len(PROBE_MESSAGE)]
                    conn.sendall(msg + STAMP.pack(arrived, time.time_ns()))
            except OSError:
                sel.unregister(conn)
                conn.close()


def _probe_request(sock):
    """One request on a connected socket: returns the nanoseconds it spent
    inside dualproxy, both ways, as the kernel timed its arrivals."""
    reply = b""
    sent = time.time_ns()
    sock.sendall(PROBE_MESSAGE)
    want = len(PROBE_MESSAGE) + STAMP.size
    while len(reply) < want:
        data, back = _recv_stamped(sock, want - len(reply))
        if not data:
            raise ConnectionError("EOF after %d of %d bytes" % (len(reply), want))
        reply += data
    if reply[:len(PROBE_MESSAGE)] != PROBE_MESSAGE:
        raise ValueError("echo differs: %r" % reply)
    arrived, replied = STAMP.unpack(reply[len(PROBE_MESSAGE):])
    return (arrived - sent) + (back - replied)


def probe_main(timeout):
    """Prints 'backends PORT4 PORT6', reads 'go PORT', probes until 'stop',
    then prints the results as JSON: the longest time a request spent in
    dualproxy ("max_gap", a fresh connection's connect included) and, for
    information, the longest time between two answers as the probe saw it
    ("max_wall_gap", which includes the probe's own waits for a processor)."""
    listeners = [_echo_server("127.0.0.1"), _echo_server("::1")]
    threading.Thread(target=_serve_probe, args=(listeners,), daemon=True).start()
    print("backends %d %d" % tuple(l.getsockname()[1] for l in listeners), flush=True)
    port = int(sys.stdin.readline().split()[1])
    stop = threading.Event()

    def wait_stop():
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=wait_stop, daemon=True).start()
    targets = [("127.0.0.1", port), ("::1", port)]

    def fresh(target):
        s = socket.create_connection(target, timeout=timeout)
        s.settimeout(timeout)
        _enable_stamps(s)
        return s

    keep = [fresh(t) for t in targets]
    started = time.monotonic()
    answered = [started]  # when each request was answered, as the probe saw it
    inside = []           # (seconds in dualproxy, at, kind, host, of which connect)
    failures = []
    requests = 0
    i = 0
    while not stop.is_set():
        fam = i % 2
        for kind in ("keep-alive", "fresh"):
            requests += 1
            s = None
            t0 = time.monotonic()
            try:
                s = keep[fam] if kind == "keep-alive" else fresh(targets[fam])
                connecting = time.monotonic() - t0 if kind == "fresh" else 0.0
                spent = _probe_request(s) / 1e9 + connecting
                answered.append(time.monotonic())
                inside.append((spent, t0 - started, kind, targets[fam][0], connecting))
            except (OSError, ValueError) as e:
                failures.append("%.3f s: %s %s: %r" % (time.monotonic() - started, kind,
                                                       targets[fam][0], e))
                if kind == "keep-alive":
                    try:
                        keep[fam].close()
                        keep[fam] = fresh(targets[fam])
                    except OSError:
                        pass
            finally:
                if kind == "fresh" and s is not None:
                    s.close()
        i += 1
        time.sleep(PROBE_INTERVAL)
    ended = time.monotonic()
    answered.append(ended)
    wall = sorted(((b - a, a - started) for a, b in zip(answered, answered[1:])),
                  reverse=True)
    inside.sort(reverse=True)
    for s in keep:
        s.close()
    print(json.dumps({"requests": requests, "answered": len(answered) - 2,
                      "failures": len(failures), "first_failures": failures[:10],
                      "max_gap": inside[0][0] if inside else None, "worst": inside[:5],
                      "median": inside[len(inside) // 2][0] if inside else None,
                      "max_wall_gap": wall[0][0], "worst_wall_gaps": wall[:3],
                      "seconds": ended - started}), flush=True)


def load_main(timeout):
    """Prints 'backends PORT4 PORT6', reads 'go PORT N CONCURRENCY', makes N
    connections printing 'progress K' every 100, then prints the results as
    JSON."""
    import asyncio

    async def echo(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def main():
        loop = asyncio.get_running_loop()
        servers = [await asyncio.start_server(echo, host, 0, backlog=4096)
                   for host in ("127.0.0.1", "::1")]
        print("backends %d %d" % tuple(s.sockets[0].getsockname()[1] for s in servers),
              flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        _, port, n, concurrency = line.split()
        port, n, concurrency = int(port), int(n), int(concurrency)
        hosts = ("127.0.0.1", "::1")
        state = {"next": 0, "done": 0, "failed": 0, "errors": []}
        started = time.monotonic()

        async def one(k):
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(hosts[k % 2], port), timeout)
            try:
                writer.write(LOAD_MESSAGE)
                got = await asyncio.wait_for(reader.readexactly(len(LOAD_MESSAGE)), timeout)
                if got != LOAD_MESSAGE:
                    raise ValueError("echo differs")
            finally:
                writer.close()

        async def worker():
            while state["next"] < n and state["failed"] < LOAD_GIVE_UP:
                k = state["next"]
                state["next"] += 1
                try:
                    await one(k)
                except (OSError, ValueError, asyncio.TimeoutError,
                        asyncio.IncompleteReadError) as e:
                    state["failed"] += 1
                    if len(state["errors"]) < 10:
                        state["errors"].append("%s: %r" % (hosts[k % 2], e))
                state["done"] += 1
                if state["done"] % 100 == 0:
                    print("progress %d" % state["done"], flush=True)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
        print(json.dumps({"connections": state["done"], "failed": state["failed"],
                          "errors": state["errors"], "seconds": elapsed}), flush=True)
        for s in servers:
            s.close()

    asyncio.run(main())


def set_nice(increment):
    """Changes this process's nice value (before it starts threads); a
    negative one only as root."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + increment)
    except OSError:
        pass


if __name__ == "__main__":
    # the probe must not measure its own wait for a processor, the load is
    # a batch job: the daemon gets the processor before the load generator
    set_nice({"probe": -10, "load": 10}[sys.argv[1]])
    {"probe": probe_main, "load": load_main}[sys.argv[1]](float(sys.argv[2]))
    sys.exit(0)

# --------------------------------------------------------------------------
# the tests

import pytest  # noqa: E402

from conftest import (V4, V6, T, Proxy, _stop_checked,  # noqa: E402
                      fmt_addr, free_dual_port, free_port, http_get, ini, scrape,
                      wait_until)

GAP = T(0.1)               # the longest a probe may wait for an answer
LOAD = 10000
CONCURRENCY = 32
RELOADS = 50
STUCK = 8                  # metrics clients that never read their response
FILLER = 40                # services that make the metrics response large
METRICS_TIMEOUT = 5.0      # metrics.c: seconds a client has to send and read
METRICS_SLOTS = 32         # metrics.c: clients served at once
STATUS_INTERVAL = 2.0      # lifecycle.c: seconds between STATUS= updates


class Helper:
    """A helper process of this file (probe or load)."""

    def __init__(self, mode):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), mode, str(T(5))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines = []
        self.progress = 0
        self.cond = threading.Condition()
        words = self._line(T(10)).split()
        assert words[0] == "backends", words
        self.backend4 = (V4, int(words[1]))
        self.backend6 = (V6, int(words[2]))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _line(self, timeout):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert r, "helper %r said nothing for %.0f s" % (self.proc.args, timeout)
        return self.proc.stdout.readline()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                if line.startswith("progress "):
                    self.progress = int(line.split()[1])
                else:
                    self.lines.append(line)
                self.cond.notify_all()

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_progress(self, n, timeout):
        with self.cond:
            ok = self.cond.wait_for(lambda: self.progress >= n or self.lines, timeout)
        assert ok, "load: %d connections after %.0f s, waiting for %d" % (
            self.progress, timeout, n)

    def result(self, timeout):
        with self.cond:
            self.cond.wait_for(lambda: self.lines, timeout)
            assert self.lines, "helper %r: no result after %.0f s" % (self.proc.args, timeout)
            return json.loads(self.lines[0])

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


@pytest.fixture
def helpers():
    """helpers(mode) -> Helper; all are killed at teardown."""
    started = []

    def make(mode):
        h = Helper(mode)
        started.append(h)
        return h
    yield make
    for h in started:
        h.close()


def services(probe, probe_port, load, load_port, extra=""):
    return """
        [probe]
        listen = %d
        backend4 = %s
        backend6 = %s
        [load]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (probe_port, fmt_addr(*probe.backend4), fmt_addr(*probe.backend6),
           load_port, fmt_addr(*load.backend4), fmt_addr(*load.backend6)) + extra


def run_load(probe, probe_port, load, load_port, during=None):
    """Starts the probe, runs the load (calling during(load) meanwhile),
    stops the probe; returns (probe results, load results) after checking
    both: every connection served, no gap longer than GAP."""
    probe.send("go %d" % probe_port)
    time.sleep(0.2)
    load.send("go %d %d %d" % (load_port, LOAD, CONCURRENCY))
    error = None
    try:
        if during is not None:
            during(load)
    except AssertionError as e:
        error = e  # reported after what the probe saw
    lr = load.result(T(60))
    time.sleep(0.2)
    probe.send("stop")
    pr = probe.result(T(20))
    print("\nload: %(connections)d connections in %(seconds).2f s, %(failed)d failed" % lr)
    print("probe: %d requests in %.2f s, %d failed; longest in dualproxy %.1f ms "
          "(bound %.0f ms, median %.2f ms): %s; longest between answers as the probe "
          "saw it %.1f ms" % (
              pr["requests"], pr["seconds"], pr["failures"], (pr["max_gap"] or 0) * 1000,
              GAP * 1000, (pr["median"] or 0) * 1000,
              ", ".join("%s %s at %.2f s %.1f ms (connect %.1f ms)"
                        % (kind, host, at, spent * 1000, c * 1000)
                        for spent, at, kind, host, c in pr["worst"]),
              pr["max_wall_gap"] * 1000))
    assert pr["failures"] == 0, pr["first_failures"]
    assert lr["connections"] == LOAD and lr["failed"] == 0, lr
    assert pr["answered"] >= 100, pr
    assert pr["max_gap"] <= GAP, (
        "a request waited %.1f ms in dualproxy (bound %.0f ms): %r"
        % (pr["max_gap"] * 1000, GAP * 1000, pr["worst"]))
    if error is not None:
        raise error
    return pr, lr


def wait_idle(mport):
    """Waits until no connection is open in the daemon; returns the Metrics."""
    def idle():
        m = scrape(V4, mport)
        active = sum(v for (name, _), v in m.samples.items()
                     if name == "dualproxy_connections_active")
        return m if active == 0 else None
    return wait_until(idle, T(10), what="no connection open")


# --------------------------------------------------------------------------
# the service manager does not read


class SilentManager:
    """NOTIFY_SOCKET: bound, not read until read_all()."""

    def __init__(self, directory):
        self.path = os.path.join(str(directory), "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)  # the daemon sends as nobody

    def env(self):
        return dict(os.environ, NOTIFY_SOCKET=self.path)

    def read_all(self, quiet):
        """Every message until none came for `quiet` seconds: a list of
        (seconds since the call, [assignments])."""
        start = time.monotonic()
        out = []
        while True:
            r, _, _ = select.select([self.sock], [], [], quiet)
            if not r:
                return out
            data = self.sock.recv(4096).decode("utf-8", "replace")
            out.append((time.monotonic() - start, [a for a in data.split("\n") if a]))

    def close(self):
        self.sock.close()


def test_notify_socket_never_read(proxy_factory, helpers, public_tmp):
    manager = SilentManager(public_tmp)
    probe, load = helpers("probe"), helpers("load")
    probe_port, load_port, spare_port = free_dual_port(), free_dual_port(), free_dual_port()
    mport = free_port(V4)
    base = ini("""
        [global]
        metrics_listen = 127.0.0.1:%d
    """ % mport) + ini(services(probe, probe_port, load, load_port))
    spare = ini("""
        [spare]
        listen = %d
        backend4 = %s
    """ % (spare_port, fmt_addr(*load.backend4)))
    try:
        proxy = proxy_factory(base, env=manager.env(), readable=True)
        applied = []

        def reloads(load):
            for k in range(RELOADS):
                load.wait_progress((k + 1) * LOAD // (RELOADS + 2), T(60))
                added, kept, removed = proxy.reload_ok(base + spare if k % 2 == 0 else base)
                applied.append((added, kept, removed))

        run_load(probe, probe_port, load, load_port, during=reloads)
        assert applied == [(2, 4, 0) if k % 2 == 0 else (0, 4, 2) for k in range(RELOADS)]
        m = wait_idle(mport)
        dropped = m.value("dualproxy_notify_dropped_total")
        print("notify: %d messages dropped" % dropped)
        assert m.value("dualproxy_reloads_total", result="success") == RELOADS
        assert dropped > 0, "%d reloads and the queue never filled?" % RELOADS

        # the manager reads again: what is queued, then what the daemon
        # sends from now on; the status timer carries the dropped READY=1
        messages = manager.read_all(quiet=STATUS_INTERVAL + T(1.5))
        print("notify: %d messages read, the last %r after %.2f s"
              % (len(messages), messages[-1][1] if messages else None,
                 messages[-1][0] if messages else 0))
        assert messages, "nothing on the notify socket"
        when, last = messages[-1]
        assert "READY=1" in last, (
            "the last message is not READY=1: %r\nall: %r" % (last, messages))
        assert any(a.startswith("STATUS=") for a in last), last
        assert when <= STATUS_INTERVAL + T(1.5), messages
        states = [a for _, msg in messages for a in msg
                  if a in ("READY=1", "RELOADING=1", "STOPPING=1")]
        assert states[-1] == "READY=1", states
        m = scrape(V4, mport)
        assert m.value("dualproxy_notify_dropped_total") == dropped, "dropped more on read"
    finally:
        manager.close()


# --------------------------------------------------------------------------
# the log reader does not read

LOG_LINE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warning|info|debug): ")
DROPPED_RE = re.compile(r"(\d+) log lines dropped: stderr was not being read$")


class PipedProxy(Proxy):
    """A dualproxy whose stderr is a pipe (or, as under journald, a unix
    stream socket) that nobody reads until start_reading()."""

    def __init__(self, config_path, kind):
        super().__init__(config_path)
        self.kind = kind

    def start(self, wait_ready=False):
        if self.kind == "pipe":
            r, w = os.pipe()
            self.pipe = os.fdopen(r, "rb")
        else:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.pipe = ours.makefile("rb")
            ours.close()  # the file keeps the socket open
            w = theirs.detach()
        try:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=w, env=self.env)
        finally:
            os.close(w)
        return self

    def start_reading(self):
        self.proc.stderr = self.pipe  # what Proxy._read_stderr reads
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def read_slowly(self, size, interval):
        """A reader that takes `size` bytes every `interval` seconds."""
        def slow():
            try:
                while self.pipe.raw.read(size):
                    time.sleep(interval)
            except (OSError, ValueError):
                pass
        self._slow = threading.Thread(target=slow, daemon=True)
        self._slow.start()


@pytest.fixture
def piped_proxy(tmp_path):
    """piped_proxy(config_text, kind='pipe') -> PipedProxy, stopped and
    checked at teardown like proxy_factory's."""
    started = []

    def make(text, kind="pipe"):
        path = tmp_path / ("dualproxy-%d.ini" % len(started))
        path.write_text(text)
        p = PipedProxy(path, kind)
        started.append((p, True))
        return p.start()
    yield make
    for p, _ in started:
        if p._reader is None and getattr(p, "_slow", None) is None:
            p.start_reading()  # the last lines of the drain get a reader
    problems = _stop_checked(started)
    for p, _ in started:
        p.pipe.close()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def wait_healthy(mport, what):
    def healthy():
        try:
            return http_get(V4, mport, "/healthz", timeout=T(1)).status == 200
        except (OSError, AssertionError):
            return False
    wait_until(healthy, T(10), what="/healthz " + what)


@pytest.mark.parametrize("kind", ["pipe", "socket"])
def test_stderr_never_read(piped_proxy, helpers, kind):
    probe, load = helpers("probe"), helpers("load")
    probe_port, load_port = free_dual_port(), free_dual_port()
    mport = free_port(V4)
    proxy = piped_proxy(ini("""
        [global]
        log_level = debug
        metrics_listen = 127.0.0.1:%d
    """ % mport) + ini(services(probe, probe_port, load, load_port)), kind)
    wait_healthy(mport, "while stderr is not read")

    run_load(probe, probe_port, load, load_port)
    m = wait_idle(mport)
    dropped = m.value("dualproxy_log_lines_dropped_total")
    relayed = sum(v for (name, _), v in m.samples.items()
                  if name == "dualproxy_connections_total")
    print("log: %d lines dropped of about %d" % (dropped, relayed))
    assert dropped > 0, "%d connection lines fit into the pipe?" % relayed

    # the reader is back: what is buffered, then how many were dropped
    proxy.start_reading()
    summary = proxy.wait_for(DROPPED_RE.pattern, timeout=T(10))
    assert int(summary.group(1)) > 0

    def said():
        return sum(int(DROPPED_RE.search(l).group(1)) for l in proxy.grep(DROPPED_RE.pattern))

    def agree():
        m = scrape(V4, mport)
        return m if said() == m.value("dualproxy_log_lines_dropped_total") else None
    try:
        m = wait_until(agree, T(5), interval=0.2, what="summaries adding up to the metric")
    except AssertionError:
        raise AssertionError("summaries say %d dropped, the metric %d:\n%s" % (
            said(), scrape(V4, mport).value("dualproxy_log_lines_dropped_total"),
            "\n".join(proxy.grep(DROPPED_RE.pattern)))) from None
    total = m.value("dualproxy_log_lines_dropped_total")
    with proxy.cond:
        lines = list(proxy.lines)
    broken = [l for l in lines if not LOG_LINE_RE.match(l)]
    assert not broken, "lines cut or mixed up: %r" % broken[:5]
    written = len([l for l in lines if "debug: connection service=" in l])
    print("log: %d connection lines written, %d lines dropped, %d summaries"
          % (written, total, len(proxy.grep(DROPPED_RE.pattern))))
    # every connection's line was written or counted (a few other lines,
    # such as warnings, may have been dropped too)
    assert written + total >= relayed, (written, total, relayed)
    assert written <= relayed and written + total <= relayed + 50, (written, total, relayed)


EXIT_FLUSH = 1.0            # log.c: how long the last lines may wait at exit


def test_stderr_slow_reader_at_exit(piped_proxy, helpers):
    """At exit, lines still buffered for a reader that takes 4 KiB every
    half second get a moment (a second), not the hour-glass of the whole
    buffer: dualproxy exits within about that moment after its drain."""
    load = helpers("load")
    load_port, mport = free_dual_port(), free_port(V4)
    proxy = piped_proxy(ini("""
        [global]
        log_level = debug
        metrics_listen = 127.0.0.1:%d
        [load]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (mport, load_port, fmt_addr(*load.backend4), fmt_addr(*load.backend6))))
    wait_healthy(mport, "while stderr is not read")
    load.send("go %d %d %d" % (load_port, 4000, CONCURRENCY))
    lr = load.result(T(60))
    assert lr["failed"] == 0, lr
    m = wait_idle(mport)
    assert m.value("dualproxy_log_lines_dropped_total") > 0, "the buffer never filled"
    proxy.read_slowly(4096, 0.5)
    t0 = time.monotonic()
    proxy.signal(signal.SIGTERM)
    rc = proxy.wait_exit(T(10) + 60)
    took = time.monotonic() - t0
    print("\nexit with a slow reader after %.2f s" % took)
    assert rc == 0, rc
    assert took <= EXIT_FLUSH + T(1), "exit took %.1f s" % took


# --------------------------------------------------------------------------
# metrics clients do not read


def stuck_client(mport):
    """A metrics client that asks for /metrics and never reads: tiny receive
    buffer and segments, so that the daemon cannot hand the whole response
    to the kernel."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    s.settimeout(T(5))
    s.connect((V4, mport))
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: stuck\r\n\r\n")
    return s


def socket_inodes(pid):
    """The inodes of the sockets a process holds."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def daemon_peers(pid, port):
    """{peer port: socket inode} of the daemon's connected TCP sockets on
    local `port` (its metrics clients), from /proc/PID/fd and /proc/net/tcp
    (slow once thousands of connections are in TIME_WAIT: call it before)."""
    inodes = socket_inodes(pid)
    peers = {}
    for name in ("tcp", "tcp6"):
        with open("/proc/net/" + name) as f:
            next(f)
            for line in f:
                fields = line.split()
                if (fields[3] != "0A" and fields[9] in inodes and
                        int(fields[1].split(":")[1], 16) == port):
                    peers[int(fields[2].split(":")[1], 16)] = fields[9]
    return peers


def filler(n, backend, taken=()):
    """n services with long names, each on its own port (none in `taken`):
    each adds a dozen series to /metrics."""
    ports = set()
    while len(ports) < n:
        p = free_port(V4)
        if p not in taken:
            ports.add(p)
    return "".join(ini("""
        [filler-%02d-%s]
        listen = 127.0.0.1:%d
        backend4 = %s
    """ % (i, "x" * 54, p, fmt_addr(*backend))) for i, p in enumerate(sorted(ports)))


def test_metrics_clients_never_read(proxy_factory, helpers, clients):
    probe, load = helpers("probe"), helpers("load")
    probe_port, load_port = free_dual_port(), free_dual_port()
    mport = free_port(V4)
    proxy = proxy_factory(ini("""
        [global]
        metrics_listen = 127.0.0.1:%d
    """ % mport) + ini(services(probe, probe_port, load, load_port))
                          + filler(FILLER, load.backend4, {probe_port, load_port, mport}))
    size = len(http_get(V4, mport, "/metrics").raw)
    opened = time.monotonic()
    stuck = [stuck_client(mport) for _ in range(STUCK)]
    clients.extend(stuck)
    ports = {s.getsockname()[1] for s in stuck}
    time.sleep(0.3)
    held = {p: i for p, i in daemon_peers(proxy.proc.pid, mport).items() if p in ports}
    assert len(held) == STUCK, (
        "a %d byte response fit into the kernel's buffers: the daemon holds %d of %d "
        "stuck clients" % (size, len(held), STUCK))

    health = []   # (latency, status or error)
    closed = {}   # peer port -> seconds after opening when the daemon closed it

    def during(load):
        while not load.lines:
            t0 = time.monotonic()
            try:
                r = http_get(V4, mport, "/healthz", timeout=T(2))
                health.append((time.monotonic() - t0, r.status))
            except (OSError, AssertionError) as e:
                health.append((time.monotonic() - t0, repr(e)))
            check_closed()
            time.sleep(0.02)

    def check_closed():
        now = time.monotonic() - opened
        inodes = socket_inodes(proxy.proc.pid)
        for p, inode in held.items():
            if p not in closed and inode not in inodes:
                closed[p] = now
        return len(closed) == len(held)

    run_load(probe, probe_port, load, load_port, during=during)
    wait_until(check_closed, METRICS_TIMEOUT + T(2), interval=0.02,
               what="the stuck clients closed")
    worst = max(l for l, _ in health)
    print("metrics: %d byte response; %d stuck clients closed after %.2f-%.2f s; "
          "%d /healthz answered, slowest %.1f ms"
          % (size, STUCK, min(closed.values()), max(closed.values()), len(health),
             worst * 1000))
    bad = [h for h in health if h[1] != 200]
    assert not bad, "/healthz failed: %r" % bad[:5]
    assert len(health) >= 10, health
    assert worst <= T(1), "a /healthz took %.1f ms" % (worst * 1000)
    early = {p: t for p, t in closed.items() if t < METRICS_TIMEOUT - 0.5}
    assert not early, "closed before the timeout: %r" % early
    assert max(closed.values()) <= METRICS_TIMEOUT + T(2), closed
    assert scrape(V4, mport).value("dualproxy_connections_active", service="load",
                                   protocol="tcp") == 0


def test_metrics_slots_full_of_stuck_clients(proxy_factory, backends, clients):
    """More clients stuck on their response than the endpoint serves at once
    (32): a new client is still served (the one stuck longest makes room),
    so such clients cannot keep the kubelet's /healthz probe out."""
    e4 = backends.start_echo(V4)
    mport = free_port(V4)
    proxy = proxy_factory(ini("""
        [global]
        metrics_listen = 127.0.0.1:%d
    """ % mport) + filler(FILLER, e4, {mport}))
    stuck = []
    for _ in range(METRICS_SLOTS + 8):
        stuck.append(stuck_client(mport))
        clients.append(stuck[-1])
    time.sleep(0.3)
    held = daemon_peers(proxy.proc.pid, mport)
    assert len(held) == METRICS_SLOTS, "the daemon holds %d clients" % len(held)
    for _ in range(5):
        t0 = time.monotonic()
        r = http_get(V4, mport, "/healthz", timeout=T(2))
        assert r.status == 200 and r.body == b"ok\n", r.raw
        assert time.monotonic() - t0 <= T(1)
    assert len(daemon_peers(proxy.proc.pid, mport)) <= METRICS_SLOTS
