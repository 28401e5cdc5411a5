"""K3s' own svclb pods, run with dualproxy's image as K3s' lbImage.

Four LoadBalancer Services, each turned into the DaemonSet K3s' servicelb
makes of it (servicelb.svclb_daemonset(): containers lb-tcp-PORT / lb-udp-PORT,
env SRC_PORT SRC_RANGES DEST_PROTO DEST_PORT DEST_IPS, capabilities.add
[NET_ADMIN], no command, no arguments), played as pods with `podman kube play`
in this machine's network:

  traefik   dual-stack, ClusterIPs 127.0.0.1 and ::1, port P over TCP and UDP
            (one container each, as for Traefik's HTTP/3 port)
  whoami4   single-stack IPv4: DEST_IPS holds only 127.0.0.1
  internal  dual-stack with loadBalancerSourceRanges [10.213.N.0/30] (IPv4
            only): SRC_RANGES has no IPv6 range
  local     dual-stack, externalTrafficPolicy: Local: DEST_PORT is the
            NodePort, DEST_IPS the node's addresses (status.hostIPs, here the
            host side of the suite's veth pair), backends listening there

In a cluster kube-proxy takes a relay to ClusterIP:PORT to the endpoints; here
the ClusterIPs are this machine's loopback addresses and DEST_PORT of the
Cluster-policy containers is pointed at their backends' port (a relay to
127.0.0.1:SRC_PORT would reach dualproxy itself). Nothing else is changed.

Clients connect over IPv4 and IPv6, from loopback and from the suite's network
namespace (addresses outside 127.0.0.0/8 and ::1). Backends are tagged: each
answer names the backend and the family it saw; payloads are checked by
SHA-256. Every container's dualproxy is checked in /proc: no capability
beyond CAP_NET_BIND_SERVICE (NET_ADMIN was given), no_new_privs, not root.
SIGTERM: idle containers exit 0 at once; one with a connection open keeps
relaying it and exits 0 as soon as it ends, or at the 25 s drain_timeout,
inside Kubernetes' 30 s grace period.

UDP: the traefik pod has an lb-udp container next to its lb-tcp one, on the
same port (DEST_PROTO=UDP), relaying to UDP backends of each family.
"""

import re
import socket
import threading
import time

import pytest

import servicelb
from conftest import (ENV_DRAIN_SECONDS, K8S_GRACE_SECONDS, V4, V6, check_privileges,
                      client, expect_refused, expect_rst, free_port_on,
                      it, pod_name, service_ports, tagged_pair, through,
                      udp_exchange)

ENV_NAMES = ["SRC_PORT", "SRC_RANGES", "DEST_PROTO", "DEST_PORT", "DEST_IPS"]
NODEPORT_LOW, NODEPORT_HIGH = 30000, 32768  # Kubernetes' NodePort range
PAYLOAD = 300 * 1024
UDP_SIZES = (1, 100, 1200, 1472, 8000)


class Services:
    """The played pods (by Service name) and what the tests need to know."""


@pytest.fixture(scope="module")
def svclb(pods, backends, udp_backends, netns, image):
    s = Services()
    s.ns = netns

    # the backends first, then the Services' ports (none of them a backend's)
    s.web_dest, s.web4, s.web6 = tagged_pair(backends, V4, V6, "web4", "web6",
                                             port=free_port_on((V4, V6), udp=True))
    s.udp4 = udp_backends(V4, s.web_dest, "udp4")
    s.udp6 = udp_backends(V6, s.web_dest, "udp6")
    s.single_dest, s.single4, s.single6 = tagged_pair(backends, V4, V6, "single4", "single6")
    s.ranges_dest, s.ranges4, s.ranges6 = tagged_pair(backends, V4, V6, "ranges4", "ranges6")
    s.nodeport = free_port_on((netns.host4, netns.host6), low=NODEPORT_LOW, high=NODEPORT_HIGH)
    _, s.node4, s.node6 = tagged_pair(backends, netns.host4, netns.host6, "node4", "node6",
                                      port=s.nodeport)
    (s.web,) = service_ports(1, udp=True)
    s.single, s.ranges, s.local = [p for p in service_ports(4) if p != s.web][:3]

    # traefik: dual-stack, TCP (and UDP) on one port
    ports = [{"port": s.web, "protocol": "TCP"}, {"port": s.web, "protocol": "UDP"}]
    traefik = servicelb.service("traefik", "6f1c93a0-5b1e-4f0e-9d51-0c7d2b7f5a11", ports,
                                cluster_ips=[V4, V6])

    # whoami4: single-stack IPv4
    whoami4 = servicelb.service("whoami4", "0b7e4c2d-88a1-4c55-b1e6-5d0f3a9c7e42",
                                [{"port": s.single, "protocol": "TCP"}],
                                families=["IPv4"], cluster_ips=[V4])

    # internal: loadBalancerSourceRanges with an IPv4 range only
    internal = servicelb.service("internal", "c3d9a7e1-2f4b-4a8e-8c1d-7e6b5a4f3d21",
                                 [{"port": s.ranges, "protocol": "TCP"}],
                                 cluster_ips=[V4, V6], source_ranges=[netns.net4])

    # local: externalTrafficPolicy Local, backends on the node's addresses
    local = servicelb.service("local", "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
                              [{"port": s.local, "protocol": "TCP", "nodePort": s.nodeport}],
                              cluster_ips=["127.0.0.1", "::1"], traffic_policy="Local")

    dest_ports = {"traefik": s.web_dest, "whoami4": s.single_dest, "internal": s.ranges_dest}
    s.daemonsets, s.pods = {}, {}
    for svc in (traefik, whoami4, internal, local):
        name = svc["metadata"]["name"]
        ds = servicelb.svclb_daemonset(svc, image)
        s.daemonsets[name] = ds
        pod = servicelb.podman_pod(ds, pod_name(ds["metadata"]["name"]),
                                   node_ips=[netns.host4, netns.host6])
        for c in pod["spec"]["containers"]:
            if name in dest_ports:
                servicelb.set_env(c, "DEST_PORT", str(dest_ports[name]))
        s.pods[name] = pods(pod)
    return s


