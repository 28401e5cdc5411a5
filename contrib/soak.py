#!/usr/bin/python3
"""soak.py: a long mixed-load soak test of dualproxy on loopback.

Run by hand (it is not part of `make check`):

    /usr/bin/python3 contrib/soak.py --duration 600 [--binary PATH]
        [--clients N] [--reload-every S]

What it does, all on 127.0.0.1 and ::1 and nowhere else:

* starts echo backends in this process (asyncio): two pairs, A and B, each
  with a plain echo backend on 127.0.0.1 and on ::1 and a PROXY v1 echo
  backend on 127.0.0.1 and on ::1 that strips and checks the PROXY line
  (family, addresses, the client's own source port, the service's port)
  before echoing;
* writes two configurations with the same ports (log_level = warning,
  metrics_listen, a plain service and one with proxy_protocol = v1), one
  pointing at pair A, the other at pair B, and starts dualproxy on the first
  (as root it drops to nobody, so the directory is 0755 and the file 0644);
* warms up for a few seconds, lets every connection close and measures the
  daemon (VmRSS, descriptors, CPU time) from /proc;
* runs --clients workers for --duration seconds over both families and both
  services: echo transfers of random sizes (1 B .. 2 MiB, log-uniform) with a
  SHA-256 check, clients that reset mid-transfer (SO_LINGER 0), slow readers,
  half-closers and idle connect-and-close; every --reload-every seconds the
  other configuration is put in place and SIGHUP sent, and each reload is
  confirmed through dualproxy_reloads_total in /metrics;
* every payload starts with a 16-byte tag naming its connection, so the
  backends also check that a connection reached the backend of its own
  family and service and, once a reload is confirmed, of the new pair;
* stops the load, waits for dualproxy_connections_active to reach 0 (10 s at
  most), measures again, checks the reload counter, stops the daemon with
  SIGTERM and prints a summary.

Exit status: 0 when every check passed, 1 when one failed (a corrupted
transfer, a connection that failed although it should not have, a backend
check, the daemon died, descriptors that did not come back, a reload count
that does not match, active connections left, a non-zero exit status on
SIGTERM), 2 when the test could not be set up.

Only the Python standard library is used.
"""

import argparse
import asyncio
import collections
import errno
import hashlib
import math
import os
import random
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BINARY = REPO / "src" / "dualproxy"

V4, V6 = "127.0.0.1", "::1"
HOSTS = {"4": V4, "6": V6}
AFS = {"4": socket.AF_INET, "6": socket.AF_INET6}
SERVICES = ("plain", "pp")
PAIRS = ("A", "B")

MiB = 1024 * 1024
TAG_LEN = 16                 # b"SOAK" + family + 11 digits of connection id
POOL_SIZE = 4 * MiB          # random bytes that payloads are cut from
PROXY_V1_MAX = 107           # longest PROXY v1 line, CRLF included
PIPE_CACHE_FDS = 2 * 64      # dualproxy keeps up to 64 empty pipes for splice
CONNECT_TIMEOUT = 10.0
OP_TIMEOUT = 90.0            # one whole client connection, slow readers included
PROGRESS_EVERY = 10.0
QUIESCE_TIMEOUT = 10.0
RELOAD_CONFIRM_TIMEOUT = 10.0

# connection kinds and how often each is picked
KINDS = (("normal", 50), ("reset", 12), ("slow", 10), ("halfclose", 13), ("idle", 15))

PROXY_RE = re.compile(
    rb"PROXY (TCP4|TCP6) ([0-9a-fA-F.:]+) ([0-9a-fA-F.:]+) ([0-9]+) ([0-9]+)")


class Fail(Exception):
    """A connection failed that should not have."""


class Corrupt(Exception):
    """Bytes came back that were not the ones sent."""


class Problem(Exception):
    """A backend saw something wrong (PROXY header, tag, routing)."""


def reason_of(e):
    if isinstance(e, (Fail, Corrupt, Problem)):
        return str(e)
    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    if isinstance(e, OSError) and e.errno:
        return "%s (%s)" % (type(e).__name__, errno.errorcode.get(e.errno, e.errno))
    return "%s%s" % (type(e).__name__, ": %s" % e if str(e) else "")


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.2f %s" % (n, unit))
        n /= 1024.0
    return str(n)


# --------------------------------------------------------------------------
# ports, files, /proc

def pick_dual_port(taken):
    """A port free on both 127.0.0.1 and ::1 (and not handed out already)."""
    for _ in range(500):
        s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s4.bind((V4, 0))
            port = s4.getsockname()[1]
            if port in taken:
                continue
            try:
                s6.bind((V6, port))
            except OSError:
                continue
            taken.add(port)
            return port
        finally:
            s4.close()
            s6.close()
    raise RuntimeError("no port free on both 127.0.0.1 and ::1")


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def proc_kib(status, key):
    v = status.get(key, "0 kB").split()
    return int(v[0]) if v else 0


