"""Loops at run time, through something -t cannot see.

-t refuses a backend that is one of dualproxy's own listen addresses (see
test_config_errors.py). A loop can still be made behind its back: here the
backend is a ClusterIP-like address, 10.43.0.10:80, that netfilter (as
kube-proxy does) translates to dualproxy's own listener. One client then
became thousands of relays; now the connection that comes back from
dualproxy's own backend socket is refused (dualproxy_refused_total
{reason="loop"}), the client is closed, and nothing piles up.

The test runs in a network namespace of its own: lo, a route for
10.43.0.0/16 through it, and an nft DNAT rule."""

import shutil
import socket
import time

import pytest

from conftest import T, V4, ini, needs_root, scrape, wait_until

LISTEN = 8080
METRICS = 9180
CLUSTER_IP = "10.43.0.10"


def loop_namespace(netns):
    if shutil.which("nft") is None:
        pytest.skip("nft not found: the loop needs a DNAT rule")
    netns.ip("route", "add", "10.43.0.0/16", "dev", "lo", "src", "127.0.0.1")
    netns.run("nft", "add", "table", "ip", "kubeproxy")
    netns.run("nft", "add", "chain", "ip", "kubeproxy", "out",
              "{ type nat hook output priority -100; }")
    netns.run("nft", "add", "rule", "ip", "kubeproxy", "out", "ip", "daddr", CLUSTER_IP,
              "tcp", "dport", "80", "dnat", "to", "127.0.0.1:%d" % LISTEN)


def one_client():
    """Connects, sends a line, and returns how the connection ended."""
    start = time.monotonic()
    try:
        s = socket.create_connection((V4, LISTEN), timeout=T(5))
    except ConnectionResetError:  # the RST may come before connect() returns
        return "reset", time.monotonic() - start
    s.settimeout(T(5))
    try:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = s.recv(4096)
        how = "eof" if data == b"" else "data"
    except ConnectionResetError:
        how = "reset"
    except socket.timeout:
        how = "open"
    finally:
        s.close()
    return how, time.monotonic() - start


@needs_root
def test_loop_through_address_translation_is_refused(proxy_factory, netns):
    loop_namespace(netns)
    text = ini("""
        [global]
        metrics_listen = 127.0.0.1:%d
        [web]
        listen = 127.0.0.1:%d
        backend4 = %s:80
    """ % (METRICS, LISTEN, CLUSTER_IP))
    proxy = proxy_factory(text, readable=True, wrapper=netns.wrapper())
    r = netns.run(proxy.args[len(netns.wrapper())], "-t", "-c", proxy.config_path, check=False)
    assert r.returncode == 0, "-t sees no loop here: %s" % r.stderr

    for _ in range(3):
        how, took = netns.call(one_client)
        assert how in ("reset", "eof"), how
        assert took < T(3), "the client waited %.1fs" % took

    def settled():
        m = netns.call(scrape, V4, METRICS)
        return m if m.value("dualproxy_connections_active", service="web",
                            protocol="tcp") == 0 else None
    m = wait_until(settled, T(5), what="no connection left")
    loops = m.value("dualproxy_refused_total", service="web", reason="loop", protocol="tcp")
    relayed = m.value("dualproxy_connections_total", service="web", family="ipv4",
                      protocol="tcp")
    print("3 clients: %d relays, %d refused as a loop" % (relayed, loops))
    assert loops >= 3, m.text
    assert relayed <= 6, "%d relays for 3 clients: the loop piled up" % relayed
    # and it stays so
    time.sleep(T(1))
    m = netns.call(scrape, V4, METRICS)
    assert m.value("dualproxy_connections_total", service="web", family="ipv4",
                   protocol="tcp") == relayed
    assert proxy.running()
