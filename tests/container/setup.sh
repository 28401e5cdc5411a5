#!/bin/sh
# setup.sh: podman for the container tests: its configuration and the Debian 12
# base image, made locally (no container registry is needed or used).
#
#   tests/container/setup.sh STATE_DIR
#
# writes STATE_DIR/containers.conf and prints the line to export it:
#   CONTAINERS_CONF=STATE_DIR/containers.conf
# and makes sure the images the Containerfiles start FROM exist:
# debian:12 and debian:12-slim, both from `mmdebstrap --variant=apt bookworm`
# (built once, then reused from podman's storage).
#
# The configuration: runc and cgroupfs (crun fails on some cgroup v1 layouts),
# and container ulimits no higher than this process's hard limits (runc cannot
# raise them without CAP_SYS_RESOURCE). A missing podman, runc or mmdebstrap is
# an error, never a skip.
set -eu

state=${1:?usage: setup.sh STATE_DIR}
mkdir -p "$state"
state=$(cd "$state" && pwd)

for tool in podman runc mmdebstrap; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "setup.sh: $tool not found (Debian: apt-get install podman runc mmdebstrap)" >&2
		exit 1
	fi
done

nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
# a small process limit (dualproxy is one process), and never above the hard
# limit this process has
nproc=4096
hard=$(sed -n 's/^Max processes *\([0-9]*\) *\([0-9]*\).*/\2/p' /proc/self/limits)
[ -n "$hard" ] && [ "$hard" -lt "$nproc" ] && nproc=$hard

conf="$state/containers.conf"
cat >"$conf" <<EOF
# written by tests/container/setup.sh
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$conf"

base=localhost/dualproxy-base:bookworm
if ! podman image exists "$base"; then
	echo "setup.sh: building $base with mmdebstrap" >&2
	mmdebstrap --quiet --variant=apt bookworm "$state/bookworm.tar"
	podman import --quiet "$state/bookworm.tar" "$base" >/dev/null
	rm -f "$state/bookworm.tar"
fi
for name in docker.io/library/debian:12 docker.io/library/debian:12-slim; do
	podman image exists "$name" || podman tag "$base" "$name"
done
echo "CONTAINERS_CONF=$conf"
