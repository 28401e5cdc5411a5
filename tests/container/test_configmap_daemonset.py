"""contrib/kubernetes/daemonset.yaml with its ConfigMap (configmap.yaml).

The DaemonSet's pod template is played as it is (servicelb.podman_pod()): its
image swapped for the one under test, and its ConfigMap volume replaced by a
host directory laid out the way the kubelet lays out a ConfigMap volume:

    ..2026_01_02_03_04_05.123456789/dualproxy.ini   one version of the data
    ..data -> ..2026_01_02_03_04_05.123456789
    dualproxy.ini -> ..data/dualproxy.ini

In the ConfigMap's dualproxy.ini only the ports (80, 443, metrics 9180) and the
backend addresses (Traefik's ClusterIPs) are changed, to free ports and
loopback; proxy_protocol = v2 stays, so the backends read the PROXY header and
answer with the client address it carries. The pod keeps the host network,
`-c /etc/dualproxy/dualproxy.ini`, root at start, drop ALL + four
capabilities, a read-only root and no_new_privs.

Checks: both families to the backend of their own family with the real client
address in the header, bytes exact; /healthz on the metrics port as the
kubelet's probes ask it; privileges after the start; then a ConfigMap update
done the kubelet's way (a new timestamped directory, ..data swapped by an
atomic rename, the old directory removed): watch_config reloads (podman logs),
the new backends serve, and a client connecting every few milliseconds over
both families sees no failed connection meanwhile.
"""

import re
import shutil
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

import servicelb
from conftest import (CAP_NET_BIND_SERVICE, SRCDIR, V4, V6, check_privileges, differences,
                      exchange, free_port_on, it, pod_name, service_ports)

MANIFESTS = SRCDIR / "contrib" / "kubernetes"
INI_KEY = "dualproxy.ini"
TRAEFIK_V4 = "10.43.206.211"
TRAEFIK_V6 = "fd45:a71:55a6:1:2:1:0:db1"
PAYLOAD = 256 * 1024


