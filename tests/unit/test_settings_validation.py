"""Settings are checked where they are read, URLs are shown with their passwords masked, and
the store and site refuse what would break them later (balsam_futures.config, .backends,
.sitedir, .query)."""

from __future__ import annotations

import os
import sqlite3
import stat
import warnings

import pytest

from balsam_futures import config
from balsam_futures.backends import open_store, redact_url
from balsam_futures.errors import SchemaMismatch, SiteError
from balsam_futures.query import TaskQuery
from balsam_futures.sitedir import find_site, open_site
from balsam_futures.tasks import TaskOptions, TaskSpec

pytestmark = pytest.mark.timeout(60)

SECRET = "s3cr3t-Passw0rd"
RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in config.SETTINGS:
        monkeypatch.delenv(config.PREFIX + name, raising=False)


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- config.setting: range and finiteness -----------------------------------------------------


@pytest.mark.parametrize("name, raw", [
    ("LEASE_SECONDS", "abc"),
    ("LEASE_SECONDS", "0"),
    ("LEASE_SECONDS", "-5"),
    ("LEASE_SECONDS", "nan"),
    ("LEASE_SECONDS", "inf"),
    ("LEASE_SECONDS", "-inf"),
    ("MAX_PAYLOAD_BYTES", "0"),
    ("MAX_PAYLOAD_BYTES", "-1"),
    ("LOG_LEVEL", "LOUD"),
    ("TASK_ID", "0"),
    ("TASK_ID", "-3"),
])
def test_bad_value_is_refused_naming_variable_value_and_range(name, raw):
    with pytest.raises(ValueError) as info:
        config.setting(name, {config.PREFIX + name: raw})
    message = str(info.value)
    assert f"BALSAM_FUTURES_{name}" in message
    assert repr(raw) in message
    assert config.SETTINGS[name].accepts in message


@pytest.mark.parametrize("name, raw, value", [
    ("LEASE_SECONDS", "0.5", 0.5),
    ("LEASE_SECONDS", "1e3", 1000.0),
    ("MAX_PAYLOAD_BYTES", "1", 1),
    ("LOG_LEVEL", "debug", "debug"),
    ("LOG_LEVEL", "WARNING", "WARNING"),
    ("TASK_ID", "1", 1),
    ("DB_URL", "postgresql://u@h/db", "postgresql://u@h/db"),
    ("SITE", "relative/site", "relative/site"),
])
def test_values_in_range_are_accepted(name, raw, value):
    assert config.setting(name, {config.PREFIX + name: raw}) == value


def test_a_db_url_that_is_no_url_is_refused_without_showing_it():
    raw = f"host=db user=u password={SECRET}"
    with pytest.raises(ValueError) as info:
        config.setting("DB_URL", {"BALSAM_FUTURES_DB_URL": raw})
    assert "BALSAM_FUTURES_DB_URL" in str(info.value)
    assert SECRET not in str(info.value)


def test_a_site_with_a_nul_byte_is_refused():
    with pytest.raises(ValueError, match="BALSAM_FUTURES_SITE"):
        config.setting("SITE", {"BALSAM_FUTURES_SITE": "a\0b"})


# -- redact_url: one display form for every URL ----------------------------------------------


@pytest.mark.parametrize("url, shown", [
    (f"postgresql://u:{SECRET}@h:5432/db", "postgresql://u:***@h:5432/db"),
    (f"postgresql://u@h/db?password={SECRET}", "postgresql://u@h/db?password=***"),
    (f"postgresql://u@h/db?sslmode=require&password={SECRET}&x=1",
     "postgresql://u@h/db?sslmode=require&password=***&x=1"),
    (f"postgresql://u@h/db?PassWord={SECRET}", "postgresql://u@h/db?PassWord=***"),
    (f"postgresql://u:{SECRET}@h/db?password={SECRET}", "postgresql://u:***@h/db?password=***"),
    # Not percent-encoded: everything up to the host's @ is the password.
    ("postgresql://u:p@ss/w0rd@h/db", "postgresql://u:***@h/db"),
    (f"host=h password={SECRET} user=u", "host=h password=*** user=u"),
    ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
    ("sqlite:////data/a:b@c/balsam.db", "sqlite:////data/a:b@c/balsam.db"),
])
def test_redact_url_masks_both_ways_of_giving_a_password(url, shown):
    assert redact_url(url) == shown


def test_redact_url_masks_a_url_inside_a_message():
    text = f"task store postgresql://u:{SECRET}@h/db?password={SECRET} is unavailable: refused"
    assert SECRET not in redact_url(text)
    assert redact_url(text).endswith("is unavailable: refused")


