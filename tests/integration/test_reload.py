"""Reload (SIGHUP): the file is read again and applied as a diff.

* A listener whose address is unchanged keeps its socket (same inode in
  /proc/net/tcp*, and not one refused connection while reloading 20 times
  under a tight connect loop on both families); removed addresses are closed
  (refused); new ones are bound, a port < 1024 too after the privilege drop
  when keep_net_bind = yes (and not without it: the reload then fails).
* `reload: N added, N kept, N removed` counts listening addresses.
* A changed backend applies to new connections; a live connection carries
  on byte-exact with its old backend. log_level and timeouts apply to new
  connections.
* Any error (syntax, validation, an unknown user, a port that cannot be
  bound, a missing file) logs the error (the same `FILE:LINE: message` that
  -t prints, or `cannot listen on ADDR`) and `reload failed: keeping the
  running configuration`, and nothing changes: the old ports, backends and
  sockets stay, nothing of the new file is bound.
* A change of user or keep_net_bind is logged as needing a restart and
  otherwise ignored.

Configs live in a world-readable directory: started as root the daemon runs
as nobody when it reads the file again."""

import os
import pwd
import re
import socket
import threading
import time

import pytest

from conftest import (CAP_NET_BIND_SERVICE, V4, V6, T, assert_refused,
                      connect, distinct_dual_ports, fmt_addr, ini,
                      is_readable, listen_sockets, local_addr, low_dual_port,
                      needs_root, pattern, recv_exact, recv_line,
                      run_dualproxy, scrape, status_caps, status_ids, tagged_echo,
                      wait_closed)

RELOAD_FAILED = "reload failed: keeping the running configuration"


@pytest.fixture
def tags(backends):
    """Tagged echo backends: a4/a6 and b4/b6 on 127.0.0.1 / ::1."""
    return {name: backends.start_tagged(V4 if name.endswith("4") else V6, name)
            for name in ("a4", "a6", "b4", "b6")}


def web(port, b4, b6, name="web"):
    return """
        [%s]
        listen = %s
        backend4 = %s
        backend6 = %s
    """ % (name, port, fmt_addr(*b4), fmt_addr(*b6))


def check_web(port, letter):
    """New connections to `port` reach backend <letter>4 / <letter>6."""
    assert tagged_echo(V4, port, b"hello v4\n") == "%s4 AF_INET" % letter
    assert tagged_echo(V6, port, b"hello v6\n") == "%s6 AF_INET6" % letter


def sockets_of(port):
    socks = listen_sockets(port)
    assert socks, "nothing listens on port %d" % port
    return socks


# --------------------------------------------------------------------------
# the diff: kept, removed, added, changed backends, live connections

def test_reload_diff(proxy_factory, tags, clients):
    port, gone, new = distinct_dual_ports(3)
    proxy = proxy_factory(ini("""
        [global]
        log_level = debug
    """ + web(port, tags["a4"], tags["a6"]) + """
        [gone]
        listen = %d
        backend4 = %s
    """ % (gone, fmt_addr(*tags["a4"]))), readable=True)
    check_web(port, "a")
    assert tagged_echo(V6, gone, b"x") == "a4 AF_INET"
    before = sockets_of(port)

    # live connections, one per family, to the old backends
    live = {}
    for host in (V4, V6):
        s = connect(host, port)
        clients.append(s)
        assert recv_line(s) == (b"a4 AF_INET\n" if host == V4 else b"a6 AF_INET6\n")
        first = pattern(100000, len(host))
        s.sendall(first)
        assert recv_exact(s, len(first)) == first
        live[host] = (s, local_addr(s), len(first))

    counts = proxy.reload_ok(ini("""
        [global]
        log_level = debug
    """ + web(port, tags["b4"], tags["b6"]) + """
        [new]
        listen = %d
        backend4 = %s
    """ % (new, fmt_addr(*tags["b4"]))))
    assert counts == (2, 2, 2), "reload: %d added, %d kept, %d removed" % counts

    # the kept port has the very same sockets; the removed one is closed
    assert sockets_of(port) == before
    assert listen_sockets(gone) == set()
    for host in (V4, V6):
        assert_refused(host, gone, "(port removed by the reload)")
    # new connections: the new backends and the new port
    check_web(port, "b")
    assert tagged_echo(V4, new, b"new v4") == "b4 AF_INET"
    assert tagged_echo(V6, new, b"new v6") == "b4 AF_INET"

    # the live connections carry on with their old backends, byte-exact
    for host, (s, client, sent) in live.items():
        more = pattern(300000, 7 + len(host))
        s.sendall(more)
        assert recv_exact(s, len(more)) == more
        s.shutdown(socket.SHUT_WR)
        assert wait_closed(s, T(5))[0] == "eof"
        s.close()
        log = proxy.conn_log(client)
        assert log["service"] == "web"
        assert log["backend"] == fmt_addr(*tags["a4" if host == V4 else "a6"])
        tag_len = len("a4 AF_INET\n" if host == V4 else "a6 AF_INET6\n")
        assert log["up"] == sent + len(more)
        assert log["down"] == tag_len + sent + len(more)
        assert log["end"] == "closed"


