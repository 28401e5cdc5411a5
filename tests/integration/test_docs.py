"""Documentation against the code: every key in the parser's tables in
src/config.c (global_keys[], service_keys[], entries `{ "name", ..., fn }`)
is documented in
doc/dualproxy.ini.5, in the section for its table, and every key documented
there is accepted by the parser; every option letter of main.c's getopt string
is documented in doc/dualproxy.8 and every documented option exists; and
`man --warnings -l` prints no warning for either page.

README.md, likewise: its configuration tables list exactly the parser's keys,
with the DEFAULT_* values of src/config.h (and metrics_allow's default); its
INI examples use only real keys; its metrics table lists exactly the metrics
src/stats.c renders, with their labels; the sizes it gives for the objects
kept per connection ("`struct relay`, N bytes on x86-64") are the compiler's,
read from the debug information of the binary under test with readelf; and
its "How it works" names every source file and no function that is not
defined.

The pages document a key as a tagged paragraph (.TP) whose tag starts with the
key and " = ", e.g. `.BI "idle_timeout = " duration`, in the section whose
title contains GLOBAL (the [global] keys) or SERVICE (the service keys).

The source tree is $DUALPROXY_SRCDIR, or two levels above this file."""

import os
import platform
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


# --------------------------------------------------------------------------
# README.md against the code: the configuration keys and their defaults,
# the metrics, the size of the objects kept per connection, and the files
# and functions its description of the code names.
#
# README documents the keys in two tables of its "Configuration" section
# whose first column is "key" (the [global] keys, then the service keys),
# a key in backticks in the first column and its default in the "default"
# column; the metrics in a table of its "Metrics" section whose first
# column is "metric" (the name in backticks) and whose "labels" column
# names the labels in backticks; the size of an object as "`struct NAME`,
# N bytes on x86-64"; the code in its "How it works" section.

README = SRCDIR / "README.md"
CONFIG_H = SRCDIR / "src" / "config.h"
STATS_C = SRCDIR / "src" / "stats.c"
SRC = SRCDIR / "src"

README_TABLES = ("global_keys", "service_keys")  # in this order in README

# DEFAULT_* macros of config.h that are not named after a [global] key, and
# the key in whose README row their value must appear
DEFAULT_ROWS = {
    "DEFAULT_UDP_IDLE_UNREPLIED": "idle_timeout",
    "DEFAULT_UDP_IDLE_REPLIED": "idle_timeout",
}

DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)\b")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def readme_sections():
    """{title: text} of README's "## " sections (their subsections included)."""
    sections = {}
    title = None
    for line in read(README).splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            sections[title] = []
        elif title is not None:
            sections[title].append(line)
    return {t: "\n".join(lines) for t, lines in sections.items()}


def readme_section(title):
    sections = readme_sections()
    assert title in sections, "README.md has no '## %s' section (it has %s)" % (
        title, ", ".join(sections))
    return sections[title]


def md_tables(text):
    """The Markdown tables of text: lists of rows, a row a list of cells, the
    header row first (the |---| line left out)."""
    tables, rows = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def ticked(cell):
    """The `quoted` words of a table cell."""
    return re.findall(r"`([^`]+)`", cell)


def readme_key_rows():
    """{table: {key: {column: cell}}} from README's configuration tables."""
    tables = [t for t in md_tables(readme_section("Configuration"))
              if t[0][0].lower() == "key"]
    assert len(tables) == len(README_TABLES), (
        "expected %d tables with a 'key' column in README's Configuration section "
        "(the [global] keys, then the service keys), found %d"
        % (len(README_TABLES), len(tables)))
    out = {}
    for name, table in zip(README_TABLES, tables):
        header = [h.lower() for h in table[0]]
        rows = {}
        for row in table[1:]:
            for key in ticked(row[0]):
                rows[key] = dict(zip(header, row))
        out[name] = rows
    return out


