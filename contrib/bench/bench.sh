#!/usr/bin/env bash
# contrib/bench/bench.sh: dualproxy against HAProxy and nginx stream, with wrk, on loopback.
#
#   contrib/bench/bench.sh [--duration S] [--connections N] [--threads T]
#                          [--family 4|6|both] [--binary PATH] [options below]
#
# It starts, each with its own temporary directory and free ports:
#   - an nginx HTTP backend on 127.0.0.1 and [::1] serving /small.bin (128 bytes)
#     and /1m.bin (1 MiB), keep-alive with a practically unlimited keepalive_requests;
#   - dualproxy in front of it (log_level warning, backend4 = 127.0.0.1, backend6 = [::1]);
#   - HAProxy in tcp mode, option splice-auto, nbthread 1 (dualproxy is one thread);
#   - nginx stream { proxy_pass } with worker_processes 1.
# Every proxy listens on 127.0.0.1 and [::1] and sends each family to the backend
# address of the same family.  Then, in --rounds rounds (interleaved: every round
# runs every combination once, the targets in a rotating order), wrk measures
#   small-ka     GET /small.bin, keep-alive
#   small-close  GET /small.bin with "Connection: close" (one connection per request)
#   bulk         GET /1m.bin, keep-alive
# directly against the backend and through each proxy, over IPv4 and IPv6, and
# prints the medians: req/s, p50, p99, MB/s (10^6 bytes/s as wrk received them,
# headers included), the CPU used by the target and by the backend, and each
# proxy's ratio to the best other proxy and to direct.
# Then: syscalls per request of each proxy on small-ka over IPv4 (one extra wrk
# pass with `perf stat -e 'syscalls:sys_enter_*'`, or `strace -c -f` where perf
# cannot trace), and the RSS per idle connection with --idle connections (5000)
# held open through a freshly started instance of each proxy (IPv4; once sending
# nothing, once a partial HTTP request).
#
# Choices (documented here because they shape the figures):
#   - The backend nginx runs worker_processes 1 (--backend-workers to change it):
#     on a 2-core machine wrk, the proxy and the backend share the cores; one
#     backend worker keeps its share the same for every target, so the targets
#     differ only by the proxy.  "direct" is therefore "one nginx worker, no proxy".
#   - HAProxy nbthread 1 and nginx stream worker_processes 1: the same number of
#     event loops as dualproxy.
#   - Nothing is pinned to a CPU; the scheduler places wrk, the proxy and the
#     backend.  On a noisy box, look at the spread column and use more rounds.
#   - wrk: --timeout 5s, --latency, and bench.lua, which prints the figures as JSON.
#   - Only loopback is used.  The script installs nothing: a missing HAProxy or
#     nginx stream module is skipped with a note (Debian: apt-get install haproxy
#     libnginx-mod-stream; nginx-light itself has no stream module).  nginx (the
#     backend), wrk and python3 are required.
#
# Options:
#   --duration S        seconds per wrk run (default 5)
#   --connections N     wrk connections (default 64)
#   --threads T         wrk threads (default 2)
#   --family 4|6|both   address families (default both)
#   --binary PATH       dualproxy binary (default: src/dualproxy of this tree)
#   --baseline PATH     another dualproxy build (say, of the commit before a change) run
#                       as the target "baseline" in the same interleaved rounds; it is not
#                       a peer, and the report adds dualproxy / baseline ratios
#   --rounds R          rounds (default 3)
#   --targets LIST      comma list out of direct,dualproxy,haproxy,nginx (default all;
#                       without direct there are no "x direct" ratios)
#   --workloads LIST    comma list out of small-ka,small-close,bulk (default all)
#   --backend-workers N worker_processes of the nginx backend (default 1; "auto" allowed)
#   --idle N            idle connections for the RSS test (default 5000; 0 skips it)
#   --syscalls TOOL     auto (perf, else strace), perf, strace, or none (default auto)
#   --out DIR           also keep the report, the raw JSON and all logs in DIR
#   -h, --help          this text
#
# A full default run (2 families x 3 workloads x 4 targets x 3 rounds of 5 s,
# plus the syscall and idle passes) takes about 9 minutes.
# Run as root or not.  Ctrl-C stops everything it started.
set -u
{ # the whole script is one group, parsed before it runs: editing the file meanwhile is harmless

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
helper="$here/bench_helper.py"
lua="$here/bench.lua"
py=${PYTHON:-python3}

duration=5
connections=64
threads=2
family=both
binary=$top/src/dualproxy
baseline=
rounds=3
targets_arg=direct,dualproxy,haproxy,nginx
workloads_arg=small-ka,small-close,bulk
backend_workers=1
idle=5000
syscall_tool=auto
outdir=

usage() { sed -n '2,/^set -u/p' "$0" | sed -e '/^set -u/d' -e 's/^# \{0,1\}//'; }
die() { echo "bench.sh: $*" >&2; exit 2; }
note() { echo "note: $*"; notes+=("$*"); }
notes=()

while [ $# -gt 0 ]; do
	case "$1" in
	--duration) duration=${2:?}; shift 2 ;;
	--connections) connections=${2:?}; shift 2 ;;
	--threads) threads=${2:?}; shift 2 ;;
	--family) family=${2:?}; shift 2 ;;
	--binary) binary=${2:?}; shift 2 ;;
	--baseline) baseline=${2:?}; shift 2 ;;
	--rounds) rounds=${2:?}; shift 2 ;;
	--targets) targets_arg=${2:?}; shift 2 ;;
	--workloads) workloads_arg=${2:?}; shift 2 ;;
	--backend-workers) backend_workers=${2:?}; shift 2 ;;
	--idle) idle=${2:?}; shift 2 ;;
	--syscalls) syscall_tool=${2:?}; shift 2 ;;
	--out) outdir=${2:?}; shift 2 ;;
	-h|--help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done

