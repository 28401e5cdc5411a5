"""HTTP/3 over QUIC through dualproxy with real programs: ngtcp2's example
server and client (Debian's ngtcp2-server and ngtcp2-client, GnuTLS builds).

Two servers serve a 1 MiB file of different content under the same path,
one on 127.0.0.1 and one on ::1; dualproxy relays `protocol = udp` on one
port to both. A download through dualproxy over IPv4 must be byte for byte
the IPv4 server's file, and over IPv6 the IPv6 server's: the QUIC handshake,
the 1 MiB of STREAM data in ~800 datagrams (sent with GSO by the server) and
the ACKs all pass through one flow per client, whose log line counts them.

The key and certificate are made with openssl in the test's scratch
directory. Commands:
    gtlsserver -q -d DOCROOT ADDR PORT key.pem cert.pem
    gtlsclient -q --exit-on-all-streams-close --download DIR --timeout=10s
               --handshake-timeout=10s ADDR PORT https://ADDR:PORT/file.bin"""

import os
import shutil
import signal
import subprocess

import pytest

from conftest import (T, V4, V6, fmt_addr, flow_logs, free_udp_dual_port, free_udp_port,
                      ini, pattern, sha256, udp_sockets, wait_until)


SIZE = 1 << 20


def tool(name):
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.fail("%s not found: install Debian's %s" % (
            name, {"gtlsserver": "ngtcp2-server", "gtlsclient": "ngtcp2-client"}.get(
                name, name)), pytrace=False)
    return path


def ms(seconds):
    return "%dms" % int(seconds * 1000)


class QuicServer:
    def __init__(self, host, workdir, key, cert, content):
        self.host = host
        self.docroot = os.path.join(workdir, "htdocs-" + ("v6" if ":" in host else "v4"))
        os.makedirs(self.docroot)
        with open(os.path.join(self.docroot, "file.bin"), "wb") as f:
            f.write(content)
        self.port = free_udp_port(host)
        self.log = open(os.path.join(workdir, "server-%s.log" % self.port), "w+")
        self.proc = subprocess.Popen(
            [tool("gtlsserver"), "-q", "-d", self.docroot, host, str(self.port), key, cert],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

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


def bound_udp(host, port):
    """Whether some socket has UDP host:port bound (/proc/net/udp*)."""
    return any(a == fmt_addr(host, port) for a, _ in udp_sockets(port))


def download(host, port, workdir):
    """gtlsclient's download of /file.bin from host:port; returns the bytes."""
    dest = os.path.join(workdir, "dl-%s-%d" % ("v6" if ":" in host else "v4", port))
    os.makedirs(dest, exist_ok=True)
    url = "https://%s/file.bin" % fmt_addr(host, port)
    args = [tool("gtlsclient"), "-q", "--exit-on-all-streams-close", "--download", dest,
            "--timeout=" + ms(T(10)), "--handshake-timeout=" + ms(T(10)), host, str(port), url]
    r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=T(40))
    path = os.path.join(dest, "file.bin")
    assert r.returncode == 0, "gtlsclient %s: exit %d: %s" % (
        " ".join(args[1:]), r.returncode, (r.stdout + r.stderr)[-2000:])
    assert os.path.exists(path), "gtlsclient wrote no file: %s" % (r.stdout + r.stderr)[-2000:]
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    return data


@pytest.fixture
def quic_servers(tmp_path):
    work = str(tmp_path)
    key, cert = os.path.join(work, "key.pem"), os.path.join(work, "cert.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=localhost"],
                       capture_output=True, text=True, timeout=T(30))
    assert r.returncode == 0, r.stderr
    content = {V4: pattern(SIZE, 4), V6: pattern(SIZE, 6)}
    servers = {}
    try:
        for host in (V4, V6):
            servers[host] = QuicServer(host, work, key, cert, content[host])
        for s in servers.values():
            def up(s=s):
                if s.proc.poll() is not None:
                    raise AssertionError("gtlsserver exited (%s): %s" % (s.proc.returncode,
                                                                        s.output()))
                return bound_udp(s.host, s.port)
            wait_until(up, T(10), what="gtlsserver on %s" % s.fmt())
        yield servers, content, work
    finally:
        for s in servers.values():
            s.stop()


def test_http3_download_through_dualproxy(proxy_factory, quic_servers):
    servers, content, work = quic_servers
    # directly first: the servers and the client work
    for host in (V4, V6):
        assert download(host, servers[host].port, work) == content[host]
    port = free_udp_dual_port()
    proxy = proxy_factory(ini("""
        [global]
        log_level = debug
        drain_timeout = 300ms
        [h3]
        listen = %d
        protocol = udp
        idle_timeout = 1s
        backend4 = %s
        backend6 = %s
    """ % (port, servers[V4].fmt(), servers[V6].fmt())))
    for rnd in range(2):
        for host in (V4, V6):
            got = download(host, port, work)
            assert len(got) == SIZE, "%s: %d bytes downloaded" % (host, len(got))
            other = V6 if host == V4 else V4
            assert got != content[other], \
                "a download over %s was served by the %s server" % (host, other)
            assert sha256(got) == sha256(content[host]) and got == content[host], \
                "%s: the download differs from the server's file" % host
    # one flow per download, each logged when it fell idle
    def four():
        return len([f for f in flow_logs(proxy) if f["service"] == "h3"]) >= 4
    wait_until(four, T(5), what="the flow lines of 4 downloads")
    for f in flow_logs(proxy):
        host = V6 if f["client"].startswith("[") else V4
        assert f["backend"] == servers[host].fmt(), f
        assert f["down"] > SIZE and f["datagrams_down"] > SIZE // 1500, f
        assert f["datagrams_up"] > 0 and f["end"] == "idle-timeout", f
