#!/usr/bin/env bash
# contrib/bench/bench.sh: dualproxy against HAProxy, nginx stream and socat on loopback: HTTP and
# HTTPS with wrk, UDP with iperf3.
#
#   contrib/bench/bench.sh [--workloads LIST] [--duration S] [--rounds R] [--family 4|6|both]
#                          [--binary PATH] [--baseline PATH] [options below]
#
# It starts, each with its own temporary directory and free ports:
#   - one nginx backend (worker_processes 1) on 127.0.0.1 and [::1] serving /small.bin (128 bytes)
#     and /1m.bin (1 MiB), keep-alive with a practically unlimited keepalive_requests, on three ports:
#       http  sendfile on, tcp_nopush: the kernel sends the file (the original workloads);
#       w32k  sendfile off, output_buffers 1 32k: the body leaves in writes of 32 KiB from user
#             space, as a Go backend or Traefik's reverse proxy (32 KiB copy buffer) writes it;
#       tls   HTTPS with a self-signed ECDSA P-256 certificate made with openssl at start,
#             TLS 1.2 and 1.3 (wrk negotiates TLS 1.3), no session resumption (--tls-resume to
#             allow tickets), sendfile off, 32 KiB output buffers, 16 KiB TLS records;
#   - dualproxy in front of the three ports (log_level warning, backend4 = 127.0.0.1,
#     backend6 = [::1]), HAProxy in tcp mode with option splice-auto and nbthread 1 (dualproxy
#     is one thread), nginx stream { proxy_pass } with worker_processes 1;
#   - for the UDP workloads: iperf3 -s, and in front of it, each on one port for iperf3's TCP
#     control connection and its UDP datagrams (iperf3 sends both to the same port):
#     dualproxy (protocol = tcp, udp), nginx stream (listen P; listen P udp; one worker),
#     socat (TCP-LISTEN and UDP-LISTEN, both with fork: a child per connection or UDP peer).
#     HAProxy has no UDP relay and is left out of them.  A dualproxy that rejects
#     protocol = udp (dualproxy -t) is skipped for UDP with a note.
# Every proxy listens on 127.0.0.1 and [::1] and sends each family to the backend address of
# the same family.  Then, in --rounds rounds (interleaved: every round runs every combination
# once, the targets in a rotating order), it measures, directly and through each proxy, over
# IPv4 and IPv6:
#   small-ka     http  GET /small.bin, keep-alive, --connections connections
#   small-close  http  GET /small.bin with "Connection: close" (one connection per request)
#   bulk         http  GET /1m.bin, keep-alive
#   tls-ka       tls   GET /small.bin over HTTPS, keep-alive
#   tls-close    tls   GET /small.bin over HTTPS with "Connection: close": a new TCP connection
#                      and a full TLS handshake per request (checked at the start: the backend's
#                      accepts per request, and resumed sessions in a probe's access log)
#   tls-bulk     tls   GET /1m.bin over HTTPS, keep-alive
#   w32k-small   w32k  GET /small.bin, keep-alive
#   w32k-bulk    w32k  GET /1m.bin, keep-alive
#   many-ka      http  GET /small.bin, keep-alive, over --many (5000) connections at once
#   udp-64       iperf3 -u -b 0 -l 64: as many 64-byte datagrams as the client can send
#   udp-1200     iperf3 -u -b 0 -l 1200
# Groups for --workloads: http (the first three), tls, w32k, tcp (all but udp-*), udp, all.
# It prints the medians: for wrk req/s, p50, p99, MB/s (10^6 bytes/s as wrk received them,
# headers included), CPU of the target and of the backend, CPU per request, the backend's
# connections per request; for iperf3 the datagrams sent and delivered per second (sent minus
# lost, as the iperf3 server counted them), loss, the target's CPU per delivered datagram; and
# each proxy's ratio to the best other proxy and to direct; then the same as markdown tables.
# Then: syscalls per request of each proxy on small-ka over IPv4 (one extra wrk pass with
# `perf stat -e 'syscalls:sys_enter_*'`, or `strace -c -f` where perf cannot trace), the RSS per
# idle connection with --idle connections (5000) held open through a freshly started instance
# of each proxy (IPv4; once sending nothing, once a partial HTTP request), and, with UDP
# workloads, the RSS per idle UDP flow with --udp-idle flows (10000: one datagram from each of
# that many client sockets, kept open) through a fresh dualproxy and nginx stream.
#
# Choices (documented here because they shape the figures):
#   - The backend nginx runs worker_processes 1 (--backend-workers to change it): on a 2-core
#     machine wrk, the proxy and the backend share the cores; one backend worker keeps its share
#     the same for every target, so the targets differ only by the proxy.  "direct" is therefore
#     "one nginx worker, no proxy" (for UDP: "iperf3 client to iperf3 server, no proxy").
#   - HAProxy nbthread 1 and nginx stream worker_processes 1: the same number of event loops as
#     dualproxy.  socat forks a process per connection and per UDP peer (its only way to relay
#     many peers); its CPU includes its children's.
#   - tls-close is bound by the TLS handshakes of wrk and the backend (OpenSSL 3.0 spends about
#     half a millisecond of CPU per handshake in wrk), so its req/s differ little between
#     proxies: compare the CPU per request and p99 there.
#   - UDP with -b 0 overloads every relay: loss is expected, and delivered datagrams per second
#     is the capacity.  nginx stream keeps one UDP session per client address and port until
#     proxy_timeout (10m here) passes without traffic; proxy_responses is left unset (no limit:
#     a number would end the session after that many replies, and iperf3's server sends one).
#   - Nothing is pinned to a CPU; the scheduler places wrk, the proxy and the backend.  On a
#     noisy box, look at the spread column and use more rounds.
#   - wrk: --timeout 5s, --latency, and bench.lua, which prints the figures as JSON.
#   - Only loopback is used.  The script installs nothing.  Peers that are missing (HAProxy,
#     nginx's stream module, socat) are skipped with a note, unless --targets names them: then
#     it stops with an error.  Likewise openssl for the TLS and iperf3 for the UDP workloads.
#     Debian: apt-get install haproxy libnginx-mod-stream socat iperf3 (nginx-light itself has no
#     stream module).  nginx (the backend), wrk (for TCP workloads) and python3 are required.
#
# Options:
#   --workloads LIST    comma list of workloads or groups (default all)
#   --duration S        seconds per wrk or iperf3 run (default 2)
#   --rounds R          rounds (default 3)
#   --family 4|6|both   address families (default both)
#   --connections N     wrk connections (default 64)
#   --many N            wrk connections for many-ka (default 5000)
#   --threads T         wrk threads (default 2)
#   --targets LIST      comma list out of direct,dualproxy,haproxy,nginx,socat (default all;
#                       without direct there are no "x direct" ratios)
#   --binary PATH       dualproxy binary (default: src/dualproxy of this tree)
#   --baseline PATH     another dualproxy build (say, of the commit before a change) run as the
#                       target "baseline" in the same interleaved rounds; it is not a peer, and
#                       the report adds dualproxy / baseline ratios
#   --backend-workers N worker_processes of the nginx backend (default 1; "auto" allowed)
#   --tls-resume        let the TLS backend issue session tickets (wrk then resumes sessions on
#                       its new connections) instead of a full handshake per connection
#   --idle N            idle TCP connections for the RSS test (default 5000; 0 skips it)
#   --udp-idle N        idle UDP flows for the RSS test (default 10000; 0 skips it)
#   --syscalls TOOL     auto (perf, else strace), perf, strace, or none (default auto)
#   --explain           one extra traced run per workload (IPv4) of dualproxy (and baseline):
#                       syscalls, epoll_wait wake-ups and ready sockets per wake-up, reads,
#                       writes and splices per request (or datagram) and bytes per call
#   --explain-targets L the targets --explain traces (default dualproxy,baseline)
#   --explain-tool T    auto (perf, else strace), perf or strace (default auto)
#   --perf-machine      one extra run per workload and target (IPv4) under perf stat -a: the
#                       whole machine's CPU time, context switches, softirqs ... per request
#                       (cycles and instructions where the CPU counters are available)
#   --out DIR           also keep the report, the raw JSON and all logs in DIR
#   -h, --help          this text
#
# A full default run (11 workloads x 2 families x 4 targets x 3 rounds of 2 s, plus the syscall
# and idle passes) takes about 15 minutes on 2 cores; --workloads http --duration 5 is the run the
# README's first figures come from.  For figures to publish, use more rounds on a quiet machine.
# Run as root or not.  Ctrl-C stops everything it started.
set -u
{ # the whole script is one group, parsed before it runs: editing the file meanwhile is harmless

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
helper="$here/bench_helper.py"
lua="$here/bench.lua"
py=${PYTHON:-python3}

all_workloads=small-ka,small-close,bulk,tls-ka,tls-close,tls-bulk,w32k-small,w32k-bulk,many-ka,udp-64,udp-1200
duration=2
connections=64
many=5000
threads=2
family=both
binary=$top/src/dualproxy
baseline=
rounds=3
targets_arg=direct,dualproxy,haproxy,nginx,socat
targets_explicit=no
workloads_arg=all
backend_workers=1
tls_resume=no
idle=5000
udp_idle=10000
syscall_tool=auto
explain=no
explain_targets=dualproxy,baseline
explain_tool=auto
perf_machine=no
outdir=

usage() { sed -n '2,/^set -u/p' "$0" | sed -e '/^set -u/d' -e 's/^# \{0,1\}//'; }
die() { echo "bench.sh: $*" >&2; exit 2; }
note() { echo "note: $*"; notes+=("$*"); }
notes=()

while [ $# -gt 0 ]; do
	case "$1" in
	--duration) duration=${2:?}; shift 2 ;;
	--connections) connections=${2:?}; shift 2 ;;
	--many) many=${2:?}; shift 2 ;;
	--threads) threads=${2:?}; shift 2 ;;
	--family) family=${2:?}; shift 2 ;;
	--binary) binary=${2:?}; shift 2 ;;
	--baseline) baseline=${2:?}; shift 2 ;;
	--rounds) rounds=${2:?}; shift 2 ;;
	--targets) targets_arg=${2:?}; targets_explicit=yes; shift 2 ;;
	--workloads) workloads_arg=${2:?}; shift 2 ;;
	--backend-workers) backend_workers=${2:?}; shift 2 ;;
	--tls-resume) tls_resume=yes; shift ;;
	--idle) idle=${2:?}; shift 2 ;;
	--udp-idle) udp_idle=${2:?}; shift 2 ;;
	--syscalls) syscall_tool=${2:?}; shift 2 ;;
	--explain) explain=yes; shift ;;
	--explain-targets) explain_targets=${2:?}; explain=yes; shift 2 ;;
	--explain-tool) explain_tool=${2:?}; shift 2 ;;
	--perf-machine) perf_machine=yes; shift ;;
	--out) outdir=${2:?}; shift 2 ;;
	-h|--help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done

