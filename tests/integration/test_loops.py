"""Loops through address translation: a backend address that is not this
host's, which a NAT rule (as kube-proxy's DNAT of a ClusterIP would) sends
back to one of dualproxy's own ports. `dualproxy -t` cannot see such a loop;
at run time the connection (or UDP flow) that comes back from one of
dualproxy's own backend sockets is refused at once and counted in
dualproxy_refused_total{reason="loop"}, so one client makes one refused
loop, not thousands of relays.

Everything runs in a network namespace of its own: a veth pair with
10.255.N.2/24 and fd00:255:N::2/64, and iptables/ip6tables OUTPUT DNAT rules
from 10.255.N.1 / fd00:255:N::1 back to dualproxy. A second service relays
through the same kind of rule to a real echo server: a client from the same
address is served (no false alarm)."""

import os
import secrets
import shutil
import subprocess
import sys

import pytest

from conftest import T, free_dual_port, ini, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ip netns, iptables)")

CLIENT = r"""
import socket, sys, time
family, host, port, proto = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
af = socket.AF_INET6 if family == "6" else socket.AF_INET
if proto == "tcp":
    try:
        # the reset can come before connect() has returned: the whole loop
        # is a few packets through the kernel
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"hello through the loop\n")
        data = s.recv(100)
        print("data" if data else "eof", data.decode(errors="replace").strip())
    except (ConnectionResetError, BrokenPipeError):
        print("reset")
    except socket.timeout:
        print("timeout")
else:
    s = socket.socket(af, socket.SOCK_DGRAM)
    s.settimeout(1)
    s.sendto(b"hello through the loop", (host, port))
    try:
        print("data", s.recv(100).decode())
    except (socket.timeout, ConnectionRefusedError):
        print("none")
"""