# -- open_store: URLs that do not parse ------------------------------------------------------


def test_a_port_that_is_not_a_number_is_a_clear_value_error():
    with pytest.raises(ValueError) as info:
        open_store(f"postgresql://u:{SECRET}@host:abc/db?password={SECRET}")
    message = str(info.value)
    assert "port must be a number" in message
    assert "postgresql://u:***@host:abc/db?password=***" in message
    assert SECRET not in message


def test_an_unknown_scheme_does_not_echo_a_connection_string():
    with pytest.raises(ValueError) as info:
        open_store(f"host=h password={SECRET}")
    assert "unsupported database URL scheme" in str(info.value)
    assert SECRET not in str(info.value)


def test_the_executor_refuses_a_bad_port_with_a_value_error(tmp_path):
    from balsam_futures import BalsamExecutor

    with pytest.raises(ValueError, match="port must be a number"):
        BalsamExecutor(db_url="postgresql://u@host:abc/db", site=tmp_path / "site")


# -- the store: a schema version that is not a number ----------------------------------------


def test_a_schema_version_that_is_not_a_number_is_a_schema_mismatch(tmp_path):
    path = tmp_path / "balsam.db"
    open_store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE bf_meta SET value = 'two' WHERE key = 'schema_version'")
    with pytest.raises(SchemaMismatch, match="schema version 'two', not a number"):
        open_store(f"sqlite:///{path}")


# -- the query API: updates checked as submit() checks ---------------------------------------


@pytest.fixture
def query(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'balsam.db'}")
    ids = store.create_tasks([TaskSpec("python", b"p", TaskOptions(), f"t{i}")
                              for i in range(2)])
    yield TaskQuery(store), ids
    store.close()


@pytest.mark.parametrize("values, message", [
    ({"ranks_per_node": 0}, r"ranks_per_node must be >= 1 .*got 0"),
    ({"num_nodes": -5}, r"num_nodes must be >= 1 .*got -5"),
    ({"priority": 2**31}, r"priority must be >= -2147483648 and <= 2147483647"),
    ({"max_retries": -1}, r"max_retries must be >= 0 .*got -1"),
    ({"wall_time_s": float("nan")}, r"wall_time_s: timeout must be > 0"),
    ({"name": "x" * 300}, r"name"),
])
def test_bulk_update_refuses_what_submit_refuses(query, values, message):
    q, _ = query
    with pytest.raises(ValueError, match=message):
        q.update(**values)
    assert {r["num_nodes"] for r in q} == {1}  # nothing written


def test_bulk_update_never_moves_tasks_into_a_launchers_state(query):
    q, _ = query
    for state in ("RUNNING", "CLAIMED", "RUN_DONE"):
        with pytest.raises(ValueError, match=f"cannot move tasks to {state} by hand"):
            q.update(state=state)
    assert q.by_state() == {"READY": 2}


def test_modify_refuses_an_illegal_move_naming_task_state_and_targets(query):
    q, ids = query
    with pytest.raises(ValueError) as info:
        q.modify(ids[0], state="JOB_FINISHED")
    assert str(info.value) == (f"task {ids[0]} is READY and cannot be moved to JOB_FINISHED; "
                               "it can be moved to: CANCELLED")
    with pytest.raises(ValueError, match="only a launcher moves tasks there"):
        q.modify(ids[0], state="RUNNING")
    q.modify(ids[0], state="CANCELLED", priority=3)
    row = q.filter(id=ids[0]).first()
    assert (row["state"], row["priority"]) == ("CANCELLED", 3)


# -- the site directory ----------------------------------------------------------------------


def test_a_world_writable_site_is_made_private_with_a_warning(tmp_path):
    site = open_site(tmp_path / "site")
    site.path.chmod(0o777)
    with pytest.warns(UserWarning, match="writable by other users"):
        open_site(site.path)
    assert mode_of(site.path) == 0o700


def test_a_private_site_opens_without_warning(tmp_path):
    site = open_site(tmp_path / "site")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_site(site.path)


def test_a_shared_sticky_directory_is_refused_not_changed(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(SiteError, match="not yours to make private"):
        open_site(shared)
    assert mode_of(shared) == 0o1777


@pytest.mark.skipif(not RUNNING_AS_ROOT, reason="giving a directory away needs root")
def test_another_users_writable_site_is_refused(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    os.chown(other, 65534, 65534)
    other.chmod(0o777)
    with pytest.raises(SiteError, match="not yours to make private"):
        open_site(other)
    assert mode_of(other) == 0o777


def test_find_site_creates_nothing(tmp_path):
    with pytest.raises(SiteError, match="no site at"):
        find_site(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
