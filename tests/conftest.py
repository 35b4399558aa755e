"""Shared fixtures.

``make_executor`` builds a BalsamExecutor on a private site in a temporary directory (embedded
SQLite, its own local launcher) and shuts every executor it made down at the end of the test.
Setting ``BALSAM_FUTURES_TEST_PEER=process`` runs the same tests against
``concurrent.futures.ProcessPoolExecutor``: the behaviour suite is written against the standard
interface, so both must pass it.
"""

from __future__ import annotations

import concurrent.futures
import os

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
