#!/bin/sh
# run.sh: the integration suite: pytest against the built binary over real sockets
srcdir=${DUALPROXY_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
export PYTHONDONTWRITEBYTECODE=1
exec "${PYTHON3:-/usr/bin/python3}" -m pytest -p no:cacheprovider -ra \
	"$srcdir/tests/integration" "$@"
