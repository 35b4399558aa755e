"""The documentation: it builds with warnings as errors, covers the public API, and what it
states about the code (task states, settings, errors, the front-page example) is true."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

import balsam_futures
from balsam_futures import config
from balsam_futures.tasks import TRANSITIONS, TaskState

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Documented in the API reference although not in ``balsam_futures.__all__``.
EXTRA_API_NAMES = ("balsam_futures.query.TaskQuery",)
#: A full build takes a few seconds; this leaves room for a loaded machine.
BUILD_TIMEOUT_S = 180

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 60)


def _missing_doc_tools() -> list[str]:
    return [m for m in ("sphinx", "myst_parser", "furo", "sphinx_click")
            if importlib.util.find_spec(m) is None]


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory):
    """Build the site once for this module: (completed process, html dir, seconds)."""
    missing = _missing_doc_tools()
    if missing:
        pytest.skip(f"cannot build the docs without {', '.join(missing)} "
                    "(pip install -e '.[docs]' installs them)")
    out = tmp_path_factory.mktemp("docs")
    html = out / "html"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
         "-d", str(out / "doctrees"), str(DOCS), str(html)],
        cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    seconds = time.monotonic() - started
    print(f"docs built in {seconds:.1f} s")
    return proc, html, seconds


def test_docs_build_without_warnings(built_docs):
    proc, html, _seconds = built_docs
    assert proc.returncode == 0 and "WARNING" not in proc.stderr, (
        f"sphinx-build -W failed (exit {proc.returncode}):\n{proc.stderr}{proc.stdout}")
    assert (html / "index.html").is_file()


def _inventory(html: Path) -> dict[str, tuple[str, str]]:
    """Objects in Sphinx's objects.inv (format v2): name -> (domain:role, page)."""
    path = html / "objects.inv"
    assert path.is_file(), "the build wrote no objects.inv; see test_docs_build_without_warnings"
    raw = path.read_bytes()
    header_end = 0
    for _ in range(4):  # four text lines, then zlib-compressed entries
        header_end = raw.index(b"\n", header_end) + 1
    entries: dict[str, tuple[str, str]] = {}
    for line in zlib.decompress(raw[header_end:]).decode().splitlines():
        match = re.match(r"(.+?)\s+(\S+:\S+)\s+(-?\d+)\s+(\S*)\s+(.*)", line)
        if match:
            name, role, _prio, uri, _disp = match.groups()
            entries[name] = (role, uri.split("#")[0])
    return entries


def test_api_reference_documents_every_public_name(built_docs):
    _proc, html, _seconds = built_docs
    entries = _inventory(html)
    expected = [f"balsam_futures.{name}" for name in balsam_futures.__all__]
    expected += EXTRA_API_NAMES
    missing = [n for n in expected
               if n not in entries or not entries[n][0].startswith("py:")
               or entries[n][1] != "api.html"]
    assert not missing, ("not documented in docs/api.md (add an autoclass/autoexception/"
                         f"autofunction for each): {', '.join(missing)}")


def _table_rows(page: str, first_cell: re.Pattern[str]) -> list[list[str]]:
    rows = []
    for line in (DOCS / page).read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and first_cell.fullmatch(cells[0]):
            rows.append(cells)
    return rows


def test_state_table_matches_the_transition_table():
    # docs/concepts.md repeats TRANSITIONS from balsam_futures/tasks.py, the source of truth.
    rows = _table_rows("concepts.md", re.compile(r"`[A-Z_]+`"))
    documented = {}
    for cells in rows:
        state = TaskState(cells[0].strip("`"))
        assert state not in documented, f"{state} appears twice in the state table"
        documented[state] = frozenset(TaskState(s) for s in re.findall(r"`([A-Z_]+)`", cells[-1]))
    assert documented == dict(TRANSITIONS), (
        "the state table in docs/concepts.md differs from TRANSITIONS in tasks.py: "
        + "; ".join(f"{s}: docs {sorted(documented.get(s, ()))} code {sorted(TRANSITIONS[s])}"
                    for s in TaskState if documented.get(s) != TRANSITIONS.get(s)))


def test_every_setting_is_documented():
    text = (DOCS / "cli.md").read_text()
    missing = [config.env_name(n) for n in config.SETTINGS if f"`{config.env_name(n)}`" not in text]
    assert not missing, f"settings missing from the table in docs/cli.md: {', '.join(missing)}"


def test_every_public_error_is_in_troubleshooting():
    text = (DOCS / "troubleshooting.md").read_text()
    errors = [n for n in balsam_futures.__all__
              if isinstance(getattr(balsam_futures, n), type)
              and issubclass(getattr(balsam_futures, n), BaseException)]
    assert "TaskTimeout" in errors  # the selection above found the error classes
    missing = [n for n in errors if f"`~balsam_futures.{n}`" not in text]
    assert not missing, f"errors missing from docs/troubleshooting.md: {', '.join(missing)}"


def test_front_page_example_runs(tmp_path):
    text = (DOCS / "index.md").read_text()
    example = re.search(r"```python\n(.*?)```", text, re.S)
    assert example, "docs/index.md has no ```python example"
    (tmp_path / "example.py").write_text(example.group(1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(config.PREFIX)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for t, value in ((100, "10.0"), (200, "14.142"), (300, "17.321"), (400, "20.0")):
        assert any(line.startswith(f"T={t}: {value} (task ") for line in lines), proc.stdout
    # The shell value stayed one literal argument: echoed, not run.
    assert lines[-1] == "hello world; echo injected", proc.stdout
    assert (tmp_path / ".balsam_futures" / "balsam.db").is_file()