def tcp(port):
    return "lb-tcp-%d" % port


def payload(seed):
    return it.pattern(PAYLOAD, seed)


# --------------------------------------------------------------------------
# the shape K3s gives its svclb pods, and what the image makes of it

def test_k3s_svclb_shape(svclb):
    """What K3s generates, as played: one container per port named after it,
    exactly K3s' variables, NET_ADMIN added, no command or arguments (the
    image's default runs), and dualproxy in environment mode in each."""
    envs = {}
    for name, ds in svclb.daemonsets.items():
        pod = svclb.pods[name]
        for c in ds["spec"]["template"]["spec"]["containers"]:
            assert "command" not in c and "args" not in c, c["name"]
            assert [v["name"] for v in c["env"]] == ENV_NAMES, c["name"]
            assert c["securityContext"] == {"capabilities": {"add": ["NET_ADMIN"]}}
            envs[c["name"]] = servicelb.env_of(c)
            info = pod.inspect(c["name"])
            assert not info["Config"].get("Cmd"), \
                "%s runs with arguments %r" % (pod.ctr(c["name"]), info["Config"]["Cmd"])
            assert "CAP_NET_ADMIN" in info["EffectiveCaps"], \
                "%s was not given NET_ADMIN: %r" % (pod.ctr(c["name"]), info["EffectiveCaps"])
            port = servicelb.env_of(c)["SRC_PORT"]
            proto = c["name"].split("-")[1]
            pod.wait_log(c["name"], r"listening on 0\.0\.0\.0:%s\b[^\n]*\(lb-%s-%s\)"
                         % (port, proto, port), timeout=0)

    web = envs[tcp(svclb.web)]
    assert web["SRC_RANGES"] == "0.0.0.0/0,::/0" and web["DEST_IPS"] == "127.0.0.1,::1"
    assert web["DEST_PROTO"] == "TCP"
    assert envs["lb-udp-%d" % svclb.web]["DEST_PROTO"] == "UDP"
    single = envs[tcp(svclb.single)]
    assert single["SRC_RANGES"] == "0.0.0.0/0" and single["DEST_IPS"] == "127.0.0.1"
    assert envs[tcp(svclb.ranges)]["SRC_RANGES"] == svclb.ns.net4
    local = envs[tcp(svclb.local)]
    assert local["DEST_PORT"] == str(svclb.nodeport) and local["DEST_IPS"] is None
    played = svclb.pods["local"].manifest["spec"]["containers"][0]
    assert servicelb.env_of(played)["DEST_IPS"] == "%s,%s" % (svclb.ns.host4, svclb.ns.host6)


def test_privileges_dropped_in_every_container(svclb):
    """NET_ADMIN and every other capability gone from each dualproxy (at most
    CAP_NET_BIND_SERVICE left), bounding set cleared, no_new_privs, nobody."""
    for pod in svclb.pods.values():
        for c in pod.containers:
            check_privileges(pod, c)


# --------------------------------------------------------------------------
# relaying