def load(name):
    with open(MANIFESTS / name, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def rewrite_ini(text, changes):
    """`text` with the value of each (section, key) in `changes` replaced,
    comments and everything else kept. Each change must apply exactly once."""
    out, section, done = [], None, []
    for line in text.splitlines(keepends=True):
        m = re.match(r"\s*\[([^\]]+)\]", line)
        if m:
            section = m.group(1)
        m = re.match(r"(\s*([A-Za-z0-9_]+)\s*=\s*)(\S+)(.*)$", line, re.S)
        if m and (section, m.group(2)) in changes:
            line = m.group(1) + changes[(section, m.group(2))] + m.group(4)
            done.append((section, m.group(2)))
        out.append(line)
    assert sorted(done) == sorted(changes), "ini: changed %r, expected %r" % (done, changes)
    return "".join(out)


# --------------------------------------------------------------------------
# backends that read the PROXY protocol v2 header

PROXY_V2_SIG = it.PROXY_V2_SIGNATURE


def start_proxied_tagged(backends, host, port, tag):
    """A counting backend on host:port that reads a PROXY v2 header, answers
    'TAG FAMILY CLIENT\\n' (FAMILY: of its own connection; CLIENT: the
    header's source address, ip:port), then echoes. A missing or malformed
    header closes the connection at once (the client then sees no tag).
    Returns the BackendRecord."""
    async def handler(reader, writer, buf, record):
        head = await reader.readexactly(16)
        if head[:12] != PROXY_V2_SIG or head[12] != 0x21:
            return
        body = await reader.readexactly(struct.unpack("!H", head[14:16])[0])
        if head[13] == 0x11:      # TCP over IPv4: 4 + 4 address bytes, 2 + 2 ports
            src = "%s:%d" % (socket.inet_ntop(socket.AF_INET, body[0:4]),
                             struct.unpack("!H", body[8:10])[0])
        elif head[13] == 0x21:    # TCP over IPv6: 16 + 16, 2 + 2
            src = "[%s]:%d" % (socket.inet_ntop(socket.AF_INET6, body[0:16]),
                               struct.unpack("!H", body[32:34])[0])
        else:
            return
        fam = "AF_INET6" if writer.get_extra_info("socket").family == socket.AF_INET6 \
            else "AF_INET"
        writer.write(("%s %s %s\n" % (tag, fam, src)).encode())
        await writer.drain()
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    return it.serve_at(backends, host, port, handler)[1]


def proxied_pair(backends, tag):
    """PROXY v2 tagged backends TAG4 on 127.0.0.1:P and TAG6 on [::1]:P.
    Returns (P, record4, record6)."""
    port = free_port_on((V4, V6))
    return (port, start_proxied_tagged(backends, V4, port, tag + "4"),
            start_proxied_tagged(backends, V6, port, tag + "6"))


class Deployed:
    """The played pod and what the tests need to know about it."""


@pytest.fixture(scope="module")
def deployed(pods, backends, image):
    (cm,) = load("configmap.yaml")
    (ds,) = load("daemonset.yaml")
    d = Deployed()
    d.original = load("daemonset.yaml")[0]
    d.web_dest, d.web4, d.web6 = proxied_pair(backends, "web")
    d.secure_dest, d.secure4, d.secure6 = proxied_pair(backends, "websecure")
    d.web, d.websecure, d.metrics = service_ports(3)
    d.ini_text = cm["data"][INI_KEY]
    assert TRAEFIK_V4 in d.ini_text and TRAEFIK_V6 in d.ini_text
    d.ini = lambda web_dest: rewrite_ini(d.ini_text, {
        ("global", "metrics_listen"): str(d.metrics),
        ("web", "listen"): str(d.web),
        ("web", "backend4"): "127.0.0.1:%d" % web_dest,
        ("web", "backend6"): "[::1]:%d" % web_dest,
        ("websecure", "listen"): str(d.websecure),
        ("websecure", "backend4"): "127.0.0.1:%d" % d.secure_dest,
        ("websecure", "backend6"): "[::1]:%d" % d.secure_dest,
    })
    root = Path(tempfile.mkdtemp(prefix="dualproxy-configmap-"))
    try:
        d.volume = it.ConfigMapDir(root / "config", {INI_KEY: d.ini(d.web_dest)})
        spec = ds["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        container["image"] = image
        (volume,) = [v for v in spec["volumes"] if "configMap" in v]
        assert volume["configMap"]["name"] == cm["metadata"]["name"]
        d.volume_name = volume["name"]
        d.manifest = servicelb.podman_pod(ds, pod_name("dualproxy"), volumes={
            volume["name"]: {"hostPath": {"path": str(d.volume.root), "type": "Directory"}}})
        d.container = container["name"]
        d.pod = pods(d.manifest)
        yield d
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_pod_template_as_is(deployed):
    """The played pod is the DaemonSet's pod template but for the image, the
    volume's source and what podman needs (no port mappings, no probes: the
    kubelet's probe is test_healthz_probe)."""
    template = deployed.original["spec"]["template"]
    changed = differences(template["spec"], deployed.manifest["spec"])
    volumes = template["spec"]["volumes"]
    i = [v["name"] for v in volumes].index(deployed.volume_name)
    allowed = {"$.containers[0].image", "$.containers[0].ports",
               "$.containers[0].livenessProbe", "$.containers[0].readinessProbe",
               "$.volumes[%d].configMap" % i, "$.volumes[%d].hostPath" % i}
    assert set(changed) <= allowed, "changed beyond image, volume source and podman's " \
        "needs: %s" % sorted(set(changed) - allowed)
    info = deployed.pod.inspect(deployed.container)
    assert info["Config"]["Cmd"] == ["-c", "/etc/dualproxy/dualproxy.ini"]
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert sorted(info["EffectiveCaps"]) == ["CAP_NET_BIND_SERVICE", "CAP_SETGID",
                                             "CAP_SETPCAP", "CAP_SETUID"]


def test_privileges_after_start(deployed):
    """keep_net_bind = yes: CAP_NET_BIND_SERVICE and nothing else, as nobody."""
    st = check_privileges(deployed.pod, deployed.container)
    assert int(st["CapEff"], 16) == CAP_NET_BIND_SERVICE, st["CapEff"]


def test_healthz_probe(deployed):
    """The probes' request (GET /healthz on the metrics port), as the kubelet
    sends it from the node, on both families."""
    for host in (V4, V6):
        r = it.http_get(host, deployed.metrics, "/healthz")
        assert r.status == 200 and r.body.strip() == b"ok", (host, r.status_line, r.body)


@pytest.mark.parametrize("service", ["web", "websecure"])
def test_both_families_with_proxy_header(deployed, service):
    """Each family to the ClusterIP of its family, the client's own address
    in the PROXY v2 header, bytes exact."""
    port = deployed.web if service == "web" else deployed.websecure
    for seed, host, family in ((1, V4, "AF_INET"), (2, V6, "AF_INET6")):
        with socket.create_connection((host, port), timeout=5) as s:
            me = it.local_addr(s)
            tag = exchange(s, it.pattern(PAYLOAD, seed))
        want = "%s%s %s %s" % (service, 4 if family == "AF_INET" else 6, family, me)
        assert tag == want, "%s: answered %r, expected %r" % (service, tag, want)


def test_configmap_update_reloads_without_a_failed_connection(deployed, backends):
    """The kubelet's update of the mounted ConfigMap: watch_config reloads,
    [web]'s new backends serve new connections, and none of the connections
    made every few milliseconds meanwhile (both families) fails."""
    pod, c = deployed.pod, deployed.container
    new_dest, new4, new6 = proxied_pair(backends, "web-new")
    stop = threading.Event()
    seen, failures = [], []

    def hammer():
        i = 0
        while not stop.is_set():
            host = (V4, V6)[i % 2]
            i += 1
            try:
                with socket.create_connection((host, deployed.web), timeout=5) as s:
                    s.settimeout(5)
                    tag = it.recv_line(s, timeout=5).decode().split()[0]
                    s.sendall(b"ping")
                    assert it.recv_exact(s, 4, timeout=5) == b"ping"
                seen.append((host, tag))
            except Exception as e:
                failures.append("%s: %r" % (host, e))
            time.sleep(0.005)

    t = threading.Thread(target=hammer, daemon=True)
    t.start()
    try:
        it.wait_until(lambda: len(seen) >= 20 or failures, 10, what="connections before")
        since = len(pod.logs(c))
        deployed.volume.update({INI_KEY: deployed.ini(new_dest)})
        m = pod.wait_log(c, r"reload: (\d+) added, (\d+) kept, (\d+) removed", since=since)
        assert (m.group(1), m.group(3)) == ("0", "0"), m.group(0)
        it.wait_until(lambda: {"web-new4", "web-new6"} <= {tag for _, tag in seen[-10:]}
                      or failures, 10, what="the new backends serving both families")
        settled = len(seen)
        it.wait_until(lambda: len(seen) >= settled + 20 or failures, 10,
                      what="connections after the reload")
    finally:
        stop.set()
        t.join(10)
    assert not failures, "%d of %d connections failed during the reload: %s" % (
        len(failures), len(failures) + len(seen), failures[:5])
    for fam_host, old, new in ((V4, "web4", "web-new4"), (V6, "web6", "web-new6")):
        tags = [tag for host, tag in seen if host == fam_host]
        assert tags[0] == old and tags[-1] == new, (fam_host, tags[:3], tags[-3:])
        first_new = tags.index(new)
        assert set(tags[first_new:]) == {new}, \
            "%s: the old backend served after the new one: %r" % (fam_host, tags)
    assert new4.accepted > 0 and new6.accepted > 0
    metrics = it.scrape(V4, deployed.metrics)
    assert metrics.value("dualproxy_reloads_total", result="success") == 1
