#!/usr/bin/env bash
# contrib/bench/reload.sh: how long a reload holds the event loop, and what it costs in
# memory, by number of sections.
#
#   contrib/bench/reload.sh [--binary PATH] [--baseline PATH] [--rounds R] [SECTIONS...]
#
# For each number of sections (default: 100 1500 10000 20000) it writes two
# configuration files of that many services, A and B, that differ in every
# backend (so a reload replaces every service and keeps every listener), each
# service on a port of its own: `listen = PORT` (0.0.0.0 and [::], two sockets)
# while the descriptor limit has room for that, else `listen = 127.0.0.1:PORT`
# (one socket), in the compact form a 20,000-service file needs to stay under
# the 1 MiB limit. Then:
#   - `-t` on A: the time of the whole check (best of R), and its peak RSS;
#   - dualproxy started on A; R reloads alternating B and A (rename, then
#     SIGHUP): the time from the SIGHUP to the "reload:" line on stderr (the
#     median and the worst), and the time the daemon itself logs for reading,
#     checking and applying the file (log_level = debug);
#   - RSS after start-up, after the reloads, and the peak (VmHWM);
#   - a reload to a file of 100 services: the RSS after it (what a big
#     configuration leaves behind once it is replaced).
# The table has one row per size and binary. A size whose listeners do not fit
# in the hard descriptor limit (or whose file would exceed 1 MiB with one
# socket per service) gets the -t figures only.
#
# Run as root it runs in a network namespace of its own (unshare -n: every port
# is free and nothing else is disturbed); otherwise it uses the host's ports
# from --port (default 20000) on.
#
# Options:
#   --binary PATH     dualproxy (default: src/dualproxy of this tree)
#   --baseline PATH   another build (say, of main) measured the same way, in its own rows
#   --rounds R        reloads and -t runs per size (default 10)
#   --port P          first port (default 20000)
#   --keep DIR        keep the files and logs in DIR
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
binary="$top/src/dualproxy"
baseline=""
rounds=10
port=20000
keep=""
sizes=()

while [ $# -gt 0 ]; do
	case "$1" in
	--binary) binary=$2; shift 2 ;;
	--baseline) baseline=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--port) port=$2; shift 2 ;;
	--keep) keep=$2; shift 2 ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	--*) echo "reload.sh: unknown option $1" >&2; exit 64 ;;
	*) sizes+=("$1"); shift ;;
	esac
