"""Configuration errors: every kind of bad config makes dualproxy exit 78
(EX_CONFIG) and print `FILE:LINE: message` on stderr with the right line,
both with -t (check only) and without it (start-up).

In the cases below the offending line is marked with a leading '!' (the
marker is removed before the file is written)."""

import re

import pytest

from conftest import EX_CONFIG, run_dualproxy

CASES = {
    # unknown keys
    "unknown-key-service": """
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
        !backend = 127.0.0.1:80
    """,
    "unknown-key-global": """
        [global]
        log_level = info
        !max_conns = 10
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
    """,
    "key-before-section": """
        ; comment first
        !listen = 80
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
    """,
    # bad addresses
    "bad-backend4-address": """
        [web]
        listen = 127.0.0.1:18081
        !backend4 = 10.0.0.300:80
    """,
    "bad-backend6-address": """
        [web]
        listen = 127.0.0.1:18081
        !backend6 = [fd45::zz]:80
    """,
    "backend6-without-brackets": """
        [web]
        listen = 127.0.0.1:18081
        !backend6 = fd45::1:80
    """,
    "backend-without-port": """
        [web]
        listen = 127.0.0.1:18081
        !backend4 = 10.0.0.1
    """,
    "bad-listen-address": """
        [web]
        !listen = 127.0.0:18081
        backend4 = 127.0.0.1:80
    """,
    "bad-listen-in-list": """
        [web]
        !listen = 127.0.0.1:18081, bogus
        backend4 = 127.0.0.1:80
    """,
    "backend4-is-ipv6": """
        [web]
        listen = 127.0.0.1:18081
        !backend4 = [::1]:80
    """,
    "backend6-is-ipv4": """
        [web]
        listen = 127.0.0.1:18081
        !backend6 = 127.0.0.1:80
    """,
    # ports out of range
    "listen-port-0": """
        [web]
        !listen = 0
        backend4 = 127.0.0.1:80
    """,
    "listen-port-65536": """
        [web]
        !listen = 65536
        backend4 = 127.0.0.1:80
    """,
    "listen-explicit-port-0": """
        [web]
        !listen = 127.0.0.1:0
        backend4 = 127.0.0.1:80
    """,
    "backend-port-0": """
        [web]
        listen = 127.0.0.1:18081
        !backend4 = 127.0.0.1:0
    """,
    "backend-port-70000": """
        [web]
        listen = 127.0.0.1:18081
        !backend6 = [::1]:70000
    """,
    "listen-port-not-a-number": """
        [web]
        !listen = http
        backend4 = 127.0.0.1:80
    """,
    # durations
    "bad-duration-unit": """
        [global]
        !connect_timeout = 5x
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
    """,
    "bad-duration-text": """
        [global]
        connect_timeout = 5s
        !idle_timeout = forever
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
    """,
    "bad-duration-unit-only": """
        [global]
        !idle_timeout = ms
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
    """,
    "bad-duration-service": """
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
        !idle_timeout = 1d
    """,
    "bad-duration-negative": """
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
        !connect_timeout = -1s
    """,
    # duplicate listen addresses
    "duplicate-listen-within-service": """
        [web]
        !listen = 127.0.0.1:18081, 127.0.0.1:18081
        backend4 = 127.0.0.1:80
    """,
    "duplicate-listen-across-services": """
        [a]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
        [b]
        backend4 = 127.0.0.1:81
        !listen = 127.0.0.1:18081
    """,
    "duplicate-bare-port-across-services": """
        [a]
        listen = 18081
        backend4 = 127.0.0.1:80
        [b]
        !listen = 18081
        backend4 = 127.0.0.1:81
    """,
    "duplicate-v6-listen-across-services": """
        [a]
        listen = [::1]:18081
        backend6 = [::1]:80
        [b]
        !listen = [::1]:18081
        backend6 = [::1]:81
    """,
    # a service without backend: the line of its section header
    "no-backend": """
        [global]
        log_level = info

        [ok]
        listen = 127.0.0.1:18080
        backend4 = 127.0.0.1:19000

        ![web]
        listen = 127.0.0.1:18081
        connect_timeout = 1s
    """,
    "no-backend-last-section-first": """
        ![web]
        listen = 127.0.0.1:18081
        [ok]
        listen = 127.0.0.1:18080
        backend6 = [::1]:19000
    """,
    # duplicates
    "duplicate-section": """
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
        ![web]
        listen = 127.0.0.1:18082
        backend4 = 127.0.0.1:80
    """,
    "duplicate-global-section": """
        [global]
        log_level = info
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
        ![global]
        idle_timeout = 1m
    """,
    "duplicate-key": """
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
        !backend4 = 127.0.0.1:81
    """,
    "duplicate-key-global": """
        [global]
        idle_timeout = 1m
        !idle_timeout = 2m
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
    """,
    # values in [global]
    "bad-log-level": """
        [global]
        !log_level = verbose
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
    """,
    "max-connections-zero": """
        [global]
        !max_connections = 0
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
    """,
    "max-connections-text": """
        [global]
        !max_connections = many
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
    """,
    "max-connections-trailing-garbage": """
        [global]
        !max_connections = 10x
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
    """,
    "max-connections-negative": """
        [global]
        !max_connections = -5
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
    """,
    # syntax
    "line-without-equals": """
        [web]
        listen = 127.0.0.1:18081
        !backend4 127.0.0.1:80
        backend4 = 127.0.0.1:80
    """,
    "empty-listen": """
        [web]
        !listen =
        backend4 = 127.0.0.1:80
    """,
    # values that parse but could never work: every connection would fail
    "connect-timeout-under-a-millisecond": """
        [global]
        !connect_timeout = 0.0000001ms
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
    """,
    "idle-timeout-under-a-millisecond": """
        [web]
        listen = 127.0.0.1:18081
        backend4 = 127.0.0.1:80
        !idle_timeout = 0.5ms
    """,
    "backend-link-local-without-interface": """
        [web]
        listen = 127.0.0.1:18081
        !backend6 = [fe80::1]:80
    """,
    "backend6-ipv4-mapped": """
        [web]
        listen = 127.0.0.1:18081
        !backend6 = [::ffff:10.43.0.1]:80
    """,
    "backend-unspecified-v4": """
        [web]
        listen = 127.0.0.1:18081
        !backend4 = 0.0.0.0:80
    """,
    "backend-unspecified-v6": """
        [web]
        listen = 127.0.0.1:18081
        !backend6 = [::]:80
    """,
    "backend-broadcast": """
        [web]
        listen = 127.0.0.1:18081
        !backend4 = 255.255.255.255:80
    """,
    "backend-multicast-v4": """
        [web]
        listen = 127.0.0.1:18081
        !backend4 = 224.0.0.1:80
    """,
    "backend-multicast-v6": """
        [web]
        listen = 127.0.0.1:18081
        !backend6 = [ff02::1]:80
    """,
    "listen-link-local-without-interface": """
        [web]
        !listen = [fe80::1]:18081
        backend4 = 127.0.0.1:80
    """,
    # a backend that is dualproxy's own listener: a loop
    "backend-is-own-bare-port": """
        [loop]
        listen = 18010
        !backend4 = 127.0.0.1:18010
    """,
    "backend-is-own-address": """
        [loop]
        listen = [::1]:18010
        !backend6 = [::1]:18010
    """,
    "backend-is-other-services-listener": """
        [a]
        listen = 18010
        backend4 = 10.43.0.1:80
        [b]
        listen = 18011
        !backend4 = 127.0.0.1:18010
    """,
    "backend-is-later-services-listener": """
        [a]
        listen = 18011
        !backend6 = [::1]:18012
        [b]
        listen = [::1]:18012
        backend4 = 10.43.0.1:80
    """,
}


