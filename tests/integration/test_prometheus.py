"""dualproxy's metrics as a real Prometheus and a real promtool see them.

* One dualproxy with three services (web: tagged backends on both families;
  dead: backends that refuse; guarded: an allow list that excludes loopback)
  and a real Prometheus (its own scratch directory, on 127.0.0.1 and a free
  port) that scrapes /metrics every second and loads
  contrib/prometheus/alerts.yml. After a burst of traffic over both families
  (relayed, refused by the backend, denied, one good and one bad reload, two
  connections left open) the tests ask Prometheus's HTTP API
  (/api/v1/series, /api/v1/query, /api/v1/rules) for exactly the series that
  must exist, their values (equal to what dualproxy serves), rate()/increase()
  > 0 over the traffic, `up == 1`, and which alerts go pending; and they
  evaluate every PromQL expression of contrib/grafana/dualproxy.json (its
  template variables resolved through the same API) and require data.
* `promtool check metrics` on a scrape of that busy dualproxy;
  `promtool check rules` and `promtool test rules` for the alerts, and every
  alert has a case in alerts_test.yml where it fires and one where it must not.
* The metrics endpoint on an internet-facing node: two network namespaces
  joined by a veth pair, dualproxy in one with `metrics_listen = 9180` (every
  address, as the shipped ConfigMap has it), clients in the other from
  addresses inside and just outside the default `metrics_allow` ranges
  (loopback and private: 127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12,
  192.168.0.0/16, 100.64.0.0/10, fc00::/7, fe80::/10): outside is reset at
  once with no byte of answer and counted in dualproxy_metrics_denied_total;
  an explicit, repeated, blank- or comma-separated metrics_allow replaces the
  default.
* The shipped files agree: the DaemonSet's prometheus.io annotations and the
  ConfigMap's metrics_listen; the scrape configs of contrib/kubernetes/README.md
  (the pod-discovery one applied by the same Prometheus to the pods Kubernetes
  would list, fed through file discovery; the static one through `promtool
  check config`) and its metrics_allow example; the commented metrics_allow
  default in etc/dualproxy.ini and the ConfigMap, which dualproxy accepts.

Prometheus and promtool are Debian's `prometheus` package."""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

try:
    import yaml
except ImportError:  # reported by the tests that need it
    yaml = None

from conftest import (IS_ROOT, V4, V6, T, Backends, Proxy, _stop_checked, connect, expect_rst,
                      fmt_addr, free_dual_port, free_port, http_get, ini, make_public_dir,
                      needs_root, pattern, proc_cpu_seconds, proc_nofile, proc_status,
                      recv_line, require_binary, run_dualproxy, scrape, tagged_echo,
                      unused_port)

SRCDIR = Path(os.environ.get("DUALPROXY_SRCDIR") or Path(__file__).resolve().parents[2])
ALERTS = SRCDIR / "contrib" / "prometheus" / "alerts.yml"
ALERTS_TEST = SRCDIR / "contrib" / "prometheus" / "alerts_test.yml"
DASHBOARD = SRCDIR / "contrib" / "grafana" / "dualproxy.json"
K8S = SRCDIR / "contrib" / "kubernetes"
EXAMPLE_INI = SRCDIR / "etc" / "dualproxy.ini"

JOB = "dualproxy"
SCRAPE_INTERVAL = 1  # seconds

DEFAULT_METRICS_ALLOW = {"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12",
                         "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10"}

REASONS = ("refused", "timeout", "unreachable", "failed", "reset")
FAMILIES = ("ipv4", "ipv6")
PER_SERVICE = ("dualproxy_connections_total", "dualproxy_connections_active",
               "dualproxy_bytes_total", "dualproxy_backend_errors_total",
               "dualproxy_denied_total", "dualproxy_source_limited_total",
               "dualproxy_refused_total")
PROCESS = ("process_open_fds", "process_max_fds", "process_resident_memory_bytes",
           "process_cpu_seconds_total", "process_start_time_seconds")

TCP_SERVICES = ("web", "dead", "guarded")
UDP_SERVICE = "dns"
UDP_DATAGRAMS = 3  # per family, each echoed once


def tool(name):
    path = shutil.which(name) or "/usr/bin/" + name
    if not os.access(path, os.X_OK):
        pytest.fail("%s not found: install Debian's prometheus package "
                    "(apt-get install prometheus)" % name, pytrace=False)
    return path


def need_yaml():
    if yaml is None:
        pytest.fail("PyYAML is missing: install Debian's python3-yaml", pytrace=False)
    return yaml


def poll(what, fn, timeout, interval=0.1):
    """Call fn() until it returns (True, detail); fail after `timeout` seconds
    with `what` and the last detail."""
    deadline = time.monotonic() + timeout
    while True:
        done, detail = fn()
        if done:
            return detail
        if time.monotonic() >= deadline:
            raise AssertionError("timeout (%.1fs) waiting for %s; last: %s"
                                 % (timeout, what, detail))
        time.sleep(interval)


# --------------------------------------------------------------------------
# a real Prometheus

