"""watch_config = yes: the config file is watched (stat() every second) and a
change reloads it as SIGHUP does: `reloading (the file changed)`, then
`reload: N added, N kept, N removed`.

* kubelet's ConfigMap volume: the daemon runs with -c dir/dualproxy.ini where
  dualproxy.ini -> ..data/dualproxy.ini and ..data -> ..<timestamp>; kubelet
  updates it by writing a new timestamped directory, pointing ..data_tmp at
  it and rename()ing ..data_tmp over ..data (the symlink dualproxy.ini itself
  never changes). A new backend, or a new port, must be picked up within ~3 s.
* A plain file rewritten in place (same inode), or replaced by rename().
* A broken version is rejected (old config kept); the next good one applies.
* Without watch_config nothing changes until SIGHUP.
* A file is never loaded half-written: a rewrite in place is reloaded once
  the writer has closed the file and it has not changed for 0.5 s (a writer
  that pauses 1.5 s in the middle is waited for; two writes 0.1 s apart are
  one reload); another file behind the path (kubelet's swap, a rename) is
  complete as it appears and reloaded at once.

Every change is verified by traffic through tagged backends. The files and
directories are world-readable: the daemon reads them again as nobody.

The basic tests make each change in a later wall-clock second than the
daemon's previous look at the file (next_second()), so that they test the
watch itself. Two tests then make a change within the same second as the
previous reload: stat() (ext4, tmpfs: nanosecond timestamps) tells the
versions apart, so the change must still be picked up."""

import contextlib
import os
import signal
import time

import pytest

from conftest import (V4, V6, T, ConfigMapDir, assert_refused, distinct_dual_ports,
                      fmt_addr, free_port, ini, scrape, tagged_echo)

PICKUP = 3.0  # seconds: stat() every second, plus slack


@pytest.fixture
def tags(backends):
    return {name: backends.start_tagged(V4 if name.endswith("4") else V6, name)
            for name in ("a4", "a6", "b4", "b6")}


def config(port, b4, b6, extra="", watch="yes", mport=None):
    text = """
        [global]
        watch_config = %s
    """ % watch
    if mport is not None:
        text += "metrics_listen = 127.0.0.1:%d\n" % mport
    text += """
        [web]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (port, fmt_addr(*b4), fmt_addr(*b6))
    return ini(text + extra)


def next_second():
    """Sleep into the next wall-clock second (plus a little): a change made
    after this has a later st_mtime/st_ctime second than anything the daemon
    has seen so far."""
    time.sleep(1.05 - time.time() % 1.0)


def start_of_second(budget=0.3):
    """Sleep until just after a wall-clock second starts, leaving about
    1 - budget seconds of that second for the test's changes."""
    if time.time() % 1.0 > 0.05:
        time.sleep(1.02 - time.time() % 1.0)
    return int(time.time())


@contextlib.contextmanager
def paused(proxy):
    """SIGSTOP the daemon for the duration (it is stopped, not ended), then
    SIGCONT it."""
    pid = proxy.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        def stopped():
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "T"
        deadline = time.monotonic() + T(2)
        while not stopped():
            assert time.monotonic() < deadline, "dualproxy did not stop"
            time.sleep(0.001)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def wait_tag(host, port, want, timeout):
    """Poll new connections until the backend tag is `want`. Returns the
    seconds it took; fails with the last tag seen."""
    start = time.monotonic()
    last = None
    while True:
        try:
            last = tagged_echo(host, port, b"poll\n", timeout=T(2))
        except (OSError, AssertionError) as e:
            last = repr(e)
        if last == want:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError("%s: still %r after %.1fs, expected %r"
                                 % (fmt_addr(host, port), last, timeout, want))
        time.sleep(0.1)


def wait_serving(host, port, timeout):
    start = time.monotonic()
    while True:
        try:
            tagged_echo(host, port, b"poll\n", timeout=T(2))
            return time.monotonic() - start
        except (OSError, AssertionError) as e:
            if time.monotonic() - start > timeout:
                raise AssertionError("%s: not served %.1fs after the change: %r"
                                     % (fmt_addr(host, port), timeout, e)) from None
        time.sleep(0.1)


def check_reload_logged(proxy, since, counts):
    proxy.wait_for(r"reloading \(the file changed\)", timeout=T(2), since=since)
    proxy.wait_for(r"reload: %d added, %d kept, %d removed" % counts, timeout=T(2),
                   since=since)


