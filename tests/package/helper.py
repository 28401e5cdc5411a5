"""helper.py: backends and clients inside the test container (Debian's python3,
standard library only), all on loopback.

  helper.py backends TAG=HOST:PORT ...
      serve each address until killed: every line a client sends is answered
      with "TAG PEER LINE", PEER being the address the connection came from
  helper.py ask HOST PORT [LINE]
      connect, send LINE (default "hello"), print the one-line answer; exit 3
      if the connection is refused, 1 on any other failure
  helper.py hold HOST PORT
      connect and keep the connection: each line read from stdin is sent and
      its answer printed; end of stdin closes the connection

An address with a colon is IPv6 (no brackets)."""

import socket
import socketserver
import sys
import threading

TIMEOUT = 5.0


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve(tag, host, port):
    class Server(socketserver.ThreadingTCPServer):
        address_family = family(host)
        allow_reuse_address = True
        daemon_threads = True

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            peer = self.client_address[0]
            for line in self.rfile:
                reply = "%s %s %s\n" % (tag, peer, line.decode().strip())
                self.wfile.write(reply.encode())
                self.wfile.flush()

    Server((host, port), Handler).serve_forever()


def backends(specs):
    threads = []
    for spec in specs:
        tag, _, addr = spec.partition("=")
        host, _, port = addr.rpartition(":")
        t = threading.Thread(target=serve, args=(tag, host, int(port)), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()


def connect(host, port):
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect((host, int(port)))
    return s


def exchange(s, f, line):
    s.sendall((line + "\n").encode())
    answer = f.readline()
    if not answer:
        raise ConnectionError("connection closed without an answer")
    return answer.decode().strip()


def ask(host, port, line="hello"):
    try:
        s = connect(host, port)
    except ConnectionRefusedError:
        print("refused")
        return 3
    with s, s.makefile("rb") as f:
        print(exchange(s, f, line))
    return 0


def hold(host, port):
    with connect(host, port) as s, s.makefile("rb") as f:
        s.settimeout(None)
        print("connected", flush=True)
        for line in sys.stdin:
            print(exchange(s, f, line.strip()), flush=True)
    return 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "backends":
        backends(argv[1:])
        return 0
    if len(argv) in (3, 4) and argv[0] == "ask":
        return ask(*argv[1:])
    if len(argv) == 3 and argv[0] == "hold":
        return hold(*argv[1:])
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except OSError as e:
        print("error: %s" % e)
        sys.exit(1)
