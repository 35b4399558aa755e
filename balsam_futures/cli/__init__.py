"""The ``balsam-futures`` command: thin over the library, one clear line per user mistake.

One module per group of commands; each registers its commands on ``main``.
"""

from __future__ import annotations

from . import (  # noqa: F401  (they register their commands)
    cache,
    db,
    explain,
    failures,
    launcher,
    queue,
    site,
    stats,
    tasks,
    web,
)
from .main import main

__all__ = ["main"]