isnum() { case "$1" in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }
for v in duration connections many threads rounds idle udp_idle; do
	isnum "${!v}" || die "--${v//_/-} must be a whole number, not '${!v}'"
done
[ "$duration" -ge 1 ] && [ "$rounds" -ge 1 ] && [ "$threads" -ge 1 ] || die "--duration, --rounds and --threads must be at least 1"
[ "$connections" -ge "$threads" ] && [ "$many" -ge "$threads" ] || die "--connections and --many must be at least --threads (wrk needs one connection per thread)"
case "$family" in 4) fams="v4" ;; 6) fams="v6" ;; both) fams="v4 v6" ;; *) die "--family must be 4, 6 or both" ;; esac
case "$backend_workers" in auto) ;; *) isnum "$backend_workers" && [ "$backend_workers" -ge 1 ] || die "--backend-workers must be a number or auto" ;; esac
case "$syscall_tool" in auto|perf|strace|none) ;; *) die "--syscalls must be auto, perf, strace or none" ;; esac
case "$explain_tool" in auto|perf|strace) ;; *) die "--explain-tool must be auto, perf or strace" ;; esac
IFS=, read -r -a targets <<<"$targets_arg"
for t in "${targets[@]}"; do case "$t" in direct|dualproxy|haproxy|nginx|socat) ;; *) die "unknown target '$t'" ;; esac; done
IFS=, read -r -a explain_list <<<"$explain_targets"
for t in "${explain_list[@]}"; do case "$t" in dualproxy|baseline|haproxy|nginx|socat) ;; *) die "unknown --explain-targets target '$t'" ;; esac; done

