#!/bin/sh
# run.sh: the container suite: build the image from contrib/container/Containerfile,
# then pytest plays it with `podman kube play` (tests/container/test_*.py)
#
#   tests/container/run.sh [PYTEST ARGS...]
#
# With no test file among the arguments the whole suite runs; name files (or
# FILE::TEST) to run only those.
#
# Environment: DUALPROXY_SRCDIR (the source tree, default two levels above this
# script), PYTHON3 (default /usr/bin/python3, Debian's, with pytest and yaml),
# DUALPROXY_IMAGE (test this image instead of building one; it is kept).
# Needs root, podman, runc, mmdebstrap, iproute2 and this machine's apt
# sources (the build mounts /etc/apt; no container registry is used). A missing
# tool is a failure, not a skip. Cleans up its image, pods, network namespace
# and podman configuration on any exit.
set -eu

srcdir=${DUALPROXY_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
srcdir=$(cd "$srcdir" && pwd)
python=${PYTHON3:-/usr/bin/python3}
run=$$

if [ "$(id -u)" != 0 ]; then
	echo "run.sh: the container suite needs root (podman kube play, network namespaces)" >&2
	exit 1
fi
if ! command -v ip >/dev/null 2>&1; then
	echo "run.sh: ip not found (Debian: apt-get install iproute2)" >&2
	exit 1
fi

state=$(mktemp -d "${TMPDIR:-/tmp}/dualproxy-container.XXXXXX")
built=
cleanup() {
	status=$?
	trap - EXIT INT TERM
	# whatever a crashed or interrupted pytest left behind (names carry $run)
	for pod in $(podman pod ls --format '{{.Name}}' --filter "name=^dpc$run-" 2>/dev/null); do
		podman pod rm -f -t 0 "$pod" >/dev/null 2>&1 || :
	done
	for ctr in $(podman ps -a --format '{{.Names}}' --filter "name=^dpc$run-" 2>/dev/null); do
		podman rm -f -t 0 "$ctr" >/dev/null 2>&1 || :
	done
	podman rmi -f "localhost/dualproxy-context:$run" >/dev/null 2>&1 || :
	ip link del "dpc${run}h" >/dev/null 2>&1 || :
	ip netns del "dpc$run" >/dev/null 2>&1 || :
	[ -z "$built" ] || podman rmi -f "$built" >/dev/null 2>&1 || :
	rm -rf "$state"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

conf=$(sh "$srcdir/tests/container/setup.sh" "$state" | sed -n 's/^CONTAINERS_CONF=//p')
[ -n "$conf" ] || { echo "run.sh: setup.sh wrote no configuration" >&2; exit 1; }
export CONTAINERS_CONF="$conf"

image=${DUALPROXY_IMAGE:-}
if [ -z "$image" ]; then
	image=localhost/dualproxy-check:$run
	start=$(date +%s)
	echo "run.sh: building $image from contrib/container/Containerfile" >&2
	if ! podman build --quiet -v /etc/apt:/etc/apt:ro \
		-f "$srcdir/contrib/container/Containerfile" -t "$image" "$srcdir" \
		>"$state/build.log" 2>&1; then
		tail -n 60 "$state/build.log" >&2
		echo "run.sh: podman build failed" >&2
		exit 1
	fi
	built=$image
	echo "run.sh: built $image in $(($(date +%s) - start))s" >&2
fi

export DUALPROXY_IMAGE="$image" DUALPROXY_SRCDIR="$srcdir" DUALPROXY_CT_RUN="$run"
export PYTHONDONTWRITEBYTECODE=1
named=
for arg in "$@"; do
	case $arg in -*) ;; *) [ ! -e "${arg%%::*}" ] || named=yes ;; esac
done
[ -n "$named" ] || set -- "$srcdir/tests/container" "$@"
"$python" -m pytest -p no:cacheprovider -ra "$@"
