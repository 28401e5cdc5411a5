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
import shutil
import subprocess
import tempfile
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


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports are picked below the ephemeral range: a port the kernel handed out
# with bind(0) may be given to an outgoing connection (of this suite or of
# the daemon) before the test binds it again.
_PORT_LOW = 10000
_PORT_HIGH = max(_PORT_LOW + 1000, _ephemeral_low())
_port_rng = random.Random(os.getpid() ^ int(time.time() * 1000))


def _bindable(family, host, port, v6only=False):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if v6only:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host=V4):
    """A TCP port that is currently free on `host`, outside the ephemeral range."""
    for _ in range(1000):
        port = _port_rng.randrange(_PORT_LOW, _PORT_HIGH)
        if _bindable(family_of(host), host, port):
            return port
    raise RuntimeError("no free port on %s" % host)


def free_dual_port():
    """A TCP port that is free on both 0.0.0.0 and [::] (V6ONLY), outside the
    ephemeral range."""
    for _ in range(1000):
        port = _port_rng.randrange(_PORT_LOW, _PORT_HIGH)
        if (_bindable(socket.AF_INET, "0.0.0.0", port) and
                _bindable(socket.AF_INET6, "::", port, v6only=True)):
            return port
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

    def __init__(self, config_path, extra_args=(), env=None, wrapper=()):
        """`env`: the whole environment of the daemon (None: inherit ours).
        `wrapper`: a command that execs the daemon (e.g. setpriv ...), so
        that the PID is still dualproxy's."""
        self.config_path = str(config_path)
        self.args = [*wrapper, require_binary(), "-c", self.config_path, *extra_args]
        self.env = env
        self.proc = None
        self.lines = []
        self.cond = threading.Condition()
        self.eof = False
        self._reader = None
        self.signalled = False

    def start(self, wait_ready=True):
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=self.env)
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

    def wait_for(self, pattern, timeout=None, predicate=None, since=0):
        """Wait for a stderr line matching regex `pattern` (and `predicate`
        on the match), looking at lines from index `since` on (see mark()).
        Returns the re.Match. Fails on timeout or exit."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + (T(10) if timeout is None else timeout)
        idx = since
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

    def mark(self):
        """The number of stderr lines so far: pass it as `since` to
        wait_for()/grep() to look only at what comes after."""
        with self.cond:
            return len(self.lines)

    def grep(self, pattern, since=0):
        """Every stderr line (from index `since` on) matching `pattern`."""
        rx = re.compile(pattern)
        with self.cond:
            return [l for l in self.lines[since:] if rx.search(l)]

    def rewrite(self, config_text):
        """Replace the config file atomically (a SIGHUP never sees half a
        file), readable by everyone like the original."""
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(config_text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.config_path)

    def sighup(self):
        """SIGHUP (a reload): unlike signal(), the daemon is expected to keep
        running, so the teardown still checks it."""
        self.proc.send_signal(signal.SIGHUP)

    def reload(self, config_text=None, timeout=None):
        """Rewrite the config (if given), SIGHUP, and wait for the outcome.
        Returns (ok, lines): ok is True with `reload: N added...`, False with
        `reload failed: ...`; lines are the stderr lines logged meanwhile."""
        if config_text is not None:
            self.rewrite(config_text)
        since = self.mark()
        self.sighup()
        m = self.wait_for(r"reload: \d+ added, \d+ kept, \d+ removed|"
                          r"reload failed: keeping the running configuration",
                          timeout=timeout, since=since)
        with self.cond:
            lines = list(self.lines[since:])
        return not m.group(0).startswith("reload failed"), lines

    def reload_ok(self, config_text=None, timeout=None):
        """reload() that must succeed; returns (added, kept, removed)."""
        ok, lines = self.reload(config_text, timeout)
        assert ok, "reload failed:\n%s" % "\n".join(lines)
        counts = [re.search(r"reload: (\d+) added, (\d+) kept, (\d+) removed", l)
                  for l in lines]
        m = [c for c in counts if c][0]
        return tuple(int(x) for x in m.groups())

    def status(self):
        """/proc/PID/status as a dict of strings."""
        return proc_status(self.proc.pid)

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
    public = []

    def make(config_text, wait_ready=True, check_exit=True, extra_args=(),
             env=None, wrapper=(), readable=False):
        """readable=True puts the config in a world-readable directory, so
        that a daemon that switched to an unprivileged user (the default
        when started as root) can read it again on SIGHUP."""
        counter[0] += 1
        if readable:
            if not public:
                public.append(make_public_dir())
            path = public[0] / ("dualproxy-%d.ini" % counter[0])
        else:
            path = tmp_path / ("dualproxy-%d.ini" % counter[0])
        path.write_text(config_text)
        if readable:
            os.chmod(path, 0o644)
        p = Proxy(path, extra_args, env=env, wrapper=wrapper)
        started.append((p, check_exit))
        return p.start(wait_ready=wait_ready)

    yield make

    problems = _stop_checked(started)
    for d in public:
        shutil.rmtree(d, ignore_errors=True)
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

async def tag_then_echo(reader, writer, tag, on_data=None):
    """Backend handler body: send 'TAG FAMILY\\n' (the family of the
    connection as the backend sees it), then echo; on_data(data) sees every
    chunk received."""
    sock = writer.get_extra_info("socket")
    fam = "AF_INET6" if sock.family == socket.AF_INET6 else "AF_INET"
    writer.write(("%s %s\n" % (tag, fam)).encode())
    await writer.drain()
    while True:
        data = await reader.read(65536)
        if not data:
            break
        if on_data is not None:
            on_data(data)
        writer.write(data)
        await writer.drain()


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

    def _serve(self, host, handler, port=0):
        """Serves handler(reader, writer) on host:port (0: any); returns
        (host, port)."""
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
            srv = await asyncio.start_server(wrapped, host=host, port=port,
                                             family=family_of(host), backlog=4096,
                                             reuse_address=True, limit=1 << 20)
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
            await tag_then_echo(reader, writer, tag)
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


@pytest.fixture
def tagged(backends):
    """A tagged echo backend on each family (tags 'v4' and 'v6'):
    ((host4, port4), (host6, port6))."""
    return backends.start_tagged(V4, "v4"), backends.start_tagged(V6, "v6")


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


# --------------------------------------------------------------------------
# lifecycle: privileges, reload, shutdown (see test_privileges.py,
# test_reload.py, test_shutdown.py, test_notify.py)

IS_ROOT = os.geteuid() == 0

needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root: dualproxy switches user and keeps "
    "capabilities only when started as root (CI runs the suite as root)")

CAP_NET_BIND_SERVICE = 1 << 10  # 0x400


def make_public_dir():
    """A new temp directory everybody may enter and read (mode 0755): a
    daemon that switched to 'nobody' must still read its config there (and
    reach a notify socket). The caller removes it."""
    d = Path(tempfile.mkdtemp(prefix="dualproxy-it-"))
    os.chmod(d, 0o755)
    return d


@pytest.fixture
def public_tmp():
    """A world-accessible temp directory, removed after the test."""
    d = make_public_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def proc_status(pid):
    """/proc/PID/status as a dict of strings ('Uid' -> '0\t0\t0\t0')."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def status_ids(status, key):
    """The numbers of a Uid/Gid/Groups line as a list of ints."""
    return [int(x) for x in status[key].split()]


