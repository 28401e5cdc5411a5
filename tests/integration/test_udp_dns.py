"""DNS through dualproxy with real programs: dig (bind9-dnsutils) asking
dnsmasq (dnsmasq-base), over UDP and over TCP (`dig +tcp`), through one
dualproxy port with `protocol = tcp, udp`.

Two dnsmasq instances answer for the same name with a different TXT record:
one on 127.0.0.1 ("served over IPv4"), one on ::1 ("served over IPv6"). A
query to dualproxy over IPv4 must get the IPv4 record and one over IPv6 the
IPv6 record, over either protocol. A 3,000-byte TXT answer (EDNS buffer 4096)
passes over UDP whole, not truncated. dualproxy's metrics show both
protocols used per family.

dnsmasq is started as
    dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces
            --listen-address=ADDR --port=PORT --pid-file=DIR/dnsmasq-N.pid
            --user=USER --log-facility=- --log-queries --edns-packet-max=4096
            --txt-record=family.dualproxy.test,served over IPv4 ...
(-k: in the foreground, so its PID is the process's, stopped at teardown),
dig as
    dig -p PORT @ADDR family.dualproxy.test TXT +time=N +tries=N [+tcp]"""

import os
import pwd
import re
import shutil
import signal
import subprocess

import pytest

from conftest import (T, V4, V6, fmt_addr, free_port, free_udp_dual_port, free_udp_port,
                      ini, metric_or_zero, scrape, wait_until)


NAME = "family.dualproxy.test"
BIG = "big.dualproxy.test"
RECORD = {V4: "served over IPv4", V6: "served over IPv6"}
BIG_STRINGS = {h: ["%s %02d " % (h, i) + "x" * 240 for i in range(12)] for h in (V4, V6)}


def tool(name):
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        pytest.fail("%s not found: install Debian's %s" % (
            name, "dnsutils" if name == "dig" else "dnsmasq-base"), pytrace=False)
    return path


class Dnsmasq:
    def __init__(self, host, workdir, n):
        self.host = host
        self.port = free_udp_port(host)
        self.log = open(os.path.join(workdir, "dnsmasq-%d.log" % n), "w+")
        # no shell: the strings go without quotes (dnsmasq would keep them)
        txt = ["--txt-record=%s,%s" % (NAME, RECORD[host]),
               "--txt-record=%s,%s" % (BIG, ",".join(BIG_STRINGS[host]))]
        self.args = [tool("dnsmasq"), "-k", "--conf-file=/dev/null", "--no-resolv",
                     "--no-hosts", "--bind-interfaces", "--listen-address=%s" % host,
                     "--port=%d" % self.port,
                     "--pid-file=%s" % os.path.join(workdir, "dnsmasq-%d.pid" % n),
                     "--user=%s" % pwd.getpwuid(os.getuid()).pw_name,
                     "--log-facility=-", "--log-queries", "--edns-packet-max=4096", *txt]
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def fmt(self):
        return fmt_addr(self.host, self.port)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(T(5))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(T(5))
        self.log.close()


def dig(server, port, name, tcp=False, extra=()):
    """Runs dig; returns (status, TXT strings of the answer, the protocol
    dig says it used, the whole output)."""
    secs = str(max(1, int(round(T(2)))))
    args = [tool("dig"), "-p", str(port), "@" + server, name, "TXT", "+time=" + secs,
            "+tries=3", "+nocookie", *extra]
    if tcp:
        args.append("+tcp")
    r = subprocess.run(args, capture_output=True, text=True, timeout=T(30))
    out = r.stdout
    assert r.returncode == 0, "dig %s failed (%d): %s %s" % (" ".join(args[1:]), r.returncode,
                                                              out, r.stderr)
    status = re.search(r"status: (\w+)", out)
    proto = re.search(r"^;; SERVER: .*\((UDP|TCP)\)\s*$", out, re.M)
    answers = []
    for line in out.splitlines():
        if line.startswith(";") or "\tTXT\t" not in line.replace(" ", "\t"):
            continue
        answers.append(re.findall(r'"((?:[^"\\]|\\.)*)"', line))
    return (status.group(1) if status else None, answers,
            proto.group(1) if proto else None, out)