class Prometheus:
    """One Prometheus server in its own scratch directory, on 127.0.0.1."""

    def __init__(self, targets, rule_files=(), extra_jobs=()):
        """Scrapes `targets` as job dualproxy every second; `extra_jobs`:
        more scrape_configs, each made by a function of this scratch dir."""
        self.dir = Path(tempfile.mkdtemp(prefix="dualproxy-prometheus-"))
        self.port = free_port(V4)
        self.url = "http://127.0.0.1:%d" % self.port
        config = {
            "global": {"scrape_interval": "%ds" % SCRAPE_INTERVAL,
                       "scrape_timeout": "%ds" % SCRAPE_INTERVAL,
                       "evaluation_interval": "%ds" % SCRAPE_INTERVAL},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                                "static_configs": [{"targets": list(targets)}]}]
            + [make(self.dir) for make in extra_jobs],
        }
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.log_path = self.dir / "prometheus.log"
        self.proc = None

    def start(self):
        self.started = time.time()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [tool("prometheus"), "--config.file=%s" % self.config,
                 "--storage.tsdb.path=%s" % (self.dir / "data"),
                 "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("prometheus exited (rc=%s):\n%s"
                                     % (self.proc.returncode, self.log()))
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    return r.status == 200, r.status
            except (urllib.error.URLError, ConnectionError, socket.timeout) as e:
                return False, repr(e)
        poll("prometheus on %s to be ready" % self.url, ready, T(20))
        return self

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def api(self, path, **params):
        """GET /api/v1/PATH?PARAMS; returns `data` of a successful answer."""
        url = self.url + "/api/v1/" + path
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=T(10)) as r:
                answer = json.load(r)
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            try:
                answer = json.loads(body)
            except ValueError:
                answer = {"errorType": "HTTP %d" % e.code, "error": body}
        if answer.get("status") != "success":
            raise AssertionError("prometheus %s %r: %s: %s" % (path, params,
                                 answer.get("errorType"), answer.get("error")))
        return answer["data"]

    def query(self, expr, at=None):
        """The result of an instant query (a list of {metric, value})."""
        params = {"query": expr}
        if at is not None:
            params["time"] = "%.3f" % at
        data = self.api("query", **params)
        assert data["resultType"] in ("vector", "scalar"), data
        return data["result"] if data["resultType"] == "vector" else [{"metric": {},
                                                                        "value": data["result"]}]

    def series(self, match, start, end):
        return self.api("series", **{"match[]": match, "start": "%.3f" % start,
                                     "end": "%.3f" % end})

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(T(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(T(10))
        shutil.rmtree(self.dir, ignore_errors=True)


def labels_of(metric, drop=("job", "instance")):
    return frozenset((k, v) for k, v in metric.items() if k not in drop)


def value_of(sample):
    return float(sample["value"][1])


# --------------------------------------------------------------------------
# UDP (a service with `protocol = udp`)

class UdpEcho:
    """A UDP echo server on host:port (0: any) in a thread."""

    def __init__(self, host, port=0):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.addr = self.sock.getsockname()[:2]
        self.received = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.1)
        while not self.stopping:
            try:
                data, peer = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.received += 1
            self.sock.sendto(data, peer)

    def close(self):
        self.stopping = True
        self.thread.join(T(5))
        self.sock.close()


def free_udp_dual_port():
    """A port free for TCP and UDP on 0.0.0.0 and [::] (V6ONLY)."""
    for _ in range(100):
        port = free_dual_port()
        ok = True
        for fam, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                if fam == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no port free for TCP and UDP on both families")


def udp_echo(host, port, payload):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(T(5))
        s.sendto(payload, (host, port))
        data, _ = s.recvfrom(65536)
        assert data == payload, "UDP echo through dualproxy differs"


# --------------------------------------------------------------------------
# the stack: dualproxy + Prometheus, traffic, one point in time to look at

class Stack:
    pass


def stack_config(st):
    text = """
        [global]
        metrics_listen = 127.0.0.1:%d
        [web]
        listen = %d
        backend4 = %s
        backend6 = %s
        [dead]
        listen = %d
        backend4 = 127.0.0.1:%d
        backend6 = [::1]:%d
        [guarded]
        listen = %d
        backend4 = %s
        allow = 198.51.100.0/24
    """ % (st.mport, st.ports["web"], fmt_addr(*st.tag4), fmt_addr(*st.tag6),
           st.ports["dead"], st.dead4, st.dead6, st.ports["guarded"], fmt_addr(*st.tag4))
    text += """
        [%s]
        listen = %d
        backend4 = %s
        backend6 = %s
        protocol = udp
    """ % (UDP_SERVICE, st.ports[UDP_SERVICE], fmt_addr(*st.udp4.addr),
           fmt_addr(*st.udp6.addr))
    return ini(text)


def run_traffic(st):
    """Both families through every service; leaves one connection per family
    open on web. Returns the values dualproxy must then have."""
    web, dead, guarded = st.ports["web"], st.ports["dead"], st.ports["guarded"]
    for i in range(3):
        assert tagged_echo(V4, web, pattern(1000, i)) == "v4 AF_INET"
        assert tagged_echo(V6, web, pattern(1000, 10 + i)) == "v6 AF_INET6"
    for host, tag in ((V4, "v4 AF_INET"), (V6, "v6 AF_INET6")):
        s = connect(host, web)
        st.held.append(s)
        assert recv_line(s).decode().strip() == tag
    for _ in range(4):
        expect_rst(V4, dead)
        expect_rst(V6, dead)
    for _ in range(2):
        expect_rst(V4, guarded)
        expect_rst(V6, guarded)
    for i in range(UDP_DATAGRAMS):
        udp_echo(V4, st.ports[UDP_SERVICE], b"udp v4 %d" % i)
        udp_echo(V6, st.ports[UDP_SERVICE], b"udp v6 %d" % i)
    good = stack_config(st)
    st.proxy.reload_ok(good)
    ok, lines = st.proxy.reload(good + "[broken\n")
    assert not ok, "a broken file was accepted:\n%s" % "\n".join(lines)
    st.proxy.rewrite(good)
    return {
        ('dualproxy_connections_total', 'web', 'ipv4'): 4,
        ('dualproxy_connections_total', 'web', 'ipv6'): 4,
        ('dualproxy_connections_total', 'dead', 'ipv4'): 4,
        ('dualproxy_connections_total', 'dead', 'ipv6'): 4,
        ('dualproxy_connections_total', 'guarded', 'ipv4'): 0,
        ('dualproxy_connections_total', 'guarded', 'ipv6'): 0,
        ('dualproxy_connections_active', 'web'): 2,
        ('dualproxy_connections_active', 'dead'): 0,
        ('dualproxy_connections_active', 'guarded'): 0,
        ('dualproxy_bytes_total', 'web', 'up'): 6 * 1000,
        ('dualproxy_backend_errors_total', 'dead', 'refused'): 8,
        ('dualproxy_denied_total', 'guarded'): 4,
        ('dualproxy_denied_total', 'web'): 0,
        ('dualproxy_reloads_total', 'success'): 1,
        ('dualproxy_reloads_total', 'failure'): 1,
    }


def expected_key(sample):
    """The key of run_traffic()'s table for a Prometheus sample."""
    m = sample["metric"]
    name = m["__name__"]
    if name == "dualproxy_reloads_total":
        return (name, m["result"])
    extra = m.get("family") or m.get("direction") or m.get("reason")
    return (name, m.get("service")) + ((extra,) if extra else ())


@pytest.fixture(scope="module")
def stack():
    """dualproxy and Prometheus after the traffic. st.at is the time to
    evaluate at, st.window (seconds) reaches back to before the traffic."""
    require_binary()
    st = Stack()
    st.backends = Backends()
    st.public = make_public_dir()
    st.held = []
    st.prom = None
    started = []
    try:
        st.tag4 = st.backends.start_tagged(V4, "v4")
        st.tag6 = st.backends.start_tagged(V6, "v6")
        st.mport = free_port(V4)
        st.dead4, st.dead6 = unused_port(V4), unused_port(V6)
        st.ports = {}
        for name in TCP_SERVICES:
            while True:
                p = free_dual_port()
                if p not in st.ports.values() and p != st.mport:
                    st.ports[name] = p
                    break
        st.udp4, st.udp6 = UdpEcho(V4), UdpEcho(V6)
        p = free_udp_dual_port()
        while p in st.ports.values():
            p = free_udp_dual_port()
        st.ports[UDP_SERVICE] = p
        path = st.public / "dualproxy.ini"
        path.write_text(stack_config(st))
        os.chmod(path, 0o644)
        st.proxy = Proxy(path)
        started.append((st.proxy, True))
        st.proxy.start()
        st.target = "127.0.0.1:%d" % st.mport

        st.prom = Prometheus([st.target], rule_files=[ALERTS], extra_jobs=[readme_pod_job])
        st.prom.start()
        st.t_start = st.prom.started

        # two scrapes before the traffic: rate() then has a zero to start from
        def scraped_twice():
            r = st.prom.query('count_over_time(up{job="%s"}[1m])' % JOB)
            n = value_of(r[0]) if r else 0
            return n >= 2, "%d scrapes" % n
        poll("two scrapes of dualproxy", scraped_twice, T(20))
        st.t_traffic = time.time()
        st.expected = run_traffic(st)
        st.direct = scrape(V4, st.mport)

        # Prometheus has scraped the final values: every series of dualproxy's
        # own (not process_*) equals the direct scrape
        def caught_up():
            got = {(s["metric"]["__name__"], labels_of(s["metric"], ("job", "instance",
                                                                      "__name__"))):
                   value_of(s) for s in st.prom.query('{job="%s", __name__=~"dualproxy_.*"}' % JOB)}
            want = {(name, labels): v for (name, labels), v in st.direct.samples.items()
                    if name.startswith("dualproxy_")}
            missing = {k: v for k, v in want.items() if got.get(k) != v}
            return not missing, "%d series differ, e.g. %r" % (
                len(missing), sorted(missing.items())[:3])
        poll("Prometheus to scrape the values after the traffic", caught_up, T(20))
        st.at = time.time()
        st.window = int(st.at - st.t_traffic + 2 * SCRAPE_INTERVAL + 1.5)
        yield st
    finally:
        for s in st.held:
            s.close()
        if st.prom is not None:
            st.prom.stop()
        problems = _stop_checked(started)
        if hasattr(st, "udp4"):
            st.udp4.close()
            st.udp6.close()
        st.backends.close()
        shutil.rmtree(st.public, ignore_errors=True)
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


def series_set(st, names):
    """{(name, labels without job/instance)} of dualproxy's target over the
    whole run, for the metric names `names`."""
    match = '{job="%s", instance="%s", __name__=~"%s"}' % (JOB, st.target, "|".join(names))
    return {(s["__name__"], labels_of(s, ("job", "instance", "__name__")))
            for s in st.prom.series(match, st.t_start - 60, st.at + 1)}


def tcp_labels(**labels):
    """The label set of a per-service series of a TCP service."""
    labels["protocol"] = "tcp"
    return frozenset(labels.items())


def expected_per_service(services):
    want = set()
    for s in services:
        for f in FAMILIES:
            want.add(("dualproxy_connections_total", tcp_labels(service=s, family=f)))
        want.add(("dualproxy_connections_active", tcp_labels(service=s)))
        for d in ("up", "down"):
            want.add(("dualproxy_bytes_total", tcp_labels(service=s, direction=d)))
        for r in REASONS:
            want.add(("dualproxy_backend_errors_total", tcp_labels(service=s, reason=r)))
        want.add(("dualproxy_denied_total", tcp_labels(service=s)))
        want.add(("dualproxy_source_limited_total", tcp_labels(service=s)))
        for r in ("full", "loop", "draining"):
            want.add(("dualproxy_refused_total", tcp_labels(service=s, reason=r)))
    return want


def diff(got, want):
    return "missing %s; unexpected %s" % (sorted(want - got, key=str), sorted(got - want, key=str))


# --------------------------------------------------------------------------
# the series Prometheus stored

def test_prometheus_target_up(stack):
    r = stack.prom.query('up{job="%s"} == 1' % JOB, at=stack.at)
    assert [s["metric"] for s in r] == [{"__name__": "up", "job": JOB, "instance": stack.target}], r
    assert stack.prom.query('up{job="%s"} == 0' % JOB, at=stack.at) == []
    targets = [t for t in stack.prom.api("targets")["activeTargets"]
               if t["labels"]["job"] == JOB]
    assert [(t["labels"]["instance"], t["health"], t["lastError"]) for t in targets] == \
        [(stack.target, "up", "")], targets


def test_prometheus_series_per_service(stack):
    """Every per-service series of the TCP services, with exactly the labels
    service, family / direction / reason: no more, no fewer."""
    got = {(n, l) for n, l in series_set(stack, PER_SERVICE)
           if dict(l).get("service") in TCP_SERVICES}
    want = expected_per_service(TCP_SERVICES)
    assert got == want, diff(got, want)


def test_prometheus_series_reloads_and_build_info(stack):
    version = run_dualproxy("-V").stdout.split()[-1]
    got = series_set(stack, ("dualproxy_reloads_total", "dualproxy_build_info"))
    want = {("dualproxy_reloads_total", frozenset({("result", "success")})),
            ("dualproxy_reloads_total", frozenset({("result", "failure")})),
            ("dualproxy_build_info", frozenset({("version", version)}))}
    assert got == want, diff(got, want)


def test_prometheus_series_capacity(stack):
    """The effective connection limit and the accept pauses by reason."""
    got = series_set(stack, ("dualproxy_connections_max", "dualproxy_accept_paused_total"))
    want = {("dualproxy_connections_max", frozenset()),
            ("dualproxy_accept_paused_total", frozenset({("reason", "max_connections")})),
            ("dualproxy_accept_paused_total", frozenset({("reason", "descriptors")}))}
    assert got == want, diff(got, want)
    # the limit dualproxy logged at start ("ready: ... N max connections"),
    # less one for each splice pipe the traffic left in the pool (a pipe
    # takes two descriptors; the pool keeps at most 64 empty ones), plus
    # half a connection for each UDP flow open (a flow takes one descriptor,
    # a TCP connection two)
    logged = int(stack.proxy.wait_for(r"ready: .* (\d+) max connections").group(1))
    r = stack.prom.query('dualproxy_connections_max{job="%s"}' % JOB, at=stack.at)
    (value,) = [value_of(s) for s in r]
    r = stack.prom.query('sum(dualproxy_connections_active{job="%s",protocol="udp"})' % JOB,
                         at=stack.at)
    flows = sum(value_of(s) for s in r)
    assert logged - 64 <= value <= logged + flows / 2, (value, logged, flows)
    r = stack.prom.query('dualproxy_accept_paused_total{job="%s"}' % JOB, at=stack.at)
    assert sorted(value_of(s) for s in r) == [0, 0]


def test_prometheus_series_process(stack):
    """The standard process metrics, one unlabelled series each."""
    got = series_set(stack, PROCESS)
    want = {(name, frozenset()) for name in PROCESS}
    assert got == want, diff(got, want)


def test_prometheus_series_log_and_endpoint(stack):
    got = series_set(stack, ("dualproxy_log_lines_dropped_total",
                             "dualproxy_metrics_denied_total"))
    want = {("dualproxy_log_lines_dropped_total", frozenset()),
            ("dualproxy_metrics_denied_total", frozenset())}
    assert got == want, diff(got, want)
    for name in ("dualproxy_log_lines_dropped_total", "dualproxy_metrics_denied_total"):
        r = stack.prom.query('%s{job="%s"}' % (name, JOB), at=stack.at)
        assert [value_of(s) for s in r] == [0], (name, r)


def test_prometheus_series_udp(stack):
    """A `protocol = udp` service: dualproxy_datagrams_total by family and
    direction, and its per-service series carry protocol="udp"."""
    got = series_set(stack, ("dualproxy_datagrams_total",))
    want = {("dualproxy_datagrams_total",
             frozenset({("service", UDP_SERVICE), ("family", f), ("direction", d),
                        ("protocol", "udp")}))
            for f in FAMILIES for d in ("up", "down")}
    assert got == want, diff(got, want)
    r = stack.prom.query('dualproxy_datagrams_total{job="%s"}' % JOB, at=stack.at)
    assert sorted(value_of(s) for s in r) == [UDP_DATAGRAMS] * 4, r
    assert (stack.udp4.received, stack.udp6.received) == (UDP_DATAGRAMS, UDP_DATAGRAMS)
    per_service = [l for _, l in series_set(stack, PER_SERVICE)
                   if dict(l).get("service") == UDP_SERVICE]
    assert per_service, "no per-service series for the UDP service"
    assert all(dict(l).get("protocol") == "udp" for l in per_service), per_service


def test_prometheus_no_unexpected_series(stack):
    """Nothing beyond the series the tests above expect (Prometheus' own
    scrape_* and up aside)."""
    got = {(n, l) for n, l in series_set(stack, ("dualproxy_.*", "process_.*"))}
    version = run_dualproxy("-V").stdout.split()[-1]
    allowed = expected_per_service(TCP_SERVICES) | {
        ("dualproxy_reloads_total", frozenset({("result", r)})) for r in ("success", "failure")
    } | {("dualproxy_build_info", frozenset({("version", version)})),
         ("dualproxy_connections_max", frozenset()),
         ("dualproxy_log_lines_dropped_total", frozenset()),
         ("dualproxy_notify_dropped_total", frozenset()),
         ("dualproxy_metrics_denied_total", frozenset())} | {
        ("dualproxy_accept_paused_total", frozenset({("reason", r)}))
        for r in ("max_connections", "descriptors")} | {(n, frozenset()) for n in PROCESS}
    unexpected = {(n, l) for n, l in got - allowed if dict(l).get("service") != UDP_SERVICE
                  and n != "dualproxy_datagrams_total"}
    assert not unexpected, sorted(unexpected, key=str)


def test_prometheus_values_after_traffic(stack):
    """Prometheus holds what dualproxy counted: the known counts of the
    traffic exactly, and every dualproxy_* series equal to a direct scrape."""
    got = {}
    for s in stack.prom.query('{job="%s", __name__=~"dualproxy_.*"}' % JOB, at=stack.at):
        got[expected_key(s)] = value_of(s)
    for key, value in stack.expected.items():
        assert got.get(key) == value, "%r: Prometheus has %r, expected %r" % (
            key, got.get(key), value)
    # the bytes down: the tag lines and echoes of the closed connections at
    # least (the open ones' tag lines too if counted while they flow)
    down = got[("dualproxy_bytes_total", "web", "down")]
    closed = 3 * (len("v4 AF_INET\n") + 1000) + 3 * (len("v6 AF_INET6\n") + 1000)
    assert down in (closed, closed + len("v4 AF_INET\n") + len("v6 AF_INET6\n")), down
    for (name, labels), v in stack.direct.samples.items():
        if not name.startswith("dualproxy_"):
            continue
        sel = ", ".join('%s="%s"' % kv for kv in sorted(labels))
        r = stack.prom.query('%s{job="%s"%s}' % (name, JOB, ", " + sel if sel else ""),
                             at=stack.at)
        assert [value_of(s) for s in r] == [v], (name, dict(labels), r)


def rate_set(st, expr):
    return {labels_of(s["metric"]) for s in st.prom.query(expr, at=st.at)}


def test_prometheus_rates_after_traffic(stack):
    """rate() over the traffic is > 0 exactly where traffic went; before the
    traffic nothing moved."""
    w = "[%ds]" % stack.window
    sel = '{job="%s", service=~"%s"}' % (JOB, "|".join(TCP_SERVICES))
    assert rate_set(stack, "rate(dualproxy_connections_total%s%s) > 0" % (sel, w)) == {
        tcp_labels(service=s, family=f) for s in ("web", "dead") for f in FAMILIES}
    assert rate_set(stack, "rate(dualproxy_bytes_total%s%s) > 0" % (sel, w)) == {
        tcp_labels(service="web", direction=d) for d in ("up", "down")}
    assert rate_set(stack, "rate(dualproxy_backend_errors_total%s%s) > 0" % (sel, w)) == {
        tcp_labels(service="dead", reason="refused")}
    assert rate_set(stack, "rate(dualproxy_denied_total%s%s) > 0" % (sel, w)) == {
        tcp_labels(service="guarded")}
    assert rate_set(stack, 'increase(dualproxy_reloads_total{job="%s"}%s) > 0' % (JOB, w)) == {
        frozenset({("result", "success")}), frozenset({("result", "failure")})}
    # the same window just before the traffic: all zero
    counters = ("dualproxy_connections_total", "dualproxy_bytes_total",
                "dualproxy_backend_errors_total", "dualproxy_denied_total",
                "dualproxy_reloads_total")
    before = " + ".join('sum(rate(%s{job="%s"}%s))' % (c, JOB, w) for c in counters)
    r = stack.prom.query(before, at=stack.t_traffic)
    assert [value_of(s) for s in r] == [0], r
    r = stack.prom.query(before, at=stack.at)
    assert value_of(r[0]) > 0, r


def test_prometheus_process_metrics_match_proc(stack):
    """process_* as /proc has them for the daemon's PID."""
    if os.environ.get("DUALPROXY_REAL"):
        pytest.skip("the daemon runs under a wrapper (valgrind): its descriptors "
                    "and limits are the wrapper's")
    pid = stack.proxy.proc.pid
    cpu_before = proc_cpu_seconds(pid)
    m = scrape(V4, stack.mport)
    cpu_after = proc_cpu_seconds(pid)
    fds = len(os.listdir("/proc/%d/fd" % pid))
    rss = int(proc_status(pid)["VmRSS"].split()[0]) * 1024
    with open("/proc/stat") as f:
        btime = int(next(l for l in f if l.startswith("btime")).split()[1])
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    start = btime + int(stat[stat.rindex(")") + 2:].split()[19]) / os.sysconf("SC_CLK_TCK")
    assert m.value("process_max_fds") == proc_nofile(pid)[0]
    assert abs(m.value("process_open_fds") - fds) <= 2, (m.value("process_open_fds"), fds)
    assert 0.5 * rss <= m.value("process_resident_memory_bytes") <= 2 * rss
    assert cpu_before - 0.02 <= m.value("process_cpu_seconds_total") <= cpu_after + 0.02
    assert abs(m.value("process_start_time_seconds") - start) <= 1.0, \
        (m.value("process_start_time_seconds"), start)
    for name, typ in (("process_open_fds", "gauge"), ("process_max_fds", "gauge"),
                      ("process_resident_memory_bytes", "gauge"),
                      ("process_cpu_seconds_total", "counter"),
                      ("process_start_time_seconds", "gauge")):
        assert m.type.get(name) == typ, (name, m.type.get(name))


def test_promtool_check_metrics_busy(stack):
    """promtool's linter on a scrape with traffic counted and connections open."""
    r = http_get(V4, stack.mport, "/metrics")
    assert r.status == 200 and b'dualproxy_connections_active{service="web"' in r.body
    proc = subprocess.run([tool("promtool"), "check", "metrics"], input=r.body,
                          capture_output=True, timeout=T(30))
    out = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 0 and out.strip() == "", out


# --------------------------------------------------------------------------
# the alerts: promtool, and the real Prometheus with the real series

def test_alert_rules_promtool():
    proc = subprocess.run([tool("promtool"), "check", "rules", str(ALERTS)],
                          capture_output=True, text=True, timeout=T(30))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout and "WARNING" not in proc.stdout + proc.stderr, proc.stdout
    proc = subprocess.run([tool("promtool"), "test", "rules", ALERTS_TEST.name],
                          capture_output=True, text=True, timeout=T(60), cwd=ALERTS_TEST.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def alert_rules():
    doc = need_yaml().safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_alert_rules_complete():
    """Each alert has for:, a severity, a summary and a description; and
    alerts_test.yml has for each a case where it fires and one where it must
    not."""
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), names
    for wanted in ("dualproxy_backend_errors_total", "dualproxy_connections_max",
                   "dualproxy_accept_paused_total", 'dualproxy_reloads_total{result="failure"}',
                   "process_open_fds", "process_max_fds", "dualproxy_log_lines_dropped_total",
                   "up{"):
        assert any(wanted in r["expr"] for r in rules), "no alert on %s" % wanted
    for r in rules:
        assert re.fullmatch(r"\d+[smh]", str(r.get("for", ""))), "%s: for: %r" % (r["alert"], r.get("for"))
        assert r.get("labels", {}).get("severity") in ("critical", "warning", "info"), r["alert"]
        for a in ("summary", "description"):
            assert r.get("annotations", {}).get(a), "%s: no %s" % (r["alert"], a)
    cases = need_yaml().safe_load(ALERTS_TEST.read_text())
    assert cases["rule_files"] == [ALERTS.name]
    fires, quiet = set(), set()
    for test in cases["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert fires == set(names), "alerts never shown firing: %s" % sorted(set(names) - fires)
    assert quiet == set(names), "alerts never shown quiet: %s" % sorted(set(names) - quiet)


def active_alerts(st):
    return {(s["metric"]["alertname"],) + tuple(sorted(labels_of(
        s["metric"], ("__name__", "job", "instance", "alertname", "alertstate", "severity"))))
        for s in st.prom.query('ALERTS{job="%s"}' % JOB)}


def test_alerts_on_real_series(stack):
    """Prometheus evaluates every rule of alerts.yml without error on the real
    series; after the traffic exactly the refused backend and the failed reload
    are pending (or firing)."""
    def evaluated():
        rules = [r for g in stack.prom.api("rules")["groups"] for r in g["rules"]]
        bad = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        return len(rules) == len(alert_rules()) and not bad, "%d rules, not ok: %r" % (
            len(rules), bad)
    poll("every rule evaluated", evaluated, T(10))
    want = {("DualproxyBackendErrors", ("reason", "refused"), ("service", "dead")),
            ("DualproxyReloadFailed", ("result", "failure"))}
    poll("the alerts after the traffic", lambda: (want <= active_alerts(stack),
                                                  active_alerts(stack)), T(10))
    assert active_alerts(stack) == want


# --------------------------------------------------------------------------
# the dashboard

def dashboard():
    return json.loads(DASHBOARD.read_text())


def all_panels(d):
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def dashboard_targets():
    """(panel title, refId, expr) of every target of every panel."""
    out = []
    for p in all_panels(dashboard()):
        for t in p.get("targets", []):
            out.append((p["title"], t.get("refId"), t.get("expr")))
    return out


GRAFANA_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr, values):
    def sub(m):
        name = m.group(1) or m.group(2) or m.group(3)
        assert name in values, "unknown template variable $%s in %r" % (name, expr)
        return values[name]
    out = GRAFANA_VAR.sub(sub, expr)
    assert "$" not in out, out
    return out


def regex_escape(value):
    """A value as Grafana's Prometheus data source puts it into a regex
    matcher: regex metacharacters backslashed (as a PromQL string)."""
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)