def test_dual_stack_tcp(svclb):
    """Both families, from loopback and from another network, each to the
    ClusterIP of its own family, bytes exact."""
    ns, port = svclb.ns, svclb.web
    cases = [(V4, None, "web4 AF_INET"), (V6, None, "web6 AF_INET6"),
             (ns.host4, ns, "web4 AF_INET"), (ns.host6, ns, "web6 AF_INET6")]
    before = (svclb.web4.accepted, svclb.web6.accepted)
    for i, (host, where, want) in enumerate(cases):
        tag, addr = through(host, port, payload(i), ns=where)
        assert tag == want, "client %s to %s: answered by %r" % (addr, it.fmt_addr(host, port),
                                                                 tag)
    assert (svclb.web4.accepted - before[0], svclb.web6.accepted - before[1]) == (2, 2)


def test_single_stack_service_is_closed_on_ipv6(svclb):
    """DEST_IPS with only an IPv4 address: the IPv6 port is not open at all."""
    ns, port = svclb.ns, svclb.single
    expect_refused(V6, port, "(single-stack IPv4 Service)")
    with pytest.raises(ConnectionRefusedError):
        client(ns.host6, port, ns=ns).close()
    assert through(V4, port, payload(10))[0] == "single4 AF_INET"
    assert through(ns.host4, port, payload(11), ns=ns)[0] == "single4 AF_INET"
    assert svclb.single6.accepted == 0


def test_ipv4_only_source_ranges(svclb):
    """SRC_RANGES=10.213.N.0/30: IPv4 clients in it are served, IPv4 clients
    outside it and every IPv6 client (no IPv6 range listed) are reset before
    any backend is contacted."""
    ns, port = svclb.ns, svclb.ranges
    before = (svclb.ranges4.accepted, svclb.ranges6.accepted)
    tag, addr = through(ns.host4, port, payload(20), ns=ns)
    assert tag == "ranges4 AF_INET" and addr.startswith(ns.ns4 + ":"), (tag, addr)
    tag, addr = through(ns.host4, port, payload(21), source=ns.host4)
    assert tag == "ranges4 AF_INET" and addr.startswith(ns.host4 + ":"), (tag, addr)
    expect_rst(V4, port)                      # 127.0.0.1: outside the range
    expect_rst(ns.host4, port, source=V4)
    expect_rst(V6, port)                      # IPv6: no range of its family
    expect_rst(ns.host6, port, ns=ns)
    expect_rst(ns.host6, port, source=ns.host6)
    assert (svclb.ranges4.accepted - before[0], svclb.ranges6.accepted - before[1]) == (2, 0), \
        "the backends saw %d/%d connections, expected 2/0 (refused clients must not reach " \
        "them)" % (svclb.ranges4.accepted - before[0], svclb.ranges6.accepted - before[1])


def test_local_policy_node_addresses(svclb):
    """externalTrafficPolicy: Local: relayed to the NodePort on the node's
    address of the client's family."""
    port, ns = svclb.local, svclb.ns
    assert through(V4, port, payload(30))[0] == "node4 AF_INET"
    assert through(V6, port, payload(31))[0] == "node6 AF_INET6"
    assert through(ns.host6, port, payload(32), ns=ns)[0] == "node6 AF_INET6"
    assert svclb.node4.accepted >= 1 and svclb.node6.accepted >= 2
    assert svclb.node4.peers[-1][0] == ns.host4 and svclb.node6.peers[-1][0] == ns.host6


def test_udp(svclb):
    """lb-udp-PORT: datagrams over both families to the backend of their
    family, byte for byte, answers from the address the client sent to (a
    connected client socket takes no other), one flow per client."""
    ns, port = svclb.ns, svclb.web
    cases = [(V4, None, b"udp4 AF_INET\n", svclb.udp4),
             (V6, None, b"udp6 AF_INET6\n", svclb.udp6),
             (ns.host4, ns, b"udp4 AF_INET\n", svclb.udp4),
             (ns.host6, ns, b"udp6 AF_INET6\n", svclb.udp6)]
    for i, (host, where, tag, backend) in enumerate(cases):
        fam = it.family_of(host)
        sock = ns.socket(fam, socket.SOCK_DGRAM) if where else socket.socket(fam, socket.SOCK_DGRAM)
        with sock:
            sock.connect((host, port))
            seen = len(backend.peers)
            for size in UDP_SIZES:
                data = it.pattern(size, 100 * i + size)
                answer = udp_exchange(sock, data)
                assert answer == tag + data, \
                    "%s: a %d-byte datagram came back as %d bytes starting %r" % (
                        it.fmt_addr(host, port), size, len(answer), answer[:40])
            flows = set(backend.peers[seen:])
            assert len(flows) == 1, "one client, %d backend flows: %r" % (len(flows), flows)


