#!/bin/sh
# demo.sh: dualproxy's main job on loopback, no cluster needed: two backends
# (one on 127.0.0.1, one on ::1), dualproxy in front on both families, and one
# request through each family.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${DUALPROXY:-$top/src/dualproxy}
py=/usr/bin/python3
dir=$(mktemp -d)
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# a free TCP port on both 127.0.0.1 and ::1
free_port() {
	"$py" - <<'PY'
import socket
while True:
    s4 = socket.socket(); s4.bind(("127.0.0.1", 0)); port = s4.getsockname()[1]
    try:
        s6 = socket.socket(socket.AF_INET6); s6.bind(("::1", port)); s6.close()
    except OSError:
        s4.close(); continue
    s4.close(); print(port); break
PY
}

# a tiny HTTP backend that says which family it serves and who connected
backend() { # ADDRESS PORT NAME
	"$py" - "$@" <<'PY' &
import http.server, socket, sys
addr, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from the {name} backend ({addr}), you came from {self.client_address[0]}\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(http.server.HTTPServer):
    address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
S((addr, port), H).serve_forever()
PY
	pids="$pids $!"
}

p4=$(free_port); p6=$(free_port); front=$(free_port)
backend 127.0.0.1 "$p4" IPv4
backend ::1 "$p6" IPv6
cat > "$dir/demo.ini" <<INI
[global]
log_level = debug

[demo]
listen = $front            ; 0.0.0.0:$front and [::]:$front
backend4 = 127.0.0.1:$p4
backend6 = [::1]:$p6
INI
echo "== configuration ($dir/demo.ini)"
cat "$dir/demo.ini"
"$bin" -t -c "$dir/demo.ini"
"$bin" -c "$dir/demo.ini" 2>"$dir/log" &
pids="$pids $!"

# wait until dualproxy and the backends answer
for _ in $(seq 50); do
	grep -q "ready" "$dir/log" 2>/dev/null && curl -s -o /dev/null "http://127.0.0.1:$p4/" &&
		curl -s -o /dev/null "http://[::1]:$p6/" && break
	sleep 0.1
done

echo
echo "== curl -4 http://127.0.0.1:$front/"
curl -sS --max-time 5 "http://127.0.0.1:$front/"
echo "== curl -6 http://[::1]:$front/"
curl -sS --max-time 5 "http://[::1]:$front/"
sleep 0.2
echo
echo "== dualproxy log"
cat "$dir/log"