# workloads: groups expanded, order of all_workloads, each once
expand_wl() {
	case "$1" in
	all) echo "$all_workloads" ;;
	http) echo small-ka,small-close,bulk ;;
	tls) echo tls-ka,tls-close,tls-bulk ;;
	w32k) echo w32k-small,w32k-bulk ;;
	tcp) echo "${all_workloads%,udp-64,udp-1200}" ;;
	udp) echo udp-64,udp-1200 ;;
	*) case ",$all_workloads," in *",$1,"*) echo "$1" ;; *) die "unknown workload '$1' (one of $all_workloads, or http, tls, w32k, tcp, udp, all)" ;; esac ;;
	esac
}
asked=,
IFS=, read -r -a wl_args <<<"$workloads_arg"
for w in "${wl_args[@]}"; do asked="$asked$(expand_wl "$w"),"; done
workloads=()
IFS=, read -r -a all_wl <<<"$all_workloads"
for w in "${all_wl[@]}"; do case "$asked" in *",$w,"*) workloads+=("$w") ;; esac; done
[ ${#workloads[@]} -gt 0 ] || die "no workload selected"

wl_backend() { case "$1" in udp-*) echo udp ;; tls-*) echo tls ;; w32k-*) echo w32k ;; *) echo http ;; esac; }
wl_path() { case "$1" in *bulk) echo /1m.bin ;; *) echo /small.bin ;; esac; }
wl_conns() { [ "$1" = many-ka ] && echo "$many" || echo "$connections"; }
is_udp() { case "$1" in udp-*) return 0 ;; *) return 1 ;; esac; }
drop_workloads() { # PATTERN: removes matching workloads
	local keep=() w
	for w in "${workloads[@]}"; do case "$w" in $1) ;; *) keep+=("$w") ;; esac; done
	workloads=("${keep[@]}")
}
has_wl() { local w; for w in "${workloads[@]}"; do case "$w" in $1) return 0 ;; esac; done; return 1; }
want() { local t; for t in "${targets[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }
# a missing program: an error if the user asked for it by name, otherwise a note
missing() { # EXPLICIT MESSAGE
	[ "$1" = yes ] && die "$2"
	note "$2: skipped"
}

command -v "$py" >/dev/null || die "python3 is needed"
named() { case ",$workloads_arg," in *,$1*) echo yes ;; *) echo no ;; esac; } # --workloads names one of them
if has_wl 'tls-*' && ! command -v openssl >/dev/null; then
	missing "$(named tls)" "openssl is needed for the TLS workloads (Debian: apt-get install openssl)"
	drop_workloads 'tls-*'
fi
if has_wl 'udp-*' && ! command -v iperf3 >/dev/null; then
	missing "$(named udp)" "iperf3 is needed for the UDP workloads (Debian: apt-get install iperf3)"
	drop_workloads 'udp-*'