def resolve_variables(st):
    """The dashboard's template variables as Grafana would fill them in with
    every value selected: a query variable's allValue, or its values from
    label_values() through the API as a (a|b) regex. Fails on a variable
    with no values."""
    w = "%ds" % st.window
    values = {"__rate_interval": w, "__range": w, "__interval": "%ds" % SCRAPE_INTERVAL,
              "__range_s": str(st.window), "__interval_ms": str(SCRAPE_INTERVAL * 1000)}
    for v in dashboard()["templating"]["list"]:
        if v["type"] == "datasource":
            values[v["name"]] = "prometheus"
            continue
        assert v["type"] == "query", v
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
        assert m, "%s: not a label_values() query: %r" % (v["name"], query)
        match, label = substitute(m.group(1), values), m.group(2)
        found = st.prom.api("label/%s/values" % label, **{
            "match[]": match, "start": "%.3f" % (st.at - st.window), "end": "%.3f" % st.at})
        assert found, "variable $%s: label_values(%s, %s) is empty" % (v["name"], match, label)
        if v.get("includeAll") and v.get("allValue"):
            values[v["name"]] = v["allValue"]
        else:
            values[v["name"]] = "(" + "|".join(regex_escape(x) for x in found) + ")"
    return values


@pytest.mark.parametrize("title,ref,expr", dashboard_targets(),
                         ids=["%s/%s" % (t, r) for t, r, _ in dashboard_targets()])
