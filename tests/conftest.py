"""Shared fixtures.

``make_executor`` builds a BalsamExecutor on a private site in a temporary directory (embedded
SQLite, its own local launcher) and shuts every executor it made down at the end of the test.
Setting ``BALSAM_FUTURES_TEST_PEER=process`` runs the same tests against
``concurrent.futures.ProcessPoolExecutor``: the behaviour suite is written against the standard
interface, so both must pass it.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import shutil
import tempfile

import pytest


@pytest.fixture
def site_dir(tmp_path):
    return tmp_path / "site"


@pytest.fixture
def make_executor(site_dir):
    made = []

    def factory(max_workers=2, **kwargs):
        if os.environ.get("BALSAM_FUTURES_TEST_PEER") == "process":
            ex = concurrent.futures.ProcessPoolExecutor(max_workers=max_workers, **kwargs)
        else:
            from balsam_futures import BalsamExecutor

            kwargs.setdefault("site", site_dir)
            ex = BalsamExecutor(max_workers=max_workers, **kwargs)
        made.append(ex)
        return ex

    yield factory
    for ex in made:
        ex.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def pg_site():
    """A site directory whose own PostgreSQL server (``balsam-futures db``, LocalPostgres)
    the test drives; whatever server is left there is stopped at the end.  Skipped with the
    reason where the server binaries or psycopg2 are missing."""
    from pathlib import Path

    from balsam_futures.backends.pgserver import LocalPostgres, PostgresServerError, find_binary

    try:
        import psycopg2  # noqa: F401

        find_binary("initdb")
    except (ImportError, PostgresServerError) as exc:
        pytest.skip(f"PostgreSQL is not available here: {exc}")
    base = Path(tempfile.mkdtemp(prefix="bf-site-pg-"))
    site = base / "site"
    site.mkdir()
    for d in (base, site):
        os.chmod(d, 0o711)  # the server's user must be able to enter them
    try:
        yield site
    finally:
        try:
            LocalPostgres(site / "postgres").stop(mode="immediate")
        finally:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL cluster for the whole session (initdb + pg_ctl, ~1 s).

    As root, the server runs as the ``postgres`` user (PostgreSQL refuses root).  Skipped with
    the reason where the server binaries or psycopg2 are missing; CI installs both.
    """
    from balsam_futures.backends.pgserver import LocalPostgres, PostgresServerError, find_binary

    try:
        import psycopg2  # noqa: F401

        find_binary("initdb")
    except (ImportError, PostgresServerError) as exc:
        pytest.skip(f"PostgreSQL is not available here: {exc}")
    base = tempfile.mkdtemp(prefix="bf-pg-")
    os.chmod(base, 0o711)  # the server's user must be able to enter it
    server = LocalPostgres(os.path.join(base, "cluster"),
                           run_as="postgres" if os.geteuid() == 0 else None)
    server.start()
    yield server
    server.stop(mode="immediate")
    shutil.rmtree(base, ignore_errors=True)


_db_numbers = itertools.count()


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty database on the session's server."""
    return pg_server.create_database(f"test_{os.getpid()}_{next(_db_numbers)}")