def status_caps(status):
    """The capability masks of a status dict as ints, by name."""
    return {k: int(status[k], 16)
            for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def listen_sockets(port):
    """{(local address, inode)} of the LISTEN sockets on TCP `port`, from
    /proc/net/tcp and tcp6 (inode identifies the socket: a listener kept
    across a reload keeps its inode)."""
    found = set()
    for name, fam in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open("/proc/net/" + name) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    hexaddr, hexport = local.split(":")
                    if state != "0A" or int(hexport, 16) != port:
                        continue
                    raw = bytes.fromhex(hexaddr)
                    # /proc prints the address as host-order 32-bit words
                    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                    found.add((fmt_addr(socket.inet_ntop(fam, raw), port), inode))
        except FileNotFoundError:
            pass
    return found


def assert_refused(host, port, what=""):
    """A connection to host:port must be refused (nobody listens)."""
    s = socket.socket(family_of(host), socket.SOCK_STREAM)
    s.settimeout(T(3))
    try:
        s.connect((host, port))
    except ConnectionRefusedError:
        return
    finally:
        s.close()
    raise AssertionError("%s: connection accepted, expected refused %s"
                         % (fmt_addr(host, port), what))


def unprivileged_port_start():
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024


def low_dual_port(lo=800, hi=1000):
    """A privileged port (below net.ipv4.ip_unprivileged_port_start,
    preferably in lo..hi) free on 0.0.0.0 and [::] (V6ONLY). Needs root."""
    start = unprivileged_port_start()
    candidates = [p for p in range(lo, hi + 1) if p < start]
    candidates += [p for p in range(start - 1, 0, -1) if p not in candidates]
    if not candidates:
        pytest.fail("net.ipv4.ip_unprivileged_port_start is %d: every port is "
                    "unprivileged on this host, the test needs the default 1024"
                    % start, pytrace=False)
    for port in candidates:
        s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s4.bind(("0.0.0.0", port))
            s6.bind(("::", port))
            return port
        except OSError:
            continue
        finally:
            s4.close()
            s6.close()
    pytest.fail("no privileged port free on both families", pytrace=False)


def tagged_echo(host, port, payload, timeout=None):
    """Through a tagged backend: connect, read the tag line, echo `payload`
    byte-exact, half-close, expect EOF. Returns the tag ('a4 AF_INET')."""
    with connect(host, port, timeout=timeout) as s:
        tag = recv_line(s, timeout=timeout).decode().strip()
        s.sendall(payload)
        got = recv_exact(s, len(payload), timeout=timeout)
        assert got == payload, "%s: echo differs" % fmt_addr(host, port)
        s.shutdown(socket.SHUT_WR)
        rest = recv_until_eof(s, timeout=timeout)
        assert rest == b"", "%s: extra data %r" % (fmt_addr(host, port), rest[:50])
        return tag


def distinct_dual_ports(n):
    """n different ports, each free on both families."""
    ports = []
    while len(ports) < n:
        p = free_dual_port()
        if p not in ports:
            ports.append(p)
    return ports


# --------------------------------------------------------------------------
# Kubernetes edge: klipper-lb environment, allowlists, PROXY protocol,
# metrics, watch_config (see test_envmode.py, test_allow.py,
# test_proxy_protocol.py, test_metrics.py, test_watch.py)

KLIPPER_VARS = ("SRC_PORT", "SRC_RANGES", "DEST_PROTO", "DEST_PORT", "DEST_IPS",
                "DEST_IP", "DEST_IP6")


def klipper_env(**variables):
    """The environment for dualproxy in klipper-lb mode: ours (PATH, and
    whatever a DUALPROXY wrapper or a sanitizer needs) without any stray
    klipper-lb variable, plus exactly `variables` (values as strings; None
    leaves a variable out)."""
    env = {k: v for k, v in os.environ.items() if k not in KLIPPER_VARS}
    for k, v in variables.items():
        if v is not None:
            env[k] = str(v)
    return env


def run_dualproxy_env(env, *args, timeout=None):
    """run_dualproxy() with the whole environment `env` (no -c unless given)."""
    binary = require_binary()
    try:
        return subprocess.run([binary, *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, env=env,
                              timeout=T(10) if timeout is None else timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("dualproxy %s did not exit within the timeout; stderr: %s"
                             % (" ".join(args), e.stderr)) from None


class EnvProxy(Proxy):
    """A running dualproxy configured by the environment (no -c)."""

    def __init__(self, env, extra_args=(), wrapper=()):
        super().__init__("(environment)", extra_args, env=env, wrapper=wrapper)
        self.config_path = None
        self.args = [*wrapper, require_binary(), *extra_args]


def _stop_checked(started):
    """Stop every (Proxy, check_exit) by PID like proxy_factory's teardown;
    returns the list of problems (a crash, a non-zero exit on SIGTERM)."""
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
    return problems


def _factory(cls):
    """(started, make): make(arg, wait_ready, check_exit, extra_args) starts
    cls(arg, extra_args) and records it in started for the teardown."""
    started = []

    def make(arg, wait_ready=True, check_exit=True, extra_args=()):
        p = cls(arg, extra_args)
        started.append((p, check_exit))
        return p.start(wait_ready=wait_ready)

    return started, make


def _teardown(started):
    problems = _stop_checked(started)
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def env_proxy_factory():
    """env_proxy_factory(env, wait_ready=True, check_exit=True) -> EnvProxy:
    dualproxy started without -c and with the whole environment `env` (see
    klipper_env()). Stopped and checked at teardown like proxy_factory."""
    started, make = _factory(EnvProxy)
    yield make
    _teardown(started)


@pytest.fixture
def path_proxy_factory():
    """path_proxy_factory(path, wait_ready=True, check_exit=True) -> Proxy
    started with -c PATH on a file the test manages itself (e.g. a kubelet
    ConfigMap symlink). Stopped and checked at teardown like proxy_factory."""
    started, make = _factory(Proxy)
    yield make
    _teardown(started)


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Poll `predicate()` until it returns a true value (returned), or fail
    after `timeout` seconds (already scaled by the caller)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timeout (%.1fs) waiting for %s" % (timeout, what))
        time.sleep(interval)


# --- backends with per-server accounting ------------------------------------

class BackendRecord:
    """What one such backend server saw: `accepted` connections and, per
    connection, the bytes received so far (`conns`: a list of bytearrays,
    appended to as data arrives; `done` counts connections that ended)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.accepted = 0
        self.conns = []
        self.done = 0
        self.peers = []

    def data(self, i):
        with self.lock:
            return bytes(self.conns[i])

    def snapshot(self):
        with self.lock:
            return self.accepted, [bytes(c) for c in self.conns], self.done


def serve_at(backends, host, port, handler, record=None):
    """Backends._serve on a chosen `port` (0: any), counting accepts in
    `record` (a BackendRecord, created if None); handler(reader, writer, buf,
    record) gets the connection's receive buffer. The server is closed with
    the `backends` fixture. Returns ((host, port), record)."""
    record = BackendRecord() if record is None else record

    async def counted(reader, writer):
        with record.lock:
            record.accepted += 1
            buf = bytearray()
            record.conns.append(buf)
            record.peers.append(writer.get_extra_info("peername"))
        try:
            await handler(reader, writer, buf, record)
        finally:
            with record.lock:
                record.done += 1

    return backends._serve(host, counted, port), record


def start_counted_tagged(backends, host, tag, port=0):
    """A tagged echo backend (see Backends.start_tagged: 'TAG FAMILY\\n',
    then echo) that counts its connections. Returns ((host, port), record)."""
    async def handler(reader, writer, buf, record):
        def keep(data):
            with record.lock:
                buf.extend(data)
        await tag_then_echo(reader, writer, tag, keep)
    return serve_at(backends, host, port, handler)


def start_recorder(backends, host, reply=None, port=0):
    """A backend that records every byte it receives (record.conns[i]) until
    the client's EOF, then sends reply(received_bytes) (default: b'got N
    bytes\\n'), and closes. Returns ((host, port), record)."""
    if reply is None:
        def reply(data):
            return b"got %d bytes\n" % len(data)

    async def handler(reader, writer, buf, record):
        while True:
            data = await reader.read(1 << 20)
            if not data:
                break
            with record.lock:
                buf += data
        with record.lock:
            got = bytes(buf)
        out = reply(got)
        view = memoryview(out)
        for off in range(0, len(out), 1 << 16):
            writer.write(view[off:off + (1 << 16)])
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    return serve_at(backends, host, port, handler)


# --- PROXY protocol (HAProxy spec) ----------------------------------------

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_header_v1(src, dst):
    """The v1 header for client address src=(ip, port) that connected to
    dst=(ip, port)."""
    proto = "TCP6" if ":" in src[0] else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (proto, src[0], dst[0], src[1], dst[1])).encode()


def proxy_header_v2(src, dst):
    """The v2 header (command PROXY, STREAM over INET or INET6)."""
    fam = family_of(src[0])
    addrs = (socket.inet_pton(fam, src[0]) + socket.inet_pton(fam, dst[0])
             + struct.pack("!HH", src[1], dst[1]))
    return (PROXY_V2_SIGNATURE + bytes([0x21, 0x21 if fam == socket.AF_INET6 else 0x11])
            + struct.pack("!H", len(addrs)) + addrs)


# --- HTTP and Prometheus text ---------------------------------------------

class HttpResponse:
    def __init__(self, raw):
        self.raw = raw
        head, sep, self.body = raw.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError("no end of header in response %r" % raw[:300])
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        parts = self.status_line.split(" ", 2)
        if len(parts) < 2 or not re.fullmatch(r"HTTP/1\.[01]", parts[0]) \
                or not parts[1].isdigit():
            raise AssertionError("bad status line %r" % self.status_line)
        self.status = int(parts[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()

    def text(self):
        return self.body.decode("utf-8")


def http_raw(host, port, request, timeout=None):
    """Send `request` bytes, read to EOF (the server closes: one request per
    connection). Returns the raw response bytes."""
    with connect(host, port, timeout=timeout) as s:
        s.sendall(request)
        return recv_until_eof(s, timeout=timeout)


def http_get(host, port, path="/metrics", method="GET", version="HTTP/1.1",
             timeout=None):
    """One request; returns an HttpResponse."""
    req = ("%s %s %s\r\nHost: %s\r\nUser-Agent: pytest\r\n\r\n"
           % (method, path, version, fmt_addr(host, port))).encode()
    return HttpResponse(http_raw(host, port, req, timeout=timeout))


_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """A parsed Prometheus text exposition (version 0.0.4)."""

    def __init__(self, text):
        self.text = text
        self.samples = {}  # (name, frozenset(labels.items())) -> float
        self.help = {}
        self.type = {}
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("# HELP "):
                name, _, h = line[7:].partition(" ")
                self.help[name] = h
                continue
            if line.startswith("# TYPE "):
                name, _, t = line[7:].partition(" ")
                self.type[name] = t
                continue
            if line.startswith("#"):
                continue
            m = _SAMPLE_RE.match(line)
            if not m:
                raise AssertionError("bad metrics line %r" % line)
            labels = dict(_LABEL_RE.findall(m.group(2) or ""))
            key = (m.group(1), frozenset(labels.items()))
            if key in self.samples:
                raise AssertionError("duplicate series %r" % line)
            self.samples[key] = float(m.group(3))

    def get(self, name, **labels):
        """The value of the series, or None if it is not exposed."""
        return self.samples.get((name, frozenset(labels.items())))

    def value(self, name, **labels):
        """The value of the series; fails if it is not exposed."""
        v = self.get(name, **labels)
        if v is None:
            raise AssertionError("no series %s%r in:\n%s" % (name, labels, self.text))
        return v

    def names(self):
        return {name for name, _ in self.samples}


def scrape(host, port, timeout=None):
    """GET /metrics; checks the status and content type; returns Metrics."""
    r = http_get(host, port, "/metrics", timeout=timeout)
    assert r.status == 200, r.status_line
    ctype = r.headers.get("content-type", "")
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    return Metrics(r.text())


def wait_metric(host, port, name, expected, timeout=None, **labels):
    """Scrape until series name{labels} == expected. Returns the Metrics."""
    last = [None]

    def check():
        m = scrape(host, port)
        last[0] = m.get(name, **labels)
        return m if last[0] == expected else None
    try:
        return wait_until(check, T(5) if timeout is None else timeout,
                          what="%s%r == %r" % (name, labels, expected))
    except AssertionError as e:
        raise AssertionError("%s (last value %r)" % (e, last[0])) from None


# --- kubelet ConfigMap volume layout --------------------------------------

class ConfigMapDir:
    """A directory laid out like a kubelet ConfigMap volume:
        dir/..2026_01_02_03_04_05.NNNNNNNNN/   the files of one version
        dir/..data -> ..2026_...               (symlink, swapped atomically)
        dir/KEY -> ..data/KEY                  (one symlink per key)
    update() writes a new timestamped directory, points ..data_tmp at it,
    rename()s ..data_tmp over ..data and removes the old directory, as
    kubelet's AtomicWriter does. Directories 0755, files 0644 (the daemon
    reads them as nobody)."""

    def __init__(self, root, files):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.serial = 0
        self.current = None
        self._write_version(files)
        os.symlink(self.current, self.root / "..data")
        for key in files:
            os.symlink(os.path.join("..data", key), self.root / key)

    def path(self, key):
        return str(self.root / key)

    def _write_version(self, files):
        self.serial += 1
        t = time.gmtime()
        name = "..%s.%09d" % (time.strftime("%Y_%m_%d_%H_%M_%S", t),
                              (time.time_ns() % 1000000000) + self.serial)
        d = self.root / name
        d.mkdir()
        for key, text in files.items():
            (d / key).write_text(text)
            os.chmod(d / key, 0o644)
        os.chmod(d, 0o755)
        self.current = name
        return name

    def update(self, files):
        """Atomically swap in a new version holding `files` (same keys)."""
        old = self.current
        new = self._write_version(files)
        tmp = self.root / "..data_tmp"
        os.symlink(new, tmp)
        os.rename(tmp, self.root / "..data")
        shutil.rmtree(self.root / old)


# --------------------------------------------------------------------------
# reliability: the daemon's descriptors, memory and CPU time from /proc,
# and a descriptor limit for it (see test_reliability.py, test_hostile.py,
# test_backend_faults.py, test_fairness.py)

def raise_nofile(want):
    """Raise this test process's soft RLIMIT_NOFILE to `want` (at most the
    hard limit)."""
    _raise_nofile(want)


def nofile_wrapper(limit):
    """A Proxy/proxy_factory `wrapper` that sets the daemon's RLIMIT_NOFILE
    to (limit, limit), soft and hard (the daemon raises its soft limit to the
    hard one at start), then execs it: the PID stays dualproxy's."""
    import sys
    code = ("import os, resource, sys; "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (%d, %d)); "
            "os.execv(sys.argv[1], sys.argv[1:])" % (limit, limit))
    return (sys.executable, "-c", code)


def proc_nofile(pid):
    """(soft, hard) 'Max open files' of a process, from /proc/PID/limits
    (None for unlimited)."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                fields = line.split()
                return tuple(None if v == "unlimited" else int(v) for v in fields[3:5])
    raise AssertionError("no 'Max open files' in /proc/%d/limits" % pid)


def proc_fd_kinds(pid):
    """The descriptors of a process by kind: {'socket': n, 'pipe': n,
    'anon': n (epoll, eventfd, signalfd, inotify), 'other': n}."""
    kinds = {"socket": 0, "pipe": 0, "anon": 0, "other": 0}
    d = "/proc/%d/fd" % pid
    for name in os.listdir(d):
        try:
            target = os.readlink(os.path.join(d, name))
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:"):
            kinds["socket"] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        elif target.startswith("anon_inode:"):
            kinds["anon"] += 1
        else:
            kinds["other"] += 1
    return kinds


def proc_fds_but_pipes(pid):
    """The number of descriptors that are not pipes. dualproxy keeps a pool
    of empty pipes for splice(2) after bulk transfers (budgeted to a quarter
    of its descriptor limit), so after traffic its total count legitimately
    stays above the count at start; everything else must come back."""
    k = proc_fd_kinds(pid)
    return k["socket"] + k["anon"] + k["other"]


def wait_fds_back(pid, baseline, timeout, what="descriptors back to baseline"):
    """Wait until proc_fds_but_pipes(pid) == baseline; fail with the counts
    by kind otherwise."""
    last = [None]

    def check():
        last[0] = proc_fd_kinds(pid)
        return proc_fds_but_pipes(pid) == baseline
    try:
        wait_until(check, timeout, interval=0.1, what=what)
    except AssertionError as e:
        raise AssertionError("%s: baseline %d non-pipe descriptors, now %r"
                             % (e, baseline, last[0])) from None


def proc_rss_kib(pid):
    """VmRSS of a process in KiB."""
    return int(proc_status(pid)["VmRSS"].split()[0])


def proc_cpu_seconds(pid):
    """utime + stime of a process in seconds (/proc/PID/stat fields 14, 15)."""
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()  # fields from 3 (state) on
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def abort_socket(sock):
    """Close with RST (SO_LINGER 0)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def echo_exact(host, port, payload, timeout=None):
    """Through an echo backend: send `payload` (from a thread, so that a
    large one cannot deadlock), half-close, read to EOF; the echo must be
    byte-exact. Returns the client's local address."""
    timeout = T(10) if timeout is None else timeout
    s = connect(host, port, timeout=timeout)
    addr = local_addr(s)
    err = []

    def sender():
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except Exception as e:
            err.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        got = recv_until_eof(s, timeout=timeout)
        t.join(timeout)
        assert not err, "%s: sending failed: %r" % (fmt_addr(host, port), err)
        assert len(got) == len(payload) and got == payload, \
            "%s: echo differs: sent %d bytes, got %d" % (fmt_addr(host, port),
                                                          len(payload), len(got))
    finally:
        s.close()
    return addr


@pytest.fixture
def clients():
    """A list to append client sockets to; they are closed at teardown.
    Request it after proxy_factory so that it is torn down first: a test
    that fails with a connection open then does not leave the daemon
    draining (waiting for that client) when it is stopped."""
    socks = []
    yield socks
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# Kubernetes edge (continued): helpers shared by test_envmode.py,
# test_allow.py and test_metrics.py

def same_port_tagged(backends, tag4="v4", tag6="v6"):
    """Counting tagged backends on 127.0.0.1:P and [::1]:P (one DEST_PORT
    for both families, as klipper-lb has). Returns (P, record4, record6)."""
    for _ in range(20):
        port = free_dual_port()
        try:
            _, rec4 = start_counted_tagged(backends, V4, tag4, port=port)
        except OSError:
            continue
        try:
            _, rec6 = start_counted_tagged(backends, V6, tag6, port=port)
        except OSError:
            continue  # the v4 server is closed with the fixture
        return port, rec4, rec6
    raise RuntimeError("no port free on 127.0.0.1 and ::1")


def klipper_ports(backends):
    """(SRC_PORT, DEST_PORT, record4, record6): counting tagged backends 'v4'
    / 'v6' on 127.0.0.1:DEST_PORT and [::1]:DEST_PORT, and a different port
    free on both families for the daemon."""
    dest, rec4, rec6 = same_port_tagged(backends)
    src = free_dual_port()
    while src == dest:
        src = free_dual_port()
    return src, dest, rec4, rec6


def expect_rst(host, port, timeout=None):
    """Connect to host:port where dualproxy must close us with RST before any
    byte (a denied client, a failed backend). On loopback the RST may already
    fail the connect() itself. Returns our client address ('ip:port')."""
    s = socket.socket(family_of(host), socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        client = local_addr(s)
        s.settimeout(T(5))
        try:
            s.connect((host, port))
        except ConnectionResetError:
            return client
        kind, _, data = wait_closed(s, T(3) if timeout is None else timeout)
        assert data == b"", "%s: received %r before the close" % (client, data[:80])
        assert kind == "reset", "%s: got %s, expected RST" % (client, kind)
        return client
    finally:
        s.close()


def accept_queue(port):
    """Connections waiting in the accept queues of the LISTEN sockets on TCP
    `port` (both families): /proc/net/tcp{,6} show a listener's accept
    backlog as its rx_queue."""
    waiting = 0
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/net/" + name) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] != "0A" or int(fields[1].split(":")[1], 16) != port:
                        continue
                    waiting += int(fields[4].split(":")[1], 16)
        except FileNotFoundError:
            pass
    return waiting


# --------------------------------------------------------------------------
# a network namespace of the daemon's own (root): all ports free, addresses
# and netfilter rules of its own (see test_reload_scale.py)

CLONE_NEWNET = 0x40000000


class NetNs:
    """A new network namespace with only lo, up (`ip netns add`). The daemon
    runs in it through wrapper(); call(fn, ...) runs fn in a thread that
    entered it, so that every socket fn makes is the namespace's (and may be
    used afterwards from any thread)."""

    def __init__(self):
        import secrets
        self.name = "dpx-%d-%s" % (os.getpid(), secrets.token_hex(3))
        self.made = False

    def ip(self, *args):
        r = subprocess.run(["ip", "-n", self.name, *args], capture_output=True, text=True,
                           timeout=T(10))
        assert r.returncode == 0, "ip %s: %s" % (" ".join(args), r.stderr.strip())

    def run(self, *cmd, check=True, timeout=None):
        """A command in the namespace; returns the CompletedProcess."""
        r = subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True,
                           text=True, timeout=T(10) if timeout is None else timeout)
        if check:
            assert r.returncode == 0, "%s: %s" % (" ".join(cmd), r.stderr.strip())
        return r

    def create(self):
        if shutil.which("ip") is None:
            pytest.fail("ip (iproute2) not found", pytrace=False)
        r = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True,
                           timeout=T(10))
        assert r.returncode == 0, r.stderr
        self.made = True
        self.ip("link", "set", "lo", "up")
        return self

    def delete(self):
        if self.made:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True,
                           timeout=T(10))
            self.made = False

    def wrapper(self):
        """A Proxy wrapper that runs the daemon in the namespace (same PID)."""
        return ("ip", "netns", "exec", self.name)

    def call(self, fn, *args, **kwargs):
        import ctypes
        out = {}

        def body():
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open("/run/netns/%s" % self.name, os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                out["value"] = fn(*args, **kwargs)
            except BaseException as e:  # re-raised in the caller
                out["error"] = e

        t = threading.Thread(target=body, daemon=True)
        t.start()
        t.join()
        if "error" in out:
            raise out["error"]
        return out.get("value")


@pytest.fixture
def netns():
    if not IS_ROOT:
        pytest.skip("needs root: creates a network namespace")
    ns = NetNs()
    try:
        yield ns.create()
    finally:
        ns.delete()


# --------------------------------------------------------------------------
# stalls of the event loop, seen from a client

class StallProbe(threading.Thread):
    """Connects to host:port every `interval` seconds (through a tagged or
    echo backend: one byte there and back) and records how long each round
    took: a reload that holds the event loop shows as a slow round. worst()
    is the slowest round in seconds; failures are rounds that failed."""

    def __init__(self, host, port, interval=0.01):
        super().__init__(daemon=True)
        self.host, self.port, self.interval = host, port, interval
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.rounds = []
        self.failures = []

    def one(self):
        start = time.monotonic()
        with socket.create_connection((self.host, self.port), timeout=T(5)) as s:
            s.settimeout(T(5))
            s.sendall(b"x")
            got = b""
            while b"x" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    raise AssertionError("EOF before the echo")
                got += chunk
        return time.monotonic() - start

    def run(self):
        while not self.stop_event.is_set():
            try:
                took = self.one()
                with self.lock:
                    self.rounds.append(took)
            except Exception as e:
                with self.lock:
                    self.failures.append(repr(e))
            self.stop_event.wait(self.interval)

    def __enter__(self):
        self.start()
        wait_until(lambda: len(self.rounds) >= 5 or self.failures, T(5),
                   what="the first rounds of the stall probe")
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.join(T(10))

    def worst(self):
        with self.lock:
            return max(self.rounds) if self.rounds else None

    def count(self):
        with self.lock:
            return len(self.rounds)


# --------------------------------------------------------------------------
# UDP: ports, backends, clients, the flow log line, /proc/net/udp
# (see test_udp*.py)

def pytest_configure(config):
    # `make check-valgrind` leaves these out with -k 'not reliability'
    config.addinivalue_line(
        "markers", "reliability: measures CPU time or lowers the descriptor "
        "limit (too heavy under valgrind)")


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; root may exceed rmem_max
UDP_SEGMENT = 103  # Linux <netinet/udp.h>: send one buffer as datagrams of this size (GSO)
MAX_UDP4 = 65507  # 65535 - 20 (IPv4 header) - 8 (UDP header)
MAX_UDP6 = 65527  # 65535 - 8 (the IPv6 payload length counts the UDP header only)
UDP_BUF = 65536 + 16  # a receive buffer no legitimate datagram fills


def max_udp(host):
    return MAX_UDP6 if ":" in host else MAX_UDP4


def _udp_bindable(family, host, port, v6only=False):
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        if v6only:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _port_free_everywhere(port, hosts):
    """`port` is free for TCP and UDP on each of `hosts` (the wildcards are
    checked V6ONLY, as dualproxy binds them)."""
    for host in hosts:
        fam = family_of(host)
        v6only = host == "::"
        if not _bindable(fam, host, port, v6only) or not _udp_bindable(fam, host, port, v6only):
            return False
    return True


def _free_port_on(hosts):
    for _ in range(1000):
        port = _port_rng.randrange(_PORT_LOW, _PORT_HIGH)
        if _port_free_everywhere(port, hosts):
            return port
    raise RuntimeError("no port free for TCP and UDP on %s" % ", ".join(hosts))


def free_udp_port(host=V4):
    """A port free for UDP and TCP on `host`, outside the ephemeral range."""
    return _free_port_on([host])


def free_udp_dual_port():
    """A port free for UDP and TCP on 0.0.0.0 and [::] (V6ONLY), outside the
    ephemeral range: for a service listening on a bare port."""
    return _free_port_on(["0.0.0.0", "::"])


def free_udp_loopback_port():
    """A port free for UDP and TCP on 127.0.0.1 and ::1: the same port for
    the backends of both families (klipper-lb's DEST_PORT)."""
    return _free_port_on([V4, V6])


def distinct_udp_dual_ports(n):
    ports = []
    while len(ports) < n:
        p = free_udp_dual_port()
        if p not in ports:
            ports.append(p)
    return ports


def unused_udp_port(host=V4):
    """A UDP port on `host` that nobody has bound: a datagram to it draws an
    ICMP port unreachable."""
    return free_udp_port(host)


def family_name(family):
    return "AF_INET6" if family == socket.AF_INET6 else "AF_INET"


def udp_tag(tag, family):
    """The prefix a tagged UDP backend puts before the datagram it returns."""
    return ("%s %s|" % (tag, family_name(family))).encode()


class UdpBackend:
    """A UDP server on host:port (0: any) in a thread of its own.

    mode 'echo' returns each datagram as it came; 'tagged' returns
    b'TAG FAMILY|' + datagram (FAMILY as the server sees its peer); 'silent'
    never answers. Every datagram received is recorded: `datagrams` is a
    list of (peer, payload), `peers()` the distinct (ip, port) in the order
    they first sent; `truncated` counts datagrams cut on reading (never
    expected: the buffer holds the largest one)."""

    def __init__(self, host, mode="echo", tag=None, port=0, rcvbuf=4 << 20):
        self.host = host
        self.family = family_of(host)
        self.mode = mode
        self.tag = tag if tag is not None else ("v6" if ":" in host else "v4")
        self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
        for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, rcvbuf)
                break
            except OSError:
                continue
        self.sock.bind((host, port))
        self.addr = self.sock.getsockname()[:2]
        self.port = self.addr[1]
        self.lock = threading.Lock()
        self.datagrams = []
        self.truncated = 0
        self.errors = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def fmt(self):
        return fmt_addr(*self.addr)

    def _run(self):
        self.sock.settimeout(0.05)
        while not self._stop:
            try:
                data, _, flags, peer = self.sock.recvmsg(UDP_BUF)
            except socket.timeout:
                continue
            except OSError as e:
                if self._stop or self.sock.fileno() < 0:
                    return
                self.errors.append(repr(e))
                time.sleep(0.01)
                continue
            peer = peer[:2]
            with self.lock:
                self.datagrams.append((peer, data))
                if flags & socket.MSG_TRUNC:
                    self.truncated += 1
            if self.mode == "silent":
                continue
            reply = data if self.mode == "echo" else udp_tag(self.tag, self.family) + data
            try:
                self.sock.sendto(reply, peer)
            except OSError as e:
                self.errors.append(repr(e))

    def peers(self):
        """The distinct peers, in the order they first sent."""
        seen = {}
        with self.lock:
            for peer, _ in self.datagrams:
                seen.setdefault(peer, None)
        return list(seen)

    def received(self):
        with self.lock:
            return list(self.datagrams)

    def count(self):
        with self.lock:
            return len(self.datagrams)

    def close(self):
        self._stop = True
        self.thread.join(T(5))
        self.sock.close()


@pytest.fixture
def udp_backends():
    """udp_backends(host, mode='echo', tag=None, port=0) -> a started
    UdpBackend; all are closed at teardown."""
    made = []

    def make(host, mode="echo", tag=None, port=0):
        b = UdpBackend(host, mode=mode, tag=tag, port=port)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def udp_tcp_backends(backends, udp_backends, host, tag):
    """A tagged UDP backend (udp_backends) and a tagged TCP one (backends,
    counted) on the same port of `host`, for a `protocol = tcp, udp`
    service (one backend address for both protocols). Returns the
    UdpBackend."""
    for _ in range(20):
        port = free_udp_port(host)
        try:
            u = udp_backends(host, "tagged", tag, port=port)
        except OSError:
            continue
        try:
            start_counted_tagged(backends, host, tag, port=port)
        except OSError:
            continue
        return u
    raise RuntimeError("no port free for TCP and UDP on %s" % host)


@pytest.fixture
def udp_tagged(udp_backends):
    """A tagged UDP backend on each family (tags 'v4' and 'v6')."""
    return udp_backends(V4, "tagged", "v4"), udp_backends(V6, "tagged", "v6")


@pytest.fixture
def udp_socks():
    """udp_socks(host, bind=None) -> a new UDP client socket bound to
    (bind or host, 0); all are closed at teardown (request it after
    proxy_factory, so they go first)."""
    made = []

    def make(host, bind=None):
        s = socket.socket(family_of(host), socket.SOCK_DGRAM)
        made.append(s)
        s.bind((bind or host, 0))
        return s

    yield make
    for s in made:
        s.close()


def sock_addr(sock):
    """A socket's local address as dualproxy logs it ('127.0.0.1:5000')."""
    return fmt_addr(*sock.getsockname()[:2])


def udp_ask(sock, dest, payload, timeout=None, retry=None):
    """Send `payload` to dest=(host, port) and wait for one datagram back;
    with `retry`, send again every `retry` seconds meanwhile (UDP may drop,
    a real client resends). Returns (data, source (ip, port)). Fails on
    timeout."""
    timeout = T(5) if timeout is None else timeout
    deadline = time.monotonic() + timeout
    sock.sendto(payload, dest)
    next_send = None if retry is None else time.monotonic() + retry
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise AssertionError("%s -> %s: no answer to a %d-byte datagram within %.1fs"
                                 % (sock_addr(sock), fmt_addr(*dest), len(payload), timeout))
        wait = deadline - now
        if next_send is not None:
            wait = min(wait, max(0, next_send - now))
        r, _, _ = select.select([sock], [], [], wait)
        if r:
            data, _, _, src = sock.recvmsg(UDP_BUF)
            return data, src[:2]
        if next_send is not None and time.monotonic() >= next_send:
            sock.sendto(payload, dest)
            next_send = time.monotonic() + retry


def udp_quiet(sock, seconds):
    """Nothing arrives on `sock` for `seconds`: fails with what came."""
    r, _, _ = select.select([sock], [], [], seconds)
    if r:
        try:
            data, src = sock.recvfrom(UDP_BUF)
        except OSError:
            return  # an ICMP error, no datagram
        raise AssertionError("%s: got a %d-byte datagram from %s, expected none: %r"
                             % (sock_addr(sock), len(data), fmt_addr(*src[:2]), data[:60]))


def udp_exchange(socks, dests, payloads, timeout=None, retry=0.5, batch=100):
    """Each socks[i] sends payloads[i] to dests[i] and waits for one datagram
    back, all at the same time (sent in batches of `batch`; whoever has no
    answer yet sends again every `retry` seconds). Returns the list of
    answers (None where none came before `timeout`)."""
    import selectors
    timeout = T(20) if timeout is None else timeout
    deadline = time.monotonic() + timeout
    answers = [None] * len(socks)
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    last_sent = [None] * len(socks)
    pending = len(socks)
    try:
        def drain(wait):
            nonlocal pending
            for key, _ in sel.select(wait):
                i = key.data
                try:
                    data = socks[i].recv(UDP_BUF)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    continue
                if answers[i] is None:
                    answers[i] = data
                    pending -= 1
                    sel.unregister(socks[i])

        for start in range(0, len(socks), batch):
            for i in range(start, min(start + batch, len(socks))):
                try:
                    socks[i].sendto(payloads[i], dests[i])
                except BlockingIOError:
                    pass
                last_sent[i] = time.monotonic()
            drain(0.005)
        while pending and time.monotonic() < deadline:
            drain(0.05)
            now = time.monotonic()
            resent = 0
            for i in range(len(socks)):
                if answers[i] is None and now - last_sent[i] >= retry:
                    try:
                        socks[i].sendto(payloads[i], dests[i])
                    except BlockingIOError:
                        pass
                    last_sent[i] = now
                    resent += 1
                    if resent % batch == 0:
                        drain(0.005)
    finally:
        sel.close()
        for s in socks:
            s.setblocking(True)
    return answers


FLOW_RE = re.compile(
    r"flow service=(?P<service>\S+) client=(?P<client>\S+) "
    r"backend=(?P<backend>\S+) up=(?P<up>\d+) down=(?P<down>\d+) "
    r"datagrams_up=(?P<datagrams_up>\d+) datagrams_down=(?P<datagrams_down>\d+) "
    r"duration=(?P<duration>\d+\.\d{3})s end=(?P<end>[a-z-]+)\s*$")


def _flow_fields(m):
    d = m.groupdict()
    for k in ("up", "down", "datagrams_up", "datagrams_down"):
        d[k] = int(d[k])
    d["duration"] = float(d["duration"])
    return d


def flow_log(proxy, client, timeout=None, since=0):
    """The debug line of the UDP flow of client address `client`
    ('127.0.0.1:5000' / '[::1]:5000') when it ended, as a dict (numbers
    as int, duration as float seconds)."""
    m = proxy.wait_for(FLOW_RE.pattern, timeout=timeout, since=since,
                       predicate=lambda m: m.group("client") == client)
    return _flow_fields(m)


def flow_logs(proxy, since=0):
    """Every flow line logged so far, as dicts."""
    return [_flow_fields(m) for m in (FLOW_RE.search(l) for l in proxy.grep(r"\bflow ", since))
            if m]


def udp_sockets(port):
    """{(local address, inode)} of every UDP socket bound to local `port`,
    from /proc/net/udp and udp6 (a socket kept across a reload keeps its
    inode)."""
    found = set()
    for name, fam in (("udp", socket.AF_INET), ("udp6", socket.AF_INET6)):
        try:
            with open("/proc/net/" + name) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    hexaddr, hexport = fields[1].split(":")
                    if int(hexport, 16) != port:
                        continue
                    raw = bytes.fromhex(hexaddr)
                    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                    found.add((fmt_addr(socket.inet_ntop(fam, raw), port), fields[9]))
        except FileNotFoundError:
            pass
    return found


def udp_refused(host, port, timeout=None):
    """Nobody has UDP `port` bound on `host`: a connected socket's datagram
    draws ICMP port unreachable (ECONNREFUSED on the next recv)."""
    with socket.socket(family_of(host), socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        s.settimeout(T(2) if timeout is None else timeout)
        s.send(b"anyone there?")
        try:
            data = s.recv(UDP_BUF)
        except ConnectionRefusedError:
            return True
        except socket.timeout:
            return False
        raise AssertionError("%s: answered %r, expected nobody there"
                             % (fmt_addr(host, port), data[:60]))


def metric_or_zero(m, name, **labels):
    """A counter that may not be exposed before it counts anything."""
    v = m.get(name, **labels)
    return 0 if v is None else v


def series(m, name, **labels):
    """{frozenset(labels): value} of every series of `name` whose labels
    include `labels`."""
    want = set(labels.items())
    return {l: v for (n, l), v in m.samples.items() if n == name and want <= set(l)}


# --------------------------------------------------------------------------
# what the daemon's memory figures mean

_plain = []


def plain_allocator():
    """True when the daemon under test allocates with glibc's malloc, so
    that its RSS says what dualproxy holds: not a sanitizer build (ASan keeps
    freed memory in quarantine) and not run through a wrapper script such as
    tests/valgrind.sh (valgrind replaces malloc)."""
    if not _plain:
        try:
            with open(BINARY, "rb") as f:
                data = f.read()
            _plain.append(not data.startswith(b"#!") and b"__asan_init" not in data)
        except OSError:
            _plain.append(False)
    return _plain[0]
