"""Fixtures for the store behaviour suite: one suite, every backend.

``STORE_FACTORIES`` maps a backend name to a function of ``tmp_path`` that opens a store.
Calling a factory twice with the same ``tmp_path`` must open the *same* database (a second
connection to it), which is how the suite tests concurrent claims and change probes.
PostgreSQL tests get a fresh database on the session's throwaway server (``pg_url`` in
``tests/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from balsam_futures.backends import SqlStore, open_store


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'balsam.db'}"


def _open_sqlite(tmp_path: Path) -> SqlStore:
    return open_store(sqlite_url(tmp_path))


STORE_FACTORIES: dict[str, Callable[[Path], SqlStore]] = {
    "sqlite": _open_sqlite,
}

BACKEND_PARAMS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def make_store(backend, tmp_path, request):
    """Open a store on this test's database; every call is another connection to it.

    Every store opened is closed at teardown, newest first.
    """
    opened: list[SqlStore] = []
    if backend == "postgres":
        url = request.getfixturevalue("pg_url")  # one fresh database per test
        factory = lambda _path: open_store(url)  # noqa: E731
    else:
        factory = STORE_FACTORIES[backend]

    def make() -> SqlStore:
        store = factory(tmp_path)
        opened.append(store)
        return store

    yield make
    for store in reversed(opened):
        store.close()


@pytest.fixture
def store(make_store) -> SqlStore:
    return make_store()
