#!/usr/bin/env python3
"""bench_helper.py: the parts of contrib/bench/bench.sh that are easier in Python.

Standard library only.  Subcommands:

  ports N [--v6]              N distinct ports free for TCP and UDP on 127.0.0.1 (and ::1)
  check URL SIZE [--wait S]   GET URL (http or https, certificate not checked) until it
                              answers 200 with SIZE body bytes
  udpcheck HOST PORT          a short iperf3 UDP test through HOST:PORT; fails unless most
                              datagrams arrive
  pids ROOT                   ROOT and all its descendants, comma-separated
  rss ROOT                    summed VmRSS (KB) of ROOT and its descendants
  run --meta JSON --out F --log F [--pids P] [--backend-pids P] [--status-url U]
      [--fd-watch PIDS --fd-out F] -- wrk ...
                              run wrk once, sample the CPU time of the proxy and
                              backend processes, append one JSON result to F (and
                              note which descriptors of PIDS were pipes, for explain)
  iperf --meta JSON --out F --log F [--pids P] [--backend-pids P] --len L -- iperf3 ...
                              run one iperf3 UDP client the same way
  idle --host H --port P --backend-port B --count N --mode silent|partial --pid ROOT
                              RSS per idle connection through a proxy (JSON line)
  udpidle --host H --port P --sink-port S --count N --pid ROOT
                              RSS per idle UDP flow through a proxy (JSON line)
  syscalls --tool perf|strace --file F --result F --target NAME --out F
                              syscall counts per request (JSON line appended)
  explain --tool perf|strace --file F [--stat F] --result F --target NAME --workload W
          [--fds F] --out F
                              wake-ups, calls and bytes per call of one traced run
  machine --file F --result F --target NAME --workload W --out F
                              perf stat -a counts of the whole machine per request
  tlsprobe --log F            connections, requests and resumed sessions in a TLS access log
  report --results F [--syscalls F] [--rss F] [--udp-rss F] [--explain F] [--machine F]
         [--header F] [--json F]
                              the tables
"""

import argparse
import http.client
import json
import os
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- processes
def _ppid_map():
    m = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        # the command name may contain spaces and parentheses
        rest = s[s.rindex(")") + 2:].split()
        m[int(d)] = int(rest[1])
    return m


def tree(root):
    """root and all its live descendants"""
    root = int(root)
    if not os.path.exists(f"/proc/{root}"):
        return []
    children = {}
    for pid, ppid in _ppid_map().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def pids_of(spec):
    """'1,2' or a root given as 'tree:1' -> list of pids"""
    out = []
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("tree:"):
            out.extend(tree(part[5:]))
        else:
            out.append(int(part))
    return out


def cpu_ticks(pids):
    """CPU time of pids, including their children that have exited and been waited
    for (socat forks a child per connection or UDP peer; those end during a run)"""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        total += int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])  # utime stime cutime cstime
    return total


def busy_ticks():
    """(busy ticks outside interrupts, softirq ticks) of the whole machine (all CPUs) since boot"""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return v[0] + v[1] + v[2] + v[5] + (v[7] if len(v) > 7 else 0), v[6]


