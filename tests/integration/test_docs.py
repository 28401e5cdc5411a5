"""Documentation against the code: every key in the parser's tables in
src/config.c (global_keys[], service_keys[], entries `{ "name", ..., fn }`)
is documented in
doc/dualproxy.ini.5, in the section for its table, and every key documented
there is accepted by the parser; every option letter of main.c's getopt string
is documented in doc/dualproxy.8 and every documented option exists; and
`man --warnings -l` prints no warning for either page.

The pages document a key as a tagged paragraph (.TP) whose tag starts with the
key and " = ", e.g. `.BI "idle_timeout = " duration`, in the section whose
title contains GLOBAL (the [global] keys) or SERVICE (the service keys).

The source tree is $DUALPROXY_SRCDIR, or two levels above this file."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SRCDIR = Path(os.environ.get("DUALPROXY_SRCDIR")
              or Path(__file__).resolve().parents[2])
CONFIG_C = SRCDIR / "src" / "config.c"
MAIN_C = SRCDIR / "src" / "main.c"
MAN8 = SRCDIR / "doc" / "dualproxy.8"
MAN5 = SRCDIR / "doc" / "dualproxy.ini.5"

TABLES = {"global_keys": "GLOBAL", "service_keys": "SERVICE"}


def read(path):
    assert path.is_file(), "missing %s" % path
    return path.read_text(encoding="utf-8")


def strip_c_comments(text):
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)


def parser_keys():
    """{table name: [key, ...]} from the `{ "name", ..., fn }` entries of the
    struct key tables in config.c: the key is each entry's leading string."""
    text = strip_c_comments(read(CONFIG_C))
    tables = {}
    for m in re.finditer(r"\bstruct\s+key\s+(\w+)\s*\[\s*\]\s*=\s*\{(.*?)\}\s*;",
                         text, flags=re.S):
        tables[m.group(1)] = re.findall(r'\{\s*"([^"]+)"\s*,[^{}]*\}', m.group(2))
    for name in TABLES:
        assert tables.get(name), "no %s[] table found in %s" % (name, CONFIG_C)
    return tables


def unescape(line):
    """A roff line with font changes and the no-op escapes removed."""
    line = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", line)
    return line.replace("\\%", "").replace("\\&", "").replace("\\-", "-")


def man_lines(path):
    """(section title, line) for every non-comment line of a man page."""
    section = ""
    for line in read(path).splitlines():
        if line.startswith(('.\\"', "'\\\"")):
            continue
        m = re.match(r'\.SH\s+"?([^"]*)"?\s*$', line)
        if m:
            section = m.group(1).strip()
        yield section, line


def tp_tags(path):
    """(section title, tag) for every .TP paragraph of a man page, the tag
    with its macro name and font escapes removed."""
    lines = list(man_lines(path))
    tags = []
    for i, (section, line) in enumerate(lines):
        if not re.match(r"\.TP\b", line) or i + 1 >= len(lines):
            continue
        tag = unescape(lines[i + 1][1])
        tag = re.sub(r"^\.(?:B|I|BI|IB|BR|RB|IR|RI)\s+", "", tag)
        tags.append((section, tag.replace('"', "").strip()))
    return tags


def documented_keys():
    """{section title: {key, ...}} for the keys documented in dualproxy.ini.5."""
    keys = {}
    for section, tag in tp_tags(MAN5):
        m = re.match(r"([A-Za-z0-9_]+)\s*=", tag)
        if m:
            keys.setdefault(section, set()).add(m.group(1))
    return keys


def section_for(table):
    word = TABLES[table]
    titles = [s for s in documented_keys() if word in s.upper()]
    assert len(titles) == 1, (
        "expected one section with %s in its title documenting keys in %s, "
        "found %r" % (word, MAN5, titles))
    return titles[0]


@pytest.mark.parametrize("table", sorted(TABLES))
def test_parser_keys_are_documented(table):
    keys = parser_keys()[table]
    section = section_for(table)
    documented = documented_keys()[section]
    missing = [k for k in keys if k not in documented]
    assert not missing, (
        "keys accepted by %s[] in src/config.c but not documented in section "
        "%r of doc/dualproxy.ini.5: %s" % (table, section, ", ".join(missing)))


@pytest.mark.parametrize("table", sorted(TABLES))
def test_documented_keys_are_accepted(table):
    keys = set(parser_keys()[table])
    section = section_for(table)
    stale = sorted(documented_keys()[section] - keys)
    assert not stale, (
        "keys documented in section %r of doc/dualproxy.ini.5 but not accepted "
        "by %s[] in src/config.c: %s" % (section, table, ", ".join(stale)))


def test_no_keys_documented_elsewhere():
    key_sections = {section_for(t) for t in TABLES}
    elsewhere = {s: sorted(k) for s, k in documented_keys().items()
                 if s not in key_sections}
    assert not elsewhere, (
        "key entries outside the GLOBAL and SERVICE sections of "
        "doc/dualproxy.ini.5: %r" % elsewhere)


def getopt_letters():
    m = re.search(r'\bgetopt\s*\(\s*argc\s*,\s*argv\s*,\s*"([^"]*)"',
                  read(MAIN_C))
    assert m, "no getopt(argc, argv, \"...\") call in %s" % MAIN_C
    letters = [c for c in m.group(1) if c.isalnum()]
    assert letters, "empty getopt string in %s" % MAIN_C
    return letters


def documented_options():
    """Option letters of the .TP tags in the OPTIONS section of dualproxy.8."""
    return {m.group(1)
            for section, tag in tp_tags(MAN8) if section.upper() == "OPTIONS"
            for m in [re.match(r"-([A-Za-z0-9])\b", tag)] if m}


def test_options_are_documented():
    documented = documented_options()
    missing = [c for c in getopt_letters() if c not in documented]
    assert not missing, (
        "options in main.c's getopt string without a .TP entry in the OPTIONS "
        "section of doc/dualproxy.8: %s" % ", ".join("-" + c for c in missing))
    synopsis = " ".join(unescape(line) for section, line in man_lines(MAN8)
                        if section.upper() == "SYNOPSIS")
    missing = [c for c in getopt_letters()
               if not re.search(r"-%s\b" % re.escape(c), synopsis)]
    assert not missing, (
        "options missing from the SYNOPSIS of doc/dualproxy.8: %s"
        % ", ".join("-" + c for c in missing))


def test_documented_options_exist():
    stale = sorted(documented_options() - set(getopt_letters()))
    assert not stale, (
        "options documented in doc/dualproxy.8 but not in main.c's getopt "
        "string: %s" % ", ".join("-" + c for c in stale))


@pytest.mark.parametrize("page", [MAN8, MAN5], ids=lambda p: p.name)
def test_man_page_has_no_warnings(page):
    man = shutil.which("man")
    if man is None:
        pytest.skip("man (man-db) is not installed")
    env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80", MANPAGER="cat",
               PAGER="cat")
    r = subprocess.run([man, "--warnings", "-l", str(page)], env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stderr.strip() == "", (
        "man --warnings -l %s:\n%s" % (page, r.stderr))
    assert "SEE ALSO" in r.stdout, "page did not render:\n%s" % r.stdout[:2000]