@pytest.fixture
def dnsmasqs(tmp_path):
    started = []
    try:
        for n, host in enumerate((V4, V6)):
            started.append(Dnsmasq(host, str(tmp_path), n))
        for d in started:
            def answers(d=d):
                if d.proc.poll() is not None:
                    raise AssertionError("dnsmasq exited (%s): %s" % (d.proc.returncode,
                                                                     d.output()))
                try:
                    return dig(d.host, d.port, NAME)[1] == [[RECORD[d.host]]]
                except AssertionError:
                    return False
            wait_until(answers, T(10), interval=0.1, what="dnsmasq on %s" % d.fmt())
        yield {d.host: d for d in started}
    finally:
        for d in started:
            d.stop()


@pytest.fixture
def dns_proxy(proxy_factory, dnsmasqs):
    port = free_udp_dual_port()
    mport = free_port()
    proxy = proxy_factory(ini("""
        [global]
        log_level = debug
        drain_timeout = 300ms
        metrics_listen = 127.0.0.1:%d
        [dns]
        listen = %d
        protocol = tcp, udp
        backend4 = %s
        backend6 = %s
    """ % (mport, port, dnsmasqs[V4].fmt(), dnsmasqs[V6].fmt())))
    return proxy, port, mport


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_dig_through_dualproxy(dns_proxy, tcp):
    proxy, port, mport = dns_proxy
    for _ in range(2):
        for host in (V4, V6):
            status, answers, proto, out = dig(host, port, NAME, tcp=tcp)
            assert status == "NOERROR", out
            assert proto == ("TCP" if tcp else "UDP"), out
            assert answers == [[RECORD[host]]], \
                "a query over %s got %r, expected the %s server's record:\n%s" % (
                    host, answers, host, out)
    m = scrape(V4, mport)
    used = "tcp" if tcp else "udp"
    other = "udp" if tcp else "tcp"
    for fam in ("ipv4", "ipv6"):
        assert m.value("dualproxy_connections_total", service="dns", family=fam,
                       protocol=used) >= 2, fam
        assert metric_or_zero(m, "dualproxy_connections_total", service="dns", family=fam,
                              protocol=other) == 0, fam


def test_dig_both_protocols_one_port(dns_proxy):
    """UDP and TCP queries interleaved on the same port and family."""
    proxy, port, mport = dns_proxy
    for host in (V6, V4):
        for tcp in (False, True, False):
            status, answers, proto, out = dig(host, port, NAME, tcp=tcp)
            assert (status, answers, proto) == ("NOERROR", [[RECORD[host]]],
                                                "TCP" if tcp else "UDP"), out
    m = scrape(V4, mport)
    for fam in ("ipv4", "ipv6"):
        assert m.value("dualproxy_connections_total", service="dns", family=fam,
                       protocol="tcp") >= 1
        assert m.value("dualproxy_connections_total", service="dns", family=fam,
                       protocol="udp") >= 2


def test_dig_large_answer_over_udp(dns_proxy):
    """A TXT answer of about 3,000 bytes (EDNS buffer 4096) passes over UDP
    whole: no truncation (+ignore keeps dig from retrying over TCP)."""
    proxy, port, mport = dns_proxy
    for host in (V4, V6):
        status, answers, proto, out = dig(host, port, BIG, extra=("+bufsize=4096", "+ignore"))
        assert status == "NOERROR" and proto == "UDP", out
        assert " tc" not in re.search(r"flags:([^;]*);", out).group(1), "truncated:\n" + out
        assert answers == [BIG_STRINGS[host]], out
        size = re.search(r"MSG SIZE\s+rcvd: (\d+)", out)
        assert size and int(size.group(1)) > 3000, out