isnum() { case "$1" in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }
for v in duration connections threads rounds idle; do
	isnum "${!v}" || die "--$v must be a whole number, not '${!v}'"
done
[ "$duration" -ge 1 ] && [ "$rounds" -ge 1 ] && [ "$threads" -ge 1 ] || die "--duration, --rounds and --threads must be at least 1"
[ "$connections" -ge "$threads" ] || die "--connections must be at least --threads (wrk needs one connection per thread)"
case "$family" in 4) fams="v4" ;; 6) fams="v6" ;; both) fams="v4 v6" ;; *) die "--family must be 4, 6 or both" ;; esac
case "$backend_workers" in auto) ;; *) isnum "$backend_workers" && [ "$backend_workers" -ge 1 ] || die "--backend-workers must be a number or auto" ;; esac
case "$syscall_tool" in auto|perf|strace|none) ;; *) die "--syscalls must be auto, perf, strace or none" ;; esac
IFS=, read -r -a targets <<<"$targets_arg"
IFS=, read -r -a workloads <<<"$workloads_arg"
for t in "${targets[@]}"; do case "$t" in direct|dualproxy|haproxy|nginx) ;; *) die "unknown target '$t'" ;; esac; done
for w in "${workloads[@]}"; do case "$w" in small-ka|small-close|bulk) ;; *) die "unknown workload '$w'" ;; esac; done

command -v "$py" >/dev/null || die "python3 is needed"
command -v wrk >/dev/null || die "wrk is needed (Debian: apt-get install wrk)"
command -v nginx >/dev/null || die "nginx is needed for the backend (Debian: apt-get install nginx-light)"
[ -x "$binary" ] || die "no dualproxy binary at $binary (build it, or pass --binary)"
[ -z "$baseline" ] || [ -x "$baseline" ] || die "no dualproxy binary at $baseline (--baseline)"

