"""What K3s' servicelb makes of a LoadBalancer Service, and how the suite turns
Kubernetes manifests into pods that `podman kube play` runs on this machine.

svclb_daemonset() follows newDaemonSet() in k3s pkg/cloudprovider/servicelb.go
(K3s 1.29 to 1.33): one DaemonSet per Service, in kube-system, named
svclb-NAME-UID8; one container per Service port named lb-PROTOCOL-PORT (the
protocol in lower case), image K3s' lbImage, pulled IfNotPresent, no command
and no arguments, the environment

    SRC_PORT    the Service port
    SRC_RANGES  spec.loadBalancerSourceRanges joined with ",", default
                "0.0.0.0/0", plus ",::/0" when the Service has the IPv6 family
                and the default is used
    DEST_PROTO  the port's protocol (TCP, UDP)
    DEST_PORT   the Service port; with externalTrafficPolicy: Local the NodePort
    DEST_IPS    spec.clusterIPs joined with ","; with externalTrafficPolicy:
                Local the downward API's status.hostIPs instead

and securityContext.capabilities.add: [NET_ADMIN]; the pod gets the
net.ipv4.ip_forward / net.ipv6.conf.all.forwarding sysctls of its families,
the svclb service account (token not mounted), K3s' tolerations and the
system-node-critical priority class.

podman_pod() turns a DaemonSet (or a Deployment) into the Pod that podman 4.3
plays (it plays Pods and Deployments, not DaemonSets): the pod template as it
is, with these changes, each forced by running the pod on this machine with
podman instead of on a node with a kubelet:
  * hostNetwork: true, so that the pod binds this machine's loopback of both
    families (podman cannot map a hostPort on [::1]);
  * no `ports`: podman refuses port mappings in the host network, where the
    container port is the host port anyway;
  * no pod sysctls: in the host network they would be this machine's
    forwarding switches, and dualproxy relays in user space without them;
  * no liveness/readiness probes: podman would run them as a curl inside the
    container (the image has none), where the kubelet probes from the node;
    the tests make the kubelet's request themselves;
  * env values from the downward API (status.hostIPs) are resolved to the
    given node addresses, as the kubelet would resolve them;
  * volumes may be replaced (a ConfigMap by a host directory laid out like
    kubelet's ConfigMap volume).
"""

import copy
import ipaddress

K3S_TOLERATIONS = [
    {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
     "effect": "NoSchedule"},
    {"key": "CriticalAddonsOnly", "operator": "Exists"},
]
SVC_NAME_LABEL = "svccontroller.k3s.cattle.io/svcname"
SVC_NAMESPACE_LABEL = "svccontroller.k3s.cattle.io/svcnamespace"
HOST_IPS_FIELD = "status.hostIPs"


def service(name, uid, ports, families=("IPv4", "IPv6"), cluster_ips=(),
            traffic_policy="Cluster", source_ranges=()):
    """A LoadBalancer Service as far as servicelb reads it. `ports`: dicts
    with port, protocol and (for the Local policy) nodePort."""
    return {
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {
            "type": "LoadBalancer",
            "ipFamilies": list(families),
            "clusterIPs": list(cluster_ips),
            "ports": [dict(p) for p in ports],
            "externalTrafficPolicy": traffic_policy,
            "loadBalancerSourceRanges": list(source_ranges),
        },
    }


def _source_ranges(spec):
    """SRC_RANGES before the IPv6 default is added: the Service's ranges in
    their canonical form (as the API parses them), else 0.0.0.0/0."""
    ranges = [str(ipaddress.ip_network(r.strip(), strict=False))
              for r in spec.get("loadBalancerSourceRanges") or []]
    return ",".join(ranges) if ranges else "0.0.0.0/0"