# --------------------------------------------------------------------------
# kubelet ConfigMap layout

def test_configmap_swap_changes_backend(path_proxy_factory, public_tmp, tags):
    port, = distinct_dual_ports(1)
    mport = free_port()
    cm = ConfigMapDir(public_tmp / "config",
                      {"dualproxy.ini": config(port, tags["a4"], tags["a6"], mport=mport)})
    proxy = path_proxy_factory(cm.path("dualproxy.ini"))
    assert tagged_echo(V4, port, b"x\n") == "a4 AF_INET"
    assert tagged_echo(V6, port, b"x\n") == "a6 AF_INET6"

    next_second()
    since = proxy.mark()
    cm.update({"dualproxy.ini": config(port, tags["b4"], tags["a6"], mport=mport)})
    wait_tag(V4, port, "b4 AF_INET", T(PICKUP))
    assert tagged_echo(V6, port, b"x\n") == "a6 AF_INET6"
    check_reload_logged(proxy, since, (0, 2, 0))
    assert scrape(V4, mport).value("dualproxy_reloads_total", result="success") == 1

    # and a second swap (the watch survives the first one)
    next_second()
    since = proxy.mark()
    cm.update({"dualproxy.ini": config(port, tags["b4"], tags["b6"], mport=mport)})
    wait_tag(V6, port, "b6 AF_INET6", T(PICKUP))
    assert tagged_echo(V4, port, b"x\n") == "b4 AF_INET"
    check_reload_logged(proxy, since, (0, 2, 0))