# every process may hold the 5,000 idle connections and their backend side
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((2 * idle + 1000)) ]; then
	note "descriptor limit $(ulimit -n) is low for --idle $idle (need about $((2 * idle + 1000)))"
fi

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dualproxy-bench.XXXXXX") || die "mktemp failed"
chmod 755 "$tmp" # nginx workers run as nobody when started as root
declare -A PID PORT
started=()   # every server PID this script started, in start order
child=       # the foreground helper/wrk/perf/strace, if any

# stop one server: TERM, then KILL after 5 s; also anything it forked that is left
stop_pid() {
	local p=$1 kids i
	kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null; return 0; }
	kids=$("$py" "$helper" pids "$p" 2>/dev/null | tr , ' ')
	kill -TERM "$p" 2>/dev/null
	for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
	wait "$p" 2>/dev/null
	for k in $kids; do [ "$k" != "$p" ] && kill -0 "$k" 2>/dev/null && kill -KILL "$k" 2>/dev/null; done
	return 0
}

cleanup() {
	trap - EXIT INT TERM HUP
	[ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null
	local i
	for ((i = ${#started[@]} - 1; i >= 0; i--)); do stop_pid "${started[i]}"; done
	if [ -n "$outdir" ] && [ -d "$tmp" ]; then
		mkdir -p "$outdir" && cp -r "$tmp"/. "$outdir"/ 2>/dev/null && rm -rf "$outdir"/www
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "bench.sh: interrupted" >&2; exit 130' INT TERM HUP

# run a command in the background and wait for it, so that a signal is handled at once
fg_run() {
	"$@" &
	child=$!
	wait "$child"
	local rc=$?
	child=
	return $rc
}

have_v6=yes
"$py" -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1", 0))' 2>/dev/null || have_v6=no
if [ "$have_v6" = no ]; then
	case "$fams" in *v6*) note "::1 is not usable here: IPv6 skipped" ;; esac
	fams=v4
fi
v6flag=; [ "$have_v6" = yes ] && v6flag=--v6
read -r -a ports <<<"$("$py" "$helper" ports 8 $v6flag)"
[ ${#ports[@]} -eq 8 ] || die "cannot find free ports"
i=0
for name in direct dualproxy haproxy nginx dualproxy_idle haproxy_idle nginx_idle baseline; do
	PORT[$name]=${ports[i]}; i=$((i + 1))
done

# the HTTP files
mkdir -p "$tmp/www"
head -c 128 /dev/urandom >"$tmp/www/small.bin"
head -c 1048576 /dev/urandom >"$tmp/www/1m.bin"
chmod 755 "$tmp/www"; chmod 644 "$tmp/www"/*

nginx_v=$(nginx -V 2>&1)
nginx_user=
if [ "$(id -u)" = 0 ]; then
	nginx_user="user nobody $(id -gn nobody 2>/dev/null || echo nogroup);"
fi
listen_lines() { # PORT EXTRA: listen directives for both families
	echo "listen 127.0.0.1:$1$2;"
	[ "$have_v6" = yes ] && echo "listen [::1]:$1$2;"
}

# ---------------------------------------------------------------- servers
start_backend() {
	local d=$tmp/backend m temps=
	mkdir -p "$d/tmp"
	temps="client_body_temp_path $d/tmp/body;"
	for m in proxy fastcgi uwsgi scgi; do
		case "$nginx_v" in *--without-http_${m}_module*) ;; *) temps="$temps ${m}_temp_path $d/tmp/$m;" ;; esac
	done
	cat >"$d/nginx.conf" <<EOF
# the HTTP backend of bench.sh
$nginx_user
worker_processes $backend_workers;
worker_rlimit_nofile 20000;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 16000; }
http {
	access_log off;
	$temps
	default_type application/octet-stream;
	sendfile on;
	tcp_nopush on;
	tcp_nodelay on;
	keepalive_timeout 600s;
	keepalive_requests 100000000;
	client_header_timeout 600s;
	open_file_cache max=16 inactive=600s;
	server {
		$(listen_lines "${PORT[direct]}" " backlog=4096" | tr '\n' ' ')
		root $tmp/www;
		location / { }
	}
}
EOF
	nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" -t >"$d/check.log" 2>&1 ||
		{ cat "$d/check.log"; die "the nginx backend configuration does not work"; }
	nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" >>"$d/stdout.log" 2>&1 &
	PID[direct]=$!
	started+=("$!")
}

start_dualproxy() { # NAME PORT [BINARY]
	local bin=${3:-$binary}
	local d=$tmp/$1
	mkdir -p "$d"
	cat >"$d/dualproxy.ini" <<EOF
; dualproxy for bench.sh
[global]
log_level = warning
max_connections = 20000
drain_timeout = 1s
connect_timeout = 5s

[bench]
listen = 127.0.0.1:$2$([ "$have_v6" = yes ] && echo ", [::1]:$2")
backend4 = 127.0.0.1:${PORT[direct]}
$([ "$have_v6" = yes ] && echo "backend6 = [::1]:${PORT[direct]}")
EOF
	"$bin" -t -c "$d/dualproxy.ini" >"$d/check.log" 2>&1 ||
		{ cat "$d/check.log"; die "$bin rejects its configuration"; }
	"$bin" -c "$d/dualproxy.ini" >>"$d/dualproxy.log" 2>&1 &
	PID[$1]=$!
	started+=("$!")
}

start_haproxy() { # NAME PORT
	local d=$tmp/$1 maxconn=$((idle + 2000))
	mkdir -p "$d"
	cat >"$d/haproxy.cfg" <<EOF
# HAProxy for bench.sh: tcp mode, one thread like dualproxy
global
	nbthread 1
	maxconn $maxconn
	pidfile $d/haproxy.pid
defaults
	mode tcp
	option splice-auto
	maxconn $maxconn
	timeout connect 5s
	timeout client 10m
	timeout server 10m
frontend f4
	bind 127.0.0.1:$2
	default_backend b4
backend b4
	server s4 127.0.0.1:${PORT[direct]}
EOF
	[ "$have_v6" = yes ] && cat >>"$d/haproxy.cfg" <<EOF
frontend f6
	bind [::1]:$2
	default_backend b6
backend b6
	server s6 [::1]:${PORT[direct]}
EOF
	haproxy -c -f "$d/haproxy.cfg" >"$d/check.log" 2>&1 ||
		{ cat "$d/check.log"; die "haproxy rejects its configuration"; }
	haproxy -db -f "$d/haproxy.cfg" >>"$d/haproxy.log" 2>&1 &
	PID[$1]=$!
	started+=("$!")
}

stream_load=
nginx_stream_ok() { # sets stream_load (a load_module line, or nothing if built in)
	local mp f
	if printf '%s\n' "$nginx_v" | grep -Eq -- '--with-stream=dynamic'; then
		mp=$(printf '%s\n' "$nginx_v" | sed -n 's/.*--modules-path=\([^ ]*\).*/\1/p')
		for f in ${mp:+"$mp"/ngx_stream_module.so} /usr/lib/nginx/modules/ngx_stream_module.so \
			/usr/lib64/nginx/modules/ngx_stream_module.so /usr/share/nginx/modules/ngx_stream_module.so; do
			[ -f "$f" ] && { stream_load="load_module $f;"; return 0; }
		done
		return 1
	fi
	printf '%s\n' "$nginx_v" | grep -Eq -- '--with-stream( |$)'
}

start_nginx_stream() { # NAME PORT
	local d=$tmp/$1
	mkdir -p "$d"
	cat >"$d/nginx.conf" <<EOF
# nginx stream proxy for bench.sh
$stream_load
$nginx_user
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 16000; }
stream {
	proxy_connect_timeout 5s;
	proxy_timeout 10m;
	server { listen 127.0.0.1:$2; proxy_pass 127.0.0.1:${PORT[direct]}; }
$([ "$have_v6" = yes ] && echo "	server { listen [::1]:$2; proxy_pass [::1]:${PORT[direct]}; }")
}
EOF
	nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" -t >"$d/check.log" 2>&1 || return 1
	nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" >>"$d/stdout.log" 2>&1 &
	PID[$1]=$!
	started+=("$!")
}

start_target() { # TARGET [idle]: starts it under the name TARGET or TARGET_idle
	local name=$1${2:+_$2}
	case "$1" in
	dualproxy) start_dualproxy "$name" "${PORT[$name]}" ;;
	baseline) start_dualproxy "$name" "${PORT[$name]}" "$baseline" ;;
	haproxy) start_haproxy "$name" "${PORT[$name]}" ;;
	nginx) start_nginx_stream "$name" "${PORT[$name]}" ;;
	esac
}