def test_dashboard_expr_has_data(stack, title, ref, expr):
    """Every panel target, its variables filled in, has data after the traffic."""
    assert expr, "%s/%s: no expr" % (title, ref)
    q = substitute(expr, resolve_variables(stack))
    r = stack.prom.query(q, at=stack.at)
    assert r, "%s/%s: no data for %s" % (title, ref, q)


def test_dashboard_model():
    """The Grafana JSON model: a Prometheus data source variable used by
    every panel and target; a panel for each thing to watch; unique ids; a
    grid without overlaps."""
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = [v for v in variables.values() if v["type"] == "datasource"]
    assert len(ds) == 1 and ds[0]["query"] == "prometheus", ds
    ref = "${%s}" % ds[0]["name"]
    panels = list(all_panels(d))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, (p["title"], g)
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, "%s overlaps another panel" % p["title"]
                cells.add((x, y))
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": ref}, p["title"]
        assert p.get("targets"), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": ref}, p["title"]
    exprs = [e for _, _, e in dashboard_targets()]

    def has(pattern):
        return any(re.search(pattern, e) for e in exprs)
    assert has(r"sum by \(family\) \(rate\(dualproxy_connections_total"), "connections per family"
    assert has(r'dualproxy_bytes_total\{[^}]*direction="up"') and \
        has(r'dualproxy_bytes_total\{[^}]*direction="down"'), "bytes up/down"
    assert has(r"by \([^)]*reason[^)]*\) \(rate\(dualproxy_backend_errors_total"), "errors by reason"
    assert has(r"dualproxy_connections_active"), "active connections"
    assert has(r"dualproxy_reloads_total"), "reloads"
    assert has(r"dualproxy_datagrams_total"), "UDP datagrams"
    for name in ("job", "instance", "service"):
        assert variables[name]["type"] == "query", name