@pytest.mark.parametrize("table", README_TABLES)
def test_readme_documents_every_key(table):
    documented = readme_key_rows()[table]
    missing = [k for k in parser_keys()[table] if k not in documented]
    assert not missing, (
        "keys accepted by %s[] in src/config.c but missing from README.md's "
        "table of them: %s" % (table, ", ".join(missing)))


@pytest.mark.parametrize("table", README_TABLES)
def test_readme_documents_no_stale_key(table):
    stale = sorted(set(readme_key_rows()[table]) - set(parser_keys()[table]))
    assert not stale, (
        "keys in README.md's table for %s[] that src/config.c does not accept: %s"
        % (table, ", ".join(stale)))


def c_defines(path, prefix):
    """{name: value} of the `#define PREFIX...` object macros of a header,
    evaluated: a string literal, or a number from an arithmetic expression."""
    out = {}
    text = strip_c_comments(read(path)).replace("\\\n", " ")
    for m in re.finditer(r"^#define\s+(%s\w*)\s+(.+?)\s*$" % prefix, text, flags=re.M):
        expr = m.group(2)
        if re.fullmatch(r'"(?:[^"\\]|\\.)*"(\s*"(?:[^"\\]|\\.)*")*', expr):
            out[m.group(1)] = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', expr))
        elif re.fullmatch(r"[0-9.\s()+*/-]+[UL]*", expr):
            out[m.group(1)] = eval(expr.rstrip("UL"), {"__builtins__": {}})  # digits only
        else:
            raise AssertionError("%s: cannot evaluate %s = %r" % (path, m.group(1), expr))
    return out


def cell_values(cell):
    """The values a default cell states, in order: durations in seconds, or
    else counts; plus its first word (a name such as nobody)."""
    plain = cell.replace("`", "")
    durations = [float(n) * UNIT_SECONDS[u] for n, u in DURATION_RE.findall(plain)]
    counts = [int(n.replace(",", "")) for n in re.findall(r"\b\d[\d,]*\b", plain)]
    words = re.findall(r"[A-Za-z_][\w.-]*", plain)
    return durations, counts, words[:1]


def test_readme_defaults_match_config_h():
    """Every DEFAULT_* value of src/config.h is what README says: the first
    value in the default column of the [global] key it is named after, or
    one of the values in the row DEFAULT_ROWS names."""
    rows = readme_key_rows()["global_keys"]
    defaults = c_defines(CONFIG_H, "DEFAULT_")
    assert defaults, "no DEFAULT_* in %s" % CONFIG_H
    wrong = []
    for macro, value in sorted(defaults.items()):
        key = macro[len("DEFAULT_"):].lower()
        first = key in rows
        if not first:
            assert macro in DEFAULT_ROWS, (
                "%s is not named after a [global] key: document its value in "
                "README.md and name the key whose row has it in DEFAULT_ROWS of %s"
                % (macro, __file__))
            key = DEFAULT_ROWS[macro]
        assert key in rows, "README.md has no row for %s (%s)" % (key, macro)
        cell = rows[key].get("default")
        assert cell is not None, "README.md's [global] table has no 'default' column"
        durations, counts, words = cell_values(cell)
        if isinstance(value, str):
            found = words
        elif durations:
            found = durations
        else:
            found = counts
        ok = (found[:1] == [value]) if first else (value in found)
        if not ok:
            wrong.append("%s = %r, but README.md's default for %s says %r"
                         % (macro, value, key, cell))
    assert not wrong, "\n".join(wrong)


def test_readme_metrics_allow_default():
    prefixes = c_defines(CONFIG_H, "METRICS_ALLOW_DEFAULT")["METRICS_ALLOW_DEFAULT"].split()
    cell = readme_key_rows()["global_keys"]["metrics_allow"]["default"]
    documented = re.findall(r"[0-9a-fA-F:.]+/\d+", cell)
    assert documented == prefixes, (
        "metrics_allow's default is %s (METRICS_ALLOW_DEFAULT in src/config.h); "
        "README.md says %r" % (", ".join(prefixes), cell))