def test_reload_unchanged_file(proxy_factory, tags):
    port = distinct_dual_ports(1)[0]
    proxy = proxy_factory(ini(web(port, tags["a4"], tags["a6"])), readable=True)
    before = sockets_of(port)
    assert proxy.reload_ok() == (0, 2, 0)
    assert proxy.reload_ok() == (0, 2, 0)
    assert sockets_of(port) == before
    check_web(port, "a")


def test_reload_moves_a_service_to_other_addresses(proxy_factory, tags):
    """Same service, new listen list `[::]:P, [::1]:Q` instead of `P`:
    [::]:P is kept, 0.0.0.0:P goes, [::1]:Q comes."""
    port, other = distinct_dual_ports(2)
    proxy = proxy_factory(ini(web(port, tags["a4"], tags["a6"])), readable=True)
    assert proxy.reload_ok(ini(web("[::]:%d, [::1]:%d" % (port, other),
                                   tags["a4"], tags["a6"]))) == (1, 1, 1)
    assert_refused(V4, port, "(0.0.0.0 removed)")
    assert tagged_echo(V6, port, b"x") == "a6 AF_INET6"
    assert tagged_echo(V6, other, b"y") == "a6 AF_INET6"
    assert_refused(V4, other, "(only [::1] added)")


def test_reload_log_level_and_timeouts(proxy_factory, tags, clients):
    """log_level and idle_timeout of the new file apply to new connections;
    a connection opened before keeps the old idle_timeout."""
    port = distinct_dual_ports(1)[0]
    proxy = proxy_factory(ini("""
        [global]
        log_level = info
        idle_timeout = 15m
    """ + web(port, tags["a4"], tags["a6"])), readable=True)
    with connect(V4, port) as s:
        client = local_addr(s)
        assert recv_line(s) == b"a4 AF_INET\n"
    time.sleep(T(0.3))
    assert not [l for l in proxy.conn_logs() if l["client"] == client], \
        "a connection line at log_level = info"

    old = connect(V6, port)
    clients.append(old)
    assert recv_line(old) == b"a6 AF_INET6\n"

    assert proxy.reload_ok(ini("""
        [global]
        log_level = debug
        idle_timeout = 300ms
    """ + web(port, tags["a4"], tags["a6"]))) == (0, 2, 0)

    s = connect(V4, port)
    clients.append(s)
    client = local_addr(s)
    assert recv_line(s) == b"a4 AF_INET\n"
    kind, elapsed, _ = wait_closed(s, T(5))
    s.close()
    assert elapsed < T(3), "new connection not closed by the new idle_timeout"
    log = proxy.conn_log(client)
    assert log["end"] == "idle-timeout"

    # the old connection (idle_timeout 15m) is still there and works
    time.sleep(T(0.6))
    assert not is_readable(old, 0), "old connection closed by the new idle_timeout"
    old.sendall(b"still here")
    assert recv_exact(old, 10) == b"still here"
    old.close()


