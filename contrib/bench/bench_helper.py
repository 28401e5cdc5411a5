#!/usr/bin/env python3
"""bench_helper.py: the parts of contrib/bench/bench.sh that are easier in Python.

Standard library only.  Subcommands:

  ports N [--v6]              N distinct TCP ports free on 127.0.0.1 (and ::1)
  check URL SIZE [--wait S]   GET URL until it answers 200 with SIZE body bytes
  pids ROOT                   ROOT and all its descendants, comma-separated
  rss ROOT                    summed VmRSS (KB) of ROOT and its descendants
  run --meta JSON --out F --log F [--pids P] [--backend-pids P] -- wrk ...
                              run wrk once, sample the CPU time of the proxy and
                              backend processes, append one JSON result to F
  idle --host H --port P --backend-port B --count N --mode silent|partial --pid ROOT
                              RSS per idle connection through a proxy (JSON line)
  syscalls --tool perf|strace --file F --result F --target NAME --out F
                              syscall counts per request (JSON line appended)
  report --results F [--syscalls F] [--rss F] [--header F] [--json F]
                              the tables
"""

import argparse
import http.client
import json
import os
import resource
import signal
import socket
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
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        total += int(rest[11]) + int(rest[12])  # utime, stime
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
    got, held = [], []
    while len(got) < a.n:
        s4 = socket.socket()
        s4.bind(("127.0.0.1", 0))
        port = s4.getsockname()[1]
        ok = port not in got
        if ok and a.v6:
            s6 = socket.socket(socket.AF_INET6)
            try:
                s6.bind(("::1", port))
                held.append(s6)
            except OSError:
                ok = False
                s6.close()
        held.append(s4)  # keep it bound so the next bind(0) gives another port
        if ok:
            got.append(port)
    for s in held:
        s.close()
    print(" ".join(map(str, got)))


def cmd_check(a):
    deadline = time.time() + a.wait
    last = "no attempt"
    while True:
        try:
            u = a.url.split("://", 1)[1]
            hostport, path = u.split("/", 1)
            if hostport.startswith("["):
                host, port = hostport[1:].split("]:")
            else:
                host, port = hostport.rsplit(":", 1)
            c = http.client.HTTPConnection(host, int(port), timeout=5)
            c.request("GET", "/" + path)
            r = c.getresponse()
            body = r.read()
            c.close()
            if r.status == 200 and len(body) == a.size:
                return 0
            last = f"status {r.status}, {len(body)} bytes (want 200, {a.size})"
        except (OSError, http.client.HTTPException, ValueError) as e:
            last = f"{type(e).__name__}: {e}"
        if time.time() > deadline:
            print(f"check {a.url}: {last}", file=sys.stderr)
            return 1
        time.sleep(0.1)


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


