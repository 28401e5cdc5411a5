"""What the configuration file may be: only a regular file of at most 1 MiB,
the same for -t, start-up and reload (SIGHUP and watch_config).

Each of these was read inside the event loop without a bound: a FIFO in
place of the file blocked in open(), a symlink to /dev/zero read forever at
100% CPU (SIGTERM ignored), a directory was reported as "no service
defined", and a 200 MB file stalled every reload. Now each is refused at
once with `FILE: why` (exit 78 at start-up and with -t; on reload the
running configuration stays, the loop never waits, and SIGTERM still ends
the daemon at once)."""

import os
import re
import signal
import time

import pytest

from conftest import (EX_CONFIG, V4, V6, T, StallProbe, distinct_dual_ports, fmt_addr,
                      ini, listen_sockets, run_dualproxy, tagged_echo)

LIMIT = 1024 * 1024
RELOAD_FAILED = "reload failed: keeping the running configuration"


def make_fifo(path):
    os.mkfifo(path, 0o644)


def make_dev_zero_link(path):
    os.symlink("/dev/zero", path)


def make_directory(path):
    os.mkdir(path, 0o755)


def make_huge(path):
    """200 MB, sparse: it costs nothing to make, and dualproxy must not read it."""
    with open(path, "w") as f:
        f.write("[web]\nlisten = 80\nbackend4 = 10.43.0.1:80\n")
        f.truncate(200 * 1024 * 1024)
    os.chmod(path, 0o644)


def make_just_too_large(path):
    with open(path, "w") as f:
        f.write("[web]\nlisten = 80\nbackend4 = 10.43.0.1:80\n")
        f.write(";" * (LIMIT - f.tell()) + "\n")
    os.chmod(path, 0o644)


KINDS = {
    "fifo": (make_fifo, "a FIFO, not a regular file"),
    "dev-zero-symlink": (make_dev_zero_link, "a character device, not a regular file"),
    "directory": (make_directory, "a directory, not a regular file"),
    "huge": (make_huge, "too large: 209715200 bytes (at most 1048576)"),
    "one-byte-too-large": (make_just_too_large, "too large: 1048577 bytes (at most 1048576)"),
}


@pytest.mark.parametrize("check", [True, False], ids=["with-t", "without-t"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_not_a_config_file(tmp_path, kind, check):
    make, why = KINDS[kind]
    path = str(tmp_path / "dualproxy.ini")
    make(path)
    start = time.monotonic()
    r = run_dualproxy(*(["-t"] if check else []), "-c", path, timeout=T(5))
    took = time.monotonic() - start
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    assert "%s: %s" % (path, why) in r.stderr, r.stderr
    assert "configuration ok" not in r.stderr
    assert took < T(2), "took %.2fs" % took


def test_device_directly(tmp_path):
    """-c /dev/zero and -c /dev/null: refused without reading."""
    for dev in ("/dev/zero", "/dev/null"):
        r = run_dualproxy("-t", "-c", dev, timeout=T(5))
        assert r.returncode == EX_CONFIG, r.stderr
        assert "%s: a character device, not a regular file" % dev in r.stderr, r.stderr


def test_largest_file_accepted(tmp_path):
    path = tmp_path / "big.ini"
    head = "[web]\nlisten = 80\nbackend4 = 10.43.0.1:80\n"
    body = (";" + "x" * 98 + "\n") * ((LIMIT - len(head)) // 100)
    path.write_text(head + body + ";" * (LIMIT - len(head) - len(body) - 1) + "\n")
    assert path.stat().st_size == LIMIT
    r = run_dualproxy("-t", "-c", str(path), timeout=T(5))
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------
# on reload: the same rules, the loop never waits, SIGTERM still works

def web(port, b4, b6, extra=""):
    return ini("""
        [global]
        watch_config = %s
        [web]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (extra or "no", port, fmt_addr(*b4), fmt_addr(*b6)))


def swap_in(path, kind):
    """Puts a thing of `kind` where the config file is (rename, atomic)."""
    tmp = path + ".new"
    KINDS[kind][0](tmp)
    os.rename(tmp, path)


def assert_serving(port):
    assert tagged_echo(V4, port, b"x\n") == "v4 AF_INET"
    assert tagged_echo(V6, port, b"x\n") == "v6 AF_INET6"


def assert_stops_at_once(proxy):
    assert proxy.running(), "dualproxy died before SIGTERM"
    start = time.monotonic()
    proxy.signal(signal.SIGTERM)
    rc = proxy.wait_exit(T(3))
    assert rc == 0, "exit %r %.1fs after SIGTERM" % (rc, time.monotonic() - start)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "directory"] + ["directory"])
def test_sighup_refuses(proxy_factory, tagged, kind):
    port, = distinct_dual_ports(1)
    proxy = proxy_factory(web(port, *tagged), readable=True)
    before = listen_sockets(port)
    os.unlink(proxy.config_path)
    swap_in(proxy.config_path, kind)
    with StallProbe(V4, port) as probe:
        start = time.monotonic()
        ok, lines = proxy.reload(timeout=T(3))
        took = time.monotonic() - start
    logged = "\n".join(lines)
    assert not ok, logged
    assert "%s: %s" % (proxy.config_path, KINDS[kind][1]) in logged, logged
    assert RELOAD_FAILED in logged
    assert took < T(1), "the failed reload took %.2fs" % took
    assert not probe.failures, probe.failures[:5]
    assert probe.worst() < T(0.2), "a client waited %.0f ms" % (probe.worst() * 1000)
    assert listen_sockets(port) == before
    assert_serving(port)
    assert_stops_at_once(proxy)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-symlink", "huge"])
def test_watch_refuses(proxy_factory, tagged, kind):
    """watch_config: a FIFO (or a /dev/zero symlink, a huge file) moved
    over the file is refused as on SIGHUP, once, and not retried until it
    changes; the daemon serves on and stops at once."""
    port, = distinct_dual_ports(1)
    proxy = proxy_factory(web(port, *tagged, extra="yes"), readable=True)
    since = proxy.mark()
    swap_in(proxy.config_path, kind)
    proxy.wait_for(re.escape("%s: %s" % (proxy.config_path, KINDS[kind][1])), timeout=T(4),
                   since=since)
    proxy.wait_for(RELOAD_FAILED, timeout=T(2), since=since)
    assert_serving(port)
    time.sleep(T(2.5))  # two more polls of the file: not retried
    assert len(proxy.grep(r"reloading \(the file changed\)", since=since)) == 1
    assert_serving(port)
    assert_stops_at_once(proxy)