# --------------------------------------------------------------------------
# the shipped files

def k8s_docs(name):
    return [d for d in need_yaml().safe_load_all((K8S / name).read_text()) if d]


def configmap_ini():
    (cm,) = [d for d in k8s_docs("configmap.yaml") if d["kind"] == "ConfigMap"]
    return cm["data"]["dualproxy.ini"]


def ini_value(text, section, key):
    """A key's value in dualproxy's INI syntax (first occurrence), comments cut."""
    current = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and re.match(r"%s\s*=" % key, line):
            return line.split("=", 1)[1].split(";")[0].strip()
    return None


def metrics_port():
    value = ini_value(configmap_ini(), "global", "metrics_listen")
    assert value, "the ConfigMap has no metrics_listen"
    return int(value.rsplit(":", 1)[-1])


def test_kubernetes_scrape_annotations_match_configmap():
    """The DaemonSet's prometheus.io annotations point at the ConfigMap's
    metrics_listen port, which the container publishes."""
    (ds,) = [d for d in k8s_docs("daemonset.yaml") if d["kind"] == "DaemonSet"]
    tmpl = ds["spec"]["template"]
    ann = tmpl["metadata"]["annotations"]
    port = metrics_port()
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == str(port), (ann, port)
    assert ann["prometheus.io/path"] == "/metrics"
    (c,) = tmpl["spec"]["containers"]
    assert {"name": "metrics", "containerPort": port, "hostPort": port, "protocol": "TCP"} \
        in c["ports"], c["ports"]