def svclb_daemonset(svc, image):
    """The DaemonSet K3s' servicelb creates for `svc` (see the module doc)."""
    meta, spec = svc["metadata"], svc["spec"]
    name = "svclb-%s-%s" % (meta["name"][:48].rstrip("-"), meta["uid"][:8])
    local = spec.get("externalTrafficPolicy") == "Local"
    ranges = _source_ranges(spec)
    sysctls = []
    for family in spec["ipFamilies"]:
        if family == "IPv4":
            sysctls.append({"name": "net.ipv4.ip_forward", "value": "1"})
        elif family == "IPv6":
            sysctls.append({"name": "net.ipv6.conf.all.forwarding", "value": "1"})
            if ranges == "0.0.0.0/0":
                ranges += ",::/0"
    containers = []
    for port in spec["ports"]:
        cname = "lb-%s-%d" % (port["protocol"].lower(), port["port"])
        env = [
            {"name": "SRC_PORT", "value": str(port["port"])},
            {"name": "SRC_RANGES", "value": ranges},
            {"name": "DEST_PROTO", "value": port["protocol"]},
        ]
        if local:
            env += [{"name": "DEST_PORT", "value": str(port["nodePort"])},
                    {"name": "DEST_IPS",
                     "valueFrom": {"fieldRef": {"fieldPath": HOST_IPS_FIELD}}}]
        else:
            env += [{"name": "DEST_PORT", "value": str(port["port"])},
                    {"name": "DEST_IPS", "value": ",".join(spec["clusterIPs"])}]
        containers.append({
            "name": cname,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"name": cname, "containerPort": port["port"],
                       "hostPort": port["port"], "protocol": port["protocol"]}],
            "env": env,
            "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}},
        })
    labels = {"app": name, SVC_NAME_LABEL: meta["name"],
              SVC_NAMESPACE_LABEL: meta["namespace"]}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "kube-system",
                     "labels": {"svccontroller.k3s.cattle.io/nodeselector": "false",
                                SVC_NAME_LABEL: meta["name"],
                                SVC_NAMESPACE_LABEL: meta["namespace"]}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "serviceAccountName": "svclb",
                    "automountServiceAccountToken": False,
                    "securityContext": {"sysctls": sysctls},
                    "tolerations": copy.deepcopy(K3S_TOLERATIONS),
                    "containers": containers,
                },
            },
            "updateStrategy": {"type": "RollingUpdate",
                               "rollingUpdate": {"maxUnavailable": 1}},
        },
    }


def env_of(container):
    """A container's plain env values by name (valueFrom entries as None)."""
    return {v["name"]: v.get("value") for v in container.get("env", [])}


def set_env(container, name, value):
    """Set env `name` of a container to a plain value, in place."""
    for var in container["env"]:
        if var["name"] == name:
            var.pop("valueFrom", None)
            var["value"] = value
            return
    raise KeyError("container %s has no env %s" % (container["name"], name))


def podman_pod(workload, pod_name, node_ips=(), volumes=None):
    """The Pod podman plays for a DaemonSet or Deployment (see the module
    doc). `node_ips`: what status.hostIPs resolves to; `volumes`: {name:
    replacement volume source} for volumes of the template."""
    template = copy.deepcopy(workload["spec"]["template"])
    spec = template["spec"]
    spec["hostNetwork"] = True
    sc = spec.get("securityContext") or {}
    sc.pop("sysctls", None)
    if sc:
        spec["securityContext"] = sc
    else:
        spec.pop("securityContext", None)
    for c in spec["containers"]:
        c.pop("ports", None)
        c.pop("livenessProbe", None)
        c.pop("readinessProbe", None)
        for var in c.get("env", []):
            ref = var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if ref == HOST_IPS_FIELD:
                assert node_ips, "%s needs the node's addresses" % c["name"]
                var.pop("valueFrom")
                var["value"] = ",".join(node_ips)
            elif ref is not None:
                raise AssertionError("%s: env %s from %s: not resolved here"
                                     % (c["name"], var["name"], ref))
    for vol in spec.get("volumes", []):
        if volumes and vol["name"] in volumes:
            for key in [k for k in vol if k != "name"]:
                del vol[key]
            vol.update(volumes[vol["name"]])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, "labels": template["metadata"].get("labels", {}),
                     "annotations": template["metadata"].get("annotations", {})},
        "spec": spec,
    }