check_target() { # NAME: both files, each family; prints why not
	local name=$1 fam host
	for fam in $fams; do
		[ "$fam" = v4 ] && host=127.0.0.1 || host='[::1]'
		"$py" "$helper" check "http://$host:${PORT[$name]}/small.bin" 128 --wait 10 &&
			"$py" "$helper" check "http://$host:${PORT[$name]}/1m.bin" 1048576 --wait 2 || return 1
	done
}

server_log() { # NAME: its log, for a failure message
	cat "$tmp/$1"/*.log 2>/dev/null | tail -n 20
}

case "${load_start%% *}" in
0.[0-4]*) ;;
*) note "load average ${load_start%% *} at the start: other work shares the CPUs, so the figures are noisier (see other%)" ;;
esac

# ---------------------------------------------------------------- which peers
run_targets=()
want() { local t; for t in "${targets[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }
want direct && run_targets+=(direct) # the backend runs anyway; this is about measuring it alone
want dualproxy && run_targets+=(dualproxy)
[ -n "$baseline" ] && run_targets+=(baseline)
if want haproxy; then
	if command -v haproxy >/dev/null; then run_targets+=(haproxy)
	else note "HAProxy is not installed: skipped (Debian: apt-get install haproxy)"; fi
fi
if want nginx; then
	if nginx_stream_ok; then run_targets+=(nginx)
	else note "nginx has no stream module: nginx stream skipped (Debian: apt-get install libnginx-mod-stream; nginx-light does not include it)"; fi
fi

echo "== starting servers in $tmp"
start_backend
check_target direct || { server_log backend; die "the nginx backend does not answer"; }
for t in "${run_targets[@]}"; do
	[ "$t" = direct ] && continue
	if ! start_target "$t"; then
		note "$t could not start: skipped ($(tail -n 3 "$tmp/$t/check.log" 2>/dev/null | tr '\n' ' '))"
		keep=(); for k in "${run_targets[@]}"; do [ "$k" != "$t" ] && keep+=("$k"); done
		run_targets=("${keep[@]}")
		continue
	fi
	if ! check_target "$t"; then
		server_log "$t"
		die "$t does not relay the test files correctly"
	fi
done
for t in "${run_targets[@]}"; do echo "   $t: port ${PORT[$t]}, pid ${PID[$t]}"; done

# ---------------------------------------------------------------- throughput rounds
url_path() { case "$1" in bulk) echo /1m.bin ;; *) echo /small.bin ;; esac; }
host_of() { [ "$1" = v4 ] && echo 127.0.0.1 || echo '[::1]'; }

run_wrk() { # ROUND WORKLOAD FAMILY TARGET OUTFILE
	local round=$1 wl=$2 fam=$3 t=$4 out=$5 pids="" bpids hdr=()
	[ "$wl" = small-close ] && hdr=(-H 'Connection: close')
	bpids="tree:${PID[direct]}"
	[ "$t" != direct ] && pids="tree:${PID[$t]}"
	fg_run "$py" "$helper" run \
		--meta "{\"round\": \"$round\", \"workload\": \"$wl\", \"family\": \"$fam\", \"target\": \"$t\"}" \
		--out "$out" --log "$tmp/wrk.log" --pids "$pids" --backend-pids "$bpids" -- \
		wrk -t"$threads" -c"$connections" -d"${duration}s" --timeout 5s --latency -s "$lua" "${hdr[@]}" \
		"http://$(host_of "$fam"):${PORT[$t]}$(url_path "$wl")"
}

n_runs=$((rounds * ${#workloads[@]} * $(echo $fams | wc -w) * ${#run_targets[@]}))
echo "== throughput: $n_runs wrk runs of ${duration}s (about $(((n_runs * (duration + 1) + n_runs / 3) / 60 + 1)) min)"
echo "   round workload   fam target"
for ((r = 1; r <= rounds; r++)); do
	for wl in "${workloads[@]}"; do
		for fam in $fams; do
			n=${#run_targets[@]}
			for ((i = 0; i < n; i++)); do
				t=${run_targets[$(((i + r - 1) % n))]} # rotate the order every round
				run_wrk "$r" "$wl" "$fam" "$t" "$tmp/results.jsonl"
				sleep 0.3
			done
		done
	done
done

# ---------------------------------------------------------------- syscalls per request
proxies=()
for t in "${run_targets[@]}"; do [ "$t" != direct ] && proxies+=("$t"); done
perf_ok() {
	command -v perf >/dev/null &&
		perf stat -x, -e 'syscalls:sys_enter_getppid' -- "$py" -c 'import os; os.getppid()' >/dev/null 2>&1
}
if [ "$syscall_tool" = auto ]; then
	if perf_ok; then syscall_tool=perf
	elif command -v strace >/dev/null; then syscall_tool=strace
	else syscall_tool=none; note "neither perf (with tracepoint access) nor strace is available: no syscall counts"; fi
elif [ "$syscall_tool" = perf ] && ! perf_ok; then
	note "perf cannot count syscall tracepoints here (root or perf_event_paranoid <= -1 needed): no syscall counts"; syscall_tool=none
elif [ "$syscall_tool" = strace ] && ! command -v strace >/dev/null; then
	note "strace is not installed: no syscall counts"; syscall_tool=none
fi
# perf: the total (raw_syscalls) and the syscalls a relay makes, each counted
# separately (all of syscalls:sys_enter_* takes many seconds to set up)
perf_events=raw_syscalls:sys_enter
if [ "$syscall_tool" = perf ]; then
	avail=$(perf list 'syscalls:sys_enter_*' 2>/dev/null)
	for sc in read write readv writev recvfrom sendto recvmsg sendmsg recvmmsg sendmmsg \
		epoll_wait epoll_pwait epoll_pwait2 epoll_ctl splice accept accept4 connect close shutdown \
		setsockopt getsockopt socket pipe2 getsockname getpeername fcntl ioctl timerfd_settime \
		clock_gettime gettimeofday io_uring_enter; do
		printf '%s\n' "$avail" | grep -q "syscalls:sys_enter_$sc " && perf_events="$perf_events,syscalls:sys_enter_$sc"
	done
fi
if [ "$syscall_tool" != none ] && [ ${#proxies[@]} -gt 0 ] && printf '%s\n' "${workloads[@]}" | grep -qx small-ka; then
	echo "== syscalls per request (small-ka, v4, $syscall_tool attached)"
	for t in "${proxies[@]}"; do
		pids=$("$py" "$helper" pids "${PID[$t]}")
		f=$tmp/syscalls-$t.txt
		if [ "$syscall_tool" = perf ]; then
			# counts until the sleep ends (a second before wrk starts, a second after it stops)
			perf stat -x, -o "$f" -e "$perf_events" -p "$pids" -- sleep $((duration + 2)) >"$tmp/perf-$t.log" 2>&1 &
		else
			args=(); for p in ${pids//,/ }; do args+=(-p "$p"); done
			strace -c -f -o "$f" "${args[@]}" >"$tmp/strace-$t.log" 2>&1 &
		fi
		tracer=$!
		started+=("$tracer")
		sleep 1
		run_wrk syscalls small-ka v4 "$t" "$tmp/syscall-runs.jsonl"
		[ "$syscall_tool" = strace ] && kill -INT "$tracer" 2>/dev/null
		for i in $(seq 100); do kill -0 "$tracer" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$tracer" 2>/dev/null && kill -TERM "$tracer" 2>/dev/null
		wait "$tracer" 2>/dev/null
		"$py" "$helper" syscalls --tool "$syscall_tool" --file "$f" --result "$tmp/syscall-runs.jsonl" \
			--target "$t" --out "$tmp/syscalls.jsonl"
		sleep 0.5
	done
fi

# ---------------------------------------------------------------- idle connections
for t in "${proxies[@]}"; do stop_pid "${PID[$t]}"; done
if [ "$idle" -gt 0 ] && [ ${#proxies[@]} -gt 0 ]; then
	echo "== RSS with $idle idle connections (fresh proxies, IPv4)"
	for t in "${proxies[@]}"; do
		[ "$t" = baseline ] && continue
		for mode in silent partial; do
			start_target "$t" idle || { note "$t did not start for the idle test"; continue; }
			if ! check_target "${t}_idle"; then
				server_log "${t}_idle"; note "$t (idle test instance) does not answer"
				stop_pid "${PID[${t}_idle]}"; continue
			fi
			sleep 0.5
			fg_run "$py" "$helper" idle --host 127.0.0.1 --port "${PORT[${t}_idle]}" --backend-port "${PORT[direct]}" \
				--count "$idle" --mode "$mode" --pid "${PID[${t}_idle]}" --target "$t" >>"$tmp/rss.jsonl"
			tail -n 1 "$tmp/rss.jsonl" | sed 's/^/   /'
			stop_pid "${PID[${t}_idle]}"
			sleep 0.5
		done
	done
fi

# ---------------------------------------------------------------- report
{
	echo "dualproxy benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
	echo "wrk: -t$threads -c$connections -d${duration}s --timeout 5s, $rounds round(s), medians; nothing pinned"
	echo "backend: $(nginx -v 2>&1 | sed 's/^nginx version: //'), worker_processes $backend_workers, sendfile, keep-alive"
	echo "dualproxy: $("$binary" -V 2>&1 | head -n 1) ($binary), one thread"
	[ -n "$baseline" ] && echo "baseline: $("$baseline" -V 2>&1 | head -n 1) ($baseline), one thread"
	for t in "${run_targets[@]}"; do
		case "$t" in
		haproxy) echo "haproxy: $(haproxy -v 2>&1 | head -n 1 | sed 's/ - http.*//'), mode tcp, option splice-auto, nbthread 1" ;;
		nginx) echo "nginx stream: $(nginx -v 2>&1 | sed 's/^nginx version: //'), stream proxy_pass, worker_processes 1" ;;
		esac
	done
	echo "load average (1/5/15 min): $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
	[ "$(id -u)" = 0 ] && echo "run as root (dualproxy switches to nobody after binding)" || echo "run as uid $(id -u)"
	for n in "${notes[@]}"; do echo "note: $n"; done
} >"$tmp/header.txt"

echo
"$py" "$helper" report --header "$tmp/header.txt" --results "$tmp/results.jsonl" \
	--syscalls "$tmp/syscalls.jsonl" --rss "$tmp/rss.jsonl" --json "$tmp/results.json" | tee "$tmp/report.txt"
[ -n "$outdir" ] && echo "(report, raw results and logs kept in $outdir)"
exit 0
}