def cmd_run(a):
    global _child
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    meta = json.loads(a.meta)
    ppids, bpids = pids_of(a.pids), pids_of(a.backend_pids)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0, b0, m0, t0 = cpu_ticks(ppids), cpu_ticks(bpids), busy_ticks(), time.monotonic()
    _child = subprocess.Popen(a.wrk, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = _child.communicate()
    t1 = time.monotonic()
    c1, b1, m1 = cpu_ticks(ppids), cpu_ticks(bpids), busy_ticks()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_s = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    with open(a.log, "a") as f:
        f.write(f"### {json.dumps(meta)}\n$ {' '.join(a.wrk)}\n{out}\n")
    res = dict(meta)
    parsed = None
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            parsed = json.loads(line[8:])
    if _child.returncode != 0 or parsed is None:
        res["failed"] = f"wrk exited {_child.returncode}: " + " | ".join(out.strip().splitlines()[-3:])
        print(f"  !! {meta.get('workload')} {meta.get('family')} {meta.get('target')}: {res['failed']}")
    else:
        res.update(parsed)
        dur = parsed["duration_us"] / 1e6
        res["rps"] = parsed["requests"] / dur if dur > 0 else 0.0
        res["mbps"] = parsed["bytes"] / dur / 1e6 if dur > 0 else 0.0
        wall = t1 - t0
        res["cpu_pct"] = 100.0 * (c1 - c0) / CLK_TCK / wall if ppids else None
        # CPU time of the target per request: less sensitive to other tenants than req/s
        res["cpu_us_per_req"] = 1e6 * (c1 - c0) / CLK_TCK / parsed["requests"] if ppids and parsed["requests"] else None
        res["be_cpu_pct"] = 100.0 * (b1 - b0) / CLK_TCK / wall if bpids else None
        res["wrk_cpu_pct"] = 100.0 * wrk_s / wall
        # softirq time (loopback packet processing: ours, mostly) and everything else
        # the machine did meanwhile outside our processes (other tenants: noise)
        res["sirq_cpu_pct"] = 100.0 * (m1[1] - m0[1]) / CLK_TCK / wall
        res["other_cpu_pct"] = max(0.0, 100.0 * ((m1[0] - m0[0]) - (c1 - c0) - (b1 - b0)) / CLK_TCK / wall
                                   - res["wrk_cpu_pct"])
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
        if errs:
            line += "  ERRORS: " + "; ".join(res["error_lines"]) if res["error_lines"] else f"  ERRORS {errs}"
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


# ---------------------------------------------------------------- report
WORKLOADS = [("small-ka", "rps"), ("small-close", "rps"), ("bulk", "mbps")]
TARGETS = ["direct", "dualproxy", "baseline", "haproxy", "nginx"]
PROXIES = ["dualproxy", "haproxy", "nginx"]  # "baseline" (another dualproxy build) is no peer
GOALS = {"small-ka": 1.3, "small-close": 1.2, "bulk": 1.5}


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


def _report_baseline(med):
    """dualproxy / baseline per workload and family, when --baseline ran."""
    rows = []
    for wl, prim in WORKLOADS:
        for fam in ("v4", "v6"):
            new, old = med.get((wl, fam, "dualproxy")), med.get((wl, fam, "baseline"))
            if new and old:
                rows.append((wl, fam, prim, _ratio(new[prim], old[prim]),
                             _ratio(new["p99_us"], old["p99_us"]),
                             _ratio(new.get("cpu_us_per_req"), old.get("cpu_us_per_req"))))
    if not rows:
        return
    print()
    print("dualproxy / baseline, same run (medians; req/s or MB/s: >1 is better; p99 and CPU per")
    print("request: <1 is better)")
    print(f"{'workload':<11} {'fam':<3} {'metric':<6} {'x baseline':>10} {'p99 x baseline':>14} {'us/req x baseline':>17}")
    for wl, fam, prim, x, p99, cpu in rows:
        metric = "req/s" if prim == "rps" else "MB/s"
        print(f"{wl:<11} {fam:<3} {metric:<6} {_fmt(x, '>9.3f'):>10} {_fmt(p99, '>13.3f'):>14} {_fmt(cpu, '>16.3f'):>17}")


def cmd_report(a):
    results = [r for r in _load(a.results) if not r.get("failed")]
    failed = [r for r in _load(a.results) if r.get("failed")]
    if a.header and os.path.exists(a.header):
        with open(a.header) as f:
            sys.stdout.write(f.read())
    # medians per (workload, family, target)
    agg = {}
    for r in results:
        agg.setdefault((r["workload"], r["family"], r["target"]), []).append(r)
    med = {}
    for key, rs in agg.items():
        m = {"n": len(rs)}
        for k in ("rps", "mbps", "p50_us", "p99_us", "cpu_pct", "be_cpu_pct", "wrk_cpu_pct", "sirq_cpu_pct", "other_cpu_pct", "cpu_us_per_req"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            m[k] = statistics.median(vals) if vals else None
        prim = dict(WORKLOADS)[key[0]]
        vals = [r[prim] for r in rs]
        m["spread"] = (max(vals) - min(vals)) / m[prim] * 100 if m[prim] else None
        m["errors"] = sum(r.get("err_connect", 0) + r.get("err_read", 0) + r.get("err_write", 0)
                          + r.get("err_timeout", 0) + r.get("err_status", 0) for r in rs)
        med[key] = m

    print()
    print("Throughput (median of rounds; ratios use req/s for the small workloads and MB/s for bulk;")
    print("'x peer' = this proxy / the best other proxy, 'x direct' = this proxy / direct,")
    print("'p99 x peer' = this p99 / the lowest other proxy p99 (<1 is better); cpu% = CPU time of the")
    print("target's processes / wall time (100% = one core), us/req = that CPU time per request in microseconds")
    print("(less sensitive to other load than req/s), be% = the nginx backend's CPU, sirq% = softirq time of")
    print("the machine (loopback packet processing, mostly ours), other% = all other CPU use on the machine")
    print("meanwhile, wrk excluded (other tenants: noise; 200% = both cores);")
    print("spread = (max-min)/median of the ratio metric over the rounds)")
    hdr = (f"{'workload':<11} {'fam':<3} {'target':<10} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'MB/s':>8}"
           f" {'cpu%':>5} {'us/req':>7} {'be%':>4} {'sirq%':>5} {'other%':>6} {'spread':>6} {'x peer':>7} {'x direct':>8} {'p99 x peer':>10} {'errors':>6}")
    print(hdr)
    print("-" * len(hdr))
    summary = {}
    for wl, prim in WORKLOADS:
        for fam in ("v4", "v6"):
            rows = [(t, med.get((wl, fam, t))) for t in TARGETS]
            if not any(m for _, m in rows):
                continue
            direct = med.get((wl, fam, "direct"))
            for t, m in rows:
                if m is None:
                    continue
                xpeer = xdirect = p99peer = None
                if t in PROXIES:
                    others = [med[(wl, fam, o)] for o in PROXIES if o != t and (wl, fam, o) in med]
                    if others:
                        best = max(o[prim] for o in others)
                        xpeer = m[prim] / best if best else None
                        bestp99 = min(o["p99_us"] for o in others)
                        p99peer = m["p99_us"] / bestp99 if bestp99 else None
                    if direct and direct[prim]:
                        xdirect = m[prim] / direct[prim]
                    cpupeer = None
                    frugal = [o["cpu_us_per_req"] for o in others if o.get("cpu_us_per_req")]
                    if frugal and m.get("cpu_us_per_req"):
                        cpupeer = m["cpu_us_per_req"] / min(frugal)
                    summary[(wl, fam, t)] = (xpeer, p99peer, xdirect, cpupeer)
                print(f"{wl:<11} {fam:<3} {t:<10} {m['rps']:>9.0f} {m['p50_us']/1000:>7.2f} {m['p99_us']/1000:>7.2f}"
                      f" {m['mbps']:>8.1f} {_fmt(m['cpu_pct'], '>4.0f'):>5} {_fmt(m['cpu_us_per_req'], '>6.1f'):>7}"
                      f" {_fmt(m['be_cpu_pct'], '>3.0f'):>4} {_fmt(m['sirq_cpu_pct'], '>4.0f'):>5} {_fmt(m['other_cpu_pct'], '>5.0f'):>6}"
                      f" {_fmt(m['spread'], '>5.1f')+'%':>6} {_fmt(xpeer, '>6.2f'):>7} {_fmt(xdirect, '>7.2f'):>8}"
                      f" {_fmt(p99peer, '>9.2f'):>10} {m['errors'] if m['errors'] else '':>6}".rstrip())
            print()
    rounds = sorted({r.get("round") for r in results})
    print(f"({len(results)} runs in {len(rounds)} round(s))")
    _report_baseline(med)
    errs = [r for r in results if r.get("error_lines")]
    if errs or failed:
        print("wrk errors:")
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

    # issue 6 targets, for dualproxy
    if any(k[2] == "dualproxy" for k in summary):
        tl = [f"  {'workload':<11} {'fam':<3} {'metric':<6} {'x best peer':>11} {'target':>7} {'':<7}"
              f" {'p99 x peer':>10} {'(<= 1.00)':<9} {'CPU/req x most frugal peer':>26}"]
        for wl, prim in WORKLOADS:
            for fam in ("v4", "v6"):
                v = summary.get((wl, fam, "dualproxy"))
                if not v or v[0] is None:
                    continue
                metric = "MB/s" if prim == "mbps" else "req/s"
                tl.append(f"  {wl:<11} {fam:<3} {metric:<6} {v[0]:>10.2f}x {'>= ' + format(GOALS[wl], '.1f'):>7}"
                          f" {'met' if v[0] >= GOALS[wl] else 'NOT met':<7} {_fmt(v[1], '.2f'):>9}x"
                          f" {'met' if v[1] is not None and v[1] <= 1.0 else 'NOT met':<9} {_fmt(v[3], '.2f'):>25}x")
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
            print("dualproxy against the targets of issue 6 (x best peer; medians of this run):")
            print("\n".join(tl))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": _load(a.results), "syscalls": sc, "rss": rss}, f, indent=1)
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ports"); s.add_argument("n", type=int); s.add_argument("--v6", action="store_true")
    s = sub.add_parser("check"); s.add_argument("url"); s.add_argument("size", type=int)
    s.add_argument("--wait", type=float, default=10)
    s = sub.add_parser("pids"); s.add_argument("root", type=int)
    s = sub.add_parser("rss"); s.add_argument("root", type=int)
    s = sub.add_parser("run")
    s.add_argument("--meta", required=True); s.add_argument("--out", required=True); s.add_argument("--log", required=True)
    s.add_argument("--pids", default=""); s.add_argument("--backend-pids", default="")
    s.add_argument("wrk", nargs=argparse.REMAINDER)
    s = sub.add_parser("idle")
    s.add_argument("--host", required=True); s.add_argument("--port", type=int, required=True)
    s.add_argument("--backend-port", type=int, required=True); s.add_argument("--count", type=int, default=5000)
    s.add_argument("--mode", choices=("silent", "partial"), default="silent")
    s.add_argument("--pid", type=int, required=True); s.add_argument("--target", default="?")
    s = sub.add_parser("syscalls")
    s.add_argument("--tool", choices=("perf", "strace"), required=True); s.add_argument("--file", required=True)
    s.add_argument("--result", required=True); s.add_argument("--target", required=True); s.add_argument("--out", required=True)
    s = sub.add_parser("report")
    s.add_argument("--results", required=True); s.add_argument("--syscalls"); s.add_argument("--rss")
    s.add_argument("--header"); s.add_argument("--json")
    a = p.parse_args()
    if a.cmd == "run" and a.wrk and a.wrk[0] == "--":
        a.wrk = a.wrk[1:]
    return {"ports": cmd_ports, "check": cmd_check, "pids": cmd_pids, "rss": cmd_rss, "run": cmd_run,
            "idle": cmd_idle, "syscalls": cmd_syscalls, "report": cmd_report}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