def vmrss_kb(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


# ---------------------------------------------------------------- ports, checks
def cmd_ports(a):
    """ports free for TCP and UDP, on 127.0.0.1 and (with --v6) ::1"""
    got, held = [], []
    while len(got) < a.n:
        s4 = socket.socket()
        s4.bind(("127.0.0.1", 0))
        port = s4.getsockname()[1]
        held.append(s4)  # keep it bound so the next bind(0) gives another port
        if port in got:
            continue
        binds = [(socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1")]
        if a.v6:
            binds += [(socket.AF_INET6, socket.SOCK_STREAM, "::1"), (socket.AF_INET6, socket.SOCK_DGRAM, "::1")]
        ok = True
        for fam, typ, host in binds:
            s = socket.socket(fam, typ)
            try:
                s.bind((host, port))
                held.append(s)
            except OSError:
                ok = False
                s.close()
                break
        if ok:
            got.append(port)
    for s in held:
        s.close()
    print(" ".join(map(str, got)))


def _split_url(url):
    scheme, u = url.split("://", 1)
    hostport, path = u.split("/", 1)
    if hostport.startswith("["):
        host, port = hostport[1:].split("]:")
    else:
        host, port = hostport.rsplit(":", 1)
    return scheme, host, int(port), "/" + path


def _http_get(url, timeout=5):
    """(status, body) of one GET; https without certificate checks (a self-signed backend)"""
    scheme, host, port, path = _split_url(url)
    if scheme == "https":
        c = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl._create_unverified_context())
    else:
        c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def cmd_check(a):
    deadline = time.time() + a.wait
    last = "no attempt"
    while True:
        try:
            status, body = _http_get(a.url)
            if status == 200 and len(body) == a.size:
                return 0
            last = f"status {status}, {len(body)} bytes (want 200, {a.size})"
        except (OSError, http.client.HTTPException, ValueError) as e:
            last = f"{type(e).__name__}: {e}"
        if time.time() > deadline:
            print(f"check {a.url}: {last}", file=sys.stderr)
            return 1
        time.sleep(0.1)


def cmd_udpcheck(a):
    """200 datagrams of 1,000 bytes at 8 Mbit/s through HOST:PORT (and the TCP control
    connection iperf3 needs on the same port); at least 90% must arrive"""
    host = a.host.strip("[]")
    last = "no attempt"
    deadline = time.time() + a.wait
    while True:
        try:
            p = subprocess.run(["iperf3", "-c", host, "-p", str(a.port), "-u", "-b", "8M", "-l", "1000",
                                "-n", "200000", "-J", "--connect-timeout", "3000"],
                               capture_output=True, text=True, timeout=20)
            d = json.loads(p.stdout) if p.stdout.strip() else {}
            if d.get("error"):
                last = d["error"]
            else:
                rcv = d["end"].get("sum_received") or d["end"]["sum"]
                got = rcv["packets"] - rcv["lost_packets"]
                if got >= 180:
                    return 0
                last = f"{got} of 200 datagrams arrived"
        except (OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
            last = f"{type(e).__name__}: {e}"
        if time.time() > deadline:
            print(f"udpcheck {a.host}:{a.port}: {last}", file=sys.stderr)
            return 1
        time.sleep(0.3)


def cmd_pids(a):
    print(",".join(map(str, tree(a.root))))


def cmd_rss(a):
    print(vmrss_kb(tree(a.root)))


# ---------------------------------------------------------------- one wrk run
_child = None


def _on_term(signum, frame):
    if _child is not None and _child.poll() is None:
        _child.kill()
    sys.exit(128 + signum)


def _backend_accepts(url):
    """nginx stub_status: connections accepted so far (None when unknown)"""
    if not url:
        return None
    try:
        status, body = _http_get(url, timeout=2)
        lines = body.decode().splitlines()
        for i, l in enumerate(lines):
            if l.strip().startswith("server accepts"):
                return int(lines[i + 1].split()[0])
    except (OSError, http.client.HTTPException, ValueError, IndexError):
        pass
    return None


class Sample:
    """CPU time of the target, the backend, wrk/iperf3 and the whole machine over one run.
    The process trees are looked up again at the end, so children born meanwhile count."""

    def __init__(self, pids, backend_pids):
        self.pids, self.backend_pids = pids, backend_pids
        self.ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.c0, self.b0 = cpu_ticks(pids_of(pids)), cpu_ticks(pids_of(backend_pids))
        self.m0, self.t0 = busy_ticks(), time.monotonic()

    def stop(self, res):
        wall = time.monotonic() - self.t0
        c1, b1, m1 = cpu_ticks(pids_of(self.pids)), cpu_ticks(pids_of(self.backend_pids)), busy_ticks()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_s = (ru1.ru_utime + ru1.ru_stime) - (self.ru0.ru_utime + self.ru0.ru_stime)
        self.cpu_s = (c1 - self.c0) / CLK_TCK if self.pids else None
        res["cpu_pct"] = 100.0 * self.cpu_s / wall if self.pids else None
        res["be_cpu_pct"] = 100.0 * (b1 - self.b0) / CLK_TCK / wall if self.backend_pids else None
        res["wrk_cpu_pct"] = 100.0 * client_s / wall
        # softirq time (loopback packet processing: ours, mostly) and everything else
        # the machine did meanwhile outside our processes (other tenants: noise)
        res["sirq_cpu_pct"] = 100.0 * (m1[1] - self.m0[1]) / CLK_TCK / wall
        res["other_cpu_pct"] = max(0.0, 100.0 * ((m1[0] - self.m0[0]) - (c1 - self.c0) - (b1 - self.b0)) / CLK_TCK
                                   / wall - res["wrk_cpu_pct"])


class FdWatch:
    """Samples the descriptors of some processes every 0.1 s while a run goes on, so that a trace
    can tell pipes from sockets afterwards (pipes come and go with the connections)."""

    def __init__(self, pids, out):
        import threading
        self.pids, self.out, self.seen, self.stop_ = [int(p) for p in pids.split(",") if p], out, {}, False
        self.thread = threading.Thread(target=self._loop, daemon=True) if self.pids and out else None
        if self.thread:
            self.thread.start()

    def _loop(self):
        while not self.stop_:
            for pid in self.pids:
                try:
                    fds = os.listdir(f"/proc/{pid}/fd")
                except OSError:
                    continue
                for fd in fds:
                    try:
                        kind = "pipe" if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:") else "other"
                    except OSError:
                        continue
                    c = self.seen.setdefault(f"{pid}:{fd}", {"pipe": 0, "other": 0})
                    c[kind] += 1
            time.sleep(0.1)

    def finish(self):
        if not self.thread:
            return
        self.stop_ = True
        self.thread.join()
        pipes = sorted(k for k, c in self.seen.items() if c["pipe"] > c["other"])
        with open(self.out, "w") as f:
            json.dump({"pipes": pipes}, f)


def _run_child(cmd):
    global _child
    _child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = _child.communicate()
    return _child.returncode, out


def cmd_run(a):
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    meta = json.loads(a.meta)
    acc0 = _backend_accepts(a.status_url)
    fdw = FdWatch(a.fd_watch, a.fd_out)
    smp = Sample(a.pids, a.backend_pids)
    rc, out = _run_child(a.wrk)
    res = dict(meta)
    smp.stop(res)
    fdw.finish()
    acc1 = _backend_accepts(a.status_url)
    with open(a.log, "a") as f:
        f.write(f"### {json.dumps(meta)}\n$ {' '.join(a.wrk)}\n{out}\n")
    parsed = None
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            parsed = json.loads(line[8:])
    if rc != 0 or parsed is None:
        res["failed"] = f"wrk exited {rc}: " + " | ".join(out.strip().splitlines()[-3:])
        print(f"  !! {meta.get('workload')} {meta.get('family')} {meta.get('target')}: {res['failed']}")
    else:
        res.update(parsed)
        dur = parsed["duration_us"] / 1e6
        res["rps"] = parsed["requests"] / dur if dur > 0 else 0.0
        res["mbps"] = parsed["bytes"] / dur / 1e6 if dur > 0 else 0.0
        # CPU time of the target per request: less sensitive to other tenants than req/s
        res["cpu_us_per_req"] = 1e6 * smp.cpu_s / parsed["requests"] if smp.cpu_s is not None and parsed["requests"] else None
        # connections the backend accepted per request (the status request itself excluded)
        if acc0 is not None and acc1 is not None and parsed["requests"]:
            res["be_conn_per_req"] = max(0, acc1 - acc0 - 1) / parsed["requests"]
        errs = {k[4:]: parsed[k] for k in ("err_connect", "err_read", "err_write", "err_timeout", "err_status") if parsed[k]}
        # keep wrk's own wording of the error lines for the log and the report
        res["error_lines"] = [l.strip() for l in out.splitlines()
                              if l.strip().startswith(("Socket errors", "Non-2xx"))]
        line = (f"  {meta.get('round', '-')!s:>2} {meta.get('workload', ''):<11} {meta.get('family', ''):<3}"
                f" {meta.get('target', ''):<10} {res['rps']:>10.0f} req/s  p50 {parsed['p50_us']/1000:6.2f} ms"
                f"  p99 {parsed['p99_us']/1000:7.2f} ms  {res['mbps']:8.1f} MB/s")
        if res["cpu_pct"] is not None:
            line += f"  proxy cpu {res['cpu_pct']:3.0f}%"
        line += f"  other cpu {res['other_cpu_pct']:3.0f}%"
        if res.get("be_conn_per_req") is not None and meta.get("workload", "").endswith("-close"):
            line += f"  backend conn/req {res['be_conn_per_req']:.2f}"
        if errs:
            line += "  ERRORS: " + "; ".join(res["error_lines"]) if res["error_lines"] else f"  ERRORS {errs}"
        print(line, flush=True)
    with open(a.out, "a") as f:
        f.write(json.dumps(res) + "\n")
    return 0


def cmd_iperf(a):
    """one iperf3 UDP client run: delivered datagrams per second (sent minus lost, as the
    iperf3 server counted them) and the target's CPU time per delivered datagram"""
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    meta = json.loads(a.meta)
    fdw = FdWatch(a.fd_watch, a.fd_out)
    smp = Sample(a.pids, a.backend_pids)
    for attempt in range(3):
        rc, out = _run_child(a.iperf)
        if "busy" not in out or attempt == 2:
            break
        time.sleep(1)  # the server is still finishing the previous test
    res = dict(meta)
    smp.stop(res)
    fdw.finish()
    with open(a.log, "a") as f:
        f.write(f"### {json.dumps(meta)}\n$ {' '.join(a.iperf)}\n{out}\n")
    d = None
    try:
        d = json.loads(out[out.index("{"):]) if "{" in out else None
    except ValueError:
        d = None
    if d is None or d.get("error") or "end" not in d:
        why = (d or {}).get("error") or " | ".join(out.strip().splitlines()[-3:])
        res["failed"] = f"iperf3 exited {rc}: {why}"
        print(f"  !! {meta.get('workload')} {meta.get('family')} {meta.get('target')}: {res['failed']}")
    else:
        end = d["end"]
        snt = end.get("sum_sent") or end["sum"]
        rcv = end.get("sum_received") or end["sum"]  # the server's count, sent back to the client
        delivered = max(0, rcv["packets"] - rcv["lost_packets"])
        secs = rcv["seconds"] or snt["seconds"]
        res.update({
            "len": a.len, "sent": snt["packets"], "delivered": delivered, "seconds": secs,
            "iperf_lost": rcv["lost_packets"], "out_of_order": rcv.get("out_of_order", 0),
            "jitter_ms": rcv.get("jitter_ms"),
        })
        res["sent_pps"] = snt["packets"] / snt["seconds"] if snt["seconds"] else 0.0
        res["pps"] = delivered / secs if secs else 0.0
        res["mbps"] = res["pps"] * a.len / 1e6  # payload
        res["loss_pct"] = 100.0 * (1 - delivered / snt["packets"]) if snt["packets"] else None
        res["cpu_us_per_pkt"] = 1e6 * smp.cpu_s / delivered if smp.cpu_s is not None and delivered else None
        line = (f"  {meta.get('round', '-')!s:>2} {meta.get('workload', ''):<11} {meta.get('family', ''):<3}"
                f" {meta.get('target', ''):<10} {res['pps']:>10.0f} pkt/s delivered of {res['sent_pps']:>9.0f} sent"
                f"  loss {res['loss_pct']:5.1f}%  {res['mbps']:8.1f} MB/s")
        if res["cpu_pct"] is not None:
            line += f"  proxy cpu {res['cpu_pct']:3.0f}%"
        line += f"  other cpu {res['other_cpu_pct']:3.0f}%"
        if delivered == 0:
            res["failed"] = "no datagram arrived"
            line += "  FAILED: no datagram arrived"
        print(line, flush=True)
    with open(a.out, "a") as f:
        f.write(json.dumps(res) + "\n")
    return 0


# ---------------------------------------------------------------- idle connections
def _tcp_established_to(port):
    """sockets in ESTABLISHED whose remote port is `port` (the proxy's side of its backend connections)"""
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "01" and int(parts[2].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            pass
    return n


def cmd_idle(a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, a.count + 1000)) if hard != resource.RLIM_INFINITY else a.count + 1000
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < a.count + 50:
        print(json.dumps({"error": f"RLIMIT_NOFILE hard limit {hard} is too low for {a.count} connections"}))
        return 1
    fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    pids = tree(a.pid)
    time.sleep(0.3)
    base_conns = _tcp_established_to(a.backend_port)
    before = vmrss_kb(pids)
    partial = b"GET /small.bin HTTP/1.1\r\nHost: bench\r\nUser-Agent: idle-test\r\n"  # no blank line: incomplete
    socks, failures = [], 0
    t0 = time.monotonic()
    for i in range(a.count):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect((a.host, a.port))
            if a.mode == "partial":
                s.sendall(partial)
            socks.append(s)
        except OSError:
            failures += 1
            s.close()
    t_open = time.monotonic() - t0
    # wait until the proxy has accepted them and connected each to the backend
    # (or the count stops moving for 3 s), then for the RSS to settle
    deadline, last, still = time.monotonic() + 60, -1, time.monotonic()
    while time.monotonic() < deadline:
        reached = _tcp_established_to(a.backend_port) - base_conns
        if reached >= len(socks):
            break
        if reached != last:
            last, still = reached, time.monotonic()
        elif time.monotonic() - still > 3:
            break
        time.sleep(0.2)
    reached = _tcp_established_to(a.backend_port) - base_conns
    rss_prev = -1
    for _ in range(20):
        time.sleep(0.5)
        after = vmrss_kb(tree(a.pid))
        if after == rss_prev:
            break
        rss_prev = after
    # are the client sockets still open (the proxy has not closed them)?
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1, socket.MSG_PEEK) == b"":
                closed += 1
        except BlockingIOError:
            pass  # still open, nothing to read: as it should be
        except OSError:
            closed += 1
    n = len(socks)
    res = {"target": a.target, "mode": a.mode, "count": a.count, "opened": n, "failed": failures,
           "reached_backend": reached, "closed_by_proxy": closed, "open_s": round(t_open, 2),
           "processes": len(pids), "rss_before_kb": before, "rss_after_kb": after,
           "kb_per_conn": (after - before) / n if n else None}
    for s in socks:
        s.close()
    print(json.dumps(res))
    return 0


def _raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, n)) if hard != resource.RLIM_INFINITY else max(soft, n)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want, hard


