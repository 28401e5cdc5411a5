"""The metrics endpoint at its limits.

* Descriptors: with a low RLIMIT_NOFILE and more slow metrics clients than
  descriptors are left, accept() fails with EMFILE; the endpoint's clients
  are counted in the descriptor budget and its accept backs off (as the
  listeners' does) instead of spinning: the daemon's CPU time over a few
  seconds stays low, and strace counts few accept calls.
* Slow clients: 40 clients that send their request one byte a second (the
  endpoint serves 32 at once) cannot keep the kubelet's /healthz probe out:
  at the cap the client that has been sending longest is closed, and each
  of 100 probes is answered."""

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from conftest import (V4, T, TIME_SCALE, distinct_dual_ports, fmt_addr, http_get, ini,
                      nofile_wrapper, proc_cpu_seconds, scrape, wait_until)


LIMIT = 40  # RLIMIT_NOFILE: fewer than the endpoint's 32 clients and the daemon's own need


# The slow clients run in a process of their own, as an attacker would: in
# the test's process their 40 threads would hold the interpreter's lock and
# delay the probe's own request, which no kubelet suffers from.
SLOW_CLIENTS = r"""
import socket, sys, threading
host, port, n, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
out = threading.Lock()

def run():
    while True:
        try:
            s = socket.create_connection((host, port), timeout=5)
        except OSError:
            threading.Event().wait(0.05)
            continue
        with out:
            sys.stdout.write("c\n")
            sys.stdout.flush()
        try:
            s.settimeout(interval)
            for b in request:
                s.sendall(bytes([b]))
                try:
                    if s.recv(1) == b"":
                        break  # closed: connect again
                except socket.timeout:
                    pass
        except OSError:
            pass
        finally:
            s.close()

for _ in range(n):
    threading.Thread(target=run, daemon=True).start()
threading.Event().wait()
"""


class SlowClients:
    """n clients on the metrics port that send 'GET /metrics ...' one byte
    every `interval` seconds; each one that is closed connects again. They
    run in a child process; `connects` counts their connections."""

    def __init__(self, port, n, interval=1.0):
        self.connects = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SLOW_CLIENTS, V4, str(port), str(n), str(interval)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self.count, daemon=True)

    def count(self):
        for _ in self.proc.stdout:
            self.connects += 1

    def __enter__(self):
        self.reader.start()
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait(T(5))
        self.reader.join(T(5))
        self.proc.stdout.close()


def conf(mport, port, backend):
    return ini("""
        [global]
        metrics_listen = 127.0.0.1:%d
        [web]
        listen = 127.0.0.1:%d
        backend4 = %s
    """ % (mport, port, fmt_addr(*backend)))


def count_accepts(pid, seconds):
    """accept/accept4 calls of pid over `seconds` (strace -c), or None."""
    if shutil.which("strace") is None:
        return None
    r = subprocess.run(["timeout", "-s", "INT", str(seconds), "strace", "-c", "-f",
                        "-e", "trace=accept,accept4", "-p", str(pid)],
                       capture_output=True, text=True, timeout=seconds + T(10))
    calls = 0
    for line in r.stderr.splitlines():
        fields = line.split()
        if fields and fields[-1] in ("accept", "accept4") and len(fields) >= 4:
            calls += int(fields[3])
    return calls


@pytest.mark.reliability
def test_metrics_accept_backs_off_when_descriptors_run_out(proxy_factory, backends):
    mport, port = distinct_dual_ports(2)
    echo = backends.start_echo(V4)
    proxy = proxy_factory(conf(mport, port, echo), wrapper=nofile_wrapper(LIMIT))
    pid = proxy.proc.pid
    with SlowClients(mport, 60):
        wait_until(lambda: len(os.listdir("/proc/%d/fd" % pid)) >= LIMIT - 1, T(10),
                   what="the daemon to use up its descriptors")
        cpu0, w0 = proc_cpu_seconds(pid), time.monotonic()
        time.sleep(3)
        cpu1, w1 = proc_cpu_seconds(pid), time.monotonic()
        accepts = count_accepts(pid, 2)
    share = (cpu1 - cpu0) / (w1 - w0)
    print("CPU %.0f%% of one core over %.1fs with 60 slow metrics clients and %d "
          "descriptors; %s accept calls in 2 s" % (share * 100, w1 - w0, LIMIT, accepts))
    assert share < 0.2 * TIME_SCALE, "the metrics endpoint spins: %.0f%% CPU" % (share * 100)
    if accepts is not None:
        # a backoff of 100 ms: some 10 wake-ups a second, a few accepts each
        assert accepts < 1000, "%d accept calls in 2 s" % accepts
    # once the clients are gone the endpoint answers again
    wait_until(lambda: http_get(V4, mport, "/healthz").status == 200, T(10),
               what="/healthz to answer again")
    assert proxy.grep(r"out of descriptors: pausing accepting")
    assert scrape(V4, mport).value("dualproxy_accept_paused_total", reason="descriptors") >= 1


def test_healthz_answered_past_40_slow_clients(proxy_factory, backends):
    mport, port = distinct_dual_ports(2)
    echo = backends.start_echo(V4)
    proxy_factory(conf(mport, port, echo))
    failures = []
    with SlowClients(mport, 40) as slow:
        wait_until(lambda: slow.connects >= 40, T(10), what="40 slow clients")
        time.sleep(0.5)
        worst = 0.0
        for i in range(100):
            start = time.monotonic()
            try:
                r = http_get(V4, mport, "/healthz", timeout=T(3))
                if r.status != 200 or r.body != b"ok\n":
                    failures.append("probe %d: %s %r" % (i, r.status_line, r.body[:40]))
            except (OSError, AssertionError) as e:
                failures.append("probe %d: %r" % (i, e))
            worst = max(worst, time.monotonic() - start)
    print("100 /healthz probes past 40 slow clients: %d failed, slowest %.0f ms, "
          "%d slow connects" % (len(failures), worst * 1000, slow.connects))
    assert not failures, failures[:10]
    assert worst < T(1), "a probe took %.2fs" % worst