ECHO = r"""
import socket, sys, threading
def tcp(af, host, port):
    l = socket.socket(af, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, port)); l.listen(64)
    while True:
        c, a = l.accept()
        c.sendall(b"echo " + c.recv(100)); c.close()
def udp(af, host, port):
    s = socket.socket(af, socket.SOCK_DGRAM); s.bind((host, port))
    while True:
        d, a = s.recvfrom(100); s.sendto(b"echo " + d, a)
port = int(sys.argv[1])
for af, host in ((socket.AF_INET, sys.argv[2]), (socket.AF_INET6, sys.argv[3])):
    threading.Thread(target=tcp, args=(af, host, port), daemon=True).start()
    threading.Thread(target=udp, args=(af, host, port), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


def run(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True, timeout=T(20))
    if check and r.returncode != 0:
        raise AssertionError("%s failed: %s%s" % (" ".join(args), r.stdout, r.stderr))
    return r


class Net:
    """A network namespace with one address of each family, and NAT rules."""

    def __init__(self):
        for tool in ("ip", "iptables", "ip6tables"):
            if shutil.which(tool) is None:
                pytest.fail("%s not found (Debian: apt-get install iproute2 iptables)" % tool)
        self.n = secrets.randbelow(200) + 10
        self.ns = "dp-loop-%s" % secrets.token_hex(4)
        self.v4 = "10.255.%d.2" % self.n
        self.nat4 = "10.255.%d.1" % self.n
        self.v6 = "fd00:255:%x::2" % self.n
        self.nat6 = "fd00:255:%x::1" % self.n
        self.procs = []
        run("ip", "netns", "add", self.ns)
        try:
            self.ip("link", "set", "lo", "up")
            self.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
            self.ip("link", "set", "v0", "up")
            self.ip("link", "set", "v1", "up")
            self.ip("addr", "add", self.v4 + "/24", "dev", "v0")
            self.ip("-6", "addr", "add", self.v6 + "/64", "dev", "v0", "nodad")
        except BaseException:
            self.close()
            raise

    def ip(self, *args):
        return run("ip", "-n", self.ns, *args)

    def exec(self, *args, check=True):
        return run("ip", "netns", "exec", self.ns, *args, check=check)

    def dnat(self, proto, port, to_port):
        """Packets to NAT-address:port go to our own address:to_port."""
        self.exec("iptables", "-t", "nat", "-A", "OUTPUT", "-d", self.nat4, "-p", proto,
                  "--dport", str(port), "-j", "DNAT", "--to-destination",
                  "%s:%d" % (self.v4, to_port))
        self.exec("ip6tables", "-t", "nat", "-A", "OUTPUT", "-d", self.nat6, "-p", proto,
                  "--dport", str(port), "-j", "DNAT", "--to-destination",
                  "[%s]:%d" % (self.v6, to_port))

    def client(self, family, port, proto):
        host = self.v6 if family == "6" else self.v4
        r = self.exec(sys.executable, "-c", CLIENT, family, host, str(port), proto)
        return r.stdout.strip()

    def start_echo(self, port):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", ECHO,
                              str(port), self.v4, self.v6], stdout=subprocess.PIPE,
                             text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "ready"

    def metrics(self, port):
        code = ("import urllib.request, sys; sys.stdout.write(urllib.request.urlopen("
                "'http://127.0.0.1:%d/metrics', timeout=5).read().decode())" % port)
        return self.exec(sys.executable, "-c", code).stdout

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()
        run("ip", "netns", "del", self.ns, check=False)


def sample(text, name, **labels):
    want = ",".join('%s="%s"' % kv for kv in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = line[len(name) + 1:line.index("}")]
            if set(got.split(",")) == set(want.split(",")):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no %s{%s} in:\n%s" % (name, want, text))


@pytest.fixture
def net():
    n = Net()
    yield n
    n.close()


@pytest.fixture
def looped(net, proxy_factory):
    """dualproxy in the namespace: [loop] sends to the NAT address, which
    comes back to [loop] itself; [real] goes through NAT to an echo server."""
    loop, real, mport, echo, back, via = (free_dual_port() for _ in range(6))
    for proto in ("tcp", "udp"):
        net.dnat(proto, back, loop)
        net.dnat(proto, via, echo)
    net.start_echo(echo)
    proxy = proxy_factory(ini("""
        [global]
        log_level = debug
        metrics_listen = 127.0.0.1:%d
        [loop]
        listen = %d
        protocol = tcp, udp
        backend4 = %s:%d
        backend6 = [%s]:%d
        [real]
        listen = %d
        protocol = tcp, udp
        backend4 = %s:%d
        backend6 = [%s]:%d
    """ % (mport, loop, net.nat4, back, net.nat6, back, real, net.nat4, via, net.nat6, via)),
        wrapper=("ip", "netns", "exec", net.ns))
    return proxy, net, loop, real, mport


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_loop_through_nat_ends_at_once(looped, proto):
    proxy, net, loop, real, mport = looped
    for family in ("4", "6"):
        out = net.client(family, loop, proto)
        assert not out.startswith("data"), "a loop answered: %r" % out
        if proto == "tcp":
            assert out in ("reset", "eof"), out
    # exactly one refused loop per client and family, not a pile of relays
    def counts():
        m = net.metrics(mport)
        return (sample(m, "dualproxy_refused_total", service="loop", reason="loop",
                       protocol=proto),
                sum(sample(m, "dualproxy_connections_total", service="loop", family=f,
                           protocol=proto) for f in ("ipv4", "ipv6")),
                sample(m, "dualproxy_connections_active", service="loop", protocol=proto))
    if proto == "tcp":
        wait_until(lambda: counts() == (2, 2, 0), T(5), what="two refused loops, two relays")
    else:
        # a UDP flow stays until it is idle; it made exactly one datagram loop
        wait_until(lambda: counts()[:2] == (2, 2), T(5), what="two refused loops, two flows")
    assert len(proxy.grep(r"^.*debug: loop service=loop client=")) == 2
    assert counts()[:2] == (2, 2), "the loops went on: %r" % (counts(),)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_client_from_own_address_is_served(looped, proto):
    """A client from the address of dualproxy's own backend sockets, through
    the same kind of NAT to a real server: served, no loop counted."""
    proxy, net, loop, real, mport = looped
    for _ in range(3):
        for family in ("4", "6"):
            out = net.client(family, real, proto)
            assert out == "data echo hello through the loop", out
    m = net.metrics(mport)
    assert sample(m, "dualproxy_refused_total", service="real", reason="loop",
                  protocol=proto) == 0
