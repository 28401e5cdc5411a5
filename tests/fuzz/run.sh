#!/usr/bin/env bash
# tests/fuzz/run.sh: build the libFuzzer harnesses with clang, replay regressions and seeds, fuzz each
#
# usage: tests/fuzz/run.sh [-b BUILDDIR] [-o OUTDIR] [SECONDS [HARNESS...]]
#   SECONDS   how long each harness is fuzzed (default 20); 0 builds and replays only
#   HARNESS   any of fuzz_config fuzz_env fuzz_proxyproto fuzz_metrics (default: all)
#   -b DIR    the build directory, where configure wrote autoconfig.h
#             (default: $BUILDDIR, else the repository root)
#   -o DIR    where binaries, logs, working corpora and crash inputs go (default:
#             $FUZZ_OUT, else a temporary directory, removed when everything passed)
# environment: CC (default clang, else clang-14), FUZZ_TIMEOUT (seconds one input
# may take, default 10), FUZZ_RSS_MB (memory limit, default 2048).
#
# Every file in tests/fuzz/regressions/HARNESS/ and tests/fuzz/corpus/HARNESS/ is
# run once first; then the harness fuzzes a copy of both (the committed corpus
# does not grow). Any crash, leak, timeout or failed property fails the harness.
# Prints "HARNESS: N runs, ok" per harness and "P passed, F failed" at the end.
# Exit: 0 all passed, 1 a harness failed, 2 usage or setup error, 77 no clang
# that can build libFuzzer targets (automake's "skipped").
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRCDIR=$(cd "$HERE/../.." && pwd)
ALL_HARNESSES="fuzz_config fuzz_env fuzz_proxyproto fuzz_metrics"
DEFAULT_SECONDS=20
TAIL_LINES=60 # of a failing harness's log

usage() {
	sed -n '3,12p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

builddir=${BUILDDIR:-$SRCDIR}
outdir=${FUZZ_OUT:-}
while getopts "b:o:h" opt; do
	case $opt in
	b) builddir=$OPTARG ;;
	o) outdir=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
seconds=${1:-$DEFAULT_SECONDS}
[ $# -gt 0 ] && shift
harnesses=${*:-$ALL_HARNESSES}
case $seconds in '' | *[!0-9]*) usage ;; esac
for h in $harnesses; do
	case " $ALL_HARNESSES " in *" $h "*) ;; *) echo "run.sh: no harness '$h'" >&2; usage ;; esac
done
timeout=${FUZZ_TIMEOUT:-10}
rss_mb=${FUZZ_RSS_MB:-2048}

[ -d "$builddir" ] || { echo "run.sh: no directory $builddir" >&2; exit 2; }
builddir=$(cd "$builddir" && pwd)
if [ ! -f "$builddir/autoconfig.h" ]; then
	echo "run.sh: $builddir/autoconfig.h not found: run ./configure (or pass -b BUILDDIR)" >&2
	exit 2
fi

# ---- compiler ----
if [ -z "${CC:-}" ]; then
	CC=clang
	command -v clang >/dev/null 2>&1 || CC=clang-14
fi
SAN_FLAGS=(-g -O1 -fno-omit-frame-pointer "-fsanitize=fuzzer,address,undefined" -fno-sanitize-recover=all)
WARN_FLAGS=(-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2)

# ---- output directory ----
own_outdir=no
if [ -z "$outdir" ]; then
	outdir=$(mktemp -d "${TMPDIR:-/tmp}/dualproxy-fuzz.XXXXXX")
	own_outdir=yes
fi
mkdir -p "$outdir/obj" "$outdir/bin" "$outdir/log" "$outdir/work" "$outdir/artifacts"
outdir=$(cd "$outdir" && pwd)
failed=0
passed=0
cleanup() {
	if [ "$own_outdir" = yes ]; then
		if [ "$failed" -eq 0 ]; then
			rm -rf "$outdir"
		else
			echo "run.sh: logs and crash inputs kept in $outdir" >&2
		fi
	fi
}
trap cleanup EXIT

probe="$outdir/obj/probe"
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n);\nint LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' >"$probe.c"
if ! "$CC" "${SAN_FLAGS[@]}" "$probe.c" -o "$probe" >"$probe.log" 2>&1; then
	echo "run.sh: SKIP: '$CC' cannot build libFuzzer targets (Debian: apt-get install clang-14 libclang-rt-14-dev, or set CC)" >&2
	sed 's/^/  /' "$probe.log" >&2
	exit 77
fi

# ---- libraries: pkg-config where a .pc exists, else the plain -l ----
pkg() { # pkg NAME FALLBACK: prints cflags and libs
	if pkg-config --exists "$1" 2>/dev/null; then
		pkg-config --cflags --libs "$1"
	else
		echo "$2"
	fi
}
LIB_INIH=$(pkg inih -linih)
LIB_EV=$(pkg libev -lev)
LIB_CAPNG=$(pkg libcap-ng -lcap-ng)
INC_FLAGS=(-I"$builddir" -I"$SRCDIR/src")
# shellcheck disable=SC2086 # pkg-config output is a list of words
for w in $LIB_INIH $LIB_EV $LIB_CAPNG; do
	case $w in -l* | -L* | -Wl,*) ;; *) INC_FLAGS+=("$w") ;; esac
done

