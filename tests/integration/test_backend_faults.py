"""Backends that misbehave:

  * one that accepts, sends some bytes and resets (SO_LINGER 0) in the
    middle of the stream: the client gets every byte the backend delivered
    to the proxy (even a client that starts reading late, so that the proxy
    still holds them when the reset comes), then a reset (or EOF) within
    1 s, and the line says end=backend-reset with down= what the client
    got; and with the client streaming at the same time, a prefix of it;
  * one that accepts and never reads while the client writes 64 MiB as fast
    as it can: the client's send blocks, the daemon's memory stays bounded
    (RSS + 16 MiB at most), and the relay ends (descriptors back) when the
    stalled backend resets, or when the client aborts;
  * one whose port flaps between refusing and accepting every 200 ms for
    5 s while clients connect in a loop: each attempt is either an exact
    echo ended by EOF, or a reset after a prefix of the echo, never a hang
    past connect_timeout and never a truncated echo ended by EOF."""

import errno
import fcntl
import random
import select
import socket
import struct
import termios
import threading
import time

import pytest

from conftest import (V4, V6, T, abort_socket, connect, family_of, fmt_addr, is_readable,
                      free_dual_port, ini, local_addr, pattern, proc_fds_but_pipes,
                      proc_rss_kib, recv_exact, wait_closed, wait_fds_back, wait_until)

BOTH = pytest.mark.parametrize("host", [V4, V6], ids=["ipv4", "ipv6"])


class RawServer:
    """A listener on host:0 (or `port`) that runs handler(conn) in a thread
    per accepted connection; close() stops it and closes every socket."""

    def __init__(self, host, handler, port=0):
        self.lst = socket.socket(family_of(host), socket.SOCK_STREAM)
        self.lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lst.bind((host, port))
        self.lst.listen(128)
        self.addr = self.lst.getsockname()[:2]
        self.handler = handler
        self.conns = []
        self.errors = []
        self.stopping = threading.Event()
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.stopping.is_set():
            r, _, _ = select.select([self.lst], [], [], 0.05)
            if not r:
                continue
            try:
                conn, _ = self.lst.accept()
            except OSError:
                continue
            self.conns.append(conn)
            t = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _run(self, conn):
        try:
            self.handler(conn)
        except OSError:
            pass
        except Exception as e:  # an assertion in a handler
            self.errors.append(repr(e))

    def close(self):
        self.stopping.set()
        self.acceptor.join(T(5))
        self.lst.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(T(5))