fi
[ ${#workloads[@]} -gt 0 ] || die "no workload left to run"
tcp_wl=no; has_wl 'udp-*' && udp_wl=yes || udp_wl=no
for w in "${workloads[@]}"; do is_udp "$w" || tcp_wl=yes; done
if [ "$tcp_wl" = yes ]; then
	command -v wrk >/dev/null || die "wrk is needed (Debian: apt-get install wrk)"
	command -v nginx >/dev/null || die "nginx is needed for the backend (Debian: apt-get install nginx-light)"
fi
[ -x "$binary" ] || die "no dualproxy binary at $binary (build it, or pass --binary)"
[ -z "$baseline" ] || [ -x "$baseline" ] || die "no dualproxy binary at $baseline (--baseline)"
declare -A need_be=()
for w in "${workloads[@]}"; do need_be[$(wl_backend "$w")]=1; done
tcp_bes=(); for b in http w32k tls; do [ -n "${need_be[$b]:-}" ] && tcp_bes+=("$b"); done

# perf for --explain and --perf-machine: settled before anything starts
perf_ok() {
	command -v perf >/dev/null &&
		perf stat -x, -e 'syscalls:sys_enter_getppid' -- "$py" -c 'import os; os.getppid()' >/dev/null 2>&1
}
if [ "$explain" = yes ]; then
	if [ "$explain_tool" = auto ]; then
		if perf_ok; then explain_tool=perf
		elif command -v strace >/dev/null; then explain_tool=strace
		else die "--explain needs perf (with tracepoint access: root or perf_event_paranoid <= -1) or strace"; fi
	elif [ "$explain_tool" = perf ]; then perf_ok || die "--explain-tool perf: perf cannot trace syscalls here (root or perf_event_paranoid <= -1 needed)"
	else command -v strace >/dev/null || die "--explain-tool strace: strace is not installed"; fi
fi
machine_events=
if [ "$perf_machine" = yes ]; then
	command -v perf >/dev/null && perf stat -a -x, -e cpu-clock -- true >/dev/null 2>&1 ||
		die "--perf-machine: perf stat -a does not work here (root or perf_event_paranoid <= 0 needed)"
	machine_events=cpu-clock,context-switches,cpu-migrations,page-faults
	if perf stat -x, -e instructions -- true 2>&1 | grep -q '^[0-9]'; then
		machine_events="$machine_events,cycles,instructions"
	else
		note "perf: no CPU counters here (perf stat -e instructions true says <not supported>): --perf-machine counts software events only"
	fi
	avail=$(perf list 'irq:softirq_entry' 'net:netif_receive_skb' 'sched:sched_wakeup' 2>/dev/null)
	for ev in irq:softirq_entry net:netif_receive_skb sched:sched_wakeup; do
		printf '%s\n' "$avail" | grep -q "$ev " && machine_events="$machine_events,$ev"
	done
fi

# every process may hold the idle connections or flows and their backend side
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_need=$((2 * idle)); [ $((2 * many)) -gt $fd_need ] && fd_need=$((2 * many))
[ "$udp_wl" = yes ] && [ $((udp_idle)) -gt $fd_need ] && fd_need=$udp_idle
fd_need=$((fd_need + 1000))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $fd_need ]; then
	note "descriptor limit $(ulimit -n) is low for --idle $idle, --many $many, --udp-idle $udp_idle (need about $fd_need)"
fi
fd_limit=$(ulimit -n); [ "$fd_limit" = unlimited ] && fd_limit=1048576
maxconn=$idle; [ "$many" -gt "$maxconn" ] && maxconn=$many; maxconn=$((maxconn + 2000))

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dualproxy-bench.XXXXXX") || die "mktemp failed"
chmod 755 "$tmp" # nginx workers run as nobody when started as root
declare -A PIDS PORT
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
stop_inst() { local p; for p in ${PIDS[$1]:-}; do stop_pid "$p"; done; }

cleanup() {
	trap - EXIT INT TERM HUP
	[ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null
	local i
	for ((i = ${#started[@]} - 1; i >= 0; i--)); do stop_pid "${started[i]}"; done
	if [ -n "$outdir" ] && [ -d "$tmp" ]; then
		mkdir -p "$outdir" && cp -r "$tmp"/. "$outdir"/ 2>/dev/null && rm -rf "$outdir"/www "$outdir"/*.data
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
# a server started in the background: remember it under NAME
bg_start() { # NAME LOG CMD...
	local name=$1 log=$2
	shift 2
	"$@" >>"$log" 2>&1 &
	PIDS[$name]="${PIDS[$name]:-}${PIDS[$name]:+ }$!"
	started+=("$!")
}
pidspec() { local p s=; for p in ${PIDS[$1]:-}; do s="$s${s:+,}tree:$p"; done; echo "$s"; }
inst_pids() { # NAME: all its processes and their descendants, comma-separated
	local p s=
	for p in ${PIDS[$1]:-}; do s="$s${s:+,}$("$py" "$helper" pids "$p")"; done
	echo "$s"
}

have_v6=yes
"$py" -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1", 0))' 2>/dev/null || have_v6=no
if [ "$have_v6" = no ]; then
	case "$fams" in *v6*) note "::1 is not usable here: IPv6 skipped" ;; esac
	fams=v4
fi
v6flag=; [ "$have_v6" = yes ] && v6flag=--v6
port_names=()
for inst in direct dualproxy baseline haproxy nginx; do for b in http w32k tls; do port_names+=("$inst/$b"); done; done
port_names+=(status tlsprobe dualproxy_idle/http haproxy_idle/http nginx_idle/http)
port_names+=(u_direct u_dualproxy u_baseline u_nginx u_socat usink u_dualproxy_idle u_nginx_idle)
read -r -a ports <<<"$("$py" "$helper" ports ${#port_names[@]} $v6flag)"
[ ${#ports[@]} -eq ${#port_names[@]} ] || die "cannot find free ports"
i=0
for name in "${port_names[@]}"; do PORT[$name]=${ports[i]}; i=$((i + 1)); done

nginx_v=$(nginx -V 2>&1)
nginx_user=
if [ "$(id -u)" = 0 ]; then
	nginx_user="user nobody $(id -gn nobody 2>/dev/null || echo nogroup);"
fi
listen_lines() { # PORT EXTRA: listen directives for both families
	echo "listen 127.0.0.1:$1$2;"
	[ "$have_v6" = yes ] && echo "listen [::1]:$1$2;"
}
host_of() { [ "$1" = v4 ] && echo 127.0.0.1 || echo '[::1]'; }
addr_of() { [ "$1" = v4 ] && echo 127.0.0.1 || echo '::1'; }

# ---------------------------------------------------------------- backends
make_files() {
	mkdir -p "$tmp/www"
	head -c 128 /dev/urandom >"$tmp/www/small.bin"
	head -c 1048576 /dev/urandom >"$tmp/www/1m.bin"
	chmod 755 "$tmp/www"; chmod 644 "$tmp/www"/*
}

make_cert() { # a self-signed ECDSA P-256 certificate for 127.0.0.1 and ::1
	local d=$tmp/tls
	mkdir -p "$d"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
		-keyout "$d/key.pem" -out "$d/cert.pem" -subj /CN=dualproxy-bench \
		-addext "subjectAltName=IP:127.0.0.1,IP:::1" >"$d/openssl.log" 2>&1 ||
		{ cat "$d/openssl.log"; die "openssl could not make a certificate"; }
	chmod 644 "$d"/*.pem; chmod 755 "$d"
}

start_backend() {
	local d=$tmp/backend m temps= servers= tls_sess
	mkdir -p "$d/tmp"
	temps="client_body_temp_path $d/tmp/body;"
	for m in proxy fastcgi uwsgi scgi; do
		case "$nginx_v" in *--without-http_${m}_module*) ;; *) temps="$temps ${m}_temp_path $d/tmp/$m;" ;; esac
	done
	[ "$tls_resume" = yes ] && tls_sess="ssl_session_cache shared:bench:10m; ssl_session_tickets on;" ||
		tls_sess="ssl_session_cache off; ssl_session_tickets off;"
	servers="	server { # http: the kernel sends the file
		$(listen_lines "${PORT[direct/http]}" " backlog=4096" | tr '\n' ' ')
		sendfile on;
		tcp_nopush on;
	}"
	[ -n "${need_be[w32k]:-}" ] && servers="$servers
	server { # w32k: 32 KiB writes from user space
		$(listen_lines "${PORT[direct/w32k]}" " backlog=4096" | tr '\n' ' ')
		sendfile off;
		output_buffers 1 32k;
	}"
	[ -n "${need_be[tls]:-}" ] && servers="$servers
	server { # tls
		$(listen_lines "${PORT[direct/tls]}" " ssl backlog=4096" | tr '\n' ' ')
		$tls_sess
	}
	server { # tls probe: the same, with an access log of every request's connection and session
		listen 127.0.0.1:${PORT[tlsprobe]} ssl;
		$tls_sess
		access_log $d/tlsprobe.log tlsprobe;
	}"
	cat >"$d/nginx.conf" <<EOF
# the HTTP backend of bench.sh
$nginx_user
worker_processes $backend_workers;
worker_rlimit_nofile $fd_limit;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 16000; }
http {
	access_log off;
	$temps
	default_type application/octet-stream;
	tcp_nodelay on;
	keepalive_timeout 600s;
	keepalive_requests 100000000;
	client_header_timeout 600s;
	open_file_cache max=16 inactive=600s;
	root $tmp/www;
	# tls (only the tls servers listen with ssl)
	ssl_certificate $tmp/tls/cert.pem;
	ssl_certificate_key $tmp/tls/key.pem;
	ssl_protocols TLSv1.2 TLSv1.3;
	sendfile off;
	output_buffers 1 32k;
	log_format tlsprobe '\$connection \$ssl_session_reused \$ssl_protocol \$ssl_cipher';
$servers
	server { # stub_status: connections accepted, read before and after every run
		listen 127.0.0.1:${PORT[status]};
		location / { stub_status; }
	}
}
EOF
	[ -n "${need_be[tls]:-}" ] || sed -i '/ssl_certificate\|ssl_protocols/d' "$d/nginx.conf"
	nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" -t >"$d/check.log" 2>&1 ||
		{ cat "$d/check.log"; die "the nginx backend configuration does not work"; }
	bg_start direct "$d/stdout.log" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
}

start_iperf_server() { # one server on the wildcard (both families), as the UDP backend
	local d=$tmp/iperf3
	mkdir -p "$d"
	bg_start u_direct "$d/iperf3.log" iperf3 -s -p "${PORT[u_direct]}"
}

# ---------------------------------------------------------------- TCP proxies
start_dualproxy() { # NAME BINARY BACKENDS...: one service per backend
	local name=$1 bin=$2 d=$tmp/$1 b
	shift 2
	mkdir -p "$d"
	{
		cat <<EOF
; dualproxy for bench.sh
[global]
log_level = warning
max_connections = 20000
drain_timeout = 1s
connect_timeout = 5s
EOF
		for b in "$@"; do
			cat <<EOF

[$b]
listen = 127.0.0.1:${PORT[$name/$b]}$([ "$have_v6" = yes ] && echo ", [::1]:${PORT[$name/$b]}")
backend4 = 127.0.0.1:${PORT[direct/$b]}
$([ "$have_v6" = yes ] && echo "backend6 = [::1]:${PORT[direct/$b]}")
EOF
		done
	} >"$d/dualproxy.ini"
	"$bin" -t -c "$d/dualproxy.ini" >"$d/check.log" 2>&1 ||
		{ cat "$d/check.log"; die "$bin rejects its configuration"; }
	bg_start "$name" "$d/dualproxy.log" "$bin" -c "$d/dualproxy.ini"
}

start_haproxy() { # NAME BACKENDS...
	local name=$1 d=$tmp/$1 b
	shift
	mkdir -p "$d"
	{
		cat <<EOF
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
EOF
		for b in "$@"; do
			cat <<EOF
frontend f4_$b
	bind 127.0.0.1:${PORT[$name/$b]} backlog 4096
	default_backend b4_$b
backend b4_$b
	server s4 127.0.0.1:${PORT[direct/$b]}
EOF
			[ "$have_v6" = yes ] && cat <<EOF
frontend f6_$b
	bind [::1]:${PORT[$name/$b]} backlog 4096
	default_backend b6_$b
backend b6_$b
	server s6 [::1]:${PORT[direct/$b]}
EOF
		done
	} >"$d/haproxy.cfg"
	haproxy -c -f "$d/haproxy.cfg" >"$d/check.log" 2>&1 ||
		{ cat "$d/check.log"; die "haproxy rejects its configuration"; }
	bg_start "$name" "$d/haproxy.log" haproxy -db -f "$d/haproxy.cfg"
}

stream_load=
nginx_stream_ok() { # sets stream_load (a load_module line, or nothing if built in)
	local mp f
	command -v nginx >/dev/null || return 1
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

nginx_stream_conf() { # DIR CONNECTIONS LOGLEVEL SERVERS: an nginx stream configuration
	cat <<EOF
# nginx stream proxy for bench.sh
$stream_load
$nginx_user
worker_processes 1;
worker_rlimit_nofile $fd_limit;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log $3;
events { worker_connections $2; }
stream {
	proxy_connect_timeout 5s;
$4
}
EOF
}

start_nginx_stream() { # NAME BACKENDS...
	local name=$1 d=$tmp/$1 b servers= wc=$((2 * maxconn + 1000))
	shift
	mkdir -p "$d"
	[ $wc -lt 16000 ] && wc=16000
	for b in "$@"; do
		servers="$servers	server { listen 127.0.0.1:${PORT[$name/$b]} backlog=4096; proxy_pass 127.0.0.1:${PORT[direct/$b]}; proxy_timeout 10m; }
"
		[ "$have_v6" = yes ] && servers="$servers	server { listen [::1]:${PORT[$name/$b]} backlog=4096; proxy_pass [::1]:${PORT[direct/$b]}; proxy_timeout 10m; }
"
	done
	nginx_stream_conf "$d" "$wc" warn "$servers" >"$d/nginx.conf"
	nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" -t >"$d/check.log" 2>&1 || return 1
	bg_start "$name" "$d/stdout.log" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
}

start_tcp_target() { # TARGET [idle]: starts it as TARGET or TARGET_idle (the idle one: http only)
	local name=$1${2:+_$2} bes=("${tcp_bes[@]}")
	[ -n "${2:-}" ] && bes=(http)
	case "$1" in
	dualproxy) start_dualproxy "$name" "$binary" "${bes[@]}" ;;
	baseline) start_dualproxy "$name" "$baseline" "${bes[@]}" ;;
	haproxy) start_haproxy "$name" "${bes[@]}" ;;
	nginx) start_nginx_stream "$name" "${bes[@]}" ;;
	esac
}

check_tcp() { # NAME [BACKENDS...]: both files through each backend's port, each family; prints why not
	local name=$1 fam host b scheme
	shift
	for b in "${@:-${tcp_bes[@]}}"; do
		[ "$b" = tls ] && scheme=https || scheme=http
		for fam in $fams; do
			host=$(host_of "$fam")
			"$py" "$helper" check "$scheme://$host:${PORT[$name/$b]}/small.bin" 128 --wait 10 &&
				"$py" "$helper" check "$scheme://$host:${PORT[$name/$b]}/1m.bin" 1048576 --wait 2 || return 1
		done
	done
}

# ---------------------------------------------------------------- UDP proxies
dualproxy_udp_conf() { # NAME PORT DEST MODE(tcp,udp|udp) VARIANT(one|two): prints a configuration
	local listen="127.0.0.1:$2$([ "$have_v6" = yes ] && echo ", [::1]:$2")"
	local b6=; [ "$have_v6" = yes ] && b6="backend6 = [::1]:$3"
	cat <<EOF
; dualproxy for bench.sh (UDP)
[global]
log_level = warning
max_connections = 20000
drain_timeout = 1s
idle_timeout = 10m
EOF
	if [ "$5" = one ]; then
		printf '\n[%s]\nprotocol = %s\nlisten = %s\nbackend4 = 127.0.0.1:%s\n%s\n' "$1" "$4" "$listen" "$3" "$b6"
	else # the same port as two services, one per protocol
		printf '\n[%s-tcp]\nlisten = %s\nbackend4 = 127.0.0.1:%s\n%s\n' "$1" "$listen" "$3" "$b6"
		printf '\n[%s-udp]\nprotocol = udp\nlisten = %s\nbackend4 = 127.0.0.1:%s\n%s\n' "$1" "$listen" "$3" "$b6"
	fi
}

start_dualproxy_udp() { # NAME BINARY PORT DEST MODE: returns 3 if the build does not take UDP
	local name=$1 bin=$2 d=$tmp/$1 v
	mkdir -p "$d"
	for v in one two; do
		[ "$v" = two ] && [ "$5" = udp ] && break
		dualproxy_udp_conf "$name" "$3" "$4" "$5" "$v" >"$d/dualproxy.ini"
		if "$bin" -t -c "$d/dualproxy.ini" >"$d/check.log" 2>&1; then
			bg_start "$name" "$d/dualproxy.log" "$bin" -c "$d/dualproxy.ini"
			return 0
		fi
		cp "$d/check.log" "$d/check-$v.log"
	done
	return 3
}

start_nginx_udp() { # NAME PORT DEST WITH_TCP(yes|no) FLOWS
	local name=$1 d=$tmp/$1 servers= fam a tcp=
	mkdir -p "$d"
	for fam in $fams; do
		a=$(host_of "$fam")
		[ "$4" = yes ] && tcp="listen $a:$2; "
		servers="$servers	server { ${tcp}listen $a:$2 udp; proxy_pass $a:$3; proxy_timeout 10m; }
"
	done
	# error_log crit: when an iperf3 test ends, its server closes the socket while datagrams are
	# still on the way, and each of those would log an "error" line (connection refused)
	nginx_stream_conf "$d" $((2 * $5 + 1000)) crit "$servers" >"$d/nginx.conf"
	nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" -t >"$d/check.log" 2>&1 || return 1
	bg_start "$name" "$d/stdout.log" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
}

start_socat() { # NAME PORT DEST: a TCP and a UDP relay per family, each forking per peer
	local name=$1 d=$tmp/$1 fam v a
	mkdir -p "$d"
	for fam in $fams; do
		v=${fam#v}; a=$(host_of "$fam")
		bg_start "$name" "$d/socat-tcp$v.log" socat "TCP$v-LISTEN:$2,bind=$a,fork,reuseaddr,backlog=4096" "TCP$v:$a:$3"
		# -T: a child whose peer has been silent for 10 s ends (UDP has no end of its own)
		bg_start "$name" "$d/socat-udp$v.log" socat -T 10 "UDP$v-LISTEN:$2,bind=$a,fork,reuseaddr" "UDP$v:$a:$3"
	done
}

check_udp() { # NAME
	local fam
	for fam in $fams; do
		"$py" "$helper" udpcheck "$(addr_of "$fam")" "${PORT[$1]}" --wait 5 || return 1
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
tcp_targets=() udp_targets=()
if want direct; then # the backend runs anyway; this is about measuring it alone
	tcp_targets+=(direct); udp_targets+=(direct)
fi
want dualproxy && { tcp_targets+=(dualproxy); udp_targets+=(dualproxy); }
[ -n "$baseline" ] && { tcp_targets+=(baseline); udp_targets+=(baseline); }
if want haproxy && [ "$tcp_wl" = yes ]; then
	if command -v haproxy >/dev/null; then tcp_targets+=(haproxy)
	else missing "$targets_explicit" "HAProxy is not installed (Debian: apt-get install haproxy)"; fi
fi
if want nginx; then
	if nginx_stream_ok; then tcp_targets+=(nginx); udp_targets+=(nginx)
	else missing "$targets_explicit" "nginx has no stream module (Debian: apt-get install libnginx-mod-stream; nginx-light does not include it)"; fi
fi
if want socat && [ "$udp_wl" = yes ]; then
	if command -v socat >/dev/null; then udp_targets+=(socat)
	else missing "$targets_explicit" "socat is not installed (Debian: apt-get install socat)"; fi
fi
[ "$tcp_wl" = yes ] || tcp_targets=()
[ "$udp_wl" = yes ] || udp_targets=()
if [ "$udp_wl" = yes ] && want haproxy && [ "$targets_explicit" = yes ]; then
	note "HAProxy has no UDP relay: not in the UDP workloads"
fi
remove_target() { # LISTNAME TARGET
	local -n l=$1
	local keep=() k
	for k in "${l[@]}"; do [ "$k" != "$2" ] && keep+=("$k"); done
	l=("${keep[@]}")
}

echo "== starting servers in $tmp"
if [ "$tcp_wl" = yes ]; then
	make_files
	[ -n "${need_be[tls]:-}" ] && make_cert
	start_backend
	check_tcp direct || { server_log backend; die "the nginx backend does not answer"; }
	for t in "${tcp_targets[@]}"; do
		[ "$t" = direct ] && continue
		if ! start_tcp_target "$t"; then
			note "$t could not start: skipped ($(tail -n 3 "$tmp/$t/check.log" 2>/dev/null | tr '\n' ' '))"
			remove_target tcp_targets "$t"
			continue
		fi
		if ! check_tcp "$t"; then
			server_log "$t"
			die "$t does not relay the test files correctly"
		fi
	done
	for t in "${tcp_targets[@]}"; do
		echo "   $t: ports $(for b in "${tcp_bes[@]}"; do printf '%s=%s ' "$b" "${PORT[$t/$b]}"; done)pid ${PIDS[$t]}"
	done
	if [ -n "${need_be[tls]:-}" ]; then
		# does wrk with "Connection: close" make a new TLS connection per request?
		fg_run wrk -t1 -c4 -d1s -H 'Connection: close' "https://127.0.0.1:${PORT[tlsprobe]}/small.bin" >"$tmp/tlsprobe-wrk.log" 2>&1
		sleep 0.3
		tls_probe=$("$py" "$helper" tlsprobe --log "$tmp/backend/tlsprobe.log" 2>&1)
		echo "   tls probe (wrk -H 'Connection: close', direct): $tls_probe"
	fi
fi
if [ "$udp_wl" = yes ]; then
	start_iperf_server
	check_udp u_direct || { server_log iperf3; die "the iperf3 server does not answer"; }
	for t in "${udp_targets[@]}"; do
		case "$t" in
		direct) continue ;;
		dualproxy|baseline)
			bin=$binary; [ "$t" = baseline ] && bin=$baseline
			start_dualproxy_udp "u_$t" "$bin" "${PORT[u_$t]}" "${PORT[u_direct]}" "tcp, udp"; rc=$?
			if [ $rc = 3 ]; then
				note "$t ($bin) does not relay UDP yet (dualproxy -t: $(grep -m1 . "$tmp/u_$t/check-one.log" 2>/dev/null)): skipped for UDP"
				remove_target udp_targets "$t"
				continue
			fi
			;;
		nginx)
			if ! start_nginx_udp u_nginx "${PORT[u_nginx]}" "${PORT[u_direct]}" yes 100; then
				note "nginx stream could not start for UDP: skipped ($(tail -n 3 "$tmp/u_nginx/check.log" | tr '\n' ' '))"
				remove_target udp_targets nginx
				continue
			fi
			;;
		socat) start_socat u_socat "${PORT[u_socat]}" "${PORT[u_direct]}" ;;
		esac
		if ! check_udp "u_$t"; then
			server_log "u_$t"
			die "$t does not relay iperf3's UDP test (TCP control and UDP data on port ${PORT[u_$t]})"
		fi
	done
	for t in "${udp_targets[@]}"; do echo "   $t (UDP): port ${PORT[u_$t]}, pid ${PIDS[u_$t]}"; done
fi

# ---------------------------------------------------------------- throughput rounds
targets_for() { is_udp "$1" && echo "${udp_targets[@]}" || echo "${tcp_targets[@]}"; }
inst_of() { # WORKLOAD TARGET: the instance name (the process) that serves it
	is_udp "$1" && echo "u_$2" || echo "$2"
}

run_opts=() # more options for the helper's run or iperf, for one call of run_one
run_one() { # ROUND WORKLOAD FAMILY TARGET OUTFILE [WRAP...]: one wrk or iperf3 run
	local round=$1 wl=$2 fam=$3 t=$4 out=$5 pids="" hdr=() be scheme port inst
	shift 5
	inst=$(inst_of "$wl" "$t")
	[ "$t" != direct ] && pids=$(pidspec "$inst")
	local meta="{\"round\": \"$round\", \"workload\": \"$wl\", \"family\": \"$fam\", \"target\": \"$t\""
	if is_udp "$wl"; then
		local len=${wl#udp-}
		fg_run "$py" "$helper" iperf --meta "$meta, \"len\": $len}" --len "$len" \
			--out "$out" --log "$tmp/iperf3.log" --pids "$pids" --backend-pids "$(pidspec u_direct)" "${run_opts[@]}" -- \
			"$@" iperf3 -c "$(addr_of "$fam")" -p "${PORT[u_$t]}" -u -b 0 -l "$len" -t "$duration" -J --connect-timeout 3000
		sleep 0.5
		return
	fi
	be=$(wl_backend "$wl")
	case "$wl" in *-close) hdr=(-H 'Connection: close') ;; esac
	[ "$be" = tls ] && scheme=https || scheme=http
	local conns; conns=$(wl_conns "$wl")
	fg_run "$py" "$helper" run --meta "$meta, \"connections\": $conns}" \
		--out "$out" --log "$tmp/wrk.log" --pids "$pids" --backend-pids "$(pidspec direct)" \
		--status-url "http://127.0.0.1:${PORT[status]}/" "${run_opts[@]}" -- \
		"$@" wrk -t"$threads" -c"$conns" -d"${duration}s" --timeout 5s --latency -s "$lua" "${hdr[@]}" \
		"$scheme://$(host_of "$fam"):${PORT[$t/$be]}$(wl_path "$wl")"
	# let the proxies close what wrk left (thousands of connections after many-ka)
	[ "$wl" = many-ka ] && sleep 1.5 || sleep 0.3
}

n_runs=0
for wl in "${workloads[@]}"; do
	n=$(targets_for "$wl" | wc -w)
	n_runs=$((n_runs + rounds * $(echo $fams | wc -w) * n))
done
echo "== throughput: $n_runs runs of ${duration}s (about $(((n_runs * (duration * 10 + 9) / 10) / 60 + 1)) min, then the other passes)"
echo "   round workload    fam target"
for ((r = 1; r <= rounds; r++)); do
	for wl in "${workloads[@]}"; do
		read -r -a tl <<<"$(targets_for "$wl")"
		n=${#tl[@]}
		[ "$n" -gt 0 ] || continue
		for fam in $fams; do
			for ((i = 0; i < n; i++)); do
				t=${tl[$(((i + r - 1) % n))]} # rotate the order every round
				run_one "$r" "$wl" "$fam" "$t" "$tmp/results.jsonl"
			done
		done
	done
done

# ---------------------------------------------------------------- syscalls per request
proxies=()
for t in "${tcp_targets[@]}"; do [ "$t" != direct ] && proxies+=("$t"); done
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
exit_events=syscalls:sys_enter_splice
if [ "$syscall_tool" = perf ] || [ "$explain_tool" = perf ]; then
	avail=$(perf list 'syscalls:sys_e*' 2>/dev/null)
	for sc in read write readv writev recvfrom sendto recvmsg sendmsg recvmmsg sendmmsg \
		epoll_wait epoll_pwait epoll_pwait2 epoll_ctl splice accept accept4 connect close shutdown \
		setsockopt getsockopt socket pipe2 getsockname getpeername fcntl ioctl timerfd_settime \
		clock_gettime gettimeofday io_uring_enter; do
		printf '%s\n' "$avail" | grep -q "syscalls:sys_enter_$sc " && perf_events="$perf_events,syscalls:sys_enter_$sc"
	done
	for sc in read readv recvfrom recvmsg recvmmsg write writev sendto sendmsg sendmmsg \
		epoll_wait epoll_pwait epoll_pwait2 splice; do
		printf '%s\n' "$avail" | grep -q "syscalls:sys_exit_$sc " && exit_events="$exit_events,syscalls:sys_exit_$sc"
	done
fi
if [ "$syscall_tool" != none ] && [ ${#proxies[@]} -gt 0 ] && has_wl small-ka; then
	echo "== syscalls per request (small-ka, v4, $syscall_tool attached)"
	for t in "${proxies[@]}"; do
		pids=$(inst_pids "$t")
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
		run_one syscalls small-ka v4 "$t" "$tmp/syscall-runs.jsonl"
		[ "$syscall_tool" = strace ] && kill -INT "$tracer" 2>/dev/null
		for i in $(seq 100); do kill -0 "$tracer" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$tracer" 2>/dev/null && kill -TERM "$tracer" 2>/dev/null
		wait "$tracer" 2>/dev/null
		"$py" "$helper" syscalls --tool "$syscall_tool" --file "$f" --result "$tmp/syscall-runs.jsonl" \
			--target "$t" --out "$tmp/syscalls.jsonl"
		sleep 0.5
	done
fi

# ---------------------------------------------------------------- explain: calls and bytes per call
if [ "$explain" = yes ]; then
	echo "== explain: one traced run per workload (v4, $explain_tool attached)"
	for wl in "${workloads[@]}"; do
		for t in "${explain_list[@]}"; do
			case " $(targets_for "$wl") " in *" $t "*) ;; *) continue ;; esac
			inst=$(inst_of "$wl" "$t")
			pids=$(inst_pids "$inst")
			f=$tmp/explain-$t-$wl
			tracers=()
			if [ "$explain_tool" = perf ]; then
				perf record -q -m 16M -o "$f.data" -e "$exit_events" -p "$pids" -- sleep $((duration + 2)) >"$f.perf.log" 2>&1 &
				tracers+=($!)
				perf stat -x, -o "$f.stat" -e "$perf_events" -p "$pids" -- sleep $((duration + 2)) >>"$f.perf.log" 2>&1 &
				tracers+=($!)
			else
				args=(); for p in ${pids//,/ }; do args+=(-p "$p"); done
				strace -f -qq -s 0 -o "$f.strace" "${args[@]}" >"$f.strace.log" 2>&1 &
				tracers+=($!)
			fi
			started+=("${tracers[@]}")
			sleep 1
			run_opts=(--fd-watch "$pids" --fd-out "$f.fds")
			run_one explain "$wl" v4 "$t" "$tmp/explain-runs.jsonl"
			run_opts=()
			[ "$explain_tool" = strace ] && kill -INT "${tracers[@]}" 2>/dev/null
			for tr in "${tracers[@]}"; do
				for i in $(seq 150); do kill -0 "$tr" 2>/dev/null || break; sleep 0.1; done
				kill -0 "$tr" 2>/dev/null && kill -TERM "$tr" 2>/dev/null
				wait "$tr" 2>/dev/null
			done
			if [ "$explain_tool" = perf ]; then
				grep -i 'lost' "$f.perf.log" | head -n 1 | sed "s/^/   $t $wl: perf: /"
				perf script -i "$f.data" -F pid,tid,event,trace >"$f.txt" 2>>"$f.perf.log"
				rm -f "$f.data"
				"$py" "$helper" explain --tool perf --file "$f.txt" --stat "$f.stat" --result "$tmp/explain-runs.jsonl" \
					--target "$t" --workload "$wl" --fds "$f.fds" --out "$tmp/explain.jsonl"
				rm -f "$f.txt"
			else
				"$py" "$helper" explain --tool strace --file "$f.strace" --result "$tmp/explain-runs.jsonl" \
					--target "$t" --workload "$wl" --fds "$f.fds" --out "$tmp/explain.jsonl"
				rm -f "$f.strace"
			fi
			sleep 0.5
		done
	done
fi

# ---------------------------------------------------------------- the whole machine under perf stat
if [ "$perf_machine" = yes ]; then
	echo "== perf stat -a: one run per workload and target (v4)"
	for wl in "${workloads[@]}"; do
		for t in $(targets_for "$wl"); do
			run_one machine "$wl" v4 "$t" "$tmp/machine-runs.jsonl" \
				perf stat -a -x, -o "$tmp/machine-$t-$wl.csv" -e "$machine_events" --
			"$py" "$helper" machine --file "$tmp/machine-$t-$wl.csv" --result "$tmp/machine-runs.jsonl" \
				--target "$t" --workload "$wl" --out "$tmp/machine.jsonl"
		done
	done
fi

# ---------------------------------------------------------------- idle connections
for t in "${proxies[@]}"; do stop_inst "$t"; done
udp_proxies=()
for t in "${udp_targets[@]}"; do [ "$t" != direct ] && udp_proxies+=("$t"); done
for t in "${udp_proxies[@]}"; do stop_inst "u_$t"; done
if [ "$idle" -gt 0 ] && [ ${#proxies[@]} -gt 0 ]; then
	echo "== RSS with $idle idle connections (fresh proxies, IPv4)"
	for t in "${proxies[@]}"; do
		[ "$t" = baseline ] && continue
		for mode in silent partial; do
			start_tcp_target "$t" idle || { note "$t did not start for the idle test"; continue; }
			if ! check_tcp "${t}_idle" http; then
				server_log "${t}_idle"; note "$t (idle test instance) does not answer"
				stop_inst "${t}_idle"; continue
			fi
			sleep 0.5
			fg_run "$py" "$helper" idle --host 127.0.0.1 --port "${PORT[${t}_idle/http]}" --backend-port "${PORT[direct/http]}" \
				--count "$idle" --mode "$mode" --pid "${PIDS[${t}_idle]}" --target "$t" >>"$tmp/rss.jsonl"
			tail -n 1 "$tmp/rss.jsonl" | sed 's/^/   /'
			stop_inst "${t}_idle"
			unset "PIDS[${t}_idle]"
			sleep 0.5
		done
	done
fi
if [ "$udp_idle" -gt 0 ] && [ ${#udp_proxies[@]} -gt 0 ]; then
	echo "== RSS with $udp_idle idle UDP flows (fresh proxies, IPv4)"
	for t in "${udp_proxies[@]}"; do
		case "$t" in
		baseline) continue ;;
		socat) note "socat forks a process per UDP peer: not in the idle-flow test ($udp_idle processes)"; continue ;;
		dualproxy) start_dualproxy_udp u_dualproxy_idle "$binary" "${PORT[u_dualproxy_idle]}" "${PORT[usink]}" udp ||
			{ note "dualproxy did not start for the idle-flow test"; continue; } ;;
		nginx) start_nginx_udp u_nginx_idle "${PORT[u_nginx_idle]}" "${PORT[usink]}" no "$udp_idle" ||
			{ note "nginx stream did not start for the idle-flow test"; continue; } ;;
		esac
		sleep 1
		fg_run "$py" "$helper" udpidle --host 127.0.0.1 --port "${PORT[u_${t}_idle]}" --sink-port "${PORT[usink]}" \
			--count "$udp_idle" --pid "${PIDS[u_${t}_idle]}" --target "$t" >>"$tmp/udp-rss.jsonl"
		tail -n 1 "$tmp/udp-rss.jsonl" | sed 's/^/   /'
		stop_inst "u_${t}_idle"
		sleep 0.5
	done
fi

# ---------------------------------------------------------------- report
{
	echo "dualproxy benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
	echo "workloads: ${workloads[*]}; $rounds round(s) of ${duration}s runs, medians; nothing pinned"
	if [ "$tcp_wl" = yes ]; then
		echo "wrk: -t$threads -c$connections (many-ka: -c$many) --timeout 5s"
		echo "backend: $(nginx -v 2>&1 | sed 's/^nginx version: //'), worker_processes $backend_workers, keep-alive; http: sendfile; w32k: sendfile off, output_buffers 1 32k; tls: ECDSA P-256, $([ "$tls_resume" = yes ] && echo "session tickets" || echo "no session resumption"), 32 KiB buffers"
		[ -n "${tls_probe:-}" ] && echo "tls probe (wrk -H 'Connection: close'): $tls_probe"
	fi
	[ "$udp_wl" = yes ] && echo "udp: $(iperf3 --version 2>&1 | head -n 1), -u -b 0 -l 64 / -l 1200 -t $duration, server iperf3 -s; proxies relay its TCP control connection and UDP on one port"
	echo "dualproxy: $("$binary" -V 2>&1 | head -n 1) ($binary), one thread"
	[ -n "$baseline" ] && echo "baseline: $("$baseline" -V 2>&1 | head -n 1) ($baseline), one thread"
	for t in $(printf '%s\n' "${tcp_targets[@]}" "${udp_targets[@]}" | awk '!seen[$0]++'); do
		case "$t" in
		haproxy) echo "haproxy: $(haproxy -v 2>&1 | head -n 1 | sed 's/ - http.*//'), mode tcp, option splice-auto, nbthread 1" ;;
		nginx) echo "nginx stream: $(nginx -v 2>&1 | sed 's/^nginx version: //'), stream proxy_pass, worker_processes 1$([ "$udp_wl" = yes ] && echo "; UDP: listen P udp, proxy_timeout 10m, proxy_responses unset")" ;;
		socat) echo "socat: $(socat -V 2>/dev/null | sed -n 's/^socat version \([^ ]*\).*/\1/p'), TCP-LISTEN,fork and UDP-LISTEN,fork (a process per connection or UDP peer)" ;;
		esac
	done
	echo "load average (1/5/15 min): $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end; run time $((SECONDS / 60)) min $((SECONDS % 60)) s"
	[ "$(id -u)" = 0 ] && echo "run as root (dualproxy switches to nobody after binding)" || echo "run as uid $(id -u)"
	for n in "${notes[@]}"; do echo "note: $n"; done
} >"$tmp/header.txt"

echo
"$py" "$helper" report --header "$tmp/header.txt" --results "$tmp/results.jsonl" \
	--syscalls "$tmp/syscalls.jsonl" --rss "$tmp/rss.jsonl" --udp-rss "$tmp/udp-rss.jsonl" \
	--explain "$tmp/explain.jsonl" --machine "$tmp/machine.jsonl" --json "$tmp/results.json" | tee "$tmp/report.txt"
[ -n "$outdir" ] && echo "(report, raw results and logs kept in $outdir)"
exit 0
}
