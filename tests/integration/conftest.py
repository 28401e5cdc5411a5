"""Shared fixtures and helpers for the dualproxy black-box integration tests.

The tests run the real dualproxy binary over real TCP sockets on 127.0.0.1 and
::1 only.  Everything else (backends, clients) is Python in this process.

Environment:
  DUALPROXY            absolute path of the binary under test (default:
                       <repo>/src/dualproxy).  A wrapper script that execs
                       valgrind or a sanitizer build can be given here.
  DUALPROXY_TIME_SCALE multiply every timeout and timing bound by this factor
                       (default 1.0; e.g. 10 under valgrind).

Helpers provided here:
  * Proxy / `proxy_factory`: start dualproxy with a config, read its stderr in
    a background thread, wait for log lines ("ready", per-connection lines),
    stop it and check its exit status.
  * Backends / `backends`: an asyncio loop in a thread running backend servers:
    echo, tagged (tells which backend served and the peer family), sink (hashes
    everything it receives and replies with the SHA-256), xfer (generator of N
    deterministic pseudo-random bytes, full duplex with a hashing sink), and a
    "blackhole" listener that never accepts and has a full accept queue.
  * free ports, address formatting, deterministic data, socket helpers.
"""

import asyncio
import errno
import hashlib
import os
import queue
import random
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("DUALPROXY", str(REPO / "src" / "dualproxy")))
TIME_SCALE = float(os.environ.get("DUALPROXY_TIME_SCALE", "1.0"))

EX_USAGE = 64
EX_OSERR = 71
EX_CONFIG = 78

V4 = "127.0.0.1"
V6 = "::1"
FAMILIES = {V4: socket.AF_INET, V6: socket.AF_INET6}


def T(seconds):
    """A timeout or timing bound, scaled by DUALPROXY_TIME_SCALE."""
    return seconds * TIME_SCALE


# --------------------------------------------------------------------------
# process limits

def _raise_nofile(want=8192):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


_raise_nofile()


# --------------------------------------------------------------------------
# addresses and ports

