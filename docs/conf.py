"""Sphinx configuration: Markdown pages (MyST), the furo theme, the API from docstrings.

Build with warnings as errors, as CI does (tests/test_docs.py):

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

# The package from this checkout, also when it is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

project = "balsam_futures"
author = "the balsam_futures authors"
copyright = "the balsam_futures authors"
try:
    release = metadata.version("balsam_futures")
except metadata.PackageNotFoundError:
    release = ""

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx_click",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: ::: fences for admonitions, definition lists, and anchors for ## and ### headings so
# pages can link to sections (concepts.md#task-states).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: members in source order, type hints in the description rather than the
# signature (signatures stay short enough to read), Google-style "Args:" via napoleon.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_class_signature = "mixed"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Every reference to one of our own objects must resolve: a renamed class breaks the build.
# Types from the standard library and other packages are not documented here (the build is
# offline, so no intersphinx), so references to them are let through.
# Internal types that public signatures mention (the store behind ``executor.store``, the view
# ``options()`` returns, launcher internals) are not part of the reference either.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(?!balsam_futures\b).*"),
    (r"py:.*", r"balsam_futures\.(backends|launcher|schedulers|cli)\b.*"),
    (r"py:.*", r".*\._\w+.*"),
]

html_theme = "furo"
html_title = "balsam_futures"
html_static_path: list[str] = []


# Docstrings are written for help() as much as for Sphinx.  Two things that read well there
# are markup in reStructuredText: ``fn(*args, **kwargs)`` (the standard Executor.submit
# docstring, reused by BalsamExecutor.submit) starts emphasis, and a character class such as
# [A-Za-z0-9_.-] ends in ``_`` and so reads as a link.  Outside ``literals``, both are shown
# as written.
_STARS = re.compile(r"(?<![\\*\w])(\*{1,2})(?=(?:args|kwargs|iterables)\b)")
_CHAR_CLASS = re.compile(r"(?<!\w)(\[[A-Za-z0-9_.\-]+\])")


def _as_written(text: str) -> str:
    text = _STARS.sub(lambda m: "\\*" * len(m.group(1)), text)
    return _CHAR_CLASS.sub(r"``\1``", text)


def _literal_markup(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        parts = line.split("``")  # odd parts are inside ``literals``: left alone
        lines[i] = "``".join(_as_written(p) if k % 2 == 0 else p for k, p in enumerate(parts))


def setup(app):
    app.connect("autodoc-process-docstring", _literal_markup)
