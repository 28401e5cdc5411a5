"""The seed article's svclb-traefik DaemonSet, with dualproxy's image.

data/article-svclb-traefik.yaml is the article's manifest, verbatim: klipper-lb
v0.2.0 on port 9000 with DEST_IP only, and the DEST_IP6 fork on ports 80 and
443, each container with NET_ADMIN. The test parses it, swaps the image, moves
the addresses to loopback (DEST_IP 10.43.206.211 -> 127.0.0.1, DEST_IP6
fd45:a71:55a6:1:2:1:0:db1 -> ::1) and the ports to free ones, and plays the pod
template (servicelb.podman_pod(): hostNetwork, podman's limits). A comparison
of the played pod with the manifest shows that nothing else changed.

  lb-port-9000  DEST_IP only: published on IPv4 only ([::1] is refused)
  lb-port-80,   DEST_IP and DEST_IP6: both families, each to the backend of
  lb-port-443   its own family (tagged backends, payloads by SHA-256)
"""

from pathlib import Path

import pytest
import yaml

import servicelb
from conftest import (V4, V6, check_privileges, differences, expect_refused, it, pod_name,
                      retarget_env_daemonset, through)

DATA = Path(__file__).resolve().parent / "data" / "article-svclb-traefik.yaml"
ARTICLE_V4 = "10.43.206.211"
ARTICLE_V6 = "fd45:a71:55a6:1:2:1:0:db1"
ADDRESSES = {ARTICLE_V4: V4, ARTICLE_V6: V6}
PAYLOAD = 256 * 1024


def load():
    ds = yaml.safe_load(DATA.read_text(encoding="utf-8"))
    assert ds["kind"] == "DaemonSet" and ds["metadata"]["name"] == "svclb-traefik"
    return ds


class Played:
    """The article's pod as played, with its ports and backends."""


@pytest.fixture(scope="module")
def article(pods, backends, image):
    ds = load()
    p = Played()
    p.original = load()
    p.targets = retarget_env_daemonset(ds, image, backends, ADDRESSES)
    p.manifest = servicelb.podman_pod(ds, pod_name("svclb-traefik"))
    p.pod = pods(p.manifest)
    return p


def test_only_image_addresses_and_ports_changed(article):
    """The played pod is the article's pod template but for the image, the
    addresses and ports, and what playing it with podman takes (hostNetwork,
    no port mappings); its containers have no command and no arguments."""
    template = article.original["spec"]["template"]
    changed = differences({"metadata": template["metadata"], "spec": template["spec"]},
                          {"metadata": {"labels": article.manifest["metadata"]["labels"]},
                           "spec": article.manifest["spec"]})
    allowed = {"$.spec.hostNetwork"}
    for i, c in enumerate(template["spec"]["containers"]):
        base = "$.spec.containers[%d]" % i
        allowed |= {base + ".image", base + ".ports"}
        for j, var in enumerate(c["env"]):
            if var["name"] in ("SRC_PORT", "DEST_PORT", "DEST_IP", "DEST_IP6"):
                allowed.add("%s.env[%d].value" % (base, j))
    assert set(changed) <= allowed, "changed beyond the image, addresses and ports: %s" % (
        sorted(set(changed) - allowed))
    names = [c["name"] for c in template["spec"]["containers"]]
    assert names == ["lb-port-9000", "lb-port-80", "lb-port-443"]
    for c in template["spec"]["containers"]:
        assert c["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
        assert "command" not in c and "args" not in c
        assert not article.pod.inspect(c["name"])["Config"].get("Cmd")


def test_port_9000_is_ipv4_only(article):
    """DEST_IP (IPv4) and no DEST_IP6: served on IPv4, closed on IPv6."""
    port, rec4, rec6 = article.targets["lb-port-9000"]
    tag, _ = through(V4, port, it.pattern(PAYLOAD, 9000))
    assert tag == "lb-port-9000/4 AF_INET", tag
    expect_refused(V6, port, "(lb-port-9000 has no DEST_IP6)")
    assert (rec4.accepted, rec6.accepted) == (1, 0)


@pytest.mark.parametrize("name", ["lb-port-80", "lb-port-443"])
def test_dest_ip6_ports_serve_both_families(article, name):
    """DEST_IP and DEST_IP6: each family to its own backend, bytes exact."""
    port, rec4, rec6 = article.targets[name]
    for seed, host, family in ((1, V4, "AF_INET"), (2, V6, "AF_INET6"),
                               (3, V6, "AF_INET6"), (4, V4, "AF_INET")):
        tag, _ = through(host, port, it.pattern(PAYLOAD, seed))
        assert tag == "%s/%s %s" % (name, 4 if family == "AF_INET" else 6, family), \
            "%s over %s: answered by %r" % (name, family, tag)
    assert (rec4.accepted, rec6.accepted) == (2, 2)


def test_privileges_dropped(article):
    """NET_ADMIN given, all but (at most) CAP_NET_BIND_SERVICE gone."""
    for c in article.pod.containers:
        assert "CAP_NET_ADMIN" in article.pod.inspect(c)["EffectiveCaps"]
        check_privileges(article.pod, c)
