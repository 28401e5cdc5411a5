"""contrib/kubernetes/svclb-env-daemonset.yaml: the hand-written svclb-style
DaemonSet (one container per port, klipper-lb's variables, no ConfigMap).

Its pod template is played as it is (servicelb.podman_pod()) but for the image,
the ports (free ones) and the DEST_IPS addresses (Traefik's ClusterIPs ->
127.0.0.1 and ::1). Checks: no command or arguments, the capabilities the
manifest gives, both families to the backend of their own family with bytes
exact (each connection is also what the manifest's tcpSocket probes do), and
dualproxy's privileges after the start.
"""

import pytest
import yaml

import servicelb
from conftest import (SRCDIR, V4, V6, check_privileges, differences, it, pod_name,
                      retarget_env_daemonset, through)

MANIFEST = SRCDIR / "contrib" / "kubernetes" / "svclb-env-daemonset.yaml"
ADDRESSES = {"10.43.206.211": V4, "fd45:a71:55a6:1:2:1:0:db1": V6}
PAYLOAD = 256 * 1024


def load():
    (ds,) = [d for d in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")) if d]
    return ds


class Played:
    """The pod as played, with its ports and backends."""


@pytest.fixture(scope="module")
def played(pods, backends, image):
    ds = load()
    p = Played()
    p.original = load()
    p.targets = retarget_env_daemonset(ds, image, backends, ADDRESSES)
    p.manifest = servicelb.podman_pod(ds, pod_name("svclb-env"))
    p.pod = pods(p.manifest)
    return p


def test_template_as_is(played):
    template = played.original["spec"]["template"]["spec"]
    changed = differences(template, played.manifest["spec"])
    allowed = set()
    for i, c in enumerate(template["containers"]):
        base = "$.containers[%d]" % i
        allowed |= {base + ".image", base + ".ports", base + ".livenessProbe",
                    base + ".readinessProbe"}
        for j, var in enumerate(c["env"]):
            if var["name"] in ("SRC_PORT", "DEST_PORT", "DEST_IPS"):
                allowed.add("%s.env[%d].value" % (base, j))
        assert "command" not in c and "args" not in c, c["name"]
        info = played.pod.inspect(c["name"])
        assert not info["Config"].get("Cmd"), info["Config"].get("Cmd")
        assert sorted(info["EffectiveCaps"]) == ["CAP_NET_BIND_SERVICE", "CAP_SETGID",
                                                 "CAP_SETPCAP", "CAP_SETUID"]
    assert set(changed) <= allowed, "changed beyond image, ports and addresses: %s" % (
        sorted(set(changed) - allowed))


def test_both_families(played):
    for name, (port, rec4, rec6) in played.targets.items():
        for seed, host, want in ((1, V4, name + "/4 AF_INET"), (2, V6, name + "/6 AF_INET6")):
            tag, _ = through(host, port, it.pattern(PAYLOAD, seed))
            assert tag == want, "%s: answered by %r, expected %r" % (name, tag, want)
        assert (rec4.accepted, rec6.accepted) == (1, 1)


def test_privileges_dropped(played):
    for c in played.pod.containers:
        check_privileges(played.pod, c)