def _drain(sink, sources):
    """reads every datagram waiting at the sink; returns how many"""
    n = 0
    while True:
        try:
            _, src = sink.recvfrom(2048)
        except BlockingIOError:
            return n
        sources.add(src)
        n += 1


def cmd_udpidle(a):
    """N client sockets each send one datagram through the proxy and stay open; a sink
    stands in for the backend and counts the distinct sources it sees (one per flow the
    proxy made).  Lost datagrams are sent again (up to 3 passes): a flow that exists
    only forwards the repeat.  VmRSS of the proxy's processes before and after."""
    want, hard = _raise_nofile(a.count + 200)
    if want < a.count + 50:
        print(json.dumps({"target": a.target, "error": f"RLIMIT_NOFILE hard limit {hard} is too low for {a.count} flows"}))
        return 1
    fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    sink = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        sink.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root)
    except OSError:
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sink.bind((a.host, a.sink_port))
    sink.setblocking(False)
    pids = tree(a.pid)
    time.sleep(0.3)
    before = vmrss_kb(pids)
    payload = b"dualproxy-bench idle flow\n"
    socks, sources, failures, t0 = [], set(), 0, time.monotonic()
    for i in range(a.count):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.connect((a.host, a.port))
            socks.append(s)
        except OSError:
            failures += 1
            s.close()
    passes = 0
    for passes in range(1, 4):
        for i, s in enumerate(socks):
            try:
                s.send(payload)
            except OSError:
                pass
            if i % 200 == 199:  # let the proxy keep up: its socket buffer holds a few hundred
                time.sleep(0.002)
                _drain(sink, sources)
        deadline, last, still = time.monotonic() + 30, -1, time.monotonic()
        while time.monotonic() < deadline and len(sources) < len(socks):
            _drain(sink, sources)
            if len(sources) != last:
                last, still = len(sources), time.monotonic()
            elif time.monotonic() - still > 2:
                break
            time.sleep(0.05)
        if len(sources) >= len(socks):
            break
    t_open = time.monotonic() - t0
    rss_prev, after = -1, before
    for _ in range(20):
        time.sleep(0.5)
        after = vmrss_kb(tree(a.pid))
        if after == rss_prev:
            break
        rss_prev = after
    _drain(sink, sources)
    flows = len(sources)
    res = {"target": a.target, "count": a.count, "opened": len(socks), "failed": failures,
           "flows_at_backend": flows, "passes": passes, "open_s": round(t_open, 2),
           "processes": len(pids), "rss_before_kb": before, "rss_after_kb": after,
           "bytes_per_flow": (after - before) * 1024 / flows if flows else None}
    for s in socks:
        s.close()
    sink.close()
    print(json.dumps(res))
    return 0


# ---------------------------------------------------------------- syscalls
READS = {"read", "readv", "recvfrom", "recvmsg", "recvmmsg", "recv"}
WRITES = {"write", "writev", "sendto", "sendmsg", "sendmmsg", "send"}
EPOLL_WAIT = {"epoll_wait", "epoll_pwait", "epoll_pwait2"}


def _parse_perf(path):
    """perf stat -x, output: raw_syscalls:sys_enter is the total, the rest are per syscall"""
    counts, total = {}, None
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.strip().split(",")
            if len(parts) < 3:
                continue
            val, ev = parts[0], parts[2]
            try:
                v = int(float(val))
            except ValueError:
                continue  # <not counted> / <not supported>
            if ev == "raw_syscalls:sys_enter":
                total = v
            elif ev.startswith("syscalls:sys_enter_") and v:
                counts[ev[len("syscalls:sys_enter_"):]] = v
    if total is not None and total > sum(counts.values()):
        counts["(others)"] = total - sum(counts.values())
    return counts


def _parse_strace(path):
    counts = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) not in (5, 6) or parts[-1] == "total" or line.startswith("%"):
                continue
            try:
                float(parts[0])
                calls = int(parts[3])
            except ValueError:
                continue
            counts[parts[-1]] = counts.get(parts[-1], 0) + calls
    return counts


def cmd_syscalls(a):
    counts = _parse_perf(a.file) if a.tool == "perf" else _parse_strace(a.file)
    res = None
    with open(a.result) as f:
        for line in f:
            r = json.loads(line)
            if r.get("target") == a.target:
                res = r
    out = {"target": a.target, "tool": a.tool}
    if not counts or res is None or res.get("failed") or not res.get("requests"):
        out["error"] = "no syscall counts" if not counts else "the traced wrk run failed"
    else:
        req = res["requests"]
        tot = sum(counts.values())
        out.update({
            "requests": req, "rps": res["rps"], "total": tot,
            "per_req": tot / req,
            "read": sum(v for k, v in counts.items() if k in READS) / req,
            "write": sum(v for k, v in counts.items() if k in WRITES) / req,
            "epoll_wait": sum(v for k, v in counts.items() if k in EPOLL_WAIT) / req,
            "epoll_ctl": counts.get("epoll_ctl", 0) / req,
            "splice": counts.get("splice", 0) / req,
            "counts": counts,
        })
    with open(a.out, "a") as f:
        f.write(json.dumps(out) + "\n")
    return 0


# ---------------------------------------------------------------- explain: calls and bytes per call
SPLICE = "splice"