def fmt_addr(host, port):
    """'127.0.0.1:80' or '[::1]:80', the form dualproxy logs and parses."""
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host=V4):
    """A TCP port that is currently free on `host`."""
    with socket.socket(family_of(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_dual_port():
    """A TCP port that is free on both 0.0.0.0 and [::] (V6ONLY)."""
    for _ in range(200):
        s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s4.bind(("0.0.0.0", 0))
            port = s4.getsockname()[1]
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s6.bind(("::", port))
            except OSError:
                continue
            return port
        finally:
            s4.close()
            s6.close()
    raise RuntimeError("no port free on both families")


def unused_port(host=V4):
    """A port on `host` on which nobody listens (connect gets refused)."""
    return free_port(host)


# --------------------------------------------------------------------------
# data

def pattern(n, seed):
    """n deterministic pseudo-random bytes for `seed`."""
    return random.Random(seed).randbytes(n)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def ini(text):
    """Strip indentation from every line (inih treats indented lines as
    continuation lines) and end with a newline."""
    return "\n".join(line.strip() for line in text.strip("\n").splitlines()) + "\n"


# --------------------------------------------------------------------------
# client socket helpers

def connect(host, port, timeout=None):
    s = socket.create_connection((host, port), timeout=T(5) if timeout is None else timeout)
    s.settimeout(T(10) if timeout is None else timeout)
    return s


def recv_exact(sock, n, timeout=None):
    """Receive exactly n bytes or fail."""
    deadline = time.monotonic() + (T(10) if timeout is None else timeout)
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timeout: got %d of %d bytes" % (len(buf), n))
        sock.settimeout(left)
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise AssertionError("EOF after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


def recv_line(sock, timeout=None):
    deadline = time.monotonic() + (T(10) if timeout is None else timeout)
    buf = bytearray()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timeout waiting for a line, got %r" % bytes(buf))
        sock.settimeout(left)
        chunk = sock.recv(1)
        if not chunk:
            raise AssertionError("EOF before end of line, got %r" % bytes(buf))
        buf += chunk
    return bytes(buf)


def recv_until_eof(sock, timeout=None, hasher=None):
    """Read until EOF. Returns the data (or, with `hasher`, feeds it and
    returns the byte count). Raises on timeout or reset."""
    deadline = time.monotonic() + (T(10) if timeout is None else timeout)
    buf = bytearray()
    count = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timeout before EOF after %d bytes" % count)
        sock.settimeout(left)
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        count += len(chunk)
        if hasher is not None:
            hasher.update(chunk)
        else:
            buf += chunk
    return count if hasher is not None else bytes(buf)


def wait_closed(sock, timeout):
    """Wait until the peer closes `sock`. Returns ('eof'|'reset', elapsed,
    data received before the close). Raises AssertionError on timeout."""
    start = time.monotonic()
    deadline = start + timeout
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("connection still open after %.2fs" % timeout)
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return "reset", time.monotonic() - start, bytes(data)
        except socket.timeout:
            continue
        if not chunk:
            return "eof", time.monotonic() - start, bytes(data)
        data += chunk


def is_readable(sock, timeout):
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)


def local_addr(sock):
    a = sock.getsockname()
    return fmt_addr(a[0], a[1])


# --------------------------------------------------------------------------
# the daemon

CONN_RE = re.compile(
    r"connection service=(?P<service>\S+) client=(?P<client>\S+) "
    r"backend=(?P<backend>\S+) up=(?P<up>\d+) down=(?P<down>\d+) "
    r"duration=(?P<duration>\d+(?:\.\d+)?)s end=(?P<end>[a-z-]+)\s*$")


def require_binary():
    if not BINARY.is_file() or not os.access(BINARY, os.X_OK):
        pytest.fail("dualproxy binary not found or not executable: %s "
                    "(build it, or set DUALPROXY=/abs/path)" % BINARY, pytrace=False)
    return str(BINARY)


def run_dualproxy(*args, timeout=None):
    """Run the binary to completion (for -t, -V, -h, bad configs...).
    Returns the CompletedProcess; kills it if it outlives `timeout`."""
    binary = require_binary()
    try:
        return subprocess.run([binary, *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True,
                              timeout=T(10) if timeout is None else timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("dualproxy %s did not exit within the timeout; stderr: %s"
                             % (" ".join(args), e.stderr)) from None


class Proxy:
    """One running dualproxy process with its stderr captured line by line."""

    def __init__(self, config_path, extra_args=()):
        self.config_path = str(config_path)
        self.args = [require_binary(), "-c", self.config_path, *extra_args]
        self.proc = None
        self.lines = []
        self.cond = threading.Condition()
        self.eof = False
        self._reader = None
        self.signalled = False

    def start(self, wait_ready=True):
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if wait_ready:
            self.wait_for(r"\bready\b", timeout=T(10))
        return self

    def _read_stderr(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def stderr_text(self):
        with self.cond:
            return "\n".join(self.lines)

    def _tail(self, n=40):
        with self.cond:
            return "\n".join(self.lines[-n:])

    def wait_for(self, pattern, timeout=None, predicate=None):
        """Wait for a stderr line matching regex `pattern` (and `predicate`
        on the match). Returns the re.Match. Fails on timeout or exit."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + (T(10) if timeout is None else timeout)
        idx = 0
        with self.cond:
            while True:
                while idx < len(self.lines):
                    m = rx.search(self.lines[idx])
                    idx += 1
                    if m and (predicate is None or predicate(m)):
                        return m
                if self.eof:
                    raise AssertionError(
                        "dualproxy exited (rc=%s) before logging /%s/; stderr:\n%s"
                        % (self.proc.poll(), pattern, self._tail()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timeout waiting for /%s/ on stderr; stderr tail:\n%s"
                                         % (pattern, self._tail()))
                self.cond.wait(left)

    def conn_log(self, client, timeout=None):
        """The per-connection log line for client address `client`
        ('127.0.0.1:5000' / '[::1]:5000'), as a dict of its fields."""
        m = self.wait_for(CONN_RE.pattern, timeout=timeout,
                          predicate=lambda m: m.group("client") == client)
        d = m.groupdict()
        d["up"] = int(d["up"])
        d["down"] = int(d["down"])
        d["duration"] = float(d["duration"])
        return d

    def conn_logs(self):
        with self.cond:
            lines = list(self.lines)
        return [m.groupdict() for m in (CONN_RE.search(l) for l in lines) if m]

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        """Send a signal; the test then owns the exit status."""
        self.signalled = True
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if self._reader is not None:
            self._reader.join(T(5))
        return rc

    def stop(self):
        """SIGTERM, then SIGKILL. Returns (rc_before, rc) where rc_before is
        not None when the process had already died before stop()."""
        if self.proc is None:
            return None, None
        before = self.proc.poll()
        if before is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            rc = self.wait_exit(T(10))
            if rc is None:
                self.proc.kill()
                rc = self.wait_exit(T(10))
                return before, ("killed", rc)
            return before, rc
        self.wait_exit(T(5))
        return before, before


@pytest.fixture
def proxy_factory(tmp_path):
    """proxy_factory(config_text, wait_ready=True, check_exit=True) -> Proxy.

    Writes the config to a temp file and starts dualproxy. At teardown every
    started process is stopped by PID (SIGTERM, then SIGKILL); a daemon that
    died on its own during the test, or that exits non-zero on SIGTERM, makes
    the teardown fail (this catches crashes and sanitizer reports)."""
    started = []
    counter = [0]

    def make(config_text, wait_ready=True, check_exit=True, extra_args=()):
        counter[0] += 1
        path = tmp_path / ("dualproxy-%d.ini" % counter[0])
        path.write_text(config_text)
        p = Proxy(path, extra_args)
        started.append((p, check_exit))
        return p.start(wait_ready=wait_ready)

    yield make

    problems = []
    for p, check_exit in started:
        before, rc = p.stop()
        if not check_exit or p.signalled:
            continue
        if before is not None:
            problems.append("dualproxy died during the test (rc=%s); stderr tail:\n%s"
                            % (before, p._tail()))
        elif isinstance(rc, tuple):
            problems.append("dualproxy ignored SIGTERM for %.0fs and was killed" % T(10))
        elif rc != 0:
            problems.append("dualproxy exited %s on SIGTERM; stderr tail:\n%s" % (rc, p._tail()))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def write_config(tmp_path):
    """write_config(text, name='bad.ini') -> absolute path string."""
    def write(text, name="test.ini"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write


# --------------------------------------------------------------------------
# backends (asyncio loop in a background thread)

class Backends:
    """Backend servers on loopback. Every start_* method returns (host, port).

    Per-connection results of the xfer server land in `self.results`
    (a thread-safe queue of dicts)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.servers = []
        self.writers = set()
        self.raw_sockets = []
        self.results = queue.Queue()
        self.errors = []
        self.accepted = 0

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _call(self, coro, timeout=None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(T(10) if timeout is None else timeout)

    def _serve(self, host, handler):
        async def wrapped(reader, writer):
            self.accepted += 1
            self.writers.add(writer)
            try:
                await handler(reader, writer)
            except (ConnectionError, BrokenPipeError):
                pass
            except Exception as e:  # keep for debugging
                self.errors.append(repr(e))
            finally:
                self.writers.discard(writer)
                try:
                    writer.close()
                except Exception:
                    pass

        async def start():
            srv = await asyncio.start_server(wrapped, host=host, port=0,
                                             family=family_of(host), backlog=4096,
                                             limit=1 << 20)
            self.servers.append(srv)
            return srv.sockets[0].getsockname()[:2]

        return tuple(self._call(start()))

    # --- servers --------------------------------------------------------

    def start_echo(self, host):
        """Echo everything back; after the client's EOF, close."""
        async def handler(reader, writer):
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        return self._serve(host, handler)

    def start_tagged(self, host, tag):
        """On connect, send 'TAG FAMILY\\n' (FAMILY = the address family of
        the connection as the backend sees it), then echo."""
        async def handler(reader, writer):
            sock = writer.get_extra_info("socket")
            fam = "AF_INET6" if sock.family == socket.AF_INET6 else "AF_INET"
            writer.write(("%s %s\n" % (tag, fam)).encode())
            await writer.drain()
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        return self._serve(host, handler)

    def start_sink(self, host):
        """Read to EOF, hashing; reply '<count> <sha256hex>\\n' and close."""
        async def handler(reader, writer):
            h = hashlib.sha256()
            n = 0
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                n += len(data)
                h.update(data)
            writer.write(("%d %s\n" % (n, h.hexdigest())).encode())
            await writer.drain()
        return self._serve(host, handler)

    def start_xfer(self, host):
        """Generator + sink, full duplex. The client first sends the line
        '<N> <SEED>\\n'. The server then, at the same time:
          * sends pattern(N, SEED), then shutdown(SHUT_WR);
          * reads everything after the header until EOF, hashing it.
        When both are done it puts {'count', 'sha256', 'family'} into
        self.results and closes."""
        async def handler(reader, writer):
            header = await reader.readline()
            if not header.endswith(b"\n"):
                self.errors.append("xfer: bad header %r" % header)
                return
            n, seed = (int(x) for x in header.split())
            sock = writer.get_extra_info("socket")

            async def send():
                data = pattern(n, seed)
                view = memoryview(data)
                for off in range(0, len(data), 1 << 20):
                    writer.write(view[off:off + (1 << 20)])
                    await writer.drain()
                writer.write_eof()
                await writer.drain()

            async def receive():
                h = hashlib.sha256()
                count = 0
                while True:
                    data = await reader.read(1 << 20)
                    if not data:
                        break
                    count += len(data)
                    h.update(data)
                return count, h.hexdigest()

            _, (count, digest) = await asyncio.gather(send(), receive())
            self.results.put({"count": count, "sha256": digest, "family": sock.family})
        return self._serve(host, handler)

    def start_reset_after(self, host, reply=b"bye"):
        """Read one chunk, reply `reply`, then close with RST (SO_LINGER 0)."""
        async def handler(reader, writer):
            await reader.read(65536)
            writer.write(reply)
            await writer.drain()
            await asyncio.sleep(0.05)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        return self._serve(host, handler)

    def start_blackhole(self, host):
        """A listening socket that never accepts, with its accept queue
        filled, so further SYNs are dropped: connects to it time out."""
        fam = family_of(host)
        lst = socket.socket(fam, socket.SOCK_STREAM)
        lst.bind((host, 0))
        lst.listen(0)
        addr = lst.getsockname()[:2]
        self.raw_sockets.append(lst)
        for _ in range(3):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(addr)
            except BlockingIOError:
                pass
            self.raw_sockets.append(s)
        # check it: a fresh connect must not complete
        probe = socket.socket(fam, socket.SOCK_STREAM)
        probe.settimeout(0.3)
        try:
            probe.connect(addr)
        except (socket.timeout, TimeoutError):
            pass
        else:
            raise RuntimeError("blackhole listener still accepts connections")
        finally:
            probe.close()
        return tuple(addr)

    def close(self):
        async def shutdown():
            for srv in self.servers:
                srv.close()
            for w in list(self.writers):
                w.transport.abort()
            for srv in self.servers:
                try:
                    await asyncio.wait_for(srv.wait_closed(), 2)
                except Exception:
                    pass
        try:
            self._call(shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(T(5))
            for s in self.raw_sockets:
                s.close()
            if not self.loop.is_running():
                self.loop.close()


@pytest.fixture
def backends():
    b = Backends()
    yield b
    b.close()


def do_xfer(host, port, up_size, down_size, seed, timeout=None):
    """One xfer through the proxy at (host, port): send the header and
    up_size bytes (then SHUT_WR) while reading down_size bytes to EOF.
    Returns dict(sock_addr, header_len, down_count, down_sha, up_sha)."""
    if timeout is None:  # generous: 5 s plus 4 MiB/s
        timeout = T(5 + (up_size + down_size) / (4 << 20))
    header = ("%d %d\n" % (down_size, seed)).encode()
    up = pattern(up_size, seed + 1)
    s = connect(host, port)
    client = local_addr(s)
    err = []

    def sender():
        try:
            s.sendall(header)
            view = memoryview(up)
            for off in range(0, len(up), 1 << 20):
                s.sendall(view[off:off + (1 << 20)])
            s.shutdown(socket.SHUT_WR)
        except Exception as e:
            err.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        h = hashlib.sha256()
        count = recv_until_eof(s, timeout=timeout, hasher=h)
        t.join(timeout)
        assert not t.is_alive(), "sender still blocked"
        assert not err, "sending failed: %r" % err
    finally:
        s.close()
    return {"client": client, "header_len": len(header), "down_count": count,
            "down_sha": h.hexdigest(), "up_sha": sha256(up)}
