#!/bin/sh
# valgrind.sh: run dualproxy under valgrind memcheck; used as DUALPROXY by
# `make check-valgrind`. Any memory error or leak makes it exit 99.
exec valgrind --quiet --tool=memcheck --error-exitcode=99 --leak-check=full \
	--show-leak-kinds=definite,indirect,possible \
	--errors-for-leak-kinds=definite,indirect,possible \
	--track-fds=no "${DUALPROXY_REAL:?}" "$@"