def readme_metrics_section():
    text = (K8S / "README.md").read_text()
    m = re.search(r"<!-- metrics: begin\b.*?-->(.*?)<!-- metrics: end -->", text, re.S)
    assert m, "contrib/kubernetes/README.md has no delimited Metrics section"
    return m.group(1)


def readme_scrape_configs():
    """{'pods': config, 'static': config} of the README's Metrics section:
    the prometheus.yml examples, by how they find dualproxy."""
    found = {}
    for text in re.findall(r"```yaml\n(.*?)```", readme_metrics_section(), re.S):
        doc = need_yaml().safe_load(text)
        if "scrape_configs" not in doc:
            continue
        (job,) = [j for j in doc["scrape_configs"] if j["job_name"] == JOB]
        kind = "pods" if "kubernetes_sd_configs" in job else "static"
        assert kind not in found, "two %s examples" % kind
        found[kind] = doc
    assert set(found) == {"pods", "static"}, \
        "expected a pod-discovery and a static scrape config, found %r" % sorted(found)
    return found


def daemonset():
    (ds,) = [d for d in k8s_docs("daemonset.yaml") if d["kind"] == "DaemonSet"]
    return ds


README_POD_JOB = "readme-pods"
POD_IP = "127.0.0.1"


def readme_pod_job(scratch):
    """The README's pod-discovery job, with file discovery in place of
    Kubernetes (Debian's Prometheus has no kubernetes_sd_configs): the files
    hold what the pod role would discover for the DaemonSet's pod (one target
    per container port, its labels and annotations) and for a pod of another
    app, so the real Prometheus applies the README's relabelling. Scraped
    hourly, i.e. not during the tests."""
    job = dict(readme_scrape_configs()["pods"]["scrape_configs"][0])
    tmpl = daemonset()["spec"]["template"]
    meta = {"__meta_kubernetes_namespace": daemonset()["metadata"]["namespace"],
            "__meta_kubernetes_pod_name": "dualproxy-x7k2p",
            "__meta_kubernetes_pod_node_name": "edge1",
            "__meta_kubernetes_pod_ip": POD_IP}
    for k, v in tmpl["metadata"]["labels"].items():
        meta["__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", k)] = v
    for k, v in tmpl["metadata"]["annotations"].items():
        meta["__meta_kubernetes_pod_annotation_" + re.sub(r"[^A-Za-z0-9_]", "_", k)] = v
    (c,) = tmpl["spec"]["containers"]
    groups = [{"targets": ["%s:%d" % (POD_IP, p["containerPort"])],
               "labels": dict(meta, __meta_kubernetes_pod_container_name=c["name"],
                              __meta_kubernetes_pod_container_port_name=p["name"],
                              __meta_kubernetes_pod_container_port_number=str(p["containerPort"]))}
              for p in c["ports"]]
    groups.append({"targets": ["%s:9100" % POD_IP],
                   "labels": {"__meta_kubernetes_namespace": "kube-system",
                              "__meta_kubernetes_pod_label_app_kubernetes_io_name": "node-exporter",
                              "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
                              "__meta_kubernetes_pod_annotation_prometheus_io_port": "9100",
                              "__meta_kubernetes_pod_container_port_name": "metrics",
                              "__meta_kubernetes_pod_node_name": "edge1"}})
    sd = scratch / "pods.json"
    sd.write_text(json.dumps(groups))
    job.pop("kubernetes_sd_configs")
    job.update(job_name=README_POD_JOB, scrape_interval="1h",
               file_sd_configs=[{"files": [str(sd)]}])
    return job