done
[ ${#sizes[@]} -gt 0 ] || sizes=(100 1500 10000 20000)
python=/usr/bin/python3
[ -x "$python" ] || python=python3

if [ "$(id -u)" = 0 ] && [ -z "${DUALPROXY_BENCH_NETNS:-}" ] && command -v unshare >/dev/null; then
	# a network namespace of its own, with lo up, and room for 2 sockets per service
	export DUALPROXY_BENCH_NETNS=1
	args=(--binary "$binary" --rounds "$rounds" --port "$port")
	[ -n "$baseline" ] && args+=(--baseline "$baseline")
	[ -n "$keep" ] && args+=(--keep "$keep")
	exec unshare -n sh -c 'ip link set lo up && exec "$@"' sh \
		"$0" "${args[@]}" "${sizes[@]}"
fi

work=${keep:-$(mktemp -d)}
mkdir -p "$work"
chmod 755 "$work"
[ -n "$keep" ] || trap 'rm -rf "$work"' EXIT

"$python" - "$work" "$rounds" "$port" "$binary" "${baseline:-}" "${sizes[@]}" <<'PY'
import os, re, resource, signal, statistics, subprocess, sys, threading, time

work, rounds, port0, binary, baseline = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    sys.argv[4], sys.argv[5]
sizes = [int(x) for x in sys.argv[6:]]
binaries = [("dualproxy", binary)] + ([("baseline", baseline)] if baseline else [])


LIMIT = 1024 * 1024
FDS = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # the daemon raises its soft limit to it
SPARE = 100  # descriptors besides the listeners


def text_of(n, version, form):
    out = ["[global]", "log_level = debug", "user = nobody", "max_connections = 100"]
    for i in range(n):
        out.append("[s%d]\nlisten=%s\nbackend4=10.%d.%d.%d:80"
                   % (i, form.format(port0 + i), version, i // 250, i % 250 + 1))
    return "\n".join(out) + "\n"


def listen_form(n):
    """'{}' for a bare port (two sockets), '127.0.0.1:{}' (one), or None: no room."""
    if 2 * n + SPARE <= FDS:
        return "{}"
    if n + SPARE <= FDS and len(text_of(n, 1, "127.0.0.1:{}")) <= LIMIT:
        return "127.0.0.1:{}"
    return None


def write(path, n, version, form="{}"):
    """n services, each on its own port; version picks the backends."""
    text = text_of(n, version, form)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)
    return len(text)


def status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0  # MiB
    return float("nan")


def check_time(bin_, path):
    best, peak = None, 0
    for _ in range(max(1, min(rounds, 5))):
        start = time.monotonic()
        r = subprocess.run(["/usr/bin/time", "-f", "%M", bin_, "-t", "-c", path],
                           capture_output=True, text=True)
        took = time.monotonic() - start
        if r.returncode != 0:
            raise SystemExit("%s -t -c %s failed:\n%s" % (bin_, path, r.stderr))
        peak = max(peak, int(r.stderr.strip().splitlines()[-1]) / 1024.0)
        best = took if best is None else min(best, took)
    return best * 1000, peak


class Daemon:
    def __init__(self, bin_, path, log):
        self.lines, self.cond, self.binary = [], threading.Condition(), bin_
        self.log = open(log, "w")
        self.proc = subprocess.Popen([bin_, "-c", path], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace")
            self.log.write(line)
            with self.cond:
                self.lines.append((time.monotonic(), line))
                self.cond.notify_all()

    def wait(self, pattern, since, timeout=120):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(since, len(self.lines)):
                    if rx.search(self.lines[i][1]):
                        return self.lines[i]
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("no /%s/ in the log: %s (exit status %s)"
                                     % (pattern, self.log.name, self.proc.poll()))
                self.cond.wait(1)

    def ready(self):
        """Waits until the loop runs and its log is written out. With
        thousands of listeners, start-up logs more lines than stderr's buffer
        holds, and lines logged while it is full (even "ready") are dropped:
        so the log must have gone quiet, then a SIGHUP (an unchanged file)
        answers once the loop runs."""
        deadline = time.monotonic() + 600
        while not self.handles_sighup():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("dualproxy did not start: %s" % self.log.name)
            time.sleep(0.01)
        for _ in range(10):
            n = -1
            while n != self.mark():
                n = self.mark()
                time.sleep(0.3)
            since = self.mark()
            self.proc.send_signal(signal.SIGHUP)
            try:
                self.wait(r"reload: \d+ added|reload failed", since, timeout=10)
                return
            except SystemExit:
                pass
        raise SystemExit("dualproxy does not answer SIGHUP: %s" % self.log.name)

    def handles_sighup(self):
        """True once the daemon (not the forked interpreter before exec, which
        blocks every signal) catches SIGHUP."""
        try:
            if os.path.realpath("/proc/%d/exe" % self.proc.pid) != os.path.realpath(self.binary):
                return False
            with open("/proc/%d/status" % self.proc.pid) as f:
                caught = [l.split(":", 1)[1] for l in f if l.startswith("SigCgt")]
        except OSError:
            return False
        return bool(caught) and int(caught[0], 16) & 1 == 1  # bit 0: SIGHUP

    def mark(self):
        with self.cond:
            return len(self.lines)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.reader.join(10)  # the last lines, then end of file
        self.log.close()


rows = []
for n in sizes:
    a, b, small = (os.path.join(work, "%s-%d.ini" % (v, n)) for v in ("a", "b", "small"))
    size = write(a, n, 1)
    cfg = os.path.join(work, "dualproxy-%d.ini" % n)
    form = listen_form(n)
    for name, bin_ in binaries:
        t_check, rss_check = check_time(bin_, a)
        if form is None:
            rows.append((name, n, "-", size, t_check, rss_check) + (float("nan"),) * 7)
            continue
        write(cfg, n, 1, form)
        d = Daemon(bin_, cfg, os.path.join(work, "%s-%d.log" % (name, n)))
        d.ready()
        rss_start = status(d.proc.pid, "VmRSS")
        times, inside = [], []
        for r in range(rounds):
            write(cfg, n, 2 if r % 2 == 0 else 1, form)
            since = d.mark()
            start = time.monotonic()
            d.proc.send_signal(signal.SIGHUP)
            at, line = d.wait(r"reload: \d+ added|reload failed", since, timeout=600)
            if "failed" in line:
                raise SystemExit("reload failed: see %s" % d.log.name)
            times.append((at - start) * 1000)
            with d.cond:
                for _, l in d.lines[since:]:
                    m = re.search(r"applied in ([\d.]+) ms", l)
                    if m:
                        inside.append(float(m.group(1)))
        rss_after = status(d.proc.pid, "VmRSS")
        peak = status(d.proc.pid, "VmHWM")
        # back to a small file: what the big one leaves behind
        write(small, 100, 3)
        os.rename(small, cfg)
        d.proc.send_signal(signal.SIGHUP)
        d.ready()  # it logs a line per closed listener: wait for them to be written
        rss_small = status(d.proc.pid, "VmRSS")
        d.stop()
        rows.append((name, n, form.format("P"), size, t_check, rss_check,
                     statistics.median(times), max(times),
                     statistics.median(inside) if inside else float("nan"),
                     rss_start, rss_after, peak, rss_small))

head = ("binary", "sections", "listen", "file KiB", "-t ms", "-t peak MiB", "reload ms (median)",
        "reload ms (worst)", "in loop ms", "RSS start MiB", "RSS after MiB",
        "peak RSS MiB", "RSS after 100 MiB")
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for r in rows:
    print("| %s | %d | %s | %.0f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |"
          % (r[0], r[1], r[2], r[3] / 1024.0, *r[4:]))
print("\n%d reloads per size; reload ms: SIGHUP to the \"reload:\" line; in loop: the "
      "daemon's own \"applied in\" figure (nan: a build that does not log it); nan in "
      "the reload columns: the listeners do not fit in the descriptor limit (%d)."
      % (rounds, FDS))
PY