def _signed(v):
    v = int(v, 16) if v.startswith("0x") else int(v)
    return v - (1 << 64) if v >= 1 << 63 else v


class CallStats:
    """per syscall: calls, calls that failed (EAGAIN mostly), sum of the positive returns"""

    def __init__(self):
        self.calls, self.failed, self.sum, self.zero = {}, {}, {}, {}

    def add(self, name, ret):
        self.calls[name] = self.calls.get(name, 0) + 1
        if ret < 0:
            self.failed[name] = self.failed.get(name, 0) + 1
        elif ret == 0:
            self.zero[name] = self.zero.get(name, 0) + 1
        else:
            self.sum[name] = self.sum.get(name, 0) + ret


def _explain_perf(path, pipes):
    """perf script -F pid,tid,event,trace output of the sys_exit_* (and sys_enter_splice) tracepoints"""
    st, enter = CallStats(), {}
    with open(path, errors="replace") as f:
        for line in f:
            parts = line.split(None, 2)  # "PID/TID syscalls:sys_exit_NAME: RET"
            if len(parts) < 3 or not parts[1].startswith("syscalls:sys_"):
                continue
            pid, _, tid = parts[0].partition("/")
            ev, rest = parts[1].rstrip(":"), parts[2]
            if ev == "syscalls:sys_enter_splice":
                fields = dict(x.strip().split(": ", 1) for x in rest.split(",") if ": " in x)
                enter[tid] = (int(fields.get("fd_in", "-1"), 16), int(fields.get("fd_out", "-1"), 16))
                continue
            name = ev[len("syscalls:sys_exit_"):]
            try:
                ret = _signed(rest.strip().split()[0])
            except (ValueError, IndexError):
                continue
            if name == SPLICE:
                fd_in, fd_out = enter.pop(tid, (-1, -1))
                name = ("splice-in" if f"{pid}:{fd_out}" in pipes else "splice-out" if f"{pid}:{fd_in}" in pipes
                        else "splice-?")
            st.add(name, ret)
    return st


def _explain_strace(path, pipes):
    """strace -f -o output: every syscall line, with its arguments and return value"""
    import re
    rx = re.compile(r"^(?:(\d+)\s+)?(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)(.*)\)\s+=\s+(-?\d+|\?)")
    st, counts = CallStats(), {}
    with open(path, errors="replace") as f:
        for line in f:
            if "<unfinished ...>" in line:
                continue
            m = rx.match(line)
            if not m:
                continue
            pid, name, args, ret = m.group(1), m.group(2), m.group(3), m.group(4)
            counts[name] = counts.get(name, 0) + 1
            if ret == "?":
                continue
            ret = int(ret)
            if name == SPLICE:
                try:
                    a = [x.strip() for x in args.split(",")]
                    fd_in, fd_out = int(a[0]), int(a[2])
                except (ValueError, IndexError):
                    fd_in = fd_out = -1
                name = ("splice-in" if f"{pid}:{fd_out}" in pipes else "splice-out" if f"{pid}:{fd_in}" in pipes
                        else "splice-?")
            if name in READS or name in WRITES or name in EPOLL_WAIT or name.startswith("splice"):
                st.add(name, ret)
    return st, counts


def cmd_explain(a):
    res = None
    with open(a.result) as f:
        for line in f:
            r = json.loads(line)
            if r.get("target") == a.target and r.get("workload") == a.workload:
                res = r
    out = {"target": a.target, "workload": a.workload, "tool": a.tool}
    udp = a.workload.startswith("udp")
    units = None if res is None or res.get("failed") else res.get("delivered") if udp else res.get("requests")
    pipes = set()
    if a.fds and os.path.exists(a.fds):
        with open(a.fds) as f:
            pipes = set(json.load(f)["pipes"])
    counts = {}
    try:
        if a.tool == "perf":
            st = _explain_perf(a.file, pipes)
            if a.stat and os.path.exists(a.stat):
                counts = _parse_perf(a.stat)
        else:
            st, counts = _explain_strace(a.file, pipes)
        total = sum(counts.values()) if counts else None
    except OSError as e:
        out["error"] = f"cannot read the trace: {e}"
        st = None
    if st is None or not units:
        out.setdefault("error", "the traced run failed" if not units else "no trace")
    else:
        def per(names):
            return sum(st.calls.get(n, 0) for n in names) / units

        def size(names):
            ok = sum(st.calls.get(n, 0) - st.failed.get(n, 0) - st.zero.get(n, 0) for n in names)
            return sum(st.sum.get(n, 0) for n in names) / ok if ok else None

        def failed(names):
            c = sum(st.calls.get(n, 0) for n in names)
            return 100.0 * sum(st.failed.get(n, 0) for n in names) / c if c else None

        rd = [n for n in READS if n not in ("recvmmsg",)]
        wr = [n for n in WRITES if n not in ("sendmmsg",)]
        out.update({
            "units": units, "unit": "datagram" if udp else "request", "rps": res.get("pps" if udp else "rps"),
            "total_per_unit": total / units if total else None,
            "epoll_wait": per(EPOLL_WAIT), "events_per_wait": size(EPOLL_WAIT),
            "empty_waits_pct": (100.0 * sum(st.zero.get(n, 0) for n in EPOLL_WAIT) / sum(st.calls.get(n, 0) for n in EPOLL_WAIT)
                                if sum(st.calls.get(n, 0) for n in EPOLL_WAIT) else None),
            "reads": per(rd), "bytes_per_read": size(rd), "reads_failed_pct": failed(rd),
            "writes": per(wr), "bytes_per_write": size(wr),
            "splice_in": per(["splice-in"]), "bytes_per_splice_in": size(["splice-in"]),
            "splice_out": per(["splice-out"]), "bytes_per_splice_out": size(["splice-out"]),
            "recvmmsg": per(["recvmmsg"]), "dgrams_per_recvmmsg": size(["recvmmsg"]),
            "sendmmsg": per(["sendmmsg"]), "dgrams_per_sendmmsg": size(["sendmmsg"]),
            "calls": st.calls, "failed": st.failed, "sums": st.sum,
            # the other syscalls, most frequent first (per unit)
            "others": [(k, v / units) for v, k in sorted(((v, k) for k, v in counts.items()
                                                          if k not in READS | WRITES | EPOLL_WAIT | {"splice"}),
                                                         reverse=True)[:3] if v / units >= 0.01],
        })
    with open(a.out, "a") as f:
        f.write(json.dumps(out) + "\n")
    return 0


def cmd_machine(a):
    """perf stat -a -x, counts of the whole machine during one run, per request or datagram"""
    res = None
    with open(a.result) as f:
        for line in f:
            r = json.loads(line)
            if r.get("target") == a.target and r.get("workload") == a.workload:
                res = r
    out = {"target": a.target, "workload": a.workload}
    counts = {}
    try:
        with open(a.file) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) < 3 or line.startswith("#"):
                    continue
                try:
                    counts[parts[2]] = float(parts[0])
                except ValueError:
                    counts[parts[2]] = None  # <not supported> / <not counted>
    except OSError as e:
        out["error"] = str(e)
    udp = a.workload.startswith("udp")
    units = None if res is None or res.get("failed") else res.get("delivered") if udp else res.get("requests")
    if not counts or not units:
        out.setdefault("error", "no counts" if not counts else "the counted run failed")
    else:
        out.update({"units": units, "unit": "datagram" if udp else "request",
                    "per_unit": {k: (v / units if v is not None else None) for k, v in counts.items()}})
    with open(a.out, "a") as f:
        f.write(json.dumps(out) + "\n")
    return 0


def cmd_tlsprobe(a):
    """access log lines '$connection $ssl_session_reused $ssl_protocol $ssl_cipher'"""
    conns, reqs, reused, kinds = set(), 0, 0, {}
    with open(a.log) as f:
        for line in f:
            p = line.split()
            if len(p) < 4:
                continue
            reqs += 1
            conns.add(p[0])
            reused += p[1] == "r"
            kinds[f"{p[2]} {p[3]}"] = kinds.get(f"{p[2]} {p[3]}", 0) + 1
    if not reqs:
        print("no request reached the TLS probe")
        return 1
    kind = max(kinds, key=kinds.get)
    print(f"{len(conns)} TLS connections for {reqs} requests ({len(conns) / reqs:.2f} per request),"
          f" {100.0 * reused / reqs:.0f}% of the requests on resumed sessions, {kind}")
    return 0