def proc_fds(pid):
    """Open descriptors of pid, by kind: socket, pipe, other."""
    kinds = collections.Counter()
    d = "/proc/%d/fd" % pid
    for name in os.listdir(d):
        try:
            target = os.readlink(os.path.join(d, name))
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:"):
            kinds["socket"] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        else:
            kinds["other"] += 1
    return kinds


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def parse_metrics(text):
    """Prometheus text into [(name, {label: value}, float)]."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        try:
            out.append((name, lab, float(value)))
        except ValueError:
            pass
    return out


def msum(metrics, name, **want):
    return sum(v for n, lab, v in metrics
               if n == name and all(lab.get(k) == w for k, w in want.items()))


# --------------------------------------------------------------------------
# bookkeeping

class ConnInfo:
    __slots__ = ("family", "service", "port", "epoch")

    def __init__(self, family, service, epoch):
        self.family = family
        self.service = service
        self.port = None     # the client's source port, once connected
        self.epoch = epoch   # the confirmed configuration when it started, or None


class Stats:
    def __init__(self):
        self.completed = collections.Counter()     # kind
        self.by_family = collections.Counter()
        self.by_service = collections.Counter()
        self.failed = collections.Counter()        # "kind: reason"
        self.corrupted = collections.Counter()     # "kind: reason"
        self.examples = []                         # first failures, in detail
        self.bytes_checked = 0
        self.connects = 0                          # TCP connections made to dualproxy
        self.backend_conns = collections.Counter()  # backend name
        self.backend_problems = collections.Counter()
        self.backend_resets = 0                    # benign: passed-on client resets
        self.pp_checked = 0
        self.pair_checked = 0
        self.reloads_sent = 0
        self.reload_latency = []
        self.reload_problems = collections.Counter()

    def example(self, text):
        if len(self.examples) < 20:
            self.examples.append(text)


# --------------------------------------------------------------------------
# backends

class Backend:
    """An echo server on one address; with pp it expects a PROXY v1 line."""

    def __init__(self, soak, pair, service, family):
        self.soak = soak
        self.pair = pair
        self.service = service
        self.family = family
        self.host = HOSTS[family]
        self.pp = service == "pp"
        self.name = "%s/%s/ipv%s" % (pair, service, family)
        self.server = None
        self.port = None

    async def start(self):
        self.server = await asyncio.start_server(
            self.handle, self.host, 0, family=AFS[self.family], backlog=1024,
            reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    def addr(self):
        return "[%s]:%d" % (self.host, self.port) if self.family == "6" else \
            "%s:%d" % (self.host, self.port)

    def check_header(self, line):
        m = PROXY_RE.fullmatch(line)
        if m is None:
            raise Problem("PROXY header malformed: %r" % line[:120])
        proto, src, dst, sport, dport = m.groups()
        want = b"TCP4" if self.family == "4" else b"TCP6"
        if proto != want:
            raise Problem("PROXY header %s on the IPv%s backend" % (proto.decode(), self.family))
        host = self.host.encode()
        if src != host or dst != host:
            raise Problem("PROXY header addresses %s -> %s, want %s" %
                          (src.decode(), dst.decode(), self.host))
        if int(dport) != self.soak.front_port["pp"]:
            raise Problem("PROXY header destination port %s, want %d" %
                          (dport.decode(), self.soak.front_port["pp"]))
        sport = int(sport)
        if not 0 < sport < 65536:
            raise Problem("PROXY header source port %d" % sport)
        return sport

    def check_tag(self, tag, sport):
        st = self.soak.stats
        if tag[:4] != b"SOAK" or tag[4:5] not in (b"4", b"6") or not tag[5:].isdigit():
            raise Problem("stream does not start with the connection tag: %r" % tag)
        fam = tag[4:5].decode()
        if fam != self.family:
            raise Problem("an IPv%s client reached the IPv%s backend" % (fam, self.family))
        info = self.soak.conns.get(int(tag[5:]))
        if info is None:
            return  # the client is gone already (it reset)
        if info.service != self.service:
            raise Problem("a %s client reached the %s backend" % (info.service, self.service))
        if sport is not None and info.port is not None:
            st.pp_checked += 1
            if sport != info.port:
                raise Problem("PROXY header source port %d, the client's is %d" %
                              (sport, info.port))
        if info.epoch is not None and info.epoch == self.soak.epoch:
            # no SIGHUP since this client started, and the reload before it
            # had been applied: it must reach the current pair
            st.pair_checked += 1
            want = self.soak.pair_of(info.epoch)
            if want != self.pair:
                raise Problem("after a confirmed reload a new connection reached pair %s, "
                              "not %s" % (self.pair, want))

    async def handle(self, reader, writer):
        st = self.soak.stats
        st.backend_conns[self.name] += 1
        try:
            buf = b""
            sport = None
            if self.pp:
                while b"\r\n" not in buf:
                    if len(buf) >= PROXY_V1_MAX:
                        raise Problem("no PROXY line in the first %d bytes: %r" %
                                      (PROXY_V1_MAX, buf[:40]))
                    d = await reader.read(PROXY_V1_MAX)
                    if not d:
                        raise Problem("EOF before a complete PROXY header (%d bytes)" %
                                      len(buf))
                    buf += d
                line, _, buf = buf.partition(b"\r\n")
                if len(line) + 2 > PROXY_V1_MAX:
                    raise Problem("PROXY line of %d bytes" % (len(line) + 2))
                sport = self.check_header(line)
            while len(buf) < TAG_LEN:
                d = await reader.read(65536)
                if not d:
                    break
                buf += d
            if len(buf) >= TAG_LEN:
                self.check_tag(buf[:TAG_LEN], sport)
            if buf:
                writer.write(buf)
                await writer.drain()
            while True:
                d = await reader.read(262144)
                if not d:
                    break
                writer.write(d)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
        except Problem as p:
            st.backend_problems["%s: %s" % (self.name, p)] += 1
            st.example("backend %s: %s" % (self.name, p))
            sock = writer.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            writer.transport.abort()
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            st.backend_resets += 1
        except OSError as e:
            st.backend_problems["%s: %s" % (self.name, reason_of(e))] += 1
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, asyncio.CancelledError):
                pass

    async def stop(self):
        if self.server is not None:
            self.server.close()


# --------------------------------------------------------------------------
# the test

class Soak:
    def __init__(self, args):
        self.args = args
        self.stats = Stats()
        self.loop = None
        self.binary = Path(args.binary).resolve()
        self.tmp = None
        self.proc = None
        self.pid = None
        self.log_path = None
        self.log_file = None
        self.config_path = None
        self.configs = {}
        self.backends = {}
        self.front_port = {}
        self.metrics_port = None
        self.epoch = 0              # configuration last asked for (SIGHUPs sent)
        self.confirmed = 0          # configuration last seen applied in /metrics
        self.conns = {}             # live client connections by id (for the backends)
        self.next_id = 1
        self.running = False
        self.stop = None            # asyncio.Event: stop the load now
        self.interrupted = False
        self.died = None            # the daemon's exit status if it died on its own
        self.exit_code = None
        self.sigterm_sent = False
        self.workers = []
        self.samples = {}
        self.final_metrics = None
        self.active_end = None
        self.quiesce_wait = {}
        self.load_seconds = 0.0
        self.done_before_load = 0   # connections completed in the warm-up
        self.version = "?"
        self.pool = os.urandom(POOL_SIZE)
        self.rng = random.Random(args.seed)
        self.kinds = [k for k, _ in KINDS]
        self.weights = [w for _, w in KINDS]
        self.last_progress = None
        self.notes = []

    def pair_of(self, epoch):
        return PAIRS[epoch % 2]

    # ---- setup

    def config_text(self, pair):
        lines = [
            "; dualproxy soak test (contrib/soak.py): backend pair %s" % pair,
            "[global]",
            "log_level = warning",
            "metrics_listen = 127.0.0.1:%d" % self.metrics_port,
            "connect_timeout = 5s",
            "idle_timeout = 5m",
            "drain_timeout = 10s",
            "",
        ]
        for svc in SERVICES:
            lines += [
                "[soak-%s]" % svc,
                "listen = 127.0.0.1:%d, [::1]:%d" % (self.front_port[svc], self.front_port[svc]),
                "backend4 = %s" % self.backends[(pair, svc, "4")].addr(),
                "backend6 = %s" % self.backends[(pair, svc, "6")].addr(),
            ]
            if svc == "pp":
                lines.append("proxy_protocol = v1")
            lines.append("")
        return "\n".join(lines)

    def put_config(self, pair):
        """Puts pair's configuration at config_path, atomically, mode 0644."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(self.configs[pair])
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.config_path)

    async def setup(self):
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError("%s is not an executable (build it, or use --binary)" % self.binary)
        try:
            self.version = subprocess.run([str(self.binary), "-V"], capture_output=True,
                                          text=True, timeout=10).stdout.strip() or "?"
        except (OSError, subprocess.SubprocessError):
            pass
        for pair in PAIRS:
            for svc in SERVICES:
                for fam in ("4", "6"):
                    b = Backend(self, pair, svc, fam)
                    await b.start()
                    self.backends[(pair, svc, fam)] = b
        taken = set()
        for svc in SERVICES:
            self.front_port[svc] = pick_dual_port(taken)
        self.metrics_port = pick_dual_port(taken)

        self.tmp = Path(tempfile.mkdtemp(prefix="dualproxy-soak-"))
        os.chmod(self.tmp, 0o755)  # as root the daemon reads it again as nobody
        self.config_path = self.tmp / "dualproxy.ini"
        for pair in PAIRS:
            self.configs[pair] = self.config_text(pair) + "\n"
            p = self.tmp / ("pair-%s.ini" % pair)
            p.write_text(self.configs[pair])
            os.chmod(p, 0o644)
        self.put_config("A")
        check = subprocess.run([str(self.binary), "-t", "-c", str(self.config_path)],
                               capture_output=True, text=True, timeout=10)
        if check.returncode != 0:
            raise RuntimeError("dualproxy -t rejects the generated configuration:\n%s" %
                               check.stderr)
        for pair in PAIRS:
            check = subprocess.run([str(self.binary), "-t", "-c", str(self.tmp / ("pair-%s.ini" % pair))],
                                   capture_output=True, text=True, timeout=10)
            if check.returncode != 0:
                raise RuntimeError("dualproxy -t rejects pair %s's configuration:\n%s" %
                                   (pair, check.stderr))

        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID")}
        self.log_path = self.tmp / "dualproxy.log"
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(self.binary), "-c", str(self.config_path)],
                                     stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)  # Ctrl-C is for us, not for it
        self.pid = self.proc.pid
        await self.wait_ready()

    async def wait_ready(self):
        deadline = time.monotonic() + 15
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dualproxy exited with status %d at start-up:\n%s" %
                                   (self.proc.returncode, self.log_tail(20)))
            try:
                for svc in SERVICES:
                    for fam in ("4", "6"):
                        await self.probe(fam, svc)
                await self.metrics()
                return
            except (OSError, asyncio.TimeoutError, ValueError) as e:
                last = e
                await asyncio.sleep(0.1)
        raise RuntimeError("dualproxy does not accept after 15 s (%s):\n%s" %
                           (reason_of(last), self.log_tail(20)))

    async def probe(self, fam, svc):
        """One connection that is accepted and closed: dualproxy listens."""
        sock = socket.socket(AFS[fam], socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(self.loop.sock_connect(sock, (HOSTS[fam], self.front_port[svc])), 2)
            self.stats.connects += 1
        finally:
            sock.close()

    # ---- daemon observation

    async def metrics(self):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(V4, self.metrics_port), 5)
        try:
            writer.write(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise ValueError("/metrics answered %r" % head[:40])
        return parse_metrics(body.decode("utf-8", "replace"))

    def sample(self):
        st = proc_status(self.pid)
        fds = proc_fds(self.pid)
        return {
            "rss": proc_kib(st, "VmRSS"),
            "hwm": proc_kib(st, "VmHWM"),
            "fds": sum(fds.values()),
            "fd_kinds": fds,
            "cpu": proc_cpu_seconds(self.pid),
            "time": time.monotonic(),
        }

    def log_lines(self):
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def log_tail(self, n):
        return "\n".join(self.log_lines()[-n:])

    async def watch_daemon(self):
        while True:
            rc = self.proc.poll()
            if rc is not None:
                if self.died is None and not self.sigterm_sent:
                    self.died = rc
                    self.running = False
                    print("!! dualproxy died (exit status %d)" % rc, flush=True)
                    self.stop.set()
                return
            await asyncio.sleep(0.2)

    # ---- clients

    def payload(self, cid, fam, size):
        tag = b"SOAK%s%011d" % (fam.encode(), cid)
        if size <= TAG_LEN:
            return tag[:size]
        off = self.rng.randrange(0, POOL_SIZE - (size - TAG_LEN) + 1)
        return tag + self.pool[off:off + size - TAG_LEN]

    def rand_size(self, lo, hi):
        """Log-uniform in [lo, hi]: many small transfers, some big ones."""
        return min(hi, max(lo, int(math.exp(self.rng.uniform(math.log(lo), math.log(hi + 1))))))

    async def connect(self, fam, svc):
        cid = self.next_id
        self.next_id += 1
        info = ConnInfo(fam, svc, self.epoch if self.confirmed == self.epoch else None)
        sock = socket.socket(AFS[fam], socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(
                self.loop.sock_connect(sock, (HOSTS[fam], self.front_port[svc])),
                CONNECT_TIMEOUT)
        except BaseException as e:
            sock.close()
            if isinstance(e, (OSError, asyncio.TimeoutError)):
                raise Fail("connect: %s" % reason_of(e))
            raise
        self.stats.connects += 1
        info.port = sock.getsockname()[1]
        self.conns[cid] = info
        return cid, sock

    async def send_all(self, sock, data, shut=True):
        await self.loop.sock_sendall(sock, data)
        if shut:
            sock.shutdown(socket.SHUT_WR)

    async def recv_verify(self, sock, data, slow=False):
        """Reads the echo up to EOF and checks it against data."""
        h = hashlib.sha256()
        got = 0
        size = len(data)
        while True:
            if slow:
                d = await self.loop.sock_recv(sock, self.rng.randint(512, 8192))
            else:
                d = await self.loop.sock_recv(sock, 262144)
            if not d:
                break
            got += len(d)
            if got > size:
                raise Corrupt("%d bytes came back, %d were sent" % (got, size))
            h.update(d)
            if slow:
                await asyncio.sleep(self.rng.uniform(0.002, 0.02))
        if got < size:
            if h.digest() != hashlib.sha256(data[:got]).digest():
                raise Corrupt("EOF after %d of %d bytes, and those differ" % (got, size))
            raise Fail("EOF after %d of %d bytes" % (got, size))
        if h.digest() != hashlib.sha256(data).digest():
            raise Corrupt("SHA-256 differs (%d bytes)" % size)
        self.stats.bytes_checked += size

    async def duplex(self, sock, data, slow=False):
        sender = asyncio.ensure_future(self.send_all(sock, data))
        try:
            await self.recv_verify(sock, data, slow)
        except BaseException:
            sender.cancel()
            try:
                await sender
            except BaseException:
                pass
            raise
        if not sender.done():
            sender.cancel()
            raise Fail("EOF before everything was sent")
        await sender

    async def op_normal(self, fam, svc):
        size = self.rand_size(1, self.args.max_size)
        cid, sock = await self.connect(fam, svc)
        try:
            await self.duplex(sock, self.payload(cid, fam, size))
        finally:
            sock.close()
            self.conns.pop(cid, None)

    async def op_slow(self, fam, svc):
        size = self.rand_size(16 * 1024, min(self.args.max_size, 1 * MiB))
        cid, sock = await self.connect(fam, svc)
        try:
            await self.duplex(sock, self.payload(cid, fam, size), slow=True)
        finally:
            sock.close()
            self.conns.pop(cid, None)

    async def op_halfclose(self, fam, svc):
        """FIN right after the request, read the answer only later."""
        size = 0 if self.rng.random() < 0.25 else self.rand_size(1, 64 * 1024)
        cid, sock = await self.connect(fam, svc)
        try:
            data = self.payload(cid, fam, size)
            await self.send_all(sock, data, shut=True)
            await asyncio.sleep(self.rng.uniform(0.02, 0.3))
            await self.recv_verify(sock, data)
        finally:
            sock.close()
            self.conns.pop(cid, None)

    async def op_reset(self, fam, svc):
        """Sends a big payload and resets the connection part-way (SO_LINGER 0)."""
        size = self.rand_size(64 * 1024, max(64 * 1024, self.args.max_size))
        cid, sock = await self.connect(fam, svc)
        sender = None
        try:
            data = self.payload(cid, fam, size)
            sender = asyncio.ensure_future(self.send_all(sock, data, shut=False))
            if self.rng.random() < 0.6:
                # reset after some of the echo came back, and check that part
                want = self.rng.randint(1, size - 1)
                got = bytearray()
                while len(got) < want:
                    d = await self.loop.sock_recv(sock, min(262144, want - len(got)))
                    if not d:
                        raise Fail("EOF after %d bytes before resetting" % len(got))
                    got += d
                if got != data[:len(got)]:
                    raise Corrupt("the first %d bytes of the echo differ" % len(got))
                self.stats.bytes_checked += len(got)
            else:
                # reset while sending, without reading anything
                await asyncio.sleep(self.rng.uniform(0, 0.03))
            if sender.done() and sender.exception() is not None:
                raise sender.exception()
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
                try:
                    await sender
                except BaseException:
                    pass
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            sock.close()
            self.conns.pop(cid, None)

    async def op_idle(self, fam, svc):
        """Connects, sends nothing, closes (at once or a little later)."""
        cid, sock = await self.connect(fam, svc)
        try:
            if self.rng.random() < 0.7:
                await asyncio.sleep(self.rng.uniform(0, 0.2))
        finally:
            sock.close()
            self.conns.pop(cid, None)

    async def worker(self, n):
        ops = {k: getattr(self, "op_" + k) for k in self.kinds}
        while self.running:
            kind = self.rng.choices(self.kinds, self.weights)[0]
            fam = self.rng.choice("46")
            svc = self.rng.choice(SERVICES)
            try:
                await asyncio.wait_for(ops[kind](fam, svc), OP_TIMEOUT)
            except Corrupt as e:
                self.stats.corrupted["%s: %s" % (kind, reason_of(e))] += 1
                self.stats.example("CORRUPT %s ipv%s %s: %s" % (kind, fam, svc, e))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a failure of this connection, not of the test
                r = reason_of(e)
                self.stats.failed["%s: %s" % (kind, r)] += 1
                self.stats.example("FAILED %s ipv%s %s, %.1fs into the test: %s" %
                                   (kind, fam, svc, time.monotonic() - self.t_start, r))
            else:
                self.stats.completed[kind] += 1
                self.stats.by_family["ipv" + fam] += 1
                self.stats.by_service[svc] += 1

    def start_load(self):
        self.running = True
        self.workers = [asyncio.ensure_future(self.worker(i)) for i in range(self.args.clients)]

    async def stop_load(self):
        self.running = False
        if self.workers:
            await asyncio.gather(*self.workers, return_exceptions=True)
        self.workers = []

    async def quiesce(self, label):
        """Stops the load, then waits for active connections to reach 0."""
        await self.stop_load()
        t = time.monotonic()
        active = None
        while time.monotonic() - t < QUIESCE_TIMEOUT and self.proc.poll() is None:
            try:
                active = msum(await self.metrics(), "dualproxy_connections_active")
            except (OSError, asyncio.TimeoutError, ValueError):
                active = None
            if active == 0:
                break
            await asyncio.sleep(0.1)
        self.quiesce_wait[label] = (time.monotonic() - t, active)
        return active

    # ---- reloads and progress

    async def reload(self):
        nxt = self.epoch + 1
        self.put_config(self.pair_of(nxt))
        try:
            before = await self.metrics()
        except (OSError, asyncio.TimeoutError, ValueError):
            before = None
        failed_before = msum(before, "dualproxy_reloads_total", result="failure") if before else 0
        self.epoch = nxt
        t = time.monotonic()
        self.proc.send_signal(signal.SIGHUP)
        self.stats.reloads_sent += 1
        while time.monotonic() - t < RELOAD_CONFIRM_TIMEOUT:
            if self.proc.poll() is not None:
                return
            try:
                m = await self.metrics()
            except (OSError, asyncio.TimeoutError, ValueError):
                m = None
            if m is not None:
                ok = msum(m, "dualproxy_reloads_total", result="success")
                bad = msum(m, "dualproxy_reloads_total", result="failure")
                if ok + bad >= self.stats.reloads_sent:
                    self.stats.reload_latency.append(time.monotonic() - t)
                    if bad > failed_before:
                        self.stats.reload_problems["reload %d failed (see the daemon log)" % nxt] += 1
                    elif self.epoch == nxt:
                        self.confirmed = nxt
                    return
            await asyncio.sleep(0.02)
        self.stats.reload_problems["reload not seen in /metrics within %gs" %
                                   RELOAD_CONFIRM_TIMEOUT] += 1

    async def reloader(self, end):
        every = self.args.reload_every
        if every <= 0:
            return
        nxt = time.monotonic() + every
        while not self.stop.is_set():
            delay = nxt - time.monotonic()
            if nxt >= end:
                return
            if delay > 0:
                try:
                    await asyncio.wait_for(self.stop.wait(), delay)
                    return
                except asyncio.TimeoutError:
                    pass
            await self.reload()
            nxt = max(nxt + every, time.monotonic() + 0.05)

    def progress_line(self, s, active, elapsed):
        st = self.stats
        done = sum(st.completed.values())
        prev = self.last_progress
        rate = cpu = 0.0
        if prev is not None:
            dt = s["time"] - prev[0]["time"]
            if dt > 0:
                rate = (done - prev[1]) / dt
                cpu = 100.0 * (s["cpu"] - prev[0]["cpu"]) / dt
        self.last_progress = (s, done)
        print("[%5.0fs] conns %d (%.0f/s) failed %d corrupt %d checked %s reloads %d "
              "active %s rss %s fds %d daemon-cpu %.0f%%" %
              (elapsed, done, rate, sum(st.failed.values()) + sum(st.backend_problems.values()),
               sum(st.corrupted.values()), human_bytes(st.bytes_checked), st.reloads_sent,
               "?" if active is None else int(active), human_bytes(s["rss"] * 1024),
               s["fds"], cpu), flush=True)

    async def progress(self, t0, end):
        nxt = t0 + PROGRESS_EVERY
        while not self.stop.is_set() and nxt <= end + 0.5:
            try:
                await asyncio.wait_for(self.stop.wait(), max(0, nxt - time.monotonic()))
                return
            except asyncio.TimeoutError:
                pass
            if self.proc.poll() is not None:
                return
            try:
                active = msum(await self.metrics(), "dualproxy_connections_active")
            except (OSError, asyncio.TimeoutError, ValueError):
                active = None
            try:
                self.progress_line(self.sample(), active, time.monotonic() - t0)
            except OSError:
                return
            nxt += PROGRESS_EVERY

    # ---- phases

    async def run(self):
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self.interrupt)
        self.t_start = time.monotonic()
        await self.setup()
        watcher = asyncio.ensure_future(self.watch_daemon())
        a = self.args
        print("%s (pid %d) on ports plain %d, pp %d, metrics %d; config %s" %
              (self.version, self.pid, self.front_port["plain"], self.front_port["pp"],
               self.metrics_port, self.config_path), flush=True)
        print("backends: %s" % ", ".join("%s %s" % (b.name, b.addr())
                                        for b in self.backends.values()), flush=True)

        # warm-up, then a quiet moment for the start values
        print("warm-up: %gs with %d clients" % (a.warmup, a.clients), flush=True)
        self.start_load()
        try:
            await asyncio.wait_for(self.stop.wait(), a.warmup)
        except asyncio.TimeoutError:
            pass
        await self.quiesce("start")
        if self.proc.poll() is None:
            self.samples["start"] = self.sample()
            s = self.samples["start"]
            self.last_progress = (s, sum(self.stats.completed.values()))
            waited, active = self.quiesce_wait["start"]
            print("start: rss %s, fds %d (%s), active %s after %.1fs" %
                  (human_bytes(s["rss"] * 1024), s["fds"], self.fd_kinds(s),
                   "?" if active is None else int(active), waited), flush=True)

        # the soak itself
        if not self.stop.is_set():
            print("load: %gs, %d clients, SIGHUP every %s" %
                  (a.duration, a.clients, "%gs" % a.reload_every if a.reload_every > 0 else "never"),
                  flush=True)
            t0 = time.monotonic()
            end = t0 + a.duration
            self.done_before_load = sum(self.stats.completed.values())
            self.start_load()
            tasks = [asyncio.ensure_future(self.reloader(end)),
                     asyncio.ensure_future(self.progress(t0, end))]
            try:
                await asyncio.wait_for(self.stop.wait(), a.duration)
            except asyncio.TimeoutError:
                pass
            self.load_seconds = time.monotonic() - t0
            self.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            print("load stopped after %.0fs; waiting for connections to close" %
                  self.load_seconds, flush=True)

        # the end values, once every connection has closed
        self.active_end = await self.quiesce("end")
        if self.proc.poll() is None:
            self.samples["end"] = self.sample()
            # the last reload must be counted before comparing
            t = time.monotonic()
            while time.monotonic() - t < 5:
                try:
                    self.final_metrics = await self.metrics()
                except (OSError, asyncio.TimeoutError, ValueError):
                    self.final_metrics = None
                if self.final_metrics is not None and msum(
                        self.final_metrics, "dualproxy_reloads_total") >= self.stats.reloads_sent:
                    break
                await asyncio.sleep(0.1)
        watcher.cancel()  # from here on an exit is ours (SIGTERM), not a death
        try:
            await watcher
        except asyncio.CancelledError:
            pass
        await self.stop_daemon()
        for b in self.backends.values():
            await b.stop()

    def interrupt(self):
        if not self.interrupted:
            print("interrupted: stopping the load", flush=True)
        self.interrupted = True
        self.stop.set()

    async def stop_daemon(self):
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            if self.died is None:
                self.died = self.proc.returncode
            return
        self.sigterm_sent = True
        self.proc.send_signal(signal.SIGTERM)
        t = time.monotonic()
        while time.monotonic() - t < 20:
            if self.proc.poll() is not None:
                self.exit_code = self.proc.returncode
                self.stop_seconds = time.monotonic() - t
                return
            await asyncio.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        self.exit_code = "killed: still running 20 s after SIGTERM"

    def kill_daemon(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    # ---- the report

    @staticmethod
    def fd_kinds(s):
        k = s["fd_kinds"]
        return "%d sockets, %d pipes, %d other" % (k["socket"], k["pipe"], k["other"])

    def summary(self):
        st = self.stats
        a = self.args
        rows = []
        checks = []

        def row(name, value):
            rows.append((name, str(value)))

        def check(name, ok, detail):
            checks.append((name, ok, detail))

        def counter(c):
            return ", ".join("%s %d" % (k, v) for k, v in sorted(c.items())) or "-"

        done = sum(st.completed.values())
        failed = sum(st.failed.values())
        corrupt = sum(st.corrupted.values())
        secs = self.load_seconds or 0.0
        row("binary", "%s (%s)" % (self.binary, self.version))
        row("load", "%.0f s (+%g s warm-up), %d clients, SIGHUP every %s" %
            (secs, a.warmup, a.clients, "%g s" % a.reload_every if a.reload_every > 0 else "never"))
        row("connections completed", "%d (%.0f/s under load; the warm-up included)" % (
            done, (done - self.done_before_load) / secs if secs else 0))
        row("  by kind", counter(st.completed))
        row("  by family", counter(st.by_family))
        row("  by service", counter(st.by_service))
        row("connections failed", failed)
        for reason, n in st.failed.most_common():
            row("  %d x" % n, reason)
        row("corrupted transfers", corrupt)
        for reason, n in st.corrupted.most_common():
            row("  %d x" % n, reason)
        row("bytes checked", "%d (%s)" % (st.bytes_checked, human_bytes(st.bytes_checked)))
        row("backend connections", counter(st.backend_conns))
        row("backend checks", "%d PROXY source ports, %d pairs after reload, %d passed-on resets"
            % (st.pp_checked, st.pair_checked, st.backend_resets))
        row("backend problems", sum(st.backend_problems.values()))
        for reason, n in st.backend_problems.most_common():
            row("  %d x" % n, reason)
        row("reloads sent (SIGHUP)", st.reloads_sent)
        if st.reload_latency:
            lat = sorted(st.reload_latency)
            row("  seen in /metrics after", "median %.0f ms, max %.0f ms" %
                (1000 * lat[len(lat) // 2], 1000 * lat[-1]))
        for reason, n in st.reload_problems.most_common():
            row("  %d x" % n, reason)
        m = self.final_metrics
        if m is not None:
            ok = int(msum(m, "dualproxy_reloads_total", result="success"))
            bad = int(msum(m, "dualproxy_reloads_total", result="failure"))
            row("dualproxy_reloads_total", "success %d, failure %d" % (ok, bad))
            total = int(msum(m, "dualproxy_connections_total"))
            row("dualproxy_connections_total", "%d (client connects: %d)" % (total, st.connects))
            row("dualproxy_bytes_total", "up %s, down %s" % (
                human_bytes(msum(m, "dualproxy_bytes_total", direction="up")),
                human_bytes(msum(m, "dualproxy_bytes_total", direction="down"))))
            errs = {"%s/%s" % (lab.get("service"), lab.get("reason")): int(v)
                    for n, lab, v in m if n == "dualproxy_backend_errors_total" and v}
            row("dualproxy_backend_errors", counter(errs))
        s0, s1 = self.samples.get("start"), self.samples.get("end")
        if s0:
            row("daemon at start", "rss %s, fds %d (%s)" % (human_bytes(s0["rss"] * 1024),
                                                           s0["fds"], self.fd_kinds(s0)))
        if s1:
            row("daemon at end", "rss %s (peak %s), fds %d (%s)" % (
                human_bytes(s1["rss"] * 1024), human_bytes(s1["hwm"] * 1024), s1["fds"],
                self.fd_kinds(s1)))
        if s0 and s1:
            dt = s1["time"] - s0["time"]
            row("daemon CPU time", "%.2f s over the load (%.0f%% of one core), %.2f s in all" %
                (s1["cpu"] - s0["cpu"], 100 * (s1["cpu"] - s0["cpu"]) / dt if dt else 0,
                 s1["cpu"]))
        if "end" in self.quiesce_wait:
            w, act = self.quiesce_wait["end"]
            row("active after the load", "%s (waited %.1f s)" % ("?" if act is None else int(act), w))
        row("daemon exit status", self.exit_code if self.died is None else
            "died on its own with %s" % self.died)
        lines = self.log_lines()
        row("daemon log lines", "%d (log_level = warning)" % len(lines))

        # checks
        check("daemon stayed up", self.died is None and self.proc is not None,
              "exit status %s before SIGTERM" % self.died if self.died is not None else "yes")
        check("no corrupted transfer", corrupt == 0, "%d corrupted" % corrupt)
        check("no failed connection", failed == 0, "%d failed" % failed)
        check("backend checks", not st.backend_problems,
              "%d problems" % sum(st.backend_problems.values()))
        if a.reload_every > 0:
            rel_ok = (m is not None and not st.reload_problems and
                      int(msum(m, "dualproxy_reloads_total", result="success")) == st.reloads_sent and
                      int(msum(m, "dualproxy_reloads_total", result="failure")) == 0)
            check("reloads_total = SIGHUPs", rel_ok, "%s success for %d sent" % (
                int(msum(m, "dualproxy_reloads_total", result="success")) if m else "?",
                st.reloads_sent))
            if st.reloads_sent >= 2:
                used = {p: sum(v for k, v in st.backend_conns.items() if k.startswith(p + "/"))
                        for p in PAIRS}
                check("reloads switch backends", all(used.values()) and st.pair_checked > 0,
                      "pair A %d, pair B %d connections; %d checked after reloads" %
                      (used["A"], used["B"], st.pair_checked))
        check("active connections back to 0", self.active_end == 0,
              "%s after the load" % ("?" if self.active_end is None else int(self.active_end)))
        if s0 and s1:
            k0, k1 = s0["fd_kinds"], s1["fd_kinds"]
            ok = (k1["socket"] == k0["socket"] and k1["other"] == k0["other"] and
                  k1["pipe"] <= max(k0["pipe"], PIPE_CACHE_FDS))
            check("descriptors back to the start", ok,
                  "%d -> %d (sockets %d -> %d, other %d -> %d, pipes %d -> %d: up to %d "
                  "are the splice pipe cache)" % (s0["fds"], s1["fds"], k0["socket"],
                                                  k1["socket"], k0["other"], k1["other"],
                                                  k0["pipe"], k1["pipe"], PIPE_CACHE_FDS))
        else:
            check("descriptors back to the start", False, "not measured")
        check("exit status 0 after SIGTERM", self.exit_code == 0,
              "not sent: the daemon had died" if self.exit_code is None else str(self.exit_code))
        if self.interrupted:
            check("ran the full duration", False, "interrupted after %.0f s" % secs)

        width = max(len(n) for n, _ in rows + [(c[0], 0) for c in checks])
        bar = "=" * 78
        out = [bar, "dualproxy soak test: summary", bar]
        out += ["%-*s  %s" % (width, n, v) for n, v in rows]
        out.append("-" * 78)
        out += ["%-*s  %s  %s" % (width, n, "PASS" if ok else "FAIL", d) for n, ok, d in checks]
        if st.examples:
            out.append("-" * 78)
            out.append("first problems:")
            out += ["  " + e for e in st.examples]
        if lines:
            out.append("-" * 78)
            out.append("daemon log (last %d of %d lines):" % (min(20, len(lines)), len(lines)))
            out += ["  " + l for l in lines[-20:]]
        passed = all(ok for _, ok, _ in checks)
        out.append(bar)
        out.append("RESULT: %s" % ("PASS" if passed else "FAIL"))
        print("\n".join(out), flush=True)
        return passed


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main():
    ap = argparse.ArgumentParser(
        description="Soak test of dualproxy on loopback: mixed load over IPv4 and IPv6, "
                    "SIGHUP reloads, leak checks.")
    ap.add_argument("--duration", type=float, default=600,
                    help="seconds of load after the warm-up (default 600)")
    ap.add_argument("--binary", default=os.environ.get("DUALPROXY", str(DEFAULT_BINARY)),
                    help="the dualproxy binary (default $DUALPROXY or src/dualproxy)")
    ap.add_argument("--clients", type=int, default=32,
                    help="concurrent client workers (default 32)")
    ap.add_argument("--reload-every", type=float, default=3,
                    help="seconds between SIGHUPs, 0 for none (default 3)")
    ap.add_argument("--warmup", type=float, default=5,
                    help="seconds of load before the start values are taken (default 5)")
    ap.add_argument("--max-size", type=int, default=2 * MiB,
                    help="largest echo transfer in bytes (default 2 MiB)")
    ap.add_argument("--seed", type=int, default=None, help="random seed")
    args = ap.parse_args()
    if args.duration <= 0 or args.clients < 1 or args.max_size < 1 or args.warmup < 0:
        ap.error("--duration, --clients and --max-size must be positive")
    raise_nofile()

    soak = Soak(args)
    try:
        try:
            asyncio.run(soak.run())
        except (RuntimeError, OSError) as e:
            print("soak: cannot run: %s" % e, file=sys.stderr, flush=True)
            return 2
        return 0 if soak.summary() else 1
    finally:
        soak.kill_daemon()
        if soak.tmp is not None:
            shutil.rmtree(soak.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
