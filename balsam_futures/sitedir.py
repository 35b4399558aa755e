"""The site: one directory holding the database, task working directories and logs.

    <site>/balsam.db     the embedded task store (SQLite), mode 0600
    <site>/data/         task working directories
    <site>/logs/         launcher logs
    <site>/postgres/     the site's own PostgreSQL (``balsam-futures db start``) and its
                         pgpass file, 0600, when it listens on TCP

The site is ``site=`` when given, else ``$BALSAM_FUTURES_SITE``, else ``./.balsam_futures``.
The store is ``db_url=`` when given, else ``$BALSAM_FUTURES_DB_URL``, else the site's
``balsam.db`` (:func:`resolve_store_url`, the one place this order is coded).
It is created private (0700): the store holds pickled code that launchers will run.  An
existing site that other users may write to is made private again with a warning, or refused
where that is not ours to do (another user's directory, or a shared one such as /tmp).
"""

from __future__ import annotations

import os
import stat
import warnings
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

    @property
    def pgpass_file(self) -> Path:
        """The password of the site's own PostgreSQL on TCP (``db start --listen``)."""
        return self.path / "postgres" / "pgpass"


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and every missing directory above it, each private to this user
    (0700: ``mkdir(parents=True)`` and ``os.makedirs`` give the parents default modes); an
    existing directory is left as it is, and a race with another creator is fine."""
    path = Path(path)
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made meanwhile by another process
    return path if not missing else missing[0]


def resolve_site(path: str | os.PathLike[str] | None = None) -> Path:
    """Where the site is, by the rule above (nothing is created)."""
    if path is None:
        path = config.setting("SITE") or Path.cwd() / DEFAULT_SITE_NAME
    return Path(path).expanduser().absolute()


def open_site(path: str | os.PathLike[str] | None = None) -> Site:
    """Resolve the site and create its directories if needed; an existing one that others
    may write to is made private (with a warning) or refused."""
    site = Site(resolve_site(path))
    try:
        if not site.path.exists():
            private_dir(site.path)
        elif not site.path.is_dir():
            raise SiteError(f"site {site.path} exists and is not a directory")
        else:
            _make_private(site.path)
        for sub in (site.data_dir, site.logs_dir):
            private_dir(sub)
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


def find_site(path: str | os.PathLike[str] | None = None, *, database: bool = True) -> Site:
    """The existing site at ``path`` (resolved as by :func:`open_site`), for commands that only
    read or change what it holds: where there is none, raise ``SiteError`` and create nothing,
    so a mistyped path does not leave an empty site behind.  ``database``: the site's own
    SQLite file must be there (pass False when the store is elsewhere, at a database URL)."""
    site = Site(resolve_site(path))
    if not (site.db_path.is_file() if database else site.path.is_dir()):
        raise SiteError(f"no site at {site.path} (create one with balsam-futures init, "
                        "or pass --site/--db-url)")
    return open_site(site.path)


def resolve_store_url(db_url: str | None = None,
                      site: str | os.PathLike[str] | None = None, *, create: bool = True,
                      with_site: bool = False) -> tuple[str, Site | None]:
    """(URL of the store to use, its site): ``db_url``, else ``$BALSAM_FUTURES_DB_URL``, else
    the SQLite file of the site (``site``, resolved as by :func:`open_site`).

    ``create``: a missing site is created (:func:`open_site`); False refuses it with
    ``SiteError`` and creates nothing (:func:`find_site`, for commands that only read or change
    a store).  The site is returned always when the store is its SQLite file; when the store is
    at a URL, only with ``with_site`` (callers that also write to the site: logs, job
    scripts), and else it is None and ``site`` is not looked at.  An empty ``db_url`` counts as
    none.  A bad ``$BALSAM_FUTURES_DB_URL`` raises ``ValueError`` naming it.
    """
    url = db_url or config.setting("DB_URL")
    if not url:
        the_site = open_site(site) if create else find_site(site)
        return the_site.db_url, the_site
    if not with_site:
        return url, None
    return url, open_site(site) if create else find_site(site, database=False)


def _make_private(path: Path) -> None:
    """Take write access away from group and others on an existing site directory: whoever
    can write there can replace the database, and so the code that launchers run."""
    st = os.stat(path)
    if not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return
    mode = oct(stat.S_IMODE(st.st_mode))
    # A shared directory (sticky, like /tmp) or another user's is not ours to lock down.
    if st.st_uid != os.geteuid() or st.st_mode & stat.S_ISVTX:
        raise SiteError(
            f"the site directory {path} (mode {mode}) may be written by other users and is "
            f"not yours to make private; pass site= or set {config.env_name('SITE')} to a "
            "directory of your own"
        )
    try:
        os.chmod(path, 0o700)
    except OSError as exc:
        raise SiteError(f"the site directory {path} (mode {mode}) may be written by other "
                        f"users and cannot be made private: {exc.strerror}") from exc
    warnings.warn(f"the site directory {path} was writable by other users (mode {mode}); "
                  "made it private (0700)", stacklevel=3)
