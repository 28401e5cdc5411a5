"""Static checks of the Kubernetes manifests in contrib/kubernetes/.

Every YAML document there is parsed (PyYAML, Debian's python3-yaml) and checked
against what dualproxy and the K3s setup need:

  * both DaemonSets: host network, ClusterFirstWithHostNet, K3s svclb
    tolerations, containers that drop ALL capabilities and add back no more
    than NET_BIND_SERVICE, SETUID, SETGID and SETPCAP, hostPort == containerPort;
  * NET_ADMIN appears nowhere in any parsed manifest (comments aside);
  * the ConfigMap's dualproxy.ini forwards ports to Traefik's two ClusterIPs,
    and the real binary accepts it (`dualproxy -t -c`);
  * the config DaemonSet mounts that ConfigMap as a directory (no subPath, so
    kubelet's ..data symlink swap reaches the file), probes /healthz on the
    metrics port, carries the prometheus.io annotations, and its ports,
    probes, annotations and grace period agree with the INI file;
  * the klipper-lb variant sets SRC_PORT, DEST_PROTO, DEST_PORT and DEST_IPS
    per container, and the real binary accepts each container's environment
    (`dualproxy -t` with no -c);
  * the Traefik HelmChartConfig makes a dual-stack ClusterIP Service and
    trusts PROXY headers on web and websecure.

Environment: DUALPROXY (the binary, default <repo>/src/dualproxy) and
DUALPROXY_SRCDIR (the source tree, default two levels above this file).
"""

import configparser
import ipaddress
import os
import subprocess
from pathlib import Path

import pytest

try:
    import yaml
except ImportError:  # reported by the `manifests` fixture, test by test
    yaml = None

REPO = Path(os.environ.get("DUALPROXY_SRCDIR") or Path(__file__).resolve().parents[2])
BINARY = Path(os.environ.get("DUALPROXY", str(REPO / "src" / "dualproxy")))
MANIFEST_DIR = REPO / "contrib" / "kubernetes"
EXPECTED_FILES = ["configmap.yaml", "daemonset.yaml", "svclb-env-daemonset.yaml",
                  "traefik-dualstack.yaml"]

ALLOWED_CAPS = {"NET_BIND_SERVICE", "SETUID", "SETGID", "SETPCAP"}
TRAEFIK_V4 = "10.43.206.211"
TRAEFIK_V6 = "fd45:a71:55a6:1:2:1:0:db1"
CONFIG_DAEMONSET = "dualproxy"
CONFIGMAP = "dualproxy"
INI_KEY = "dualproxy.ini"


# --------------------------------------------------------------------------
# loading

@pytest.fixture(scope="module")
def manifests():
    """[(file name, document)] for every YAML document in contrib/kubernetes/."""
    if yaml is None:
        pytest.fail("PyYAML is missing: install Debian's python3-yaml "
                    "(apt-get install python3-yaml) to check contrib/kubernetes/",
                    pytrace=False)
    files = sorted(MANIFEST_DIR.glob("*.yaml"))
    if not files:
        pytest.fail(f"no manifests in {MANIFEST_DIR}", pytrace=False)
    docs = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            try:
                parsed = list(yaml.safe_load_all(f))
            except yaml.YAMLError as e:
                pytest.fail(f"contrib/kubernetes/{path.name} is not valid YAML:\n{e}",
                            pytrace=False)
        docs += [(path.name, doc) for doc in parsed if doc is not None]
    return docs


def of_kind(manifests, kind):
    return [(name, doc) for name, doc in manifests if doc.get("kind") == kind]