# ---------------------------------------------------------------- report
# name, the metric that ratios use, its label in the markdown tables
WORKLOADS = [
    ("small-ka", "rps", "small keep-alive, req/s"),
    ("small-close", "rps", "one connection per request, req/s"),
    ("bulk", "mbps", "1 MiB bulk, MB/s"),
    ("tls-ka", "rps", "TLS small keep-alive, req/s"),
    ("tls-close", "rps", "TLS handshake per request, req/s"),
    ("tls-bulk", "mbps", "TLS 1 MiB, MB/s"),
    ("w32k-small", "rps", "32 KiB writer, small, req/s"),
    ("w32k-bulk", "mbps", "32 KiB writer, 1 MiB, MB/s"),
    ("many-ka", "rps", "{conns} keep-alive connections, req/s"),
    ("udp-64", "pps", "UDP 64 B, delivered datagrams/s"),
    ("udp-1200", "pps", "UDP 1,200 B, delivered datagrams/s"),
]
PRIMARY = {w: m for w, m, _ in WORKLOADS}
TARGETS = ["direct", "dualproxy", "baseline", "haproxy", "nginx", "socat"]
PROXIES = ["dualproxy", "haproxy", "nginx", "socat"]  # "baseline" (another dualproxy build) is no peer
NAMES = {"direct": "direct", "dualproxy": "dualproxy", "baseline": "baseline", "haproxy": "HAProxy",
         "nginx": "nginx stream", "socat": "socat"}
# dualproxy's targets, as ratios to the best peer of the same run: (throughput
# at least, CPU per request below every peer's). p99 no higher than the best
# peer's is a target on every workload.
GOALS = {"small-ka": (1.05, True), "tls-ka": (1.05, True), "small-close": (1.05, False),
         "tls-close": (1.05, False), "bulk": (2.0, False), "w32k-bulk": (2.0, False),
         "many-ka": (1.0, False), "udp-64": (2.0, False), "udp-1200": (2.0, False)}
MED_KEYS = ("rps", "mbps", "pps", "sent_pps", "loss_pct", "jitter_ms", "p50_us", "p99_us", "cpu_pct", "be_cpu_pct",
            "wrk_cpu_pct", "sirq_cpu_pct", "other_cpu_pct", "cpu_us_per_req", "cpu_us_per_pkt", "be_conn_per_req")


def _is_udp(wl):
    return PRIMARY.get(wl) == "pps"


def _cpu_key(wl):
    return "cpu_us_per_pkt" if _is_udp(wl) else "cpu_us_per_req"


def _load(path):
    out = []
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    out.append(json.loads(line))
    return out


def _fmt(v, spec, dash="-"):
    return dash if v is None else format(v, spec)


def _ratio(a, b):
    return a / b if a is not None and b else None


def _medians(results):
    agg = {}
    for r in results:
        agg.setdefault((r["workload"], r["family"], r["target"]), []).append(r)
    med = {}
    for key, rs in agg.items():
        m = {"n": len(rs), "connections": rs[0].get("connections")}
        for k in MED_KEYS:
            vals = [r[k] for r in rs if r.get(k) is not None]
            m[k] = statistics.median(vals) if vals else None
        prim = PRIMARY[key[0]]
        vals = [r[prim] for r in rs]
        m["spread"] = (max(vals) - min(vals)) / m[prim] * 100 if m[prim] else None
        m["errors"] = sum(r.get("err_connect", 0) + r.get("err_read", 0) + r.get("err_write", 0)
                          + r.get("err_timeout", 0) + r.get("err_status", 0) for r in rs)
        med[key] = m
    return med


def _compare(med):
    """per (workload, family, proxy): x best other proxy, p99 x lowest other p99, x direct, CPU x most frugal"""
    out = {}
    for (wl, fam, t), m in med.items():
        if t not in PROXIES:
            continue
        prim, ck = PRIMARY[wl], _cpu_key(wl)
        others = [med[(wl, fam, o)] for o in PROXIES if o != t and (wl, fam, o) in med]
        direct = med.get((wl, fam, "direct"))
        xpeer = p99peer = cpupeer = None
        if others:
            best = max(o[prim] for o in others)
            xpeer = m[prim] / best if best else None
            p99s = [o["p99_us"] for o in others if o.get("p99_us")]
            if p99s and m.get("p99_us"):
                p99peer = m["p99_us"] / min(p99s)
            frugal = [o[ck] for o in others if o.get(ck)]
            if frugal and m.get(ck):
                cpupeer = m[ck] / min(frugal)
        xdirect = m[prim] / direct[prim] if direct and direct[prim] else None
        out[(wl, fam, t)] = (xpeer, p99peer, xdirect, cpupeer)
    return out


def _report_baseline(med):
    """dualproxy / baseline per workload and family, when --baseline ran."""
    rows = []
    for wl, prim, _ in WORKLOADS:
        for fam in ("v4", "v6"):
            new, old = med.get((wl, fam, "dualproxy")), med.get((wl, fam, "baseline"))
            if new and old:
                ck = _cpu_key(wl)
                rows.append((wl, fam, prim, _ratio(new[prim], old[prim]),
                             _ratio(new.get("p99_us"), old.get("p99_us")),
                             _ratio(new.get(ck), old.get(ck))))
    if not rows:
        return
    print()
    print("dualproxy / baseline, same run (medians; req/s, MB/s or delivered datagrams/s: >1 is better;")
    print("p99 and CPU per request or datagram: <1 is better)")
    print(f"{'workload':<11} {'fam':<3} {'metric':<6} {'x baseline':>10} {'p99 x baseline':>14} {'CPU/unit x baseline':>19}")
    for wl, fam, prim, x, p99, cpu in rows:
        metric = {"rps": "req/s", "mbps": "MB/s", "pps": "pkt/s"}[prim]
        print(f"{wl:<11} {fam:<3} {metric:<6} {_fmt(x, '>9.3f'):>10} {_fmt(p99, '>13.3f'):>14} {_fmt(cpu, '>18.3f'):>19}")


def _report_tcp(med, cmp_):
    wls = [w for w, _, _ in WORKLOADS if not _is_udp(w) and any(k[0] == w for k in med)]
    if not wls:
        return
    print()
    print("TCP throughput (median of rounds; ratios use req/s for the small workloads and MB/s for the 1 MiB ones;")
    print("'x peer' = this proxy / the best other proxy, 'x direct' = this proxy / direct,")
    print("'p99 x peer' = this p99 / the lowest other proxy p99 (<1 is better); cpu% = CPU time of the")
    print("target's processes / wall time (100% = one core), us/req = that CPU time per request in microseconds")
    print("(less sensitive to other load than req/s), be% = the nginx backend's CPU, sirq% = softirq time of")
    print("the machine (loopback packet processing, mostly ours), other% = all other CPU use on the machine")
    print("meanwhile, wrk excluded (other tenants: noise; 200% = both cores); conn/req = connections the")
    print("backend accepted per request; spread = (max-min)/median of the ratio metric over the rounds)")
    hdr = (f"{'workload':<11} {'fam':<3} {'target':<10} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'MB/s':>8}"
           f" {'cpu%':>5} {'us/req':>7} {'be%':>4} {'sirq%':>5} {'other%':>6} {'spread':>6} {'x peer':>7} {'x direct':>8}"
           f" {'p99 x peer':>10} {'conn/req':>8} {'errors':>6}")
    print(hdr)
    print("-" * len(hdr))
    for wl in wls:
        for fam in ("v4", "v6"):
            rows = [(t, med.get((wl, fam, t))) for t in TARGETS]
            if not any(m for _, m in rows):
                continue
            for t, m in rows:
                if m is None:
                    continue
                xpeer, p99peer, xdirect, _ = cmp_.get((wl, fam, t), (None,) * 4)
                print(f"{wl:<11} {fam:<3} {t:<10} {m['rps']:>9.0f} {m['p50_us']/1000:>7.2f} {m['p99_us']/1000:>7.2f}"
                      f" {m['mbps']:>8.1f} {_fmt(m['cpu_pct'], '>4.0f'):>5} {_fmt(m['cpu_us_per_req'], '>6.1f'):>7}"
                      f" {_fmt(m['be_cpu_pct'], '>3.0f'):>4} {_fmt(m['sirq_cpu_pct'], '>4.0f'):>5} {_fmt(m['other_cpu_pct'], '>5.0f'):>6}"
                      f" {_fmt(m['spread'], '>5.1f')+'%':>6} {_fmt(xpeer, '>6.2f'):>7} {_fmt(xdirect, '>7.2f'):>8}"
                      f" {_fmt(p99peer, '>9.2f'):>10} {_fmt(m['be_conn_per_req'], '>7.2f'):>8}"
                      f" {m['errors'] if m['errors'] else '':>6}".rstrip())
            print()