# --------------------------------------------------------------------------
# 20 reloads under load: not one refused or broken connection

class Hammer(threading.Thread):
    """Opens connections in a tight loop to `port`, alternating IPv4 and
    IPv6, each a byte-exact echo through a tagged backend."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = {V4: 0, V6: 0}
        self.tags = {V4: set(), V6: set()}
        self.failures = []

    def run(self):
        i = 0
        while not self.stop.is_set():
            host = V4 if i % 2 == 0 else V6
            payload = b"%08d %s\n" % (i, host.encode()) + pattern(i % 300, i)
            try:
                tag = tagged_echo(host, self.port, payload, timeout=T(5))
                with self.lock:
                    self.ok[host] += 1
                    self.tags[host].add(tag)
            except Exception as e:
                with self.lock:
                    self.failures.append("%s #%d: %r" % (host, i, e))
            i += 1

    def counts(self):
        with self.lock:
            return dict(self.ok)

    def wait_progress(self, start, n=2):
        """Wait until both families completed n more connections."""
        deadline = time.monotonic() + T(10)
        while time.monotonic() < deadline:
            c = self.counts()
            if all(c[h] >= start[h] + n for h in (V4, V6)) or self.failures:
                return
            time.sleep(0.005)
        raise AssertionError("client loop made no progress: %r" % self.counts())


def test_20_reloads_under_load(proxy_factory, tags):
    port, side_a, side_b = distinct_dual_ports(3)
    conf_a = ini(web(port, tags["a4"], tags["a6"]) + """
        [side-a]
        listen = 127.0.0.1:%d
        backend4 = %s
    """ % (side_a, fmt_addr(*tags["a4"])))
    conf_b = ini(web(port, tags["b4"], tags["b6"]) + """
        [side-b]
        listen = [::1]:%d
        backend6 = %s
    """ % (side_b, fmt_addr(*tags["b6"])))
    proxy = proxy_factory(conf_a, readable=True)
    before = sockets_of(port)

    hammer = Hammer(port)
    hammer.start()
    try:
        hammer.wait_progress({V4: 0, V6: 0}, 5)
        for i in range(20):
            letter, conf = ("b", conf_b) if i % 2 == 0 else ("a", conf_a)
            start = hammer.counts()
            counts = proxy.reload_ok(conf)
            assert counts == (1, 2, 1), "reload %d: %d added, %d kept, %d removed" % ((i,) + counts)
            # new connections go to the new backends, the side ports follow
            check_web(port, letter)
            if letter == "b":
                assert tagged_echo(V6, side_b, b"side") == "b6 AF_INET6"
                assert_refused(V4, side_a, "(side-a removed)")
            else:
                assert tagged_echo(V4, side_a, b"side") == "a4 AF_INET"
                assert_refused(V6, side_b, "(side-b removed)")
            hammer.wait_progress(start)
            assert not hammer.failures, "failed connections during reload %d:\n%s" % (
                i, "\n".join(hammer.failures[:10]))
    finally:
        hammer.stop.set()
        hammer.join(T(10))
    assert not hammer.failures, "%d failed connections:\n%s" % (
        len(hammer.failures), "\n".join(hammer.failures[:10]))
    ok = hammer.counts()
    assert ok[V4] >= 40 and ok[V6] >= 40, ok
    for host, letter in ((V4, "4"), (V6, "6")):
        fam = "AF_INET" if host == V4 else "AF_INET6"
        assert hammer.tags[host] == {"a%s %s" % (letter, fam), "b%s %s" % (letter, fam)}, \
            hammer.tags[host]
    assert sockets_of(port) == before, "the unchanged listeners were replaced"
    assert len(proxy.grep(r"reload: \d+ added, \d+ kept, \d+ removed")) == 20
    assert not proxy.grep(r"reload failed")


# --------------------------------------------------------------------------
# a bad file on SIGHUP: the old configuration keeps running, untouched

# In each new file the offending line is marked with '!'. Apart from the
# error each file would move [web] to the b backends and add port {NEW}.
BAD = {
    "unknown-key": """
        [web]
        listen = {PORT}
        backend4 = {B4}
        backend6 = {B6}
        !backend = {B4}
        [new]
        listen = {NEW}
        backend4 = {B4}
    """,
    "line-without-equals": """
        [web]
        listen = {PORT}
        !backend4 {B4}
        backend6 = {B6}
        [new]
        listen = {NEW}
        backend4 = {B4}
    """,
    "duplicate-listen": """
        [new]
        listen = {NEW}
        backend4 = {B4}
        [web]
        !listen = {NEW}
        backend4 = {B4}
        backend6 = {B6}
    """,
    "bad-duration": """
        [global]
        !idle_timeout = 5 parsecs
        [web]
        listen = {PORT}
        backend4 = {B4}
        backend6 = {B6}
        [new]
        listen = {NEW}
        backend4 = {B4}
    """,
    "no-backend": """
        [web]
        listen = {PORT}
        backend4 = {B4}
        backend6 = {B6}
        ![new]
        listen = {NEW}
    """,
}


def build_bad(case, **subst):
    lines = []
    expected = None
    for raw in case.strip("\n").splitlines():
        line = raw.strip()
        for k, v in subst.items():
            line = line.replace("{%s}" % k, v)
        if line.startswith("!"):
            line = line[1:]
            expected = len(lines) + 1
        lines.append(line)
    return "\n".join(lines) + "\n", expected


def start_web_a(proxy_factory, tags, port):
    proxy = proxy_factory(ini("""
        [global]
        log_level = debug
    """ + web(port, tags["a4"], tags["a6"])), readable=True)
    check_web(port, "a")
    return proxy


def check_untouched(proxy, port, before, new_ports):
    assert proxy.running(), "dualproxy exited after a failed reload"
    assert sockets_of(port) == before, "listeners replaced by a failed reload"
    check_web(port, "a")
    for p in new_ports:
        for host in (V4, V6):
            assert_refused(host, p, "(bound by a failed reload)")


@pytest.mark.parametrize("name", list(BAD))
def test_bad_file_keeps_running_config(proxy_factory, tags, clients, name):
    port, new = distinct_dual_ports(2)
    proxy = start_web_a(proxy_factory, tags, port)
    before = sockets_of(port)
    live = connect(V4, port)
    clients.append(live)
    assert recv_line(live) == b"a4 AF_INET\n"

    text, line = build_bad(BAD[name], PORT=str(port), NEW=str(new),
                           B4=fmt_addr(*tags["b4"]), B6=fmt_addr(*tags["b6"]))
    ok, lines = proxy.reload(text)
    assert not ok, "a bad file was accepted:\n%s" % text
    # the same message as `dualproxy -t` on that file, with FILE:LINE
    r = run_dualproxy("-t", "-c", proxy.config_path)
    assert r.returncode == 78, (r.returncode, r.stderr)
    want = [l for l in r.stderr.splitlines()
            if l.startswith("%s:%d: " % (proxy.config_path, line))]
    assert want, "-t does not report line %d:\n%s" % (line, r.stderr)
    logged = "\n".join(lines)
    assert want[0] in logged, "reload did not log %r:\n%s" % (want[0], logged)
    assert RELOAD_FAILED in logged
    assert not re.search(r"reload: \d+ added", logged)

    check_untouched(proxy, port, before, [new])
    live.sendall(b"live after the failed reload")
    assert recv_exact(live, 28) == b"live after the failed reload"
    live.close()

    # and a good file afterwards is applied as usual
    assert proxy.reload_ok(ini(web(port, tags["b4"], tags["b6"]))) == (0, 2, 0)
    check_web(port, "b")
    assert sockets_of(port) == before


def test_bind_error_keeps_running_config(proxy_factory, tags):
    """The new file adds two ports; one is taken by someone else: nothing
    of the file is applied, the other new port is not left open either."""
    port, new = distinct_dual_ports(2)
    proxy = start_web_a(proxy_factory, tags, port)
    before = sockets_of(port)
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        busy.bind((V4, 0))
        busy.listen(1)
        busy_port = busy.getsockname()[1]
        ok, lines = proxy.reload(ini(web(port, tags["b4"], tags["b6"]) + """
            [new]
            listen = %d
            backend4 = %s
            [busy]
            listen = 127.0.0.1:%d
            backend4 = %s
        """ % (new, fmt_addr(*tags["b4"]), busy_port, fmt_addr(*tags["b4"]))))
        logged = "\n".join(lines)
        assert not ok, logged
        assert "cannot listen on %s" % fmt_addr(V4, busy_port) in logged, logged
        assert RELOAD_FAILED in logged
        check_untouched(proxy, port, before, [new])
    finally:
        busy.close()


def test_missing_file_keeps_running_config(proxy_factory, tags):
    port = distinct_dual_ports(1)[0]
    proxy = start_web_a(proxy_factory, tags, port)
    before = sockets_of(port)
    os.unlink(proxy.config_path)
    ok, lines = proxy.reload()
    logged = "\n".join(lines)
    assert not ok, logged
    assert proxy.config_path in logged, logged
    assert RELOAD_FAILED in logged
    check_untouched(proxy, port, before, [])
    assert proxy.reload_ok(ini(web(port, tags["b4"], tags["b6"]))) == (0, 2, 0)
    check_web(port, "b")


# --------------------------------------------------------------------------
# privileged ports and privilege settings on reload (root)

@needs_root
def test_low_port_added_by_reload(proxy_factory, tags):
    """Running as nobody with keep_net_bind = yes, a reload binds a port
    below 1024 on both families."""
    port = distinct_dual_ports(1)[0]
    glob = """
        [global]
        user = nobody
        keep_net_bind = yes
    """
    proxy = proxy_factory(ini(glob + web(port, tags["a4"], tags["a6"])), readable=True)
    proxy.wait_for(r"running as user nobody \(uid \d+, gid \d+\), keeping cap_net_bind_service")
    assert status_ids(proxy.status(), "Uid")[1] == pwd.getpwnam("nobody").pw_uid
    low = low_dual_port()
    counts = proxy.reload_ok(ini(glob + web(port, tags["a4"], tags["a6"])
                                 + web(low, tags["b4"], tags["b6"], name="low")))
    assert counts == (2, 2, 0), counts
    check_web(low, "b")
    check_web(port, "a")
    # and it still holds nothing but CAP_NET_BIND_SERVICE
    caps = status_caps(proxy.status())
    assert caps["CapEff"] & ~CAP_NET_BIND_SERVICE == 0, "CapEff %#x" % caps["CapEff"]


@needs_root
def test_low_port_reload_fails_without_keep_net_bind(proxy_factory, tags):
    port = distinct_dual_ports(1)[0]
    glob = """
        [global]
        user = nobody
        keep_net_bind = no
    """
    proxy = proxy_factory(ini(glob + web(port, tags["a4"], tags["a6"])), readable=True)
    proxy.wait_for(r"running as user nobody \(uid \d+, gid \d+\)$")
    before = sockets_of(port)
    low = low_dual_port()
    ok, lines = proxy.reload(ini(glob + web(port, tags["b4"], tags["b6"])
                                 + web(low, tags["b4"], tags["b6"], name="low")))
    logged = "\n".join(lines)
    assert not ok, "bound port %d without CAP_NET_BIND_SERVICE:\n%s" % (low, logged)
    assert re.search(r"cannot listen on (0\.0\.0\.0|\[::\]):%d\b" % low, logged), logged
    assert RELOAD_FAILED in logged
    check_untouched(proxy, port, before, [low])


@needs_root
@pytest.mark.parametrize("change,key", [
    ("user = root\n        keep_net_bind = no", "user"),
    ("user = doesnotexist\n        keep_net_bind = no", "user"),
    ("user = nobody\n        keep_net_bind = yes", "keep_net_bind"),
], ids=["user-root", "user-unknown", "keep_net_bind"])
def test_user_change_needs_restart(proxy_factory, tags, change, key):
    """A running dualproxy cannot change its user or keep_net_bind (and
    never asks the name service on reload): a file that changes them is
    refused with FILE:LINE and the key, nothing of it is applied, and the
    process keeps its user and gains no capability."""
    port = distinct_dual_ports(1)[0]
    proxy = proxy_factory(ini("""
        [global]
        user = nobody
        keep_net_bind = no
    """ + web(port, tags["a4"], tags["a6"])), readable=True)
    proxy.wait_for(r"running as user nobody ")
    text = ini("""
        [global]
        %s
    """ % change + web(port, tags["b4"], tags["b6"]))
    ok, lines = proxy.reload(text)
    logged = "\n".join(lines)
    assert not ok, logged
    line = 2 if key == "user" else 3
    assert re.search(r"%s:%d: %s: .*restart" % (re.escape(proxy.config_path), line, key),
                     logged), "the %s change is not refused with its line:\n%s" % (key, logged)
    assert RELOAD_FAILED in logged
    check_web(port, "a")
    st = proxy.status()
    nobody = pwd.getpwnam("nobody")
    assert status_ids(st, "Uid") == [nobody.pw_uid] * 4, st["Uid"]
    caps = status_caps(st)
    assert caps["CapEff"] == 0 and caps["CapPrm"] == 0, caps
    assert not proxy.grep(r"running as root")


# --------------------------------------------------------------------------
# an unchanged file is no reload

def test_reload_unchanged_file_is_a_no_op(proxy_factory, tags):
    """The same bytes again (touched, or rewritten with the same text) are
    not parsed or applied again: logged as such, counted as a success."""
    port = distinct_dual_ports(1)[0]
    text = ini(web(port, tags["a4"], tags["a6"]))
    proxy = proxy_factory(text, readable=True)
    for change in ("nothing", "touch", "rewrite"):
        if change == "touch":
            os.utime(proxy.config_path)
        elif change == "rewrite":
            proxy.rewrite(text)
        ok, lines = proxy.reload()
        logged = "\n".join(lines)
        assert ok, logged
        assert "the file is unchanged since the last reload: nothing to apply" in logged, logged
        assert "reload: 0 added, 2 kept, 0 removed" in logged, logged
        assert not re.search(r"listening on|closed ", logged), logged
    # one byte more is a reload
    ok, lines = proxy.reload(text + "; changed\n")
    logged = "\n".join(lines)
    assert ok and "unchanged" not in logged, logged
    # a failed reload does not count as the last applied text
    proxy.reload(text + "bogus = 1\n")
    ok, lines = proxy.reload(text + "; changed\n")
    assert ok and "unchanged" in "\n".join(lines), lines
    check_web(port, "a")


# --------------------------------------------------------------------------
# addresses that overlap one being removed: bound right after it closes

def test_reload_narrows_a_bare_port(proxy_factory, tags):
    """`P` (0.0.0.0:P and [::]:P) becomes `127.0.0.1:P, [::1]:P`: the new
    sockets can only be bound once the old ones are closed."""
    port = distinct_dual_ports(1)[0]
    proxy = proxy_factory(ini(web(port, tags["a4"], tags["a6"])), readable=True)
    since = proxy.mark()
    counts = proxy.reload_ok(ini(web("127.0.0.1:%d, [::1]:%d" % (port, port),
                                     tags["b4"], tags["b6"])))
    assert counts == (2, 0, 2), counts
    for a in (fmt_addr(V4, port), fmt_addr(V6, port)):
        assert proxy.grep(r"listening on %s after closing an overlapping address"
                          % re.escape(a), since=since), proxy.stderr_text()
    assert {a for a, _ in sockets_of(port)} == {fmt_addr(V4, port), fmt_addr(V6, port)}
    check_web(port, "b")


def test_reload_widens_to_a_bare_port(proxy_factory, tags):
    port = distinct_dual_ports(1)[0]
    proxy = proxy_factory(ini(web("127.0.0.1:%d, [::1]:%d" % (port, port),
                                  tags["a4"], tags["a6"])), readable=True)
    since = proxy.mark()
    counts = proxy.reload_ok(ini(web(port, tags["b4"], tags["b6"])))
    assert counts == (2, 0, 2), counts
    for a in ("0.0.0.0:%d" % port, "[::]:%d" % port):
        assert proxy.grep(r"listening on %s after closing an overlapping address"
                          % re.escape(a), since=since), proxy.stderr_text()
    assert {a for a, _ in sockets_of(port)} == {"0.0.0.0:%d" % port, "[::]:%d" % port}
    check_web(port, "b")


# --------------------------------------------------------------------------
# metrics_listen moves with the listeners

def with_metrics(mlisten, body):
    return ini("""
        [global]
        metrics_listen = %s
    """ % mlisten) + ini(body)


def side(port, b):
    return """
        [side]
        listen = 127.0.0.1:%d
        backend4 = %s
    """ % (port, fmt_addr(*b))


def window_ms(proxy, since, addr):
    m = proxy.wait_for(r"metrics_listen %s: open after what it overlaps closed: refused "
                       r"connections for up to ([\d.]+) ms" % re.escape(addr), since=since)
    return float(m.group(1))


def test_metrics_moves_onto_a_port_a_service_gives_up(proxy_factory, tags):
    """[side] gives up 127.0.0.1:S and metrics_listen takes it in the same
    reload (bound right after the listener closed), and back again (the
    metrics endpoint closes first, then the listener binds)."""
    port, s, m = distinct_dual_ports(3)
    conf_a = with_metrics("127.0.0.1:%d" % m, web(port, tags["a4"], tags["a6"])
                          + side(s, tags["b4"]))
    conf_b = with_metrics("127.0.0.1:%d" % s, web(port, tags["a4"], tags["a6"]))
    proxy = proxy_factory(conf_a, readable=True)
    assert tagged_echo(V4, s, b"x") == "b4 AF_INET"

    since = proxy.mark()
    assert proxy.reload_ok(conf_b) == (0, 2, 1)
    assert window_ms(proxy, since, fmt_addr(V4, s)) < T(50)
    assert scrape(V4, s).value("dualproxy_reloads_total", result="success") == 1
    assert_refused(V4, m, "(metrics moved away)")
    check_web(port, "a")

    since = proxy.mark()
    assert proxy.reload_ok(conf_a) == (1, 2, 0)
    assert proxy.grep(r"closing metrics on %s first" % re.escape(fmt_addr(V4, s)), since=since)
    assert window_ms(proxy, since, fmt_addr(V4, m)) < T(50)
    assert tagged_echo(V4, s, b"x") == "b4 AF_INET"
    assert scrape(V4, m).value("dualproxy_reloads_total", result="success") == 2


def test_metrics_and_a_service_swap_ports(proxy_factory, tags):
    port, s, m = distinct_dual_ports(3)
    conf_a = with_metrics("127.0.0.1:%d" % m, web(port, tags["a4"], tags["a6"])
                          + side(s, tags["b4"]))
    conf_b = with_metrics("127.0.0.1:%d" % s, web(port, tags["a4"], tags["a6"])
                          + side(m, tags["b4"]))
    proxy = proxy_factory(conf_a, readable=True)
    for conf, mport, sport in ((conf_b, s, m), (conf_a, m, s)):
        assert proxy.reload_ok(conf) == (1, 2, 1)
        assert tagged_echo(V4, sport, b"x") == "b4 AF_INET"
        scrape(V4, mport)
        check_web(port, "a")


def test_metrics_narrowed_from_a_bare_port(proxy_factory, tags):
    """metrics_listen = M (both wildcards) becomes 127.0.0.1:M: the old
    sockets close first."""
    port, m = distinct_dual_ports(2)
    body = web(port, tags["a4"], tags["a6"])
    proxy = proxy_factory(with_metrics(str(m), body), readable=True)
    scrape(V6, m)
    since = proxy.mark()
    assert proxy.reload_ok(with_metrics("127.0.0.1:%d" % m, body)) == (0, 2, 0)
    assert window_ms(proxy, since, fmt_addr(V4, m)) < T(50)
    scrape(V4, m)
    assert_refused(V6, m, "(metrics on 127.0.0.1 only)")
    assert proxy.reload_ok(with_metrics(str(m), body)) == (0, 2, 0)
    scrape(V6, m)


def test_metrics_move_rolled_back_when_a_listener_fails(proxy_factory, tags):
    """The metrics endpoint closed first for a service that takes its port,
    and then another new port cannot be bound: the endpoint is open again
    where it was, nothing of the file is applied."""
    port, m, m2 = distinct_dual_ports(3)
    body = web(port, tags["a4"], tags["a6"])
    proxy = proxy_factory(with_metrics("127.0.0.1:%d" % m, body), readable=True)
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        busy.bind((V4, 0))
        busy.listen(1)
        ok, lines = proxy.reload(with_metrics("127.0.0.1:%d" % m2, body + side(m, tags["b4"])
                                              + """
            [busy]
            listen = 127.0.0.1:%d
            backend4 = %s
        """ % (busy.getsockname()[1], fmt_addr(*tags["b4"]))))
    finally:
        busy.close()
    logged = "\n".join(lines)
    assert not ok, logged
    assert RELOAD_FAILED in logged
    assert scrape(V4, m).value("dualproxy_reloads_total", result="failure") == 1
    assert_refused(V4, m2, "(the failed reload's metrics_listen)")
    check_web(port, "a")


def test_metrics_move_rolled_back_when_it_cannot_bind(proxy_factory, tags):
    """metrics_listen takes [side]'s 127.0.0.1:S as a bare port S, whose
    [::]:S someone else blocks: the listeners are put back as they were."""
    port, s, m = distinct_dual_ports(3)
    body = web(port, tags["a4"], tags["a6"])
    proxy = proxy_factory(with_metrics("127.0.0.1:%d" % m, body + side(s, tags["b4"])),
                          readable=True)
    blocker = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        blocker.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        blocker.bind((V6, s))
        blocker.listen(1)
        ok, lines = proxy.reload(with_metrics(str(s), body))
    finally:
        blocker.close()
    logged = "\n".join(lines)
    assert not ok, logged
    assert "cannot listen on [::]:%d" % s in logged, logged
    assert tagged_echo(V4, s, b"x") == "b4 AF_INET"
    assert scrape(V4, m).value("dualproxy_reloads_total", result="failure") == 1
    check_web(port, "a")


def test_metrics_removed_for_a_service_on_its_port(proxy_factory, tags):
    """metrics_listen goes away and a service takes its port in the same
    reload: the endpoint closes first, then the listener binds."""
    port, m = distinct_dual_ports(2)
    body = web(port, tags["a4"], tags["a6"])
    proxy = proxy_factory(with_metrics("127.0.0.1:%d" % m, body), readable=True)
    since = proxy.mark()
    assert proxy.reload_ok(ini(body + side(m, tags["b4"]))) == (1, 2, 0)
    assert proxy.grep(r"closing metrics on %s first" % re.escape(fmt_addr(V4, m)), since=since)
    assert tagged_echo(V4, m, b"x") == "b4 AF_INET"
    check_web(port, "a")
