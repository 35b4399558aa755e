"""The site: one directory holding the database, task working directories and logs.

    <site>/balsam.db     the embedded task store (SQLite), mode 0600
    <site>/data/         task working directories
    <site>/logs/         launcher logs

The site is ``site=`` when given, else ``$BALSAM_FUTURES_SITE``, else ``./.balsam_futures``.
It is created private (0700): the store holds pickled code that launchers will run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import config
from .errors import SiteError

DEFAULT_SITE_NAME = ".balsam_futures"
DB_FILE = "balsam.db"


@dataclass(frozen=True)
class Site:
    path: Path

    @property
    def db_path(self) -> Path:
        return self.path / DB_FILE

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db_path}"


def resolve_site(path: str | os.PathLike[str] | None = None) -> Path:
    """Where the site is, by the rule above (nothing is created)."""
    if path is None:
        path = config.setting("SITE") or Path.cwd() / DEFAULT_SITE_NAME
    return Path(path).expanduser().absolute()


def open_site(path: str | os.PathLike[str] | None = None) -> Site:
    """Resolve the site and create its directories if needed."""
    site = Site(resolve_site(path))
    try:
        if not site.path.exists():
            site.path.mkdir(mode=0o700, parents=True)
        elif not site.path.is_dir():
            raise SiteError(f"site {site.path} exists and is not a directory")
        for sub in (site.data_dir, site.logs_dir):
            sub.mkdir(mode=0o700, exist_ok=True)
    except SiteError:
        raise
    except OSError as exc:
        raise SiteError(
            f"cannot create the site directory {site.path}: {exc.strerror}; pass site= or set "
            f"{config.env_name('SITE')} to a writable directory"
        ) from exc
    if not os.access(site.path, os.W_OK | os.X_OK):
        raise SiteError(
            f"the site directory {site.path} is not writable; pass site= or set "
            f"{config.env_name('SITE')} to a writable directory"
        )
    return site