def one(manifests, kind, name):
    found = [doc for _, doc in of_kind(manifests, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind} named {name}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def daemonsets(manifests):
    found = of_kind(manifests, "DaemonSet")
    assert len(found) >= 2, "expected the config and the klipper-lb env DaemonSets"
    return found


@pytest.fixture(scope="module")
def config_ds(manifests):
    return one(manifests, "DaemonSet", CONFIG_DAEMONSET)


@pytest.fixture(scope="module")
def env_ds(manifests):
    found = [doc for name, doc in of_kind(manifests, "DaemonSet")
             if name == "svclb-env-daemonset.yaml"]
    assert len(found) == 1, "svclb-env-daemonset.yaml must hold one DaemonSet"
    return found[0]


@pytest.fixture(scope="module")
def ini_text(manifests):
    cm = one(manifests, "ConfigMap", CONFIGMAP)
    assert cm["metadata"].get("namespace") == "kube-system"
    assert INI_KEY in cm.get("data", {}), f"ConfigMap {CONFIGMAP} has no {INI_KEY}"
    return cm["data"][INI_KEY]


@pytest.fixture(scope="module")
def ini(ini_text):
    # dualproxy's syntax: `;`/`#` comments, `;` after a value; no duplicates.
    parser = configparser.ConfigParser(comment_prefixes=(";", "#"),
                                       inline_comment_prefixes=(";",),
                                       interpolation=None, strict=True)
    parser.read_string(ini_text, source=INI_KEY)
    return parser


def pod_spec(ds):
    return ds["spec"]["template"]["spec"]


def containers(ds):
    spec = pod_spec(ds)
    return spec.get("initContainers", []) + spec["containers"]


def walk(node, path="$"):
    """Yields (path, key-or-scalar) for every mapping key and scalar in a tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")
    else:
        yield path, node


def port_of(spec_port, container):
    """A probe's port as a number: numeric, or the name of a container port."""
    if isinstance(spec_port, int):
        return spec_port
    for p in container.get("ports", []):
        if p.get("name") == spec_port:
            return p["containerPort"]
    raise AssertionError(f"probe port {spec_port!r} is not a port of {container['name']}")


def listen_port(value):
    """The port of a dualproxy listen/metrics_listen value (bare port or ADDR:PORT)."""
    first = value.split(",")[0].strip()
    return int(first.rsplit(":", 1)[-1])


def duration_seconds(value):
    value = value.strip()
    for suffix, scale in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * scale
    return float(value)


# --------------------------------------------------------------------------
# all manifests

def test_manifest_files_present_and_well_formed(manifests):
    names = {name for name, _ in manifests}
    for expected in EXPECTED_FILES:
        assert expected in names, f"contrib/kubernetes/{expected} is missing or empty"
    for name, doc in manifests:
        assert isinstance(doc, dict), f"{name}: a document is not a mapping"
        for field in ("apiVersion", "kind", "metadata"):
            assert field in doc, f"{name}: a document has no {field}"
        assert doc["metadata"].get("name"), f"{name}: a {doc['kind']} has no name"
        assert doc["metadata"].get("namespace") == "kube-system", \
            f"{name}: {doc['kind']} {doc['metadata']['name']} is not in kube-system"


def test_no_net_admin_anywhere(manifests):
    for name, doc in manifests:
        for path, item in walk(doc):
            assert "NET_ADMIN" not in str(item).upper(), f"{name}: NET_ADMIN at {path}"


def test_no_privileged_pods(daemonsets):
    for name, ds in daemonsets:
        spec = pod_spec(ds)
        assert not spec.get("hostPID") and not spec.get("hostIPC"), name
        for c in containers(ds):
            assert not c.get("securityContext", {}).get("privileged"), \
                f"{name}: {c['name']} is privileged"


# --------------------------------------------------------------------------
# both DaemonSets

def test_daemonsets_run_in_host_network(daemonsets):
    for name, ds in daemonsets:
        spec = pod_spec(ds)
        assert spec.get("hostNetwork") is True, f"{name}: hostNetwork must be true"
        assert spec.get("dnsPolicy") == "ClusterFirstWithHostNet", name
        assert spec.get("priorityClassName") == "system-node-critical", name


def test_daemonsets_tolerate_servers(daemonsets):
    for name, ds in daemonsets:
        tolerations = pod_spec(ds).get("tolerations", [])
        for key in ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"):
            assert any(t.get("key") == key and t.get("operator") == "Exists"
                       and t.get("effect") in (None, "NoSchedule") for t in tolerations), \
                f"{name}: no toleration for {key}"
        assert any(t.get("key") == "CriticalAddonsOnly" and t.get("operator") == "Exists"
                   for t in tolerations), f"{name}: no toleration for CriticalAddonsOnly"


def test_daemonsets_capabilities(daemonsets):
    for name, ds in daemonsets:
        pod_seccomp = pod_spec(ds).get("securityContext", {}).get("seccompProfile", {})
        for c in containers(ds):
            sc = c.get("securityContext", {})
            caps = sc.get("capabilities", {})
            where = f"{name}: container {c['name']}"
            assert caps.get("drop") == ["ALL"], f"{where}: capabilities.drop must be [ALL]"
            added = set(caps.get("add", []))
            assert added <= ALLOWED_CAPS, f"{where}: adds {sorted(added - ALLOWED_CAPS)}"
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            seccomp = sc.get("seccompProfile", pod_seccomp)
            assert seccomp.get("type") == "RuntimeDefault", f"{where}: seccomp"


def test_daemonsets_host_ports(daemonsets):
    # With hostNetwork the API requires hostPort == containerPort.
    for name, ds in daemonsets:
        for c in containers(ds):
            for p in c.get("ports", []):
                if "hostPort" in p:
                    assert p["hostPort"] == p["containerPort"], f"{name}: {c['name']} {p}"


def test_daemonsets_env_and_annotation_values_are_strings(daemonsets):
    # The API rejects numbers there; YAML makes `value: 80` a number.
    for name, ds in daemonsets:
        for key, value in ds["spec"]["template"]["metadata"].get("annotations", {}).items():
            assert isinstance(value, str), f"{name}: annotation {key} is not a string"
        for c in containers(ds):
            for var in c.get("env", []):
                assert isinstance(var.get("value", ""), str), \
                    f"{name}: {c['name']} env {var['name']} is not a string"


def test_daemonsets_selectors_match_labels(daemonsets):
    for name, ds in daemonsets:
        labels = ds["spec"]["template"]["metadata"].get("labels", {})
        for key, value in ds["spec"]["selector"]["matchLabels"].items():
            assert labels.get(key) == value, f"{name}: selector {key} does not match"


# --------------------------------------------------------------------------
# the ConfigMap and the DaemonSet that reads it

def test_configmap_ini_forwards_to_traefik(ini_text, ini):
    for word in ("listen", "backend4", "backend6"):
        assert word in ini_text
    assert TRAEFIK_V4 in ini_text and TRAEFIK_V6 in ini_text
    services = [s for s in ini.sections() if s != "global"]
    assert {"web", "websecure"} <= set(services)
    for name in services:
        section = ini[name]
        for key in ("listen", "backend4", "backend6"):
            assert key in section, f"[{name}] has no {key}"
        assert section["backend4"].startswith(TRAEFIK_V4 + ":"), name
        assert section["backend6"].startswith(f"[{TRAEFIK_V6}]:"), name
        assert section.get("proxy_protocol") == "v2", name


def test_configmap_ini_global(ini):
    g = ini["global"]
    assert g.get("user") == "nobody"
    assert g.get("keep_net_bind") == "yes"
    assert g.get("watch_config") == "yes"
    assert g.get("log_level") == "info"
    assert g.get("metrics_listen", "").strip().isdigit(), "metrics_listen: a bare port"


def test_configmap_passes_dualproxy_check(ini_text, tmp_path):
    if not BINARY.exists():
        pytest.fail(f"{BINARY} not found: build dualproxy first (or set DUALPROXY)",
                    pytrace=False)
    path = tmp_path / INI_KEY
    path.write_text(ini_text, encoding="utf-8")
    proc = subprocess.run([str(BINARY), "-t", "-c", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, \
        f"dualproxy -t rejects the ConfigMap's {INI_KEY} (exit {proc.returncode}):\n{proc.stderr}"


def test_config_daemonset_mounts_configmap_as_directory(config_ds):
    spec = pod_spec(config_ds)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    cm_volumes = [n for n, v in volumes.items() if v.get("configMap", {}).get("name") == CONFIGMAP]
    assert len(cm_volumes) == 1, f"no volume of ConfigMap {CONFIGMAP}"
    vol = volumes[cm_volumes[0]]["configMap"]
    assert "items" not in vol or any(i.get("key") == INI_KEY for i in vol["items"])
    # dualproxy reads the file again as `nobody` on reload
    mode = vol.get("defaultMode", 0o644)
    assert mode & 0o004, "the mounted file must be world-readable"

    (c,) = spec["containers"]
    mounts = [m for m in c.get("volumeMounts", []) if m["name"] == cm_volumes[0]]
    assert len(mounts) == 1
    mount = mounts[0]
    assert "subPath" not in mount and "subPathExpr" not in mount, \
        "a subPath mount never sees kubelet's ConfigMap updates"
    args = c.get("args", [])
    assert "-c" in args, "the container must pass -c"
    config_path = args[args.index("-c") + 1]
    assert config_path == f"{mount['mountPath'].rstrip('/')}/{INI_KEY}"


def test_config_daemonset_probes_metrics_port(config_ds, ini):
    metrics_port = listen_port(ini["global"]["metrics_listen"])
    (c,) = pod_spec(config_ds)["containers"]
    for kind in ("livenessProbe", "readinessProbe"):
        probe = c.get(kind)
        assert probe and "httpGet" in probe, f"{kind}: an httpGet probe"
        assert probe["httpGet"]["path"] == "/healthz", kind
        assert port_of(probe["httpGet"]["port"], c) == metrics_port, f"{kind}: metrics port"
        # the kubelet probes from the node; the pod's address is the node's,
        # which metrics_allow's default may refuse: loopback is always admitted
        assert probe["httpGet"].get("host") == "127.0.0.1", f"{kind}: host 127.0.0.1"


def test_config_daemonset_prometheus_annotations(config_ds, ini):
    metrics_port = listen_port(ini["global"]["metrics_listen"])
    ann = config_ds["spec"]["template"]["metadata"].get("annotations", {})
    assert ann.get("prometheus.io/scrape") == "true"
    assert ann.get("prometheus.io/port") == str(metrics_port)
    assert ann.get("prometheus.io/path") == "/metrics"


def test_config_daemonset_ports_match_ini(config_ds, ini):
    (c,) = pod_spec(config_ds)["containers"]
    host_ports = {p["hostPort"] for p in c.get("ports", []) if "hostPort" in p}
    wanted = {listen_port(ini[s]["listen"]) for s in ini.sections() if s != "global"}
    wanted.add(listen_port(ini["global"]["metrics_listen"]))
    assert wanted <= host_ports, f"hostPorts {sorted(host_ports)} miss {sorted(wanted - host_ports)}"


def test_config_daemonset_grace_period_covers_drain(config_ds, ini):
    drain = duration_seconds(ini["global"].get("drain_timeout", "30s"))
    grace = pod_spec(config_ds).get("terminationGracePeriodSeconds", 30)
    assert grace > drain, f"terminationGracePeriodSeconds {grace} <= drain_timeout {drain}s"


def test_config_daemonset_rolls_one_node_at_a_time(config_ds):
    strategy = config_ds["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 1


# --------------------------------------------------------------------------
# the klipper-lb environment variant

def env_of(container):
    return {v["name"]: v.get("value") for v in container.get("env", [])}


def test_env_daemonset_klipper_variables(env_ds):
    spec = pod_spec(env_ds)
    assert not any("configMap" in v for v in spec.get("volumes", [])), "no ConfigMap"
    for c in spec["containers"]:
        env = env_of(c)
        for var in ("SRC_PORT", "DEST_PROTO", "DEST_PORT", "DEST_IPS"):
            assert var in env, f"{c['name']}: {var} is not set"
        assert env["DEST_PROTO"] == "TCP", c["name"]
        assert "args" not in c and "command" not in c, f"{c['name']}: no -c in env mode"
        families = {ipaddress.ip_address(ip.strip()).version
                    for ip in env["DEST_IPS"].split(",")}
        assert families == {4, 6}, f"{c['name']}: DEST_IPS needs one address per family"
        assert TRAEFIK_V4 in env["DEST_IPS"] and TRAEFIK_V6 in env["DEST_IPS"]
        src_port = int(env["SRC_PORT"])
        assert src_port in {p.get("hostPort") for p in c.get("ports", [])}, c["name"]
        for kind in ("livenessProbe", "readinessProbe"):
            probe = c.get(kind)
            assert probe and "tcpSocket" in probe, f"{c['name']}: {kind} tcpSocket"
            assert port_of(probe["tcpSocket"]["port"], c) == src_port, f"{c['name']}: {kind}"


def test_env_daemonset_passes_dualproxy_check(env_ds):
    if not BINARY.exists():
        pytest.fail(f"{BINARY} not found: build dualproxy first (or set DUALPROXY)",
                    pytrace=False)
    for c in pod_spec(env_ds)["containers"]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env_of(c)}
        proc = subprocess.run([str(BINARY), "-t"], env=env,
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, \
            f"dualproxy -t rejects {c['name']}'s environment (exit {proc.returncode}):\n{proc.stderr}"


# --------------------------------------------------------------------------
# Traefik

def test_traefik_helmchartconfig(manifests):
    hcc = one(manifests, "HelmChartConfig", "traefik")
    assert hcc["apiVersion"] == "helm.cattle.io/v1"
    values = yaml.safe_load(hcc["spec"]["valuesContent"])
    service = values["service"]
    assert service.get("type") == "ClusterIP", "LoadBalancer IPs are caught by kube-proxy"
    policy = service.get("ipFamilyPolicy", service.get("spec", {}).get("ipFamilyPolicy"))
    families = service.get("ipFamilies", service.get("spec", {}).get("ipFamilies"))
    assert policy == "RequireDualStack"
    assert families == ["IPv4", "IPv6"]
    # K3s' bundled values set service.ipFamilyPolicy: the same key under
    # service.spec would be rendered twice into the Service.
    assert not ("ipFamilyPolicy" in service and "ipFamilyPolicy" in service.get("spec", {}))

    args = values.get("additionalArguments", [])
    for entry_point in ("web", "websecure"):
        prefix = f"--entryPoints.{entry_point}.proxyProtocol.trustedIPs="
        found = [a for a in args if a.lower().startswith(prefix.lower())]
        assert len(found) == 1, f"{entry_point}: one proxyProtocol.trustedIPs argument"
        nets = [ipaddress.ip_network(n.strip()) for n in found[0][len(prefix):].split(",")]
        assert ipaddress.ip_network("127.0.0.1/32") in nets
        assert ipaddress.ip_network("::1/128") in nets
        assert {n.version for n in nets} == {4, 6}