# --------------------------------------------------------------------------
# SIGTERM (last: these stop containers)

def test_sigterm_idle_containers_exit_at_once(svclb):
    """`podman stop -t 30` on containers without connections: exit 0 at once."""
    for name in ("whoami4", "internal"):
        pod = svclb.pods[name]
        for c in pod.containers:
            code, elapsed = pod.stop(c)
            assert code == 0, "%s exited %s on SIGTERM:\n%s" % (pod.ctr(c), code,
                                                               pod.logs(c)[-2000:])
            assert elapsed < 3, "%s took %.1fs to stop with no connection" % (pod.ctr(c),
                                                                             elapsed)
            assert re.search(r"draining 0 connections", pod.logs(c)), pod.logs(c)[-2000:]


def test_sigterm_exits_when_the_last_connection_ends(svclb, open_sockets):
    """SIGTERM with a connection open: the drain ends as soon as that
    connection does, not at drain_timeout."""
    pod, port = svclb.pods["local"], svclb.local
    (c,) = pod.containers
    live = client(V4, port, timeout=10)
    open_sockets.append(live)
    assert it.recv_line(live).decode().strip() == "node4 AF_INET"
    since = len(pod.logs(c))
    result = {}
    stopper = threading.Thread(target=lambda: result.update(stop=pod.stop(c)))
    stopper.start()
    try:
        pod.wait_log(c, r"SIG\w+: draining 1 connections", since=since)
        live.sendall(b"still relayed\n")
        assert it.recv_exact(live, 14) == b"still relayed\n"
        live.shutdown(socket.SHUT_WR)
        assert it.recv_until_eof(live) == b""
        closed = time.monotonic()
    finally:
        stopper.join(K8S_GRACE_SECONDS + 30)
    code, _ = result["stop"]
    assert code == 0, "%s exited %s:\n%s" % (pod.ctr(c), code, pod.logs(c)[-2000:])
    assert time.monotonic() - closed < 3, \
        "%s went on draining after its last connection ended" % pod.ctr(c)


def test_sigterm_drains_an_open_connection(svclb, open_sockets):
    """`podman stop -t 30` with a connection open: the listeners close at
    once, the open connection keeps relaying for drain_timeout (25 s), then
    dualproxy closes it and exits 0, inside the grace period (no SIGKILL)."""
    pod, c, port = svclb.pods["traefik"], tcp(svclb.web), svclb.web
    live = client(V6, port, timeout=K8S_GRACE_SECONDS)
    open_sockets.append(live)
    assert it.recv_line(live).decode().strip() == "web6 AF_INET6"
    live.sendall(b"before SIGTERM\n")
    assert it.recv_exact(live, 15) == b"before SIGTERM\n"

    since = len(pod.logs(c))
    result = {}

    def stop():
        result["stop"] = pod.stop(c, K8S_GRACE_SECONDS)

    stopper = threading.Thread(target=stop)
    stopper.start()
    try:
        m = pod.wait_log(c, r"SIG\w+: draining (\d+) connections for up to ([\d.]+)s",
                         since=since)
        assert m.group(1) == "1", m.group(0)
        for host in (V4, V6):
            it.wait_until(lambda: _refused(host, port), 3,
                          what="%s closed" % it.fmt_addr(host, port))
        data = it.pattern(64 * 1024, 99)
        live.sendall(data)
        assert it.recv_exact(live, len(data)) == data, "the draining connection lost bytes"
    finally:
        stopper.join(K8S_GRACE_SECONDS + 30)
    code, elapsed = result["stop"]
    assert code == 0, "%s exited %s (137: killed at the end of the grace period):\n%s" % (
        pod.ctr(c), code, pod.logs(c)[-2000:])
    assert float(m.group(2)) == ENV_DRAIN_SECONDS, \
        "environment mode drains for %ss, expected %ds (inside the %ds grace period)" % (
            m.group(2), ENV_DRAIN_SECONDS, K8S_GRACE_SECONDS)
    assert ENV_DRAIN_SECONDS - 1 <= elapsed < K8S_GRACE_SECONDS - 1, \
        "%s stopped after %.1fs; expected the %ds drain, well inside %ds" % (
            pod.ctr(c), elapsed, ENV_DRAIN_SECONDS, K8S_GRACE_SECONDS)
    kind, _, _ = it.wait_closed(live, 2)
    assert kind in ("eof", "reset")


def _refused(host, port):
    try:
        s = socket.create_connection((host, port), timeout=1)
    except ConnectionRefusedError:
        return True
    s.close()
    return False
