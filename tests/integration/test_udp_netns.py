"""Replies leave from the address the client sent to (IP_PKTINFO /
IPV6_PKTINFO), also on a wildcard listen on a host with several addresses.

Two new network namespaces joined by a veth pair: the server namespace has
two IPv4 and two IPv6 addresses on its end (10.77.0.1, 10.77.0.2, fd77::1,
fd77::2), the client namespace one of each (10.77.0.100, fd77::100).
dualproxy listens on a bare port (0.0.0.0 and [::]) in the server namespace
with `protocol = udp`, relaying to UDP echo backends on that namespace's
127.0.0.1 and ::1. Clients in the client namespace send to each of the four
addresses, and clients in the server namespace itself, bound to one of its
addresses, send to the other: every answer's source (recvfrom) must be the
address and port the client sent to. Without pktinfo the kernel would pick
the source by route (the first address of the subnet, or the client's own
address for a local client), so half of the cases would fail.

Needs root (ip netns add); the namespaces, the backends and dualproxy
(started with `ip netns exec`, which execs: the PID is the process's) are
removed and stopped by PID at teardown."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import IS_ROOT, T, fmt_addr, ini


SRV_DEV, CLI_DEV = "dpx-u-srv", "dpx-u-cli"
SRV_ADDRS = ["10.77.0.1", "10.77.0.2", "fd77::1", "fd77::2"]
CLI_ADDRS = ["10.77.0.100", "fd77::100"]
PORT = 5353

# In the server namespace: UDP echo servers on 127.0.0.1 and ::1 answering
# b'<tag>|' + datagram; prints {"v4": port, "v6": port} once bound, then
# serves until killed.
BACKENDS = r"""
import json, selectors, socket, sys
sel = selectors.DefaultSelector()
ports = {}
for tag, fam, host in (("v4", socket.AF_INET, "127.0.0.1"), ("v6", socket.AF_INET6, "::1")):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((host, 0))
    ports[tag] = s.getsockname()[1]
    sel.register(s, selectors.EVENT_READ, tag)
print(json.dumps(ports), flush=True)
while True:
    for key, _ in sel.select():
        data, peer = key.fileobj.recvfrom(65536)
        key.fileobj.sendto(key.data.encode() + b"|" + data, peer)
"""

# In either namespace: for each attempt {src, dst, port, n} a socket bound
# to (src, 0) sends n datagrams to (dst, port), unconnected, and records the
# source address of each answer. Prints the list of results.
CLIENTS = r"""
import json, socket, sys
attempts, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
out = []
for a in attempts:
    fam = socket.AF_INET6 if ":" in a["dst"] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((a["src"], 0))
    s.settimeout(timeout)
    r = {"src": a["src"], "dst": a["dst"], "answers": []}
    for i in range(a["n"]):
        msg = ("%s -> %s #%d" % (a["src"], a["dst"], i)).encode()
        s.sendto(msg, (a["dst"], a["port"]))
        try:
            data, peer = s.recvfrom(65536)
        except socket.timeout:
            r["answers"].append(None)
            continue
        r["answers"].append({"from": list(peer[:2]), "data": data.decode("latin-1"),
                             "sent": msg.decode()})
    s.close()
    out.append(r)
print(json.dumps(out))
"""


def ip(*args):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=T(10))
    assert r.returncode == 0, "ip %s: %s" % (" ".join(args), r.stderr.strip())


class Namespaces:
    def __init__(self):
        tag = "%d-%s" % (os.getpid(), secrets.token_hex(3))
        self.srv, self.cli = "dpx-udp-srv-" + tag, "dpx-udp-cli-" + tag
        self.made = []
        self.procs = []

    def create(self):
        if shutil.which("ip") is None:
            pytest.fail("ip (iproute2) not found", pytrace=False)
        for ns in (self.srv, self.cli):
            ip("netns", "add", ns)
            self.made.append(ns)
        ip("link", "add", SRV_DEV, "netns", self.srv, "type", "veth",
           "peer", "name", CLI_DEV, "netns", self.cli)
        for ns, dev, addrs in ((self.srv, SRV_DEV, SRV_ADDRS), (self.cli, CLI_DEV, CLI_ADDRS)):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", dev, "addrgenmode", "none")
            for a in addrs:
                if ":" in a:
                    ip("-n", ns, "addr", "add", a + "/64", "dev", dev, "nodad")
                else:
                    ip("-n", ns, "addr", "add", a + "/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        return self

    def start_backends(self):
        p = subprocess.Popen(["ip", "netns", "exec", self.srv, sys.executable, "-c", BACKENDS],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        line = p.stdout.readline()
        assert line, "the backends did not start: %s" % p.stderr.read()
        return json.loads(line)

    def clients(self, ns, attempts, timeout=None):
        timeout = T(2) if timeout is None else timeout
        for a in attempts:
            a.setdefault("port", PORT)
            a.setdefault("n", 3)
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENTS,
                            json.dumps(attempts), str(timeout)], capture_output=True,
                           text=True, timeout=T(10) + timeout * sum(a["n"] for a in attempts))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def delete(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(T(5))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(T(5))
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=T(10))


@pytest.fixture
def namespaces():
    if not IS_ROOT:
        pytest.skip("needs root: creates network namespaces")
    ns = Namespaces()
    try:
        yield ns.create()
    finally:
        ns.delete()


def check(results):
    problems = []
    for r in results:
        for ans in r["answers"]:
            if ans is None:
                problems.append("%s -> %s: no answer" % (r["src"], r["dst"]))
                continue
            src = tuple(ans["from"])
            if src != (r["dst"], PORT):
                problems.append("%s -> %s: answer from %s" % (
                    r["src"], fmt_addr(r["dst"], PORT), fmt_addr(*src)))
            tag = "v6" if ":" in r["dst"] else "v4"
            if ans["data"] != "%s|%s" % (tag, ans["sent"]):
                problems.append("%s -> %s: answer %r" % (r["src"], r["dst"], ans["data"]))
    assert not problems, "\n".join(problems)


def test_udp_replies_from_the_address_sent_to(namespaces, proxy_factory):
    ports = namespaces.start_backends()
    proxy_factory(ini("""
        [global]
        log_level = debug
        drain_timeout = 300ms
        [dns]
        listen = %d
        protocol = udp
        backend4 = 127.0.0.1:%d
        backend6 = [::1]:%d
    """ % (PORT, ports["v4"], ports["v6"])), wrapper=("ip", "netns", "exec", namespaces.srv))
    # from the other namespace, to each of the four addresses
    remote = [{"src": CLI_ADDRS[0] if ":" not in dst else CLI_ADDRS[1], "dst": dst}
              for dst in SRV_ADDRS]
    check(namespaces.clients(namespaces.cli, remote))
    # on the server's host itself, from one of its addresses to the other
    local = []
    for fam in ([a for a in SRV_ADDRS if ":" not in a], [a for a in SRV_ADDRS if ":" in a]):
        local += [{"src": fam[0], "dst": fam[1]}, {"src": fam[1], "dst": fam[0]},
                  {"src": fam[0], "dst": fam[0]}]
    local += [{"src": "127.0.0.1", "dst": "127.0.0.1"}, {"src": "::1", "dst": "::1"}]
    check(namespaces.clients(namespaces.srv, local))
    # the remote ones again, in the other order (the flows are new)
    check(namespaces.clients(namespaces.cli, remote[::-1]))