def test_kubernetes_readme_pod_scrape_config(stack):
    """The README's pod-discovery config, applied by the real Prometheus to
    what Kubernetes would discover: one target per dualproxy pod, at the
    annotated port and path, everything else dropped."""
    doc = readme_scrape_configs()["pods"]
    (job,) = doc["scrape_configs"]
    sd = job["kubernetes_sd_configs"]
    assert sd[0]["role"] == "pod"
    assert daemonset()["metadata"]["namespace"] in sd[0]["namespaces"]["names"]
    assert doc["rule_files"] == ["dualproxy-alerts.yml"]
    ann = daemonset()["spec"]["template"]["metadata"]["annotations"]

    def discovered():
        t = stack.prom.api("targets", state="any")
        active = [x for x in t["activeTargets"] if x["scrapePool"] == README_POD_JOB]
        dropped = [x for x in t["droppedTargets"]
                   if x["discoveredLabels"].get("job") == README_POD_JOB]
        return active or dropped, (active, dropped)
    # the file is read at once: when any target is there, all are
    active, dropped = poll("the README's pod targets", discovered, T(15))
    assert [x["labels"] for x in active] == [{
        "instance": "%s:%s" % (POD_IP, ann["prometheus.io/port"]), "job": README_POD_JOB,
        "node": "edge1"}], active
    assert active[0]["scrapeUrl"] == "http://%s:%s%s" % (POD_IP, ann["prometheus.io/port"],
                                                         ann["prometheus.io/path"])
    assert sorted(x["discoveredLabels"].get("__meta_kubernetes_pod_container_port_name")
                  for x in dropped) == ["metrics", "web", "websecure"], dropped


def test_kubernetes_readme_static_scrape_config(tmp_path):
    """The README's static prometheus.yml passes `promtool check config`
    (alerts.yml as its rule file) and scrapes the ConfigMap's metrics port."""
    doc = readme_scrape_configs()["static"]
    for rf in doc["rule_files"]:
        shutil.copy(ALERTS, tmp_path / rf)
    path = tmp_path / "prometheus.yml"
    path.write_text(json.dumps(doc))
    proc = subprocess.run([tool("promtool"), "check", "config", str(path)],
                          capture_output=True, text=True, timeout=T(30))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (job,) = doc["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets and all(t.rsplit(":", 1)[1] == str(metrics_port()) for t in targets), targets
    assert "contrib/grafana/dualproxy.json" in readme_metrics_section()


def test_kubernetes_readme_metrics_allow_example(tmp_path):
    """The README's metrics_allow example is a [global] dualproxy accepts."""
    blocks = re.findall(r"```ini\n(.*?)```", readme_metrics_section(), re.S)
    assert len(blocks) == 1 and "metrics_allow" in blocks[0], blocks
    path = tmp_path / "example.ini"
    path.write_text(blocks[0] + ini("""
        [web]
        listen = 80
        backend4 = 10.43.206.211:80
    """))
    r = run_dualproxy("-t", "-c", str(path))
    assert r.returncode == 0, r.stderr


def commented_metrics_allow(text):
    m = re.search(r"^\s*[;#]\s*metrics_allow\s*=\s*([^;\n]*)", text, re.M)
    assert m, "no commented metrics_allow default"
    return {x for x in re.split(r"[,\s]+", m.group(1).strip()) if x}


@pytest.mark.parametrize("where", ["etc/dualproxy.ini", "contrib/kubernetes/configmap.yaml"])
def test_shipped_config_documents_metrics_allow_default(where, tmp_path):
    """The example and the ConfigMap show the metrics_allow default as a
    comment; uncommented, dualproxy accepts it."""
    text = EXAMPLE_INI.read_text() if where.startswith("etc/") else configmap_ini()
    assert commented_metrics_allow(text) == DEFAULT_METRICS_ALLOW
    path = tmp_path / "check.ini"
    path.write_text(re.sub(r"^(\s*)[;#]\s*(metrics_allow\s*=)", r"\1\2", text, count=1,
                           flags=re.M))
    r = run_dualproxy("-t", "-c", str(path))
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------
# metrics_allow from outside: two network namespaces

# (server address, client address, prefix length, allowed by default)
NET = [
    ("198.51.100.1", "198.51.100.2", 24, False),   # TEST-NET-2: a public client
    ("203.0.113.1", "203.0.113.2", 24, False),     # TEST-NET-3
    ("2001:db8:51::1", "2001:db8:51::2", 64, False),
    ("10.11.12.1", "10.11.12.2", 24, True),
    ("172.16.0.1", "172.16.0.2", 24, True),
    ("172.31.255.1", "172.31.255.2", 24, True),
    ("192.168.255.1", "192.168.255.2", 24, True),
    ("100.64.0.1", "100.64.0.2", 24, True),
    ("100.127.255.1", "100.127.255.2", 24, True),
    ("fd12:3456:789a::1", "fd12:3456:789a::2", 64, True),
    ("fc00:1::1", "fc00:1::2", 64, True),
    ("fe80::1", "fe80::2", 64, True),
    # just outside the private ranges
    ("9.255.255.1", "9.255.255.2", 24, False),
    ("11.0.0.1", "11.0.0.2", 24, False),
    ("172.15.255.1", "172.15.255.2", 24, False),
    ("172.32.0.1", "172.32.0.2", 24, False),
    ("192.167.255.1", "192.167.255.2", 24, False),
    ("192.169.0.1", "192.169.0.2", 24, False),
    ("100.63.255.1", "100.63.255.2", 24, False),
    ("100.128.0.1", "100.128.0.2", 24, False),
    ("fbff::1", "fbff::2", 64, False),
    ("fe00::1", "fe00::2", 64, False),
    ("fec0::1", "fec0::2", 64, False),
]
EXTRA_CLIENT = "172.31.255.3"  # a second client in 172.31.255.0/24
METRICS_PORT = 9180
SRV_DEV, CLI_DEV = "dpx-srv", "dpx-cli"

# Runs in a namespace: one HTTP GET per attempt, in order; prints the results.
CLIENT = r"""
import json, socket, sys, time
out = []
for a in json.loads(sys.argv[1]):
    v6 = ":" in a["dst"]
    scope = socket.if_nametoindex(a["dev"]) if a.get("dev") else 0
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(a["timeout"])
    r = {"src": a["src"], "path": a["path"], "connect": None, "end": None, "data": ""}
    data = b""
    t0 = time.monotonic()
    try:
        s.bind((a["src"], 0, 0, scope) if v6 else (a["src"], 0))
        s.connect((a["dst"], a["port"], 0, scope) if v6 else (a["dst"], a["port"]))
        r["connect"] = "ok"
        s.sendall(("GET %s HTTP/1.1\r\nHost: m\r\n\r\n" % a["path"]).encode())
        while True:
            chunk = s.recv(65536)
            if not chunk:
                r["end"] = "eof"
                break
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        r["end"] = "reset"
    except ConnectionRefusedError:
        r["connect"] = "refused"
    except socket.timeout:
        r["end"] = "timeout"
    except OSError as e:
        r["end"] = "error: %s" % e
    finally:
        s.close()
    r["elapsed"] = time.monotonic() - t0
    r["data"] = data.decode("latin-1")
    out.append(r)
print(json.dumps(out))
"""


def ip(*args):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=T(10))
    assert r.returncode == 0, "ip %s: %s" % (" ".join(args), r.stderr.strip())


