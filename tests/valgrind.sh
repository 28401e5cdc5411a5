#!/bin/sh
# valgrind.sh: run dualproxy under valgrind memcheck; used as DUALPROXY by
# `make check-valgrind`. Any memory error or leak makes it exit 99.
# DUALPROXY_REAL names the binary (default: an in-tree build's).
# --vgdb=no: no gdbserver FIFOs in /tmp, whose names a later process with
# the same PID (here one that runs as nobody) could not create again.
real=${DUALPROXY_REAL:-$(dirname "$0")/../src/dualproxy}
exec valgrind --quiet --vgdb=no --tool=memcheck --error-exitcode=99 --leak-check=full \
	--show-leak-kinds=definite,indirect,possible \
	--errors-for-leak-kinds=definite,indirect,possible \
	"$real" "$@"