# The src/ files and libraries each harness needs (the smallest set that links).
harness_sources() {
	case $1 in
	fuzz_config) echo "config.c addr.c parse.c log.c cidr.c proxyproto.c hashtab.c" ;;
	fuzz_env) echo "envconfig.c text.c config.c addr.c parse.c log.c cidr.c proxyproto.c hashtab.c" ;;
	fuzz_proxyproto) echo "proxyproto.c addr.c" ;;
	# metrics.c is part of the event loop and opens its sockets through
	# listener.c, which pulls in the relay: the daemon less main.c
	fuzz_metrics) all_sources ;;
	esac
}
harness_libs() {
	case $1 in
	fuzz_config | fuzz_env) echo "$LIB_INIH" ;;
	fuzz_proxyproto) echo "" ;;
	fuzz_metrics) echo "$ALL_LIBS" ;;
	esac
}
# If src/ grows a dependency the small set lacks: the daemon less main.c.
all_sources() {
	local f
	for f in "$SRCDIR"/src/*.c; do
		[ "${f##*/}" = main.c ] || printf '%s ' "${f##*/}"
	done
}
ALL_LIBS="$LIB_EV $LIB_INIH $LIB_CAPNG -lm"
harness_max_len() {
	case $1 in
	fuzz_config | fuzz_metrics) echo 4096 ;; # a metrics request head is at most METRICS_REQUEST_MAX
	fuzz_env) echo 8192 ;;                   # room for 64 long SRC_RANGES
	fuzz_proxyproto) echo 64 ;;              # its input layout uses 40 bytes
	esac
}
harness_dict() {
	case $1 in
	fuzz_config) echo "$HERE/config.dict" ;;
	fuzz_env) echo "$HERE/env.dict" ;;
	fuzz_metrics) echo "$HERE/http.dict" ;;
	*) echo "" ;;
	esac
}

# Compiles src/FILE once per run; prints the object's path.
object() {
	local o="$outdir/obj/${1%.c}.o"
	if [ ! -f "$o" ]; then
		"$CC" "${SAN_FLAGS[@]}" "${WARN_FLAGS[@]}" "${INC_FLAGS[@]}" -c "$SRCDIR/src/$1" -o "$o" >>"$2" 2>&1 || return 1
	fi
	echo "$o"
}

# Builds bin/HARNESS; the build log goes to LOG. Returns non-zero on failure.
build() {
	local h=$1 log=$2 o f
	local objs=()
	"$CC" "${SAN_FLAGS[@]}" "${WARN_FLAGS[@]}" -Werror "${INC_FLAGS[@]}" -c "$HERE/$h.c" -o "$outdir/obj/$h.o" >>"$log" 2>&1 || return 1
	for f in $(harness_sources "$h"); do
		o=$(object "$f" "$log") || return 1
		objs+=("$o")
	done
	# shellcheck disable=SC2046 # the libraries are a list of words
	if "$CC" "${SAN_FLAGS[@]}" "$outdir/obj/$h.o" "${objs[@]}" -o "$outdir/bin/$h" $(harness_libs "$h") >>"$log" 2>&1; then
		return 0
	fi
	echo "run.sh: the small source set did not link; trying all of src/ but main.c" >>"$log"
	objs=()
	for f in $(all_sources); do
		o=$(object "$f" "$log") || return 1
		objs+=("$o")
	done
	# shellcheck disable=SC2086 # the libraries are a list of words
	"$CC" "${SAN_FLAGS[@]}" "$outdir/obj/$h.o" "${objs[@]}" -o "$outdir/bin/$h" $ALL_LIBS >>"$log" 2>&1
}

# Regular files of a directory, one per line (no dotfiles, no README).
inputs() {
	[ -d "$1" ] || return 0
	find "$1" -maxdepth 1 -type f ! -name '.*' ! -name 'README*' | LC_ALL=C sort
}

fail() { # fail HARNESS WHY LOG
	echo "$1: FAILED ($2)"
	echo "---- last $TAIL_LINES lines of $3 ----"
	tail -n "$TAIL_LINES" "$3"
	echo "----"
	failed=$((failed + 1))
}

export UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}"
export ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}"

for h in $harnesses; do
	blog="$outdir/log/$h.build.log"
	rlog="$outdir/log/$h.replay.log"
	flog="$outdir/log/$h.fuzz.log"
	: >"$blog"
	if ! build "$h" "$blog"; then
		fail "$h" "build" "$blog"
		continue
	fi
	bin="$outdir/bin/$h"
	mkdir -p "$outdir/artifacts/$h"
	common=(-timeout="$timeout" -rss_limit_mb="$rss_mb" -artifact_prefix="$outdir/artifacts/$h/")

	# 1. every regression and seed once: findings stay found
	mapfile -t files < <(inputs "$HERE/regressions/$h"; inputs "$HERE/corpus/$h")
	if [ ${#files[@]} -gt 0 ] && ! "$bin" "${common[@]}" "${files[@]}" >"$rlog" 2>&1; then
		fail "$h" "replaying regressions/$h and corpus/$h" "$rlog"
		continue
	fi
	if [ "$seconds" -eq 0 ]; then
		echo "$h: ${#files[@]} inputs replayed, ok"
		passed=$((passed + 1))
		continue
	fi

	# 2. fuzz a working copy of the seeds and regressions
	work="$outdir/work/$h"
	rm -rf "$work"
	mkdir -p "$work"
	[ ${#files[@]} -gt 0 ] && cp "${files[@]}" "$work/"
	dict=$(harness_dict "$h")
	if ! "$bin" "${common[@]}" -max_total_time="$seconds" -max_len="$(harness_max_len "$h")" \
		${dict:+-dict="$dict"} -print_final_stats=1 "$work" >"$flog" 2>&1; then
		artifact=$(find "$outdir/artifacts/$h" -type f | head -n 1)
		kind=$(basename "${artifact:-crash-unknown}" | sed 's/-.*//')
		fail "$h" "$kind; input: ${artifact:-none saved}; save it under tests/fuzz/regressions/$h/" "$flog"
		continue
	fi
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$flog" | tail -n 1)
	echo "$h: ${runs:-?} runs, ok"
	passed=$((passed + 1))
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