def _report_udp(med, cmp_):
    wls = [w for w, _, _ in WORKLOADS if _is_udp(w) and any(k[0] == w for k in med)]
    if not wls:
        return
    print()
    print("UDP, iperf3 -u -b 0 (median of rounds; sent/s = datagrams the iperf3 client sent per second,")
    print("deliv/s = datagrams the iperf3 server received per second (sent minus lost, by its count), the ratio")
    print("metric; loss% = 1 - delivered/sent; MB/s = delivered payload; us/pkt = the target's CPU time per")
    print("delivered datagram; be% = the iperf3 server's CPU; jitter as iperf3 computes it)")
    hdr = (f"{'workload':<11} {'fam':<3} {'target':<10} {'sent/s':>9} {'deliv/s':>9} {'loss%':>6} {'jit ms':>7} {'MB/s':>7}"
           f" {'cpu%':>5} {'us/pkt':>7} {'be%':>4} {'sirq%':>5} {'other%':>6} {'spread':>6} {'x peer':>7} {'x direct':>8}")
    print(hdr)
    print("-" * len(hdr))
    for wl in wls:
        for fam in ("v4", "v6"):
            rows = [(t, med.get((wl, fam, t))) for t in TARGETS]
            if not any(m for _, m in rows):
                continue
            for t, m in rows:
                if m is None:
                    continue
                xpeer, _, xdirect, _ = cmp_.get((wl, fam, t), (None,) * 4)
                print(f"{wl:<11} {fam:<3} {t:<10} {m['sent_pps']:>9.0f} {m['pps']:>9.0f} {_fmt(m['loss_pct'], '>5.1f'):>6}"
                      f" {_fmt(m['jitter_ms'], '>6.3f'):>7} {m['mbps']:>7.1f}"
                      f" {_fmt(m['cpu_pct'], '>4.0f'):>5} {_fmt(m['cpu_us_per_pkt'], '>6.2f'):>7}"
                      f" {_fmt(m['be_cpu_pct'], '>3.0f'):>4} {_fmt(m['sirq_cpu_pct'], '>4.0f'):>5} {_fmt(m['other_cpu_pct'], '>5.0f'):>6}"
                      f" {_fmt(m['spread'], '>5.1f')+'%':>6} {_fmt(xpeer, '>6.2f'):>7} {_fmt(xdirect, '>7.2f'):>8}".rstrip())
            print()


def _num(v, prim):
    if v is None:
        return "-"
    if prim == "mbps":
        return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"
    return f"{v:,.0f}"


