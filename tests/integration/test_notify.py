"""systemd notification (Type=notify / notify-reload): with NOTIFY_SOCKET set
(a path, or an abstract "@name"), dualproxy sends datagrams of
newline-separated assignments from its own PID:
  READY=1 (with a STATUS= line) once listening;
  RELOADING=1 with MONOTONIC_USEC=<now> on SIGHUP, then READY=1 again (also
  when the reload fails, or systemd would wait forever);
  STOPPING=1 on SIGTERM;
  STATUS= lines with the connection count when it changes.
The test plays systemd: it binds the SOCK_DGRAM socket itself."""

import os
import signal
import socket
import struct
import time

import pytest

from conftest import (V4, V6, T, connect, fmt_addr, free_dual_port, ini,
                      recv_exact)

STATE_KEYS = ("READY=1", "RELOADING=1", "STOPPING=1")


class NotifySocket:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self, directory, abstract):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if abstract:
            name = "dualproxy-test-%d-%s" % (os.getpid(), os.urandom(6).hex())
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            path = os.path.join(str(directory), "notify")
            self.sock.bind(path)
            os.chmod(path, 0o777)  # like /run/systemd/notify: the daemon runs as nobody
            self.address = path
        self.messages = []  # (pid, [assignments]) in arrival order
        self.pos = 0

    def env(self):
        env = dict(os.environ)
        env["NOTIFY_SOCKET"] = self.address
        return env

    def _receive(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except socket.timeout:
            return False
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        text = data.decode("utf-8", "replace")
        self.messages.append((pid, [l for l in text.split("\n") if l]))
        return True

    def next(self, predicate, timeout=None, what=""):
        """The next message (after the previous match) for which
        predicate(assignments) holds; earlier ones are skipped (but kept)."""
        deadline = time.monotonic() + (T(10) if timeout is None else timeout)
        while True:
            while self.pos < len(self.messages):
                pid, msg = self.messages[self.pos]
                self.pos += 1
                if predicate(msg):
                    return pid, msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no notification %s; received so far:\n%s"
                                     % (what, self.dump()))
            self._receive(left)

    def drain(self, seconds=0.2):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._receive(end - time.monotonic())

    def states(self):
        """The READY/RELOADING/STOPPING assignments in order, a repeated
        one counted once (READY=1 sent again with a STATUS= is harmless)."""
        out = []
        for _, msg in self.messages:
            for a in msg:
                if a in STATE_KEYS and (not out or out[-1] != a):
                    out.append(a)
        return out

    def dump(self):
        return "\n".join("pid %s: %r" % m for m in self.messages) or "(nothing)"

    def close(self):
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def notify(request, public_tmp):
    n = NotifySocket(public_tmp, request.param == "abstract")
    yield n
    n.close()


def has(key):
    return lambda msg: key in msg


def monotonic_usec():
    return int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1000000)


def config(port, e4, e6, extra=""):
    return ini("""
        [global]
        drain_timeout = 5s
        [echo]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (port, fmt_addr(*e4), fmt_addr(*e6)) + extra)


@pytest.fixture
def echoes(backends):
    return backends.start_echo(V4), backends.start_echo(V6)


def test_ready_reload_stopping(notify, echoes, proxy_factory):
    port = free_dual_port()
    proxy = proxy_factory(config(port, *echoes), env=notify.env(), readable=True)
    pid = proxy.proc.pid

    sender, msg = notify.next(has("READY=1"), what="READY=1")
    assert sender == pid, "READY=1 sent by pid %s, not dualproxy's %d" % (sender, pid)
    assert any(a.startswith("STATUS=") for a in msg), \
        "no STATUS= with READY=1: %r" % msg
    # it is really ready
    with connect(V6, port) as s:
        s.sendall(b"ready?")
        assert recv_exact(s, 6) == b"ready?"

    # reload (adding a service), with a timestamp systemd can order
    other = free_dual_port()
    proxy.rewrite(config(port, *echoes, extra="""
        [more]
        listen = %d
        backend4 = %s
    """ % (other, fmt_addr(*echoes[0]))))
    before = monotonic_usec()
    proxy.sighup()
    sender, msg = notify.next(has("RELOADING=1"), what="RELOADING=1")
    after = monotonic_usec()
    assert sender == pid
    usec = [a for a in msg if a.startswith("MONOTONIC_USEC=")]
    assert usec, "RELOADING=1 without MONOTONIC_USEC=: %r" % msg
    value = int(usec[0].split("=", 1)[1])
    assert before <= value <= after, (
        "MONOTONIC_USEC=%d not between %d and %d (CLOCK_MONOTONIC)" % (value, before, after))
    sender, msg = notify.next(has("READY=1"), what="READY=1 after the reload")
    assert sender == pid
    proxy.wait_for(r"reload: 2 added, 2 kept, 0 removed")
    with connect(V4, other) as s:
        s.sendall(b"more")
        assert recv_exact(s, 4) == b"more"

    proxy.signal(signal.SIGTERM)
    sender, msg = notify.next(has("STOPPING=1"), what="STOPPING=1")
    assert sender == pid
    assert proxy.wait_exit(T(5)) == 0, proxy.stderr_text()
    notify.drain(0.1)
    assert notify.states() == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], notify.dump()


def test_failed_reload_ends_with_ready(notify, echoes, proxy_factory):
    """systemd waits for READY=1 after RELOADING=1 whatever the outcome."""
    port = free_dual_port()
    proxy = proxy_factory(config(port, *echoes), env=notify.env(), readable=True)
    notify.next(has("READY=1"), what="READY=1")
    proxy.rewrite(config(port, *echoes, extra="bogus line\n"))
    proxy.sighup()
    notify.next(has("RELOADING=1"), what="RELOADING=1")
    notify.next(has("READY=1"), what="READY=1 after the failed reload")
    proxy.wait_for(r"reload failed: keeping the running configuration")
    assert notify.states() == ["READY=1", "RELOADING=1", "READY=1"], notify.dump()
    with connect(V4, port) as s:
        s.sendall(b"still")
        assert recv_exact(s, 5) == b"still"


def test_status_counts_connections(notify, echoes, proxy_factory):
    port = free_dual_port()
    proxy = proxy_factory(config(port, *echoes), env=notify.env(), readable=True)
    notify.next(has("READY=1"), what="READY=1")

    def status_says(n):
        want = "%d connections" % n
        return lambda msg: any(a.startswith("STATUS=") and want in a for a in msg)

    conns = []
    for host in (V4, V6, V4):
        s = connect(host, port)
        s.sendall(b"hi")
        assert recv_exact(s, 2) == b"hi"
        conns.append(s)
    _, msg = notify.next(status_says(3), timeout=T(10), what="STATUS=... 3 connections")
    for s in conns:
        s.close()
    notify.next(status_says(0), timeout=T(10), what="STATUS=... 0 connections")
    assert proxy.running()


def test_unreachable_notify_socket_is_not_fatal(public_tmp, echoes, proxy_factory):
    """A NOTIFY_SOCKET nobody listens on: dualproxy starts, serves, reloads
    and exits 0 as usual."""
    env = dict(os.environ)
    env["NOTIFY_SOCKET"] = str(public_tmp / "nobody-listens-here")
    port = free_dual_port()
    proxy = proxy_factory(config(port, *echoes), env=env, readable=True)
    for host in (V4, V6):
        with connect(host, port) as s:
            s.sendall(b"ok")
            assert recv_exact(s, 2) == b"ok"
    assert proxy.reload_ok() == (0, 2, 0)
    proxy.signal(signal.SIGTERM)
    assert proxy.wait_exit(T(5)) == 0, proxy.stderr_text()