def test_configmap_swap_adds_port(path_proxy_factory, public_tmp, tags):
    port, extra = distinct_dual_ports(2)
    cm = ConfigMapDir(public_tmp / "config",
                      {"dualproxy.ini": config(port, tags["a4"], tags["a6"])})
    proxy = path_proxy_factory(cm.path("dualproxy.ini"))
    assert_refused(V4, extra)
    next_second()
    since = proxy.mark()
    cm.update({"dualproxy.ini": config(port, tags["a4"], tags["a6"], extra="""
        [extra]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (extra, fmt_addr(*tags["b4"]), fmt_addr(*tags["b6"])))})
    wait_serving(V4, extra, T(PICKUP))
    assert tagged_echo(V4, extra, b"x\n") == "b4 AF_INET"
    assert tagged_echo(V6, extra, b"x\n") == "b6 AF_INET6"
    assert tagged_echo(V4, port, b"x\n") == "a4 AF_INET"
    check_reload_logged(proxy, since, (2, 2, 0))


def test_configmap_swap_broken_then_fixed(path_proxy_factory, public_tmp, tags):
    port, = distinct_dual_ports(1)
    cm = ConfigMapDir(public_tmp / "config",
                      {"dualproxy.ini": config(port, tags["a4"], tags["a6"])})
    proxy = path_proxy_factory(cm.path("dualproxy.ini"))
    next_second()
    since = proxy.mark()
    cm.update({"dualproxy.ini": config(port, tags["b4"], tags["b6"]) + "bogus_key = 1\n"})
    proxy.wait_for(r"reload failed: keeping the running configuration",
                   timeout=T(PICKUP), since=since)
    assert tagged_echo(V4, port, b"x\n") == "a4 AF_INET"
    next_second()
    since = proxy.mark()
    cm.update({"dualproxy.ini": config(port, tags["b4"], tags["b6"])})
    wait_tag(V4, port, "b4 AF_INET", T(PICKUP))
    assert tagged_echo(V6, port, b"x\n") == "b6 AF_INET6"
    check_reload_logged(proxy, since, (0, 2, 0))


# --------------------------------------------------------------------------
# a plain file

def test_inplace_rewrite(proxy_factory, tags):
    """Same inode: truncated and written again (as `cat > file` does)."""
    port, = distinct_dual_ports(1)
    proxy = proxy_factory(config(port, tags["a4"], tags["a6"]), readable=True)
    assert tagged_echo(V4, port, b"x\n") == "a4 AF_INET"
    ino = os.stat(proxy.config_path).st_ino
    next_second()
    since = proxy.mark()
    with open(proxy.config_path, "w") as f:
        f.write(config(port, tags["b4"], tags["b6"], extra="; rewritten in place\n"))
    assert os.stat(proxy.config_path).st_ino == ino
    wait_tag(V4, port, "b4 AF_INET", T(PICKUP))
    assert tagged_echo(V6, port, b"x\n") == "b6 AF_INET6"
    proxy.wait_for(r"reload: 0 added, 2 kept, 0 removed", timeout=T(2), since=since)


def test_replaced_by_rename(proxy_factory, tags):
    """A new file renamed over the old one (editors, config management)."""
    port, = distinct_dual_ports(1)
    proxy = proxy_factory(config(port, tags["a4"], tags["a6"]), readable=True)
    next_second()
    since = proxy.mark()
    proxy.rewrite(config(port, tags["b4"], tags["a6"]))
    wait_tag(V4, port, "b4 AF_INET", T(PICKUP))
    assert tagged_echo(V6, port, b"x\n") == "a6 AF_INET6"
    check_reload_logged(proxy, since, (0, 2, 0))


def test_no_watch_without_the_option(proxy_factory, tags):
    """watch_config = no: a changed file waits for SIGHUP."""
    port, = distinct_dual_ports(1)
    proxy = proxy_factory(config(port, tags["a4"], tags["a6"], watch="no"), readable=True)
    proxy.rewrite(config(port, tags["b4"], tags["b6"], extra="; changed\n"))
    time.sleep(T(PICKUP))
    assert tagged_echo(V4, port, b"x\n") == "a4 AF_INET"
    assert not proxy.grep(r"reloading \(the file changed\)")
    assert proxy.reload_ok() == (0, 2, 0)
    assert tagged_echo(V4, port, b"x\n") == "b4 AF_INET"


# --------------------------------------------------------------------------
# a change in the same second as the previous reload

def test_configmap_two_swaps_in_one_second(path_proxy_factory, public_tmp, tags):
    """kubelet swaps twice in quick succession (two ConfigMap edits, e.g.
    an apply followed by a fix): the first swap is reloaded, the second one
    lands in the same wall-clock second, while the daemon is busy. The
    daemon must end up on the second version (stat() tells them apart: a new
    inode behind the path, nanosecond mtime/ctime of the directory)."""
    port, = distinct_dual_ports(1)
    cm = ConfigMapDir(public_tmp / "config",
                      {"dualproxy.ini": config(port, tags["a4"], tags["a6"])})
    proxy = path_proxy_factory(cm.path("dualproxy.ini"))
    assert tagged_echo(V4, port, b"x\n") == "a4 AF_INET"
    next_second()
    second = start_of_second()
    since = proxy.mark()
    cm.update({"dualproxy.ini": config(port, tags["b4"], tags["a6"])})
    proxy.wait_for(r"reload: 0 added, 2 kept, 0 removed", timeout=T(PICKUP), since=since)
    assert tagged_echo(V4, port, b"x\n") == "b4 AF_INET"
    since = proxy.mark()
    # the daemon is busy (paused) while kubelet makes the second swap: it
    # sees the events only once the swap is complete
    with paused(proxy):
        cm.update({"dualproxy.ini": config(port, tags["b4"], tags["b6"])})
    same_second = int(time.time()) == second
    try:
        wait_tag(V6, port, "b6 AF_INET6", T(PICKUP))
    except AssertionError as e:
        # diagnosis: the file itself is fine, a SIGHUP applies it
        sighup = proxy.reload_ok()
        applied = tagged_echo(V6, port, b"x\n") == "b6 AF_INET6"
        raise AssertionError("%s (second swap %s the first one's second; then SIGHUP: "
                             "reload %r, %s)" % (e, "in" if same_second else "after", sighup,
                                                 "applied" if applied else "not applied")) \
            from None
    assert tagged_echo(V4, port, b"x\n") == "b4 AF_INET"
    check_reload_logged(proxy, since, (0, 2, 0))


def test_inplace_rewrite_same_size_same_second(proxy_factory, tags):
    """A rewrite in place (same inode, same size: one backend port for
    another of as many digits) in the same second as the previous reload."""
    a4, b4 = tags["a4"], tags["b4"]
    if len(str(a4[1])) != len(str(b4[1])):
        pytest.skip("the tagged backends' ports differ in length")
    port, = distinct_dual_ports(1)
    text_a = config(port, a4, tags["a6"], extra="; version a\n")
    text_c = config(port, a4, tags["a6"], extra="; version c\n")
    text_b = config(port, b4, tags["a6"], extra="; version b\n")
    assert len(text_a) == len(text_b) == len(text_c)
    proxy = proxy_factory(text_a, readable=True)
    next_second()
    start_of_second()
    since = proxy.mark()
    # first change: reloaded (a later second than the start)
    with open(proxy.config_path, "r+") as f:
        f.write(text_c)
    proxy.wait_for(r"reload: 0 added, 2 kept, 0 removed", timeout=T(PICKUP), since=since)
    # second change, same size, same second: b4
    since = proxy.mark()
    with open(proxy.config_path, "r+") as f:
        f.write(text_b)
    wait_tag(V4, port, "b4 AF_INET", T(PICKUP))
    check_reload_logged(proxy, since, (0, 2, 0))


# --------------------------------------------------------------------------
# a file that is still being written is never loaded half

def test_inplace_rewrite_with_a_pause_is_not_applied_half(proxy_factory, tags):
    """The writer truncates the file, writes the first part (on its own a
    valid config: [web] on the b backends), pauses 1.5 s, then writes the
    rest ([extra]) and closes it. Nothing is reloaded while the writer
    pauses; once it closed the file, the whole file is applied, once."""
    port, extra = distinct_dual_ports(2)
    proxy = proxy_factory(config(port, tags["a4"], tags["a6"]), readable=True)
    full = config(port, tags["b4"], tags["b6"], extra="""
        [extra]
        listen = %d
        backend4 = %s
        backend6 = %s
    """ % (extra, fmt_addr(*tags["b4"]), fmt_addr(*tags["b6"])))
    cut = full.index("[extra]")
    next_second()
    since = proxy.mark()
    with open(proxy.config_path, "w") as f:
        f.write(full[:cut])
        f.flush()
        time.sleep(1.5)
        assert not proxy.grep(r"reloading \(|reload:", since=since), \
            "a half-written file was loaded:\n%s" % "\n".join(proxy.lines[since:])
        assert tagged_echo(V4, port, b"x\n") == "a4 AF_INET"
        f.write(full[cut:])
    check_reload_logged(proxy, since, (2, 2, 0))
    proxy.wait_for(r"changed and is still open for writing", timeout=T(1), since=since)
    assert len(proxy.grep(r"reloading \(the file changed\)", since=since)) == 1
    assert tagged_echo(V4, extra, b"x\n") == "b4 AF_INET"
    assert tagged_echo(V6, port, b"x\n") == "b6 AF_INET6"


def test_inplace_rewrites_in_quick_succession_are_one_reload(proxy_factory, tags):
    """Two writes that each close the file, 0.1 s apart (less than the
    0.5 s a change settles): one reload, of the second version."""
    port, = distinct_dual_ports(1)
    proxy = proxy_factory(config(port, tags["a4"], tags["a6"]), readable=True)
    next_second()
    since = proxy.mark()
    with open(proxy.config_path, "w") as f:
        f.write(config(port, tags["b4"], tags["a6"]))
    time.sleep(0.1)
    with open(proxy.config_path, "w") as f:
        f.write(config(port, tags["b4"], tags["b6"]))
    wait_tag(V6, port, "b6 AF_INET6", T(PICKUP))
    time.sleep(T(1))
    assert len(proxy.grep(r"reloading \(the file changed\)", since=since)) == 1, \
        "\n".join(proxy.lines[since:])
    assert tagged_echo(V4, port, b"x\n") == "b4 AF_INET"


def test_configmap_swap_is_not_delayed(path_proxy_factory, public_tmp, tags):
    """kubelet's swap puts another, complete file behind the path: it is
    reloaded at once, without waiting for the file to settle."""
    port, = distinct_dual_ports(1)
    cm = ConfigMapDir(public_tmp / "config",
                      {"dualproxy.ini": config(port, tags["a4"], tags["a6"])})
    proxy = path_proxy_factory(cm.path("dualproxy.ini"))
    next_second()
    since = proxy.mark()
    start = time.monotonic()
    cm.update({"dualproxy.ini": config(port, tags["b4"], tags["b6"])})
    proxy.wait_for(r"reload: 0 added, 2 kept, 0 removed", timeout=T(PICKUP), since=since)
    took = time.monotonic() - start
    if T(1) == 1:  # timing is only meaningful at full speed
        assert took < 0.4, "the swap was reloaded %.2fs later" % took
    assert tagged_echo(V4, port, b"x\n") == "b4 AF_INET"