def build(case):
    """Return (text, expected_line): the '!'-marked line's number."""
    lines = []
    expected = None
    for raw in case.strip("\n").splitlines():
        line = raw.strip()
        if line.startswith("!"):
            assert expected is None, "two marked lines"
            line = line[1:]
            expected = len(lines) + 1
        lines.append(line)
    assert expected is not None, "no marked line"
    return "\n".join(lines) + "\n", expected


@pytest.mark.parametrize("check", [True, False], ids=["with-t", "without-t"])
@pytest.mark.parametrize("name", list(CASES))
def test_bad_config(name, check, write_config):
    text, line = build(CASES[name])
    path = write_config(text, "bad-%s.ini" % name)
    args = ["-t", "-c", path] if check else ["-c", path]
    r = run_dualproxy(*args)
    assert r.returncode == EX_CONFIG, (
        "expected exit %d, got %d\nconfig:\n%s\nstderr:\n%s"
        % (EX_CONFIG, r.returncode, text, r.stderr))
    want = "%s:%d:" % (path, line)
    assert want in r.stderr, (
        "expected %r on stderr\nconfig:\n%s\nstderr:\n%s" % (want, text, r.stderr))
    # the message must say something after the location
    m = re.search(re.escape(want) + r"(.*)", r.stderr)
    assert m.group(1).strip(), "empty error message: %r" % r.stderr
    assert "configuration ok" not in r.stderr