def test_readme_ini_examples_use_real_keys():
    """Every key in README.md's ```ini blocks is one the parser accepts in
    that section."""
    keys = parser_keys()
    stale = []
    for block in re.findall(r"```ini\n(.*?)```", read(README), flags=re.S):
        table = None
        for line in block.splitlines():
            m = re.match(r"\s*\[([^\]]+)\]", line)
            if m:
                table = "global_keys" if m.group(1) == "global" else "service_keys"
                continue
            m = re.match(r"\s*([A-Za-z0-9_]+)\s*=", line)
            if m and table is not None and m.group(1) not in keys[table]:
                stale.append("%s (in %s)" % (m.group(1), table))
    assert not stale, "README.md's INI examples use keys the parser refuses: %s" % (
        ", ".join(stale))


C_STRINGS_RE = re.compile(r'"(?:[^"\\\n]|\\.)*"(?:\s*"(?:[^"\\\n]|\\.)*")*')


def c_strings(text):
    """The string literals of C text, adjacent ones joined as the compiler
    joins them."""
    return ["".join(re.findall(r'"((?:[^"\\\n]|\\.)*)"', m.group(0)))
            for m in C_STRINGS_RE.finditer(text)]


def series_labels(template):
    """The label names of a series template such as
    'name{service=\\"%s\\",family=\\"%s\\"} %llu\\n'."""
    m = re.search(r"\{([^}]*)\}", template)
    return set(re.findall(r"(\w+)=", m.group(1))) if m else set()


def rendered_metrics():
    """{metric name: set of labels} of what src/stats.c renders: every string
    literal that starts with dualproxy_ or process_, with the labels of the
    series templates that name it (`name{label=...}`), and the labels of a
    function's '%s{label=...}' template for the names passed to it."""
    text = strip_c_comments(read(STATS_C))
    metrics = {}
    for lit in c_strings(text):
        m = re.match(r"((?:dualproxy|process)_[a-z0-9_]*[a-z0-9])(\{.*)?$", lit, flags=re.S)
        if m:
            metrics.setdefault(m.group(1), set()).update(series_labels(lit))
    # functions that print a series for a name they are given
    for m in re.finditer(r"^\w[^\n;]*?\b(\w+)\s*\([^;{}]*\)\s*\{(.*?)^\}", text,
                         flags=re.S | re.M):
        fn, body = m.group(1), m.group(2)
        labels = set()
        for lit in c_strings(body):
            if lit.startswith("%s{"):
                labels |= series_labels(lit)
        if not labels:
            continue
        for call in re.finditer(r"\b%s\s*\(" % re.escape(fn), text):
            args = text[call.end():call.end() + 300]
            for lit in c_strings(args.split(";")[0]):
                if lit in metrics:
                    metrics[lit] |= labels
    assert metrics, "no metric names found in %s" % STATS_C
    return metrics


def readme_metrics():
    """{metric name: set of labels} of README's table of metrics."""
    tables = [t for t in md_tables(readme_section("Metrics"))
              if t[0][0].lower() == "metric"]
    assert len(tables) == 1, "expected one table with a 'metric' column in README's Metrics section"
    header = [h.lower() for h in tables[0][0]]
    assert "labels" in header, "README's table of metrics has no 'labels' column"
    out = {}
    for row in tables[0][1:]:
        cells = dict(zip(header, row))
        for name in ticked(row[0]):
            out[name] = set(ticked(cells.get("labels", "")))
    return out


def test_readme_lists_every_metric():
    documented = readme_metrics()
    missing = sorted(set(rendered_metrics()) - set(documented))
    assert not missing, (
        "metrics src/stats.c renders that README.md's Metrics table lacks: %s"
        % ", ".join(missing))


def test_readme_lists_no_stale_metric():
    stale = sorted(set(readme_metrics()) - set(rendered_metrics()))
    assert not stale, (
        "metrics in README.md's Metrics table that src/stats.c does not render: %s"
        % ", ".join(stale))


