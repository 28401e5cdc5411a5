"""Fixtures for the container suite: the real image, played with podman.

The suite runs dualproxy's container image (contrib/container/Containerfile)
the way Kubernetes runs it: pods from manifests, played with `podman kube
play`, in this machine's network (hostNetwork: true), with backends and clients
in this process on 127.0.0.1 and ::1 and in a network namespace the suite
creates (so that some clients have addresses outside 127.0.0.0/8).

Environment (tests/container/run.sh sets it):
  DUALPROXY_IMAGE  the image under test (required)
  CONTAINERS_CONF  podman's configuration from tests/container/setup.sh
                   (runc, cgroupfs, ulimits this machine allows; required)
  DUALPROXY_SRCDIR the source tree (default: two levels above this file)
  DUALPROXY_CT_RUN a short id for the names of this run's pods, network
                   namespace and veth pair (default: the PID)

Backends, ports, data and socket helpers come from the integration suite's
conftest (tests/integration/conftest.py), loaded as a module.
"""

import ctypes
import hashlib
import importlib.util
import ipaddress
import json
import os
import re
import select
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

try:
    import yaml
except ImportError:
    yaml = None

HERE = Path(__file__).resolve().parent
SRCDIR = Path(os.environ.get("DUALPROXY_SRCDIR") or HERE.parents[1])
IMAGE = os.environ.get("DUALPROXY_IMAGE", "")

CAP_NET_BIND_SERVICE = 1 << 10
K8S_GRACE_SECONDS = 30  # Kubernetes' default terminationGracePeriodSeconds
ENV_DRAIN_SECONDS = 25  # dualproxy's drain_timeout in environment mode
READY_RE = r"\bready\b"
# names of this run's pods, network namespace and veth pair start with
# dpc<RUN>; run.sh passes its PID so that it can clean up after a crash
RUN = os.environ.get("DUALPROXY_CT_RUN") or str(os.getpid())