def _report_markdown(med, cmp_):
    """the same medians as tables to paste into README.md"""
    present = [t for t in TARGETS if any(k[2] == t for k in med)]
    if not med or "dualproxy" not in present:
        return
    print()
    print("Markdown (medians of this run, to paste; '-' = not measured, 'n/a' = the program cannot relay it):")
    print()
    cols = present + ["dualproxy / best peer", "dualproxy / direct"]
    if "baseline" in present:
        cols.append("dualproxy / baseline")
    print("| workload | family | " + " | ".join(NAMES.get(c, c) for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for wl, prim, label in WORKLOADS:
        for fam in ("v4", "v6"):
            if not any((wl, fam, t) in med for t in present):
                continue
            conns = next((med[(wl, fam, t)]["connections"] for t in present if (wl, fam, t) in med), None)
            cells = []
            for t in present:
                m = med.get((wl, fam, t))
                na = (t == "haproxy" and _is_udp(wl)) or (t == "socat" and not _is_udp(wl))
                cells.append("n/a" if na and m is None else _num(m[prim], prim) if m else "-")
            x = cmp_.get((wl, fam, "dualproxy"), (None,) * 4)
            cells.append(_fmt(x[0], ".2f"))
            cells.append(_fmt(x[2], ".2f"))
            if "baseline" in present:
                new, old = med.get((wl, fam, "dualproxy")), med.get((wl, fam, "baseline"))
                cells.append(_fmt(_ratio(new[prim], old[prim]) if new and old else None, ".2f"))
            name = label.format(conns=f"{conns:,}" if conns else "many")
            print(f"| {name} | {'IPv4' if fam == 'v4' else 'IPv6'} | " + " | ".join(cells) + " |")
    lat = [t for t in present if t != "direct"]
    tcp = [w for w, _, _ in WORKLOADS if not _is_udp(w) and any(k[0] == w for k in med)]
    if tcp:
        print()
        print("| p99 latency, ms (IPv4 / IPv6) | " + " | ".join(NAMES[t] for t in lat if t != "socat") + " |")
        print("|---|" + "---|" * len([t for t in lat if t != "socat"]))
        for wl in tcp:
            label = dict((w, l) for w, _, l in WORKLOADS)[wl].rsplit(",", 1)[0]
            conns = next((m["connections"] for k, m in med.items() if k[0] == wl), None)
            cells = []
            for t in lat:
                if t == "socat":
                    continue
                v = [med.get((wl, f, t)) for f in ("v4", "v6")]
                cells.append(" / ".join(_fmt(m["p99_us"] / 1000 if m else None, ".2f") for m in v))
            print(f"| {label.format(conns=f'{conns:,}' if conns else 'many')} | " + " | ".join(cells) + " |")
    print()
    print("| CPU per request or datagram, us (IPv4 / IPv6) | " + " | ".join(NAMES[t] for t in lat) + " |")
    print("|---|" + "---|" * len(lat))
    for wl, prim, label in WORKLOADS:
        if not any(k[0] == wl for k in med):
            continue
        conns = next((m["connections"] for k, m in med.items() if k[0] == wl), None)
        cells = []
        for t in lat:
            v = [med.get((wl, f, t)) for f in ("v4", "v6")]
            if not any(v):
                cells.append("n/a" if (t == "haproxy" and _is_udp(wl)) or (t == "socat" and not _is_udp(wl)) else "-")
                continue
            ck = _cpu_key(wl)
            cells.append(" / ".join(_fmt(m[ck] if m else None, ".1f" if not _is_udp(wl) else ".2f") for m in v))
        print(f"| {label.rsplit(',', 1)[0].format(conns=f'{conns:,}' if conns else 'many')} | " + " | ".join(cells) + " |")


def _report_explain(ex):
    if not ex:
        return
    print()
    tool = ex[0].get("tool")
    print(f"Explain: one extra traced run per workload (IPv4) with {tool} attached"
          + (" (perf record of the syscall exit tracepoints, perf stat for the total)" if tool == "perf"
             else " (strace -f: the proxy runs much slower under it, so it batches more than it would)"))
    print("(per request, or per delivered datagram for UDP: syscalls, epoll_wait wake-ups; ev/wake = ready")
    print("sockets per wake-up; reads = read/recv/recvfrom/recvmsg, B/read = bytes per read that returned data,")
    print("EAGAIN% = reads that found nothing; splice-in = socket to pipe, splice-out = pipe to socket;")
    print("rmmsg/smmsg = recvmmsg/sendmmsg calls, dgr/... = datagrams per such call)")
    h = (f"{'target':<10} {'workload':<11} {'sys/u':>6} {'wakes/u':>7} {'ev/wake':>7} {'reads/u':>7} {'B/read':>7}"
         f" {'EAGAIN%':>7} {'writes/u':>8} {'B/write':>7} {'spl-in/u':>8} {'B/spl-in':>8} {'spl-out/u':>9} {'B/spl-out':>9}"
         f" {'rmmsg/u':>7} {'dgr/rmmsg':>9} {'smmsg/u':>7} {'dgr/smmsg':>9}  others/u")
    print(h)
    print("-" * len(h))
    for e in ex:
        if e.get("error"):
            print(f"{e['target']:<10} {e['workload']:<11} {e['error']}")
            continue
        print(f"{e['target']:<10} {e['workload']:<11} {_fmt(e['total_per_unit'], '>6.2f'):>6} {e['epoll_wait']:>7.3f}"
              f" {_fmt(e['events_per_wait'], '>7.2f'):>7} {e['reads']:>7.3f} {_fmt(e['bytes_per_read'], '>7.0f'):>7}"
              f" {_fmt(e['reads_failed_pct'], '>6.1f'):>7} {e['writes']:>8.3f} {_fmt(e['bytes_per_write'], '>7.0f'):>7}"
              f" {e['splice_in']:>8.3f} {_fmt(e['bytes_per_splice_in'], '>8.0f'):>8} {e['splice_out']:>9.3f}"
              f" {_fmt(e['bytes_per_splice_out'], '>9.0f'):>9} {e.get('recvmmsg', 0):>7.3f}"
              f" {_fmt(e.get('dgrams_per_recvmmsg'), '>9.1f'):>9} {e.get('sendmmsg', 0):>7.3f}"
              f" {_fmt(e.get('dgrams_per_sendmmsg'), '>9.1f'):>9}  "
              + (", ".join(f"{k} {v:.2f}" for k, v in e.get("others", [])) or "-"))


def _report_machine(mc):
    if not mc:
        return
    keys = []
    for m in mc:
        for k in (m.get("per_unit") or {}):
            if k not in keys:
                keys.append(k)
    print()
    print("Whole machine, perf stat -a during one extra run per workload and target (IPv4), per request or")
    print("delivered datagram (cpu-clock in microseconds; both cores, wrk and the backend included)")
    short = {"cpu-clock": "cpu us", "context-switches": "ctxsw", "cpu-migrations": "migr", "page-faults": "faults",
             "irq:softirq_entry": "softirqs", "net:netif_receive_skb": "rx skbs", "sched:sched_wakeup": "wakeups",
             "instructions": "instr", "cycles": "cycles"}
    h = f"{'target':<10} {'workload':<11} " + " ".join(f"{short.get(k, k):>9}" for k in keys)
    print(h)
    print("-" * len(h))
    for m in mc:
        if m.get("error"):
            print(f"{m['target']:<10} {m['workload']:<11} {m['error']}")
            continue
        pu = m["per_unit"]
        cells = []
        for k in keys:
            v = pu.get(k)
            if k == "cpu-clock" and v is not None:
                v *= 1000  # msec -> usec
            cells.append(f"{_fmt(v, '>9.2f' if v is None or v < 1000 else '>9.0f'):>9}")
        print(f"{m['target']:<10} {m['workload']:<11} " + " ".join(cells))


def _report_udp_rss(ur):
    if not ur:
        return
    print()
    n = ur[0].get("count")
    print(f"RSS with {n} idle UDP flows through each proxy (a fresh proxy per line; each of {n} client sockets sent")
    print("one datagram and stays open; 'flows' = distinct sources that reached the backend, one per flow the")
    print("proxy made; VmRSS summed over the proxy's processes, after minus before, per flow)")
    h = f"{'target':<10} {'procs':>5} {'flows':>6} {'RSS before':>10} {'RSS after':>10} {'B/flow':>8}  notes"
    print(h)
    print("-" * len(h))
    for r in ur:
        if r.get("error"):
            print(f"{r.get('target', '?'):<10} {r['error']}")
            continue
        notes = []
        if r["failed"]:
            notes.append(f"{r['failed']} sockets failed")
        if r["flows_at_backend"] < r["opened"]:
            notes.append(f"only {r['flows_at_backend']} of {r['opened']} clients got a flow")
        if r["passes"] > 1:
            notes.append(f"{r['passes']} passes of datagrams")
        print(f"{r['target']:<10} {r['processes']:>5} {r['flows_at_backend']:>6} {r['rss_before_kb']:>7} KB {r['rss_after_kb']:>7} KB"
              f" {_fmt(r['bytes_per_flow'], '>8.0f')}  {'; '.join(notes)}".rstrip())


def cmd_report(a):
    results = [r for r in _load(a.results) if not r.get("failed")]
    failed = [r for r in _load(a.results) if r.get("failed")]
    if a.header and os.path.exists(a.header):
        with open(a.header) as f:
            sys.stdout.write(f.read())
    med = _medians(results)
    cmp_ = _compare(med)
    summary = cmp_
    _report_tcp(med, cmp_)
    _report_udp(med, cmp_)
    rounds = sorted({r.get("round") for r in results})
    print(f"({len(results)} runs in {len(rounds)} round(s))")
    _report_baseline(med)
    errs = [r for r in results if r.get("error_lines")]
    if errs or failed:
        print("errors:")
        for r in errs:
            print(f"  round {r.get('round')} {r['workload']} {r['family']} {r['target']}: " + "; ".join(r["error_lines"]))
        for r in failed:
            print(f"  round {r.get('round')} {r['workload']} {r['family']} {r['target']}: FAILED {r['failed']}")

    sc = _load(a.syscalls)
    if sc:
        print()
        tool = sc[0].get("tool")
        print(f"Syscalls per request, small keep-alive, IPv4, one extra wrk pass per proxy with {tool} attached")
        print("(" + ("perf stat -e raw_syscalls:sys_enter (the total) and syscalls:sys_enter_<name> for the"
                     " syscalls a relay makes, -p PIDS: counted in the kernel, little slowdown"
                     if tool == "perf" else "strace -c -f -p PID: ptrace stops slow the proxy down a lot, so it batches more;"
                     " the per-request ratio is what matters") + ")")
        h = (f"{'target':<10} {'requests':>9} {'req/s':>8} {'total/req':>9} {'read/recv':>9} {'write/send':>10}"
             f" {'epoll_wait':>10} {'epoll_ctl':>9} {'splice':>7}  others (per request)")
        print(h)
        print("-" * len(h))
        for s in sc:
            if s.get("error"):
                print(f"{s['target']:<10} {s['error']}")
                continue
            req = s["requests"]
            known = READS | WRITES | EPOLL_WAIT | {"epoll_ctl", "splice"}
            others = sorted(((v, k) for k, v in s["counts"].items() if k not in known), reverse=True)
            ot = ", ".join(f"{k} {v/req:.3f}" for v, k in others[:4] if v / req >= 0.001) or "-"
            print(f"{s['target']:<10} {req:>9} {s['rps']:>8.0f} {s['per_req']:>9.2f} {s['read']:>9.2f} {s['write']:>10.2f}"
                  f" {s['epoll_wait']:>10.3f} {s['epoll_ctl']:>9.3f} {s['splice']:>7.3f}  {ot}")
    ex = _load(a.explain)
    _report_explain(ex)
    mc = _load(a.machine)
    _report_machine(mc)

    rss = _load(a.rss)
    if rss:
        print()
        n = rss[0].get("count")
        print(f"RSS with {n} idle connections through each proxy (a fresh proxy per line; VmRSS summed over all")
        print("of its processes, after minus before; silent = connect and send nothing, partial = send an incomplete")
        print("HTTP request; 'at backend' = proxy-to-backend connections seen established)")
        h = f"{'target':<10} {'mode':<8} {'procs':>5} {'RSS before':>10} {'RSS after':>10} {'KB/conn':>8} {'at backend':>10}  notes"
        print(h)
        print("-" * len(h))
        for r in rss:
            if r.get("error"):
                print(f"{r.get('target', '?'):<10} {r.get('mode', ''):<8} {r['error']}")
                continue
            notes = []
            if r["failed"]:
                notes.append(f"{r['failed']} connects failed")
            if r["closed_by_proxy"]:
                notes.append(f"{r['closed_by_proxy']} closed by the proxy")
            print(f"{r['target']:<10} {r['mode']:<8} {r['processes']:>5} {r['rss_before_kb']:>8} KB {r['rss_after_kb']:>7} KB"
                  f" {_fmt(r['kb_per_conn'], '>8.2f')} {r['reached_backend']:>10}  {'; '.join(notes)}".rstrip())
    ur = _load(a.udp_rss)
    _report_udp_rss(ur)

    # dualproxy against its targets (GOALS)
    if any(k[2] == "dualproxy" for k in summary):
        tl = [f"  {'workload':<11} {'fam':<3} {'metric':<6} {'x best peer':>11} {'target':>7} {'':<7}"
              f" {'p99 x peer':>10} {'(<= 1.00)':<9} {'CPU x most frugal peer':>21}"]
        for wl, prim, _ in WORKLOADS:
            if wl not in GOALS:
                continue
            goal, frugal = GOALS[wl]
            for fam in ("v4", "v6"):
                v = summary.get((wl, fam, "dualproxy"))
                if not v or v[0] is None:
                    continue
                metric = {"mbps": "MB/s", "pps": "dgr/s"}.get(prim, "req/s")
                p99 = "-" if v[1] is None else ("met" if v[1] <= 1.0 else "NOT met")
                cpu = ("met" if v[3] is not None and v[3] < 1.0 else "NOT met") if frugal else ""
                p99x = "-" if v[1] is None else format(v[1], ".2f") + "x"
                tl.append(f"  {wl:<11} {fam:<3} {metric:<6} {v[0]:>10.3f}x {'>= ' + format(goal, '.2f'):>7}"
                          f" {'met' if v[0] >= goal else 'NOT met':<7} {p99x:>10}"
                          f" {p99:<9} {_fmt(v[3], '.2f'):>20}x {cpu:<7}".rstrip())
        if len(tl) == 1:
            tl = []
        d = [r for r in rss if r.get("target") == "dualproxy" and r.get("kb_per_conn") is not None]
        h = [r for r in rss if r.get("target") == "haproxy" and r.get("kb_per_conn") is not None]
        for mode in ("silent", "partial"):
            dm = [r for r in d if r["mode"] == mode]
            hm = [r for r in h if r["mode"] == mode]
            if dm and hm:
                ratio = dm[0]["kb_per_conn"] / hm[0]["kb_per_conn"] if hm[0]["kb_per_conn"] > 0 else None
                tl.append(f"  idle RSS ({mode}) dualproxy {dm[0]['kb_per_conn']:.2f} KB/conn, haproxy {hm[0]['kb_per_conn']:.2f} KB/conn"
                          f" -> {_fmt(ratio, '.2f')}x   target <= 0.50x  {'met' if ratio is not None and ratio <= 0.5 else 'NOT met'}")
        for s in sc:
            if s.get("target") == "dualproxy" and not s.get("error"):
                tl.append(f"  syscalls per small keep-alive request: {s['per_req']:.2f} (read {s['read']:.2f}, write {s['write']:.2f},"
                          f" epoll_wait {s['epoll_wait']:.3f})   target about 4")
        if tl:
            print()
            print("dualproxy against its targets (x best peer; CPU per request below every peer's on "
                  "keep-alive; medians of this run):")
            print("\n".join(tl))
    _report_markdown(med, cmp_)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": _load(a.results), "syscalls": sc, "explain": ex, "machine": mc, "rss": rss,
                       "udp_rss": ur}, f, indent=1)
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ports"); s.add_argument("n", type=int); s.add_argument("--v6", action="store_true")
    s = sub.add_parser("check"); s.add_argument("url"); s.add_argument("size", type=int)
    s.add_argument("--wait", type=float, default=10)
    s = sub.add_parser("udpcheck"); s.add_argument("host"); s.add_argument("port", type=int)
    s.add_argument("--wait", type=float, default=5)
    s = sub.add_parser("pids"); s.add_argument("root", type=int)
    s = sub.add_parser("rss"); s.add_argument("root", type=int)
    s = sub.add_parser("run")
    s.add_argument("--meta", required=True); s.add_argument("--out", required=True); s.add_argument("--log", required=True)
    s.add_argument("--pids", default=""); s.add_argument("--backend-pids", default=""); s.add_argument("--status-url", default="")
    s.add_argument("--fd-watch", default=""); s.add_argument("--fd-out", default="")
    s.add_argument("wrk", nargs=argparse.REMAINDER)
    s = sub.add_parser("iperf")
    s.add_argument("--meta", required=True); s.add_argument("--out", required=True); s.add_argument("--log", required=True)
    s.add_argument("--pids", default=""); s.add_argument("--backend-pids", default=""); s.add_argument("--len", type=int, required=True)
    s.add_argument("--fd-watch", default=""); s.add_argument("--fd-out", default="")
    s.add_argument("iperf", nargs=argparse.REMAINDER)
    s = sub.add_parser("idle")
    s.add_argument("--host", required=True); s.add_argument("--port", type=int, required=True)
    s.add_argument("--backend-port", type=int, required=True); s.add_argument("--count", type=int, default=5000)
    s.add_argument("--mode", choices=("silent", "partial"), default="silent")
    s.add_argument("--pid", type=int, required=True); s.add_argument("--target", default="?")
    s = sub.add_parser("udpidle")
    s.add_argument("--host", required=True); s.add_argument("--port", type=int, required=True)
    s.add_argument("--sink-port", type=int, required=True); s.add_argument("--count", type=int, default=10000)
    s.add_argument("--pid", type=int, required=True); s.add_argument("--target", default="?")
    s = sub.add_parser("syscalls")
    s.add_argument("--tool", choices=("perf", "strace"), required=True); s.add_argument("--file", required=True)
    s.add_argument("--result", required=True); s.add_argument("--target", required=True); s.add_argument("--out", required=True)
    s = sub.add_parser("explain")
    s.add_argument("--tool", choices=("perf", "strace"), required=True); s.add_argument("--file", required=True)
    s.add_argument("--stat"); s.add_argument("--result", required=True); s.add_argument("--target", required=True)
    s.add_argument("--workload", required=True); s.add_argument("--fds"); s.add_argument("--out", required=True)
    s = sub.add_parser("machine")
    s.add_argument("--file", required=True); s.add_argument("--result", required=True); s.add_argument("--target", required=True)
    s.add_argument("--workload", required=True); s.add_argument("--out", required=True)
    s = sub.add_parser("tlsprobe"); s.add_argument("--log", required=True)
    s = sub.add_parser("report")
    s.add_argument("--results", required=True); s.add_argument("--syscalls"); s.add_argument("--rss")
    s.add_argument("--udp-rss"); s.add_argument("--explain"); s.add_argument("--machine")
    s.add_argument("--header"); s.add_argument("--json")
    a = p.parse_args()
    for k in ("wrk", "iperf"):
        v = getattr(a, k, None)
        if v and v[0] == "--":
            setattr(a, k, v[1:])
    return {"ports": cmd_ports, "check": cmd_check, "udpcheck": cmd_udpcheck, "pids": cmd_pids, "rss": cmd_rss,
            "run": cmd_run, "iperf": cmd_iperf, "idle": cmd_idle, "udpidle": cmd_udpidle, "syscalls": cmd_syscalls,
            "explain": cmd_explain, "machine": cmd_machine, "tlsprobe": cmd_tlsprobe, "report": cmd_report}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