def test_readme_metric_labels():
    """README's row of a metric names the labels stats.c writes into its
    series, and no other."""
    documented = readme_metrics()
    wrong = ["%s: {%s} rendered, README says {%s}" % (
                 name, ",".join(sorted(labels)), ",".join(sorted(documented[name])))
             for name, labels in sorted(rendered_metrics().items())
             if name in documented and labels != documented[name]]
    assert not wrong, "\n".join(wrong)


def daemon_binary():
    """The binary under test: DUALPROXY_REAL (a valgrind run), else
    DUALPROXY, else the in-tree build."""
    path = os.environ.get("DUALPROXY_REAL") or os.environ.get("DUALPROXY")
    return Path(path) if path else SRCDIR / "src" / "dualproxy"


def struct_sizes(binary):
    """{struct name: bytes} of the structures defined at the top level of
    the binary's compilation units, from its DWARF debug information."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) is not installed")
    with open(binary, "rb") as f:
        if f.read(4) != b"\x7fELF":
            pytest.skip("%s is not an ELF binary" % binary)
    r = subprocess.run([readelf, "--debug-dump=info", "--dwarf-depth=2", str(binary)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    sizes = {}
    tag = name = None
    for line in r.stdout.splitlines():
        m = re.search(r"\(DW_TAG_(\w+)\)", line)
        if m:
            tag, name = m.group(1), None
            continue
        if tag != "structure_type":
            continue
        m = re.search(r"DW_AT_name\s*:\s*(?:\([^)]*\):\s*)?(\S+)\s*$", line)
        if m:
            name = m.group(1)
        m = re.search(r"DW_AT_byte_size\s*:\s*(\d+)", line)
        if m and name is not None:
            sizes.setdefault(name, set()).add(int(m.group(1)))
    if not sizes:
        pytest.skip("%s has no debug information (built without -g)" % binary)
    return sizes


def test_readme_object_sizes():
    """Each "`struct NAME`, N bytes on x86-64" of README.md is the size the
    compiler gave that structure in the binary under test."""
    claims = re.findall(r"`struct (\w+)`, ([\d,]+) bytes on x86-64", read(README))
    assert any(n == "relay" for n, _ in claims), (
        "README.md does not state the size of a relay as "
        "\"`struct relay`, N bytes on x86-64\"")
    if platform.machine() != "x86_64":
        pytest.skip("the sizes README.md states are x86-64's")
    binary = daemon_binary()
    if not binary.is_file():
        pytest.skip("no binary at %s" % binary)
    sizes = struct_sizes(binary)
    wrong = []
    for name, n in claims:
        real = sizes.get(name)
        assert real, "no struct %s in %s" % (name, binary)
        if real != {int(n.replace(",", ""))}:
            wrong.append("struct %s: README.md says %s bytes, %s has %s"
                         % (name, n, binary.name, " or ".join(map(str, sorted(real)))))
    assert not wrong, "\n".join(wrong)


def test_readme_how_it_works_names_every_source_file():
    """README's "How it works" names every src/*.c, and no file that is not
    there."""
    text = readme_section("How it works")
    named = set(re.findall(r"\b(\w+\.c)\b", text))
    real = {p.name for p in SRC.glob("*.c")}
    assert not named - real, "README.md's How it works names files src/ lacks: %s" % (
        ", ".join(sorted(named - real)))
    assert not real - named, "README.md's How it works does not name: %s" % (
        ", ".join(sorted(real - named)))


def test_readme_how_it_works_functions_exist():
    """Every `function()` README's "How it works" names is defined in src/."""
    text = readme_section("How it works")
    names = set(re.findall(r"`(\w+)\(\)`", text))
    assert names, "README.md's How it works names no function as `name()`"
    code = "\n".join(strip_c_comments(p.read_text(encoding="utf-8"))
                     for p in sorted(SRC.glob("*.c")))
    missing = sorted(n for n in names
                     if not re.search(r"\b%s\s*\([^;{}]*\)\s*\{" % re.escape(n), code))
    assert not missing, "README.md's How it works names functions src/ does not define: %s" % (
        ", ".join(missing))