def _load_integration():
    path = SRCDIR / "tests" / "integration" / "conftest.py"
    spec = importlib.util.spec_from_file_location("dualproxy_integration", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


it = _load_integration()
V4, V6 = it.V4, it.V6


# --------------------------------------------------------------------------
# podman

def podman(*args, check=True, timeout=120):
    """Run podman with the suite's configuration; returns the CompletedProcess
    (stdout and stderr as text). check=True fails on a non-zero exit."""
    try:
        proc = subprocess.run(["podman", *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("podman %s: no answer after %ds; stderr: %s"
                             % (" ".join(args), timeout, e.stderr)) from None
    if check and proc.returncode != 0:
        raise AssertionError("podman %s failed (exit %d):\n%s%s"
                             % (" ".join(args), proc.returncode, proc.stdout, proc.stderr))
    return proc


def inspect(container):
    """`podman inspect` of one container, as a dict."""
    return json.loads(podman("inspect", "--type", "container", container).stdout)[0]


@pytest.fixture(scope="session", autouse=True)
def podman_ready():
    """Fail (never skip) when podman, its configuration or the image is missing."""
    if yaml is None:
        pytest.fail("PyYAML is missing: apt-get install python3-yaml", pytrace=False)
    if shutil.which("podman") is None:
        pytest.fail("podman not found (Debian: apt-get install podman runc)", pytrace=False)
    conf = os.environ.get("CONTAINERS_CONF", "")
    if not conf or not os.path.isfile(conf):
        pytest.fail("CONTAINERS_CONF is not set to tests/container/setup.sh's "
                    "containers.conf (run the suite with tests/container/run.sh "
                    "or `make check-container`)", pytrace=False)
    if not IMAGE:
        pytest.fail("DUALPROXY_IMAGE is not set (run the suite with "
                    "tests/container/run.sh or `make check-container`)", pytrace=False)
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail("image %s not found in podman's storage" % IMAGE, pytrace=False)


@pytest.fixture(scope="session")
def image():
    return IMAGE


# --------------------------------------------------------------------------
# pods

class Pod:
    """One pod played from a manifest (a dict) with `podman kube play`."""

    def __init__(self, manifest, workdir):
        self.manifest = manifest
        self.name = manifest["metadata"]["name"]
        self.path = Path(workdir) / (self.name + ".yaml")
        self.containers = [c["name"] for c in manifest["spec"]["containers"]]
        self.stopped = {}  # container -> (exit code, seconds) of a test's stop

    def play(self):
        self.path.write_text(yaml.safe_dump(self.manifest, sort_keys=False))
        podman("kube", "play", str(self.path))
        return self

    def ctr(self, container):
        """podman's name for a container of this pod."""
        assert container in self.containers, "%s has no container %s" % (self.name, container)
        return "%s-%s" % (self.name, container)

    def logs(self, container):
        proc = podman("logs", self.ctr(container), check=False)
        return proc.stdout + proc.stderr

    def inspect(self, container):
        return inspect(self.ctr(container))

    def state(self, container):
        return self.inspect(container)["State"]

    def pid(self, container):
        state = self.state(container)
        assert state["Status"] == "running" and state["Pid"] > 0, \
            "%s is not running: %s, exit %s" % (self.ctr(container), state["Status"],
                                                 state["ExitCode"])
        return state["Pid"]

    def status(self, container):
        """/proc/PID/status of the container's process (seen from the host)."""
        return it.proc_status(self.pid(container))

    def wait_log(self, container, pattern, timeout=10.0, since=0):
        """Wait until the container's log (from character `since` on) has a line
        matching `pattern`; fail at once if the container exits or restarts.
        Returns the match."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            text = self.logs(container)
            m = rx.search(text, since)
            if m:
                return m
            info = self.inspect(container)
            # "stopping": SIGTERM sent by `podman stop`, the process still runs
            if info["State"]["Status"] not in ("running", "stopping") \
                    or info.get("RestartCount", 0):
                raise AssertionError(
                    "%s is %s (exit %s, %s restarts) before logging /%s/:\n%s"
                    % (self.ctr(container), info["State"]["Status"],
                       info["State"]["ExitCode"], info.get("RestartCount"), pattern,
                       text[-3000:]))
            if time.monotonic() > deadline:
                raise AssertionError("%s: no /%s/ in its log after %.0fs:\n%s"
                                     % (self.ctr(container), pattern, timeout, text[-3000:]))
            time.sleep(0.05)

    def wait_ready(self, timeout=15.0):
        for c in self.containers:
            self.wait_log(c, READY_RE, timeout)
        return self

    def stop(self, container, timeout=K8S_GRACE_SECONDS):
        """`podman stop -t TIMEOUT` (SIGTERM, SIGKILL after TIMEOUT seconds):
        returns (exit code, seconds the stop took)."""
        self.stopped[container] = None  # stopped by a test: not a death
        start = time.monotonic()
        podman("stop", "-t", str(timeout), self.ctr(container), timeout=timeout + 30)
        elapsed = time.monotonic() - start
        code = self.state(container)["ExitCode"]
        self.stopped[container] = (code, elapsed)
        return code, elapsed

    def teardown(self):
        """Check that no container died or restarted during the tests, stop
        the pod (SIGTERM, the grace period of Kubernetes), check that every
        dualproxy exited 0 and at once (no test leaves a connection open), and
        remove the pod. Returns the problems found."""
        problems = []
        try:
            for c in self.containers:
                info = self.inspect(c)
                state = info["State"]
                if info.get("RestartCount", 0):
                    problems.append("%s restarted %d times:\n%s"
                                    % (self.ctr(c), info["RestartCount"], self.logs(c)[-3000:]))
                elif c in self.stopped:
                    continue
                elif state["Status"] != "running":
                    problems.append("%s died during the tests (exit %s):\n%s"
                                    % (self.ctr(c), state["ExitCode"], self.logs(c)[-3000:]))
            start = time.monotonic()
            podman("pod", "stop", "-t", str(K8S_GRACE_SECONDS), self.name,
                   timeout=K8S_GRACE_SECONDS + 30)
            elapsed = time.monotonic() - start
            for c in self.containers:
                if c in self.stopped:
                    continue
                code = self.state(c)["ExitCode"]
                if code != 0:
                    problems.append("%s exited %s on SIGTERM:\n%s"
                                    % (self.ctr(c), code, self.logs(c)[-3000:]))
            if elapsed > 5:
                problems.append("stopping pod %s took %.1fs: an idle dualproxy exits "
                                "at once" % (self.name, elapsed))
        finally:
            podman("pod", "rm", "-f", "-t", "0", self.name, check=False)
        return problems


@pytest.fixture(scope="module")
def pods(tmp_path_factory):
    """pods(manifest) -> Pod: played, and ready (every container logged
    `ready`). All are checked, stopped and removed at the end of the module."""
    workdir = tmp_path_factory.mktemp("pods")
    played = []

    def play(manifest, wait_ready=True):
        pod = Pod(manifest, workdir)
        played.append(pod)
        pod.play()
        if wait_ready:
            pod.wait_ready()
        return pod

    yield play
    problems = []
    for pod in played:
        problems += pod.teardown()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def pod_name(what):
    """A pod name unique to this run: several runs may share podman's storage."""
    return "dpc%s-%s" % (RUN, what)


def differences(a, b, path="$"):
    """The paths at which two parsed manifests differ (a key on one side
    only, or a different value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append("%s.%s" % (path, key))
            else:
                out += differences(a[key], b[key], "%s.%s" % (path, key))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += differences(x, y, "%s[%d]" % (path, i))
        return out
    return [] if a == b else [path]


def check_privileges(pod, container, allowed=CAP_NET_BIND_SERVICE):
    """The container's dualproxy (PID 1 in it) holds no capability beyond
    `allowed` in its effective, permitted, bounding, inheritable and ambient
    sets, has no_new_privs, and runs as a user other than root, whatever the
    container was given. Returns the status dict."""
    st = pod.status(container)
    caps = it.status_caps(st)
    where = pod.ctr(container)
    for name, value in caps.items():
        assert value & ~allowed == 0, \
            "%s: %s is %#x, more than %#x" % (where, name, value, allowed)
    assert st["NoNewPrivs"] == "1", "%s: NoNewPrivs is %s" % (where, st["NoNewPrivs"])
    uids = it.status_ids(st, "Uid")
    assert 0 not in uids, "%s: runs with uid %s" % (where, uids)
    gids = it.status_ids(st, "Gid")
    assert 0 not in gids, "%s: runs with gid %s" % (where, gids)
    return st


# --------------------------------------------------------------------------
# backends, shared by the tests of one module

@pytest.fixture(scope="module")
def backends():
    b = it.Backends()
    yield b
    b.close()


def bindable(hosts, port, kind=socket.SOCK_STREAM):
    """Whether `port` is free on every address of `hosts` for `kind`."""
    for host in hosts:
        fam = it.family_of(host)
        with socket.socket(fam, kind) as s:
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port_on(hosts, udp=False, low=None, high=None):
    """A port free for TCP (and UDP with udp=True) on every address of
    `hosts`, in [low, high) (default: the integration suite's range, below
    the ephemeral ports)."""
    low = it._PORT_LOW if low is None else low
    high = it._PORT_HIGH if high is None else high
    for _ in range(1000):
        port = it._port_rng.randrange(low, high)
        if bindable(hosts, port) and (not udp or bindable(hosts, port, socket.SOCK_DGRAM)):
            return port
    raise RuntimeError("no port free on %s" % (hosts,))


def service_ports(n, udp=False):
    """n different ports, each free on 0.0.0.0 and [::] (for TCP, and UDP with
    udp=True): ports svclb containers can take on both families. Pick them
    after the backends are listening, so that none is a backend's port."""
    ports = []
    while len(ports) < n:
        port = free_port_on(("0.0.0.0", "::"), udp=udp)
        if port not in ports:
            ports.append(port)
    return ports


def tagged_pair(backends, host4, host6, tag4, tag6, port=None):
    """Counting tagged echo backends on host4:P and [host6]:P (one port for
    both, as klipper-lb's DEST_PORT). Returns (P, record4, record6)."""
    for _ in range(20):
        p = port or free_port_on((host4, host6))
        try:
            _, rec4 = it.start_counted_tagged(backends, host4, tag4, port=p)
            _, rec6 = it.start_counted_tagged(backends, host6, tag6, port=p)
        except OSError:
            if port:
                raise
            continue
        return p, rec4, rec6
    raise RuntimeError("no port free on %s and %s" % (host4, host6))


def retarget_env_daemonset(ds, image, backends, addresses):
    """For a klipper-lb style DaemonSet (one container per port, configured by
    SRC_PORT, DEST_PORT and DEST_IPS or DEST_IP/DEST_IP6), in place: the image
    swapped for `image`, each container's SRC_PORT moved to a free port (and
    its containerPort/hostPort with it), DEST_PORT to the port of a new pair of
    tagged backends (TAG = CONTAINER/4 on 127.0.0.1, CONTAINER/6 on ::1) and
    every destination address through `addresses` (manifest address ->
    loopback address). Returns {container: (SRC_PORT, record4, record6)}."""
    import servicelb
    out = {}
    containers = ds["spec"]["template"]["spec"]["containers"]
    dests = [tagged_pair(backends, V4, V6, c["name"] + "/4", c["name"] + "/6")
             for c in containers]
    for c, src, (dest, rec4, rec6) in zip(containers, service_ports(len(containers)), dests):
        env = servicelb.env_of(c)
        c["image"] = image
        servicelb.set_env(c, "SRC_PORT", str(src))
        servicelb.set_env(c, "DEST_PORT", str(dest))
        for var in ("DEST_IP", "DEST_IP6"):
            if env.get(var):
                servicelb.set_env(c, var, addresses[env[var]])
        if env.get("DEST_IPS"):
            ips = [ip.strip() for ip in env["DEST_IPS"].split(",")]
            servicelb.set_env(c, "DEST_IPS", ",".join(addresses[ip] for ip in ips))
        for port in c.get("ports", []):
            port["containerPort"] = port["hostPort"] = src
        out[c["name"]] = (src, rec4, rec6)
    return out


# --------------------------------------------------------------------------
# UDP backends

class UdpTagged:
    """A UDP echo server on host:port answering each datagram with
    b'TAG FAMILY\\n' + the datagram. Runs in a thread; close() stops it."""

    def __init__(self, host, port, tag):
        self.family = it.family_of(host)
        self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
        if self.family == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.sock.bind((host, port))
        self.prefix = ("%s %s\n" % (tag, "AF_INET6" if self.family == socket.AF_INET6
                                    else "AF_INET")).encode()
        self.peers = []
        self.r, self.w = os.pipe()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            ready, _, _ = select.select([self.sock, self.r], [], [])
            if self.r in ready:
                return
            data, peer = self.sock.recvfrom(65535)
            self.peers.append(peer)
            self.sock.sendto(self.prefix + data, peer)

    def close(self):
        os.write(self.w, b"x")
        self.thread.join(5)
        self.sock.close()
        os.close(self.r)
        os.close(self.w)


@pytest.fixture(scope="module")
def udp_backends():
    """udp_backends(host, port, tag) -> UdpTagged, closed at the end of the module."""
    started = []

    def start(host, port, tag):
        b = UdpTagged(host, port, tag)
        started.append(b)
        return b
    yield start
    for b in started:
        b.close()


def udp_exchange(sock, payload, timeout=5.0):
    """Send one datagram on a connected UDP socket and return the answer."""
    sock.settimeout(timeout)
    sock.send(payload)
    try:
        return sock.recv(65535)
    except socket.timeout:
        raise AssertionError("no answer to a %d-byte datagram to %s within %.0fs"
                             % (len(payload), sock.getpeername()[:2], timeout)) from None


# --------------------------------------------------------------------------
# a network namespace with a veth pair: clients outside 127.0.0.0/8 and ::1

CLONE_NEWNET = 0x40000000


class NetNS:
    """A network namespace joined to this one by a veth pair:
        host side  HOST4/30  HOST6/64   (addresses of this machine, like a node's)
        namespace  NS4/30    NS6/64     (a client elsewhere on the network)
    socket(family) makes a socket inside the namespace."""

    def __init__(self, index):
        self.name = "dpc%s" % RUN
        self.host_if = "dpc%sh" % RUN
        self.ns_if = "dpc%sn" % RUN
        net4 = ipaddress.ip_network("10.213.%d.0/30" % index)
        net6 = ipaddress.ip_network("fd00:d9a1:%x::/64" % index)
        self.host4, self.ns4 = str(net4[1]), str(net4[2])
        self.host6, self.ns6 = str(net6[1]), str(net6[2])
        self.net4, self.net6 = str(net4), str(net6)
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.created = False

    def _ip(self, *args):
        proc = subprocess.run(["ip", *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise AssertionError("ip %s failed: %s" % (" ".join(args), proc.stderr.strip()))

    def create(self):
        self._ip("netns", "add", self.name)
        self.created = True
        self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self._ip("link", "set", self.ns_if, "netns", self.name)
        self._ip("addr", "add", self.host4 + "/30", "dev", self.host_if)
        self._ip("-6", "addr", "add", self.host6 + "/64", "dev", self.host_if, "nodad")
        self._ip("link", "set", self.host_if, "up")
        self._ip("-n", self.name, "link", "set", "lo", "up")
        self._ip("-n", self.name, "addr", "add", self.ns4 + "/30", "dev", self.ns_if)
        self._ip("-n", self.name, "-6", "addr", "add", self.ns6 + "/64", "dev", self.ns_if,
                 "nodad")
        self._ip("-n", self.name, "link", "set", self.ns_if, "up")
        return self

    def destroy(self):
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def socket(self, family, kind=socket.SOCK_STREAM):
        """A socket created inside the namespace (setns in a helper thread, so
        this thread stays where it is)."""
        out = {}

        def make():
            try:
                fd = os.open("/run/netns/" + self.name, os.O_RDONLY)
                try:
                    if self._libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, "setns: " + os.strerror(err))
                finally:
                    os.close(fd)
                out["sock"] = socket.socket(family, kind)
            except Exception as e:
                out["error"] = e

        t = threading.Thread(target=make)
        t.start()
        t.join()
        if "error" in out:
            raise out["error"]
        return out["sock"]


def _used_addresses():
    proc = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True)
    return proc.stdout


@pytest.fixture(scope="session")
def netns():
    """The suite's NetNS (created once, removed at the end even on failure)."""
    if shutil.which("ip") is None:
        pytest.fail("ip (iproute2) not found: apt-get install iproute2", pytrace=False)
    used = _used_addresses()
    for step in range(250):
        index = (os.getpid() + step) % 250 + 1
        if "10.213.%d." % index not in used and "fd00:d9a1:%x:" % index not in used:
            break
    else:
        pytest.fail("no free 10.213.N.0/30 network for the test namespace", pytrace=False)
    ns = NetNS(index)
    try:
        ns.create()
    except Exception:
        ns.destroy()
        raise
    yield ns
    ns.destroy()


# --------------------------------------------------------------------------
# TCP clients

def exchange(sock, payload, timeout=10.0):
    """On a connected socket to a tagged echo backend (through dualproxy):
    read the tag line, send `payload` (from a thread), half-close, read the
    echo to EOF and compare it by SHA-256. Returns the tag line (str)."""
    sock.settimeout(timeout)
    tag = it.recv_line(sock, timeout=timeout).decode().strip()
    errors = []

    def send():
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    h = hashlib.sha256()
    count = it.recv_until_eof(sock, timeout=timeout, hasher=h)
    t.join(timeout)
    assert not errors, "sending failed: %r" % errors
    assert count == len(payload) and h.hexdigest() == it.sha256(payload), \
        "echo differs: sent %d bytes (sha256 %s), got %d (sha256 %s)" % (
            len(payload), it.sha256(payload)[:16], count, h.hexdigest()[:16])
    return tag


def client(host, port, source=None, ns=None, timeout=5.0):
    """A TCP connection to host:port, from `source` (an address of this
    machine) or from inside NetNS `ns`. Returns the socket."""
    fam = it.family_of(host)
    s = ns.socket(fam) if ns is not None else socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source is not None:
            s.bind((source, 0))
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


def through(host, port, payload, source=None, ns=None):
    """One connection through dualproxy to a tagged echo backend: returns
    (tag line, the client's address as 'ip:port')."""
    with client(host, port, source, ns) as s:
        addr = it.local_addr(s)
        return exchange(s, payload), addr


def expect_refused(host, port, what=""):
    """Nobody listens on host:port (the connection is refused)."""
    it.assert_refused(host, port, what)


def expect_rst(host, port, source=None, ns=None, timeout=3.0):
    """dualproxy accepts and resets at once, sending no byte (a client outside
    SRC_RANGES). On loopback the reset may already fail the connect."""
    s = client_socket(host, source, ns)
    try:
        s.settimeout(timeout)
        try:
            s.connect((host, port))
        except ConnectionResetError:
            return
        who = "client %s to %s" % (it.local_addr(s), it.fmt_addr(host, port))
        try:
            kind, _, data = it.wait_closed(s, timeout)
        except AssertionError as e:
            raise AssertionError("%s: expected a reset at once: %s" % (who, e)) from None
        assert data == b"", "%s: received %r before the close" % (who, data[:80])
        assert kind == "reset", "%s: got %s, expected a reset" % (who, kind)
    finally:
        s.close()


def client_socket(host, source=None, ns=None):
    fam = it.family_of(host)
    s = ns.socket(fam) if ns is not None else socket.socket(fam, socket.SOCK_STREAM)
    if source is not None:
        s.bind((source, 0))
    return s


@pytest.fixture
def open_sockets():
    """A list for sockets a test keeps open; closed after the test."""
    socks = []
    yield socks
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