@pytest.fixture
def raw_servers():
    made = []

    def make(host, handler, port=0):
        s = RawServer(host, handler, port)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def unsent(sock):
    """Bytes in the socket's send queue not yet acknowledged by the peer."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def service(port, b4, b6, extra=""):
    return ini("""
        [global]
        log_level = debug
        drain_timeout = 1s
        %s
        [svc]
        listen = 127.0.0.1:%d, [::1]:%d
        backend4 = %s
        backend6 = %s
    """ % (extra, port, port, fmt_addr(*b4), fmt_addr(*b6)))


# --------------------------------------------------------------------------
# a backend that resets mid-stream

RESET_DATA = pattern(300 * 1024 + 7, 41)


def send_then_reset(read_first, delivered=None):
    """The backend: (read a chunk,) send RESET_DATA, wait until the proxy
    has acknowledged all of it (at most 5 s), then reset. Appends to
    `delivered` how many bytes the proxy had acknowledged at the reset."""
    def handler(conn):
        if read_first:
            assert conn.recv(65536), "no data from the client before the reset"
        conn.sendall(RESET_DATA)
        deadline = time.monotonic() + T(5)
        while unsent(conn) > 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        if delivered is not None:
            delivered.append(len(RESET_DATA) - unsent(conn))
        abort_socket(conn)
    return handler


@BOTH
@pytest.mark.parametrize("reader", ["prompt", "late"])
def test_backend_resets_mid_stream(proxy_factory, raw_servers, host, reader):
    """What the backend delivered before its reset reaches the client, then
    the reset (or EOF), within 1 s. 'prompt': the client reads at once;
    'late': it has a small receive buffer and starts reading 300 ms after
    connecting, so the proxy still holds the data when the reset comes."""
    delivered = []
    b4 = raw_servers(V4, send_then_reset(False, delivered)).addr
    b6 = raw_servers(V6, send_then_reset(False, delivered)).addr
    port = free_dual_port()
    proxy = proxy_factory(service(port, b4, b6))
    for i in range(3):
        s = socket.socket(family_of(host), socket.SOCK_STREAM)
        try:
            if reader == "late":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            s.settimeout(T(5))
            s.connect((host, port))
            client = local_addr(s)
            if reader == "late":
                wait_until(lambda: len(delivered) > i, T(10), what="the backend's reset")
                time.sleep(0.1)
            kind, elapsed, data = wait_closed(s, T(1))
        finally:
            s.close()
        log = proxy.conn_log(client)
        want = RESET_DATA[:delivered[i]]
        assert kind in ("reset", "eof")
        assert len(data) == len(want) and data == want, \
            "the client got %d bytes of the %d the backend delivered to the proxy " \
            "before its reset (the proxy logged down=%d)" % (
                len(data), len(want), log["down"])
        assert log["end"] == "backend-reset", log
        assert log["down"] == len(want), log


def answer_and_close(conn):
    """The backend of a TLS server closing a connection: it reads the
    request, answers, and closes its socket (as nginx does after
    `Connection: close`), so what comes after is reset by its kernel."""
    conn.recv(65536)
    conn.sendall(b"response and close_notify")
    conn.close()


@BOTH
def test_client_reset_after_backend_closed_ends_at_once(proxy_factory, raw_servers, host):
    """A TLS client closing with the server's close_notify unread: its
    last bytes (its own close_notify) go to a backend that has closed
    already, then the client resets. The backend's kernel resets those
    bytes, so they are never acknowledged: the relay must notice the reset
    and end within a few milliseconds, not wait out its one-second linger
    with descriptors held."""
    b4 = raw_servers(V4, answer_and_close).addr
    b6 = raw_servers(V6, answer_and_close).addr
    port = free_dual_port()
    proxy = proxy_factory(service(port, b4, b6))
    for _ in range(5):
        s = connect(host, port)
        client = local_addr(s)
        s.sendall(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert recv_exact(s, len(b"response and close_notify")) == b"response and close_notify"
        wait_until(lambda: is_readable(s, 0), T(2), what="the backend's FIN relayed")
        s.sendall(b"close_notify bytes")
        time.sleep(0.05)  # let the proxy pass them on before the reset
        abort_socket(s)
        log = proxy.conn_log(client, timeout=T(2))
        assert log["end"] == "client-reset", log
        assert float(log["duration"]) < 0.5 * max(1, T(1)), \
            "the relay lingered %ss on a reset backend" % log["duration"]


@BOTH
def test_backend_resets_while_client_sends(proxy_factory, raw_servers, host):
    """Both ways at once: the client streams while the backend answers and
    resets. The client gets a prefix of what the backend sent, and the end
    within 1 s (its own sends fail too)."""
    b4 = raw_servers(V4, send_then_reset(True)).addr
    b6 = raw_servers(V6, send_then_reset(True)).addr
    port = free_dual_port()
    proxy = proxy_factory(service(port, b4, b6))
    for i in range(3):
        s = connect(host, port)
        client = local_addr(s)
        stop = threading.Event()

        def stream():
            chunk = pattern(65536, i)
            try:
                while not stop.is_set():
                    s.send(chunk)
            except OSError:
                pass
        t = threading.Thread(target=stream, daemon=True)
        t.start()
        try:
            kind, elapsed, data = wait_closed(s, T(1))
        finally:
            stop.set()
            t.join(T(5))
            s.close()
        assert kind in ("reset", "eof")
        assert RESET_DATA.startswith(data), "the client got bytes the backend never sent"
        log = proxy.conn_log(client)
        assert log["end"] == "backend-reset", log


# --------------------------------------------------------------------------
# a backend that never reads

STALL_TOTAL = 64 << 20
RSS_GROWTH_KIB = 16 << 10


def hold(conns):
    def handler(conn):
        conns.append(conn)  # accepted, never read; closed by the test
    return handler


def write_until_blocked(sock, pid):
    """Write as fast as possible until STALL_TOTAL bytes or no progress for
    1 s. Returns (bytes written, highest RSS of `pid` seen meanwhile)."""
    sock.setblocking(False)
    chunk = b"\xa5" * (1 << 20)
    total, peak = 0, proc_rss_kib(pid)
    last_progress = time.monotonic()
    last_sample = 0.0
    while total < STALL_TOTAL and time.monotonic() - last_progress < 1.0:
        try:
            n = sock.send(chunk[:STALL_TOTAL - total])
            total += n
            last_progress = time.monotonic()
        except BlockingIOError:
            select.select([], [sock], [], 0.1)
        if time.monotonic() - last_sample > 0.05:
            peak = max(peak, proc_rss_kib(pid))
            last_sample = time.monotonic()
    return total, max(peak, proc_rss_kib(pid))


def stalled_setup(proxy_factory, raw_servers):
    held = {V4: [], V6: []}
    b4 = raw_servers(V4, hold(held[V4])).addr
    b6 = raw_servers(V6, hold(held[V6])).addr
    port = free_dual_port()
    proxy = proxy_factory(service(port, b4, b6, "idle_timeout = 1m"))
    pid = proxy.proc.pid
    return proxy, pid, port, held, proc_fds_but_pipes(pid)


@BOTH
def test_backend_never_reads_bounded(proxy_factory, raw_servers, host):
    proxy, pid, port, held, baseline = stalled_setup(proxy_factory, raw_servers)
    rss0 = proc_rss_kib(pid)
    s = connect(host, port)
    client = local_addr(s)
    try:
        total, peak = write_until_blocked(s, pid)
        assert total < STALL_TOTAL, \
            "the client wrote all %d MiB to a backend that never reads" % (STALL_TOTAL >> 20)
        assert peak - rss0 <= RSS_GROWTH_KIB, \
            "RSS grew by %d KiB (from %d) while buffering for a stalled backend" % (
                peak - rss0, rss0)
        wait_until(lambda: held[host], T(5), what="the backend's connection")
        assert proxy.running()
        # the stalled backend goes away: the relay ends, the client learns
        abort_socket(held[host].pop())
        kind, _, _ = wait_closed(s, T(2))
        assert kind in ("reset", "eof")
    finally:
        s.close()
    wait_fds_back(pid, baseline, T(5))
    log = proxy.conn_log(client)
    assert log["end"] == "backend-reset", log
    assert proc_rss_kib(pid) - rss0 <= RSS_GROWTH_KIB


@BOTH
def test_client_abort_ends_stalled_relay(proxy_factory, raw_servers, host):
    """The client gives up (RST) while everything it wrote is stuck behind a
    backend that never reads: the relay must end and pass the reset on, not
    hold two descriptors and the backend connection until idle_timeout.
    (A FIN could not even reach the proxy: it queues behind the unread data
    in a zero window. A reset does.)"""
    proxy, pid, port, held, baseline = stalled_setup(proxy_factory, raw_servers)
    s = connect(host, port)
    client = local_addr(s)
    total, _ = write_until_blocked(s, pid)
    assert total < STALL_TOTAL
    wait_until(lambda: held[host], T(5), what="the backend's connection")
    abort_socket(s)
    wait_fds_back(pid, baseline, T(8),
                  what="the relay to end after the client's reset (idle_timeout is 1m)")
    log = proxy.conn_log(client, timeout=T(1))
    assert log["end"] == "client-reset", log
    # the reset reached the backend
    b = held[host][0]
    b.setblocking(False)
    try:
        while b.recv(1 << 20):
            pass
        reset = False
    except ConnectionResetError:
        reset = True
    except BlockingIOError:
        reset = False
    assert reset, "the backend's connection was not reset"


# --------------------------------------------------------------------------
# a backend port that flaps

FLAP_PERIOD = 0.2
FLAP_TIME = 5.0
CONNECT_TIMEOUT = 1.0


def port_outside_ephemeral(host):
    """A free port outside net.ipv4.ip_local_port_range: while the flapping
    backend is down, the proxy's own outgoing connections (ephemeral local
    ports) must not be able to take its port (or self-connect to it)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    ranges = [r for r in ((10000, lo), (hi + 1, 65536)) if r[1] - r[0] > 100]
    rng = random.Random()
    for _ in range(200):
        a, b = rng.choice(ranges)
        port = rng.randrange(a, b)
        with socket.socket(family_of(host), socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port outside the ephemeral range")


class FlappingEcho:
    """An echo backend on host:port that listens for FLAP_PERIOD, then
    closes its listener (connections in its queue are reset, established
    ones go on) for FLAP_PERIOD, and so on until stop()."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.stopping = threading.Event()
        self.up_phases = 0
        self.bind_failures = 0
        self.accepted = 0
        self.handlers = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set():
            lst = socket.socket(family_of(self.host), socket.SOCK_STREAM)
            lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                lst.bind((self.host, self.port))
                lst.listen(64)
            except OSError:
                lst.close()
                self.bind_failures += 1
                self.stopping.wait(FLAP_PERIOD)
                continue
            self.up_phases += 1
            end = time.monotonic() + FLAP_PERIOD
            while not self.stopping.is_set():
                left = end - time.monotonic()
                if left <= 0:
                    break
                r, _, _ = select.select([lst], [], [], left)
                if not r:
                    continue
                try:
                    conn, _ = lst.accept()
                except OSError:
                    continue
                self.accepted += 1
                t = threading.Thread(target=self._echo, args=(conn,), daemon=True)
                self.handlers.append(t)
                t.start()
            lst.close()
            self.stopping.wait(FLAP_PERIOD)

    @staticmethod
    def _echo(conn):
        conn.settimeout(T(10))
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopping.set()
        self.thread.join(T(5))
        for t in self.handlers:
            t.join(T(10))


def flap_attempt(host, port, payload):
    """One client: send, SHUT_WR, read until EOF or reset. Returns
    ('ok'|'reset'|failure description, seconds)."""
    t0 = time.monotonic()
    s = socket.socket(family_of(host), socket.SOCK_STREAM)
    try:
        s.settimeout(T(3))
        try:
            s.connect((host, port))
        except ConnectionResetError:  # the proxy's RST beat connect()'s return
            return "reset", time.monotonic() - t0
        reset = False
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            # the RST arrived already (ENOTCONN: from shutdown()); the error
            # is reported once, so the recv() below sees a plain EOF
            if e.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                raise
            reset = True
        got = bytearray()
        deadline = t0 + CONNECT_TIMEOUT + T(2)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "hang after %d bytes" % len(got), time.monotonic() - t0
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                if not payload.startswith(got):
                    return "corrupt echo before the reset", time.monotonic() - t0
                return "reset", time.monotonic() - t0
            except socket.timeout:
                continue
            if not chunk:
                if reset and payload.startswith(got):
                    return "reset", time.monotonic() - t0
                if got != payload:
                    return ("EOF after %d of %d bytes (truncated or corrupt echo)"
                            % (len(got), len(payload))), time.monotonic() - t0
                return "ok", time.monotonic() - t0
            got += chunk
    finally:
        s.close()


def test_flapping_backend(proxy_factory):
    p4, p6 = port_outside_ephemeral(V4), port_outside_ephemeral(V6)
    port = free_dual_port()
    proxy = proxy_factory(service(port, (V4, p4), (V6, p6),
                                  "connect_timeout = %gs" % CONNECT_TIMEOUT))
    pid = proxy.proc.pid
    baseline = proc_fds_but_pipes(pid)
    flappers = [FlappingEcho(V4, p4), FlappingEcho(V6, p6)]
    results = []
    lock = threading.Lock()

    def client(idx):
        rng = random.Random(idx)
        host = (V4, V6)[idx % 2]
        end = time.monotonic() + FLAP_TIME
        n = 0
        while time.monotonic() < end:
            n += 1
            payload = rng.randbytes(rng.randrange(1, 16384))
            try:
                outcome = flap_attempt(host, port, payload)
            except OSError as e:
                outcome = ("client error %r" % e, 0.0)
            with lock:
                results.append((host, n) + outcome)
            time.sleep(0.002)

    try:
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(FLAP_TIME + T(30))
        assert not any(t.is_alive() for t in threads), "a client is stuck"
    finally:
        for f in flappers:
            f.stop()

    bad = [r for r in results if r[2] not in ("ok", "reset")]
    assert not bad, "%d of %d attempts failed, first: %r" % (len(bad), len(results), bad[:5])
    slow = [r for r in results if r[3] > CONNECT_TIMEOUT + T(2)]
    assert not slow, slow[:5]
    for f in flappers:
        assert f.up_phases >= 5, "the backend did not flap (%d up phases)" % f.up_phases
    for host in (V4, V6):
        kinds = [r[2] for r in results if r[0] == host]
        assert kinds.count("ok") > 0 and kinds.count("reset") > 0, \
            "%s: %d ok, %d reset: the flapping was not exercised" % (
                host, kinds.count("ok"), kinds.count("reset"))

    assert proxy.running(), "dualproxy died:\n%s" % proxy._tail()
    wait_fds_back(pid, baseline, T(5))
    wait_until(lambda: len(proxy.conn_logs()) >= len(results), T(5),
               what="one line per attempt")
    ends = {d["end"] for d in proxy.conn_logs()}
    # connect-failed: the listener went away during the handshake (ECONNRESET)
    assert ends <= {"closed", "connect-refused", "connect-failed", "backend-reset"}, ends
    assert {"closed", "connect-refused"} <= ends, ends
    # and it still works once the backend stays up
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lst:
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((V4, p4))
        lst.listen(1)
        s = connect(V4, port)
        conn, _ = lst.accept()
        with s, conn:
            s.sendall(b"still here")
            assert conn.recv(100) == b"still here"
