"""Command line: -V (version), -h (usage), an unknown option (exit 64), -t on
the shipped example etc/dualproxy.ini and on valid configs of every accepted
form (exit 0, "FILE: configuration ok"), and a missing config file (exit 78,
message names the file, no line number)."""

import re

import pytest

from conftest import EX_CONFIG, EX_USAGE, REPO, ini, run_dualproxy


def configure_ac_version():
    text = (REPO / "configure.ac").read_text()
    m = re.search(r"AC_INIT\(\s*\[?[^,\]]+\]?\s*,\s*\[?([^\],)]+)\]?", text)
    assert m, "cannot find AC_INIT version in configure.ac"
    return m.group(1).strip()


def test_version():
    r = run_dualproxy("-V")
    assert r.returncode == 0, r.stderr
    assert configure_ac_version() in r.stdout, (
        "version %r not in -V output %r" % (configure_ac_version(), r.stdout))


def test_help():
    r = run_dualproxy("-h")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r"usage", out, re.I), out
    for opt in ("-c", "-t", "-V", "-h"):
        assert opt in out, "%s not documented in -h output:\n%s" % (opt, out)


@pytest.mark.parametrize("args", [["-Z"], ["--no-such-option"], ["-t", "-q"]])
def test_unknown_option(args):
    r = run_dualproxy(*args)
    assert r.returncode == EX_USAGE, (r.returncode, r.stderr)
    assert r.stderr.strip(), "no message for a bad option"


def test_example_config_is_valid():
    path = REPO / "etc" / "dualproxy.ini"
    assert path.is_file(), "%s is missing" % path
    r = run_dualproxy("-t", "-c", str(path))
    assert r.returncode == 0, r.stderr
    assert "%s: configuration ok" % path in r.stderr, r.stderr


VALID_CONFIGS = {
    "full": """
        ; a comment
        # another comment
        [global]
        max_connections = 20000
        connect_timeout = 5s
        idle_timeout = 15m
        log_level = info

        [web]
        listen = 80
        backend4 = 10.43.206.211:80
        backend6 = [fd45:a71:55a6:1:2:1:0:db1]:80

        [websecure]
        listen = 443
        backend4 = 10.43.206.211:443
        backend6 = [fd45:a71:55a6:1:2:1:0:db1]:443
        connect_timeout = 2s
        idle_timeout = 1m
    """,
    "explicit-listen": """
        [svc]
        listen = 127.0.0.1:8080, [::1]:8080
        backend4 = 127.0.0.1:9000
    """,
    "only-backend6": """
        [svc]
        listen = 65535
        backend6 = [::1]:1
    """,
    "durations": """
        [global]
        connect_timeout = 250ms
        idle_timeout = 3
        log_level = debug
        max_connections = 1
        [a]
        listen = 8081
        backend4 = 127.0.0.1:1
        connect_timeout = 1h
        idle_timeout = 2m
        [b]
        listen = 127.0.0.1:8082
        backend4 = 127.0.0.1:2
        idle_timeout = 10
    """,
    "log-levels": """
        [global]
        log_level = warning
        [a]
        listen = 1
        backend4 = 192.0.2.1:65535
    """,
    "no-global": """
        [a]
        listen = [::1]:8083
        backend4 = 192.0.2.1:80
        backend6 = [2001:db8::1]:80
    """,
}


@pytest.mark.parametrize("name", sorted(VALID_CONFIGS))
def test_valid_config(name, write_config):
    path = write_config(ini(VALID_CONFIGS[name]), name + ".ini")
    r = run_dualproxy("-t", "-c", path)
    assert r.returncode == 0, r.stderr
    assert "%s: configuration ok" % path in r.stderr, r.stderr


@pytest.mark.parametrize("level", ["error", "warning", "info", "debug"])
def test_valid_log_levels(level, write_config):
    path = write_config(ini("""
        [global]
        log_level = %s
        [a]
        listen = 8080
        backend4 = 127.0.0.1:80
    """ % level))
    r = run_dualproxy("-t", "-c", path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("check", [True, False], ids=["with-t", "without-t"])
def test_missing_config_file(check, tmp_path):
    path = str(tmp_path / "does-not-exist.ini")
    args = ["-t", "-c", path] if check else ["-c", path]
    r = run_dualproxy(*args)
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    assert path in r.stderr, r.stderr
    assert not re.search(re.escape(path) + r":\d+:", r.stderr), (
        "a missing file must not report a line number: %r" % r.stderr)