class NetPair:
    """Two new network namespaces, srv and cli, joined by a veth pair that
    carries every address pair of NET (nodad, usable at once)."""

    def __init__(self):
        tag = "%d-%s" % (os.getpid(), secrets.token_hex(3))
        self.srv, self.cli = "dpx-metrics-srv-" + tag, "dpx-metrics-cli-" + tag
        self.made = []

    def create(self):
        if shutil.which("ip") is None:
            pytest.fail("ip (iproute2) not found", pytrace=False)
        for ns in (self.srv, self.cli):
            ip("netns", "add", ns)
            self.made.append(ns)
        ip("link", "add", SRV_DEV, "netns", self.srv, "type", "veth",
           "peer", "name", CLI_DEV, "netns", self.cli)
        for ns, dev, idx in ((self.srv, SRV_DEV, 0), (self.cli, CLI_DEV, 1)):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", dev, "addrgenmode", "none")
            for pair in NET:
                addr, plen = pair[idx], pair[2]
                extra = ["nodad"] if ":" in addr else []
                ip("-n", ns, "addr", "add", "%s/%d" % (addr, plen), "dev", dev, *extra)
            if ns == self.cli:
                ip("-n", ns, "addr", "add", EXTRA_CLIENT + "/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        return self

    def delete(self):
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=T(10))

    def run(self, ns, attempts):
        """Runs CLIENT in namespace ns; returns its results."""
        for a in attempts:
            a.setdefault("timeout", T(5))
            a.setdefault("path", "/metrics")
            a.setdefault("port", METRICS_PORT)
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT,
                            json.dumps(attempts)], capture_output=True, text=True,
                           timeout=T(10) + sum(a["timeout"] for a in attempts))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)


@pytest.fixture(scope="module")
def netpair():
    if not IS_ROOT:
        pytest.skip("needs root: creates network namespaces")
    pair = NetPair()
    try:
        yield pair.create()
    finally:
        pair.delete()


def from_client(src):
    """An attempt from the client namespace's `src` to its server address."""
    for srv, cli, _, _ in NET:
        if cli == src or (src == EXTRA_CLIENT and srv == "172.31.255.1"):
            a = {"src": src, "dst": srv}
            if srv.startswith("fe80:"):
                a["dev"] = CLI_DEV
            return a
    raise KeyError(src)


def start_in_srv(proxy_factory, netpair, allow_lines=()):
    """dualproxy in the server namespace: metrics on every address (a bare
    port, as the shipped ConfigMap has it), with the given metrics_allow lines."""
    text = ini("""
        [global]
        metrics_listen = %d
    """ % METRICS_PORT) + "".join("%s\n" % l for l in allow_lines) + ini("""
        [web]
        listen = 127.0.0.1:8080
        backend4 = 127.0.0.1:9
    """)
    return proxy_factory(text, wrapper=("ip", "netns", "exec", netpair.srv))


def assert_served(r, what="/metrics"):
    assert r["connect"] == "ok" and r["end"] == "eof", r
    assert r["data"].startswith("HTTP/1.1 200 "), r
    if what == "/metrics":
        assert "dualproxy_build_info" in r["data"], r


def assert_reset(r):
    """Closed at once with RST, not a byte of answer."""
    assert r["end"] == "reset" or r["connect"] == "refused", r
    assert r["data"] == "", "a client outside metrics_allow got an answer: %r" % r["data"][:200]
    assert r["elapsed"] < T(1), "closed after %.2fs, not at once" % r["elapsed"]


def denied_count(r):
    m = re.search(r"^dualproxy_metrics_denied_total (\S+)$", r["data"], re.M)
    assert m, "no dualproxy_metrics_denied_total in %r" % r["data"][-2000:]
    return float(m.group(1))


@needs_root
def test_metrics_allow_default_admits_only_loopback_and_private(netpair, proxy_factory):
    start_in_srv(proxy_factory, netpair)
    attempts = [from_client(cli) for _, cli, _, _ in NET]
    attempts.append(dict(from_client("198.51.100.2"), path="/healthz"))
    results = netpair.run(netpair.cli, attempts)
    refused = 0
    for (srv, cli, _, allowed), r in zip(NET, results):
        if allowed:
            assert_served(r)
        else:
            assert_reset(r)
            refused += 1
    assert_reset(results[-1])  # /healthz too
    refused += 1
    # loopback in the server's namespace: 127.0.0.0/8 and ::1
    local = netpair.run(netpair.srv, [{"src": "127.1.2.3", "dst": "127.0.0.1"},
                                      {"src": "::1", "dst": "::1", "path": "/healthz"},
                                      {"src": "127.0.0.1", "dst": "127.0.0.1"}])
    assert_served(local[0])
    assert_served(local[1], "/healthz")
    assert local[1]["data"].endswith("\r\n\r\nok\n"), local[1]
    assert_served(local[2])
    assert denied_count(local[2]) == refused


@needs_root
def test_metrics_allow_explicit_prefix(netpair, proxy_factory):
    """metrics_allow = 198.51.100.0/24: that public client is served, private
    ones (the default's) and the other family are not."""
    start_in_srv(proxy_factory, netpair, ["metrics_allow = 198.51.100.0/24"])
    refused = ["203.0.113.2", "2001:db8:51::2", "10.11.12.2", "fd12:3456:789a::2",
               "192.168.255.2", "fe80::2"]
    results = netpair.run(netpair.cli, [from_client(c) for c in refused]
                          + [from_client("198.51.100.2")])
    for r in results[:-1]:
        assert_reset(r)
    assert_served(results[-1])
    assert denied_count(results[-1]) == len(refused)


@needs_root
def test_metrics_allow_repeated_and_blank_separated(netpair, proxy_factory):
    start_in_srv(proxy_factory, netpair, ["metrics_allow = 203.0.113.0/24 2001:db8:51::/64",
                                          "metrics_allow = 172.31.255.2/32, fe80::/10"])
    refused = ["198.51.100.2", EXTRA_CLIENT, "10.11.12.2", "fd12:3456:789a::2"]
    served = ["203.0.113.2", "2001:db8:51::2", "fe80::2", "172.31.255.2"]
    results = netpair.run(netpair.cli, [from_client(c) for c in refused + served])
    for r in results[:len(refused)]:
        assert_reset(r)
    for r in results[len(refused):]:
        assert_served(r)
    assert denied_count(results[-1]) == len(refused)
