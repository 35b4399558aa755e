"""What the command line stands on: the one rule for which store to use
(``sitedir.resolve_store_url``), the histories of many tasks in one query
(``SqlStore.histories``), the one place user errors become an ``error:`` line, and option
choices read from the registries."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from balsam_futures import config
from balsam_futures.backends import LauncherInfo, TaskOutcome, open_store
from balsam_futures.errors import SiteError
from balsam_futures.sitedir import DB_FILE, resolve_store_url
from balsam_futures.tasks import TaskOptions, TaskSpec, TaskState, outcome_path

pytestmark = pytest.mark.timeout(60)

PG_URL = "postgresql://someone@db.example/campaign"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in config.SETTINGS:
        monkeypatch.delenv(config.PREFIX + name, raising=False)


# -- resolve_store_url: argument, then $BALSAM_FUTURES_DB_URL, then the site's file -----------


class TestResolveStoreUrl:
    def test_the_argument_wins_and_the_site_is_not_looked_at(self, tmp_path, monkeypatch):
        monkeypatch.setenv("BALSAM_FUTURES_DB_URL", "postgresql://other@h/db")
        site = tmp_path / "site"
        assert resolve_store_url(PG_URL, site) == (PG_URL, None)
        assert resolve_store_url(PG_URL, site, create=False) == (PG_URL, None)
        assert not site.exists()

    def test_then_the_variable(self, tmp_path, monkeypatch):
        monkeypatch.setenv("BALSAM_FUTURES_DB_URL", PG_URL)
        assert resolve_store_url(None, tmp_path / "site") == (PG_URL, None)
        assert resolve_store_url("", tmp_path / "site") == (PG_URL, None)  # empty: none given

    def test_then_the_sites_sqlite_file_created_on_demand(self, tmp_path):
        url, site = resolve_store_url(None, tmp_path / "site")
        assert site is not None and site.path == tmp_path / "site" and site.path.is_dir()
        assert url == f"sqlite:///{tmp_path / 'site' / DB_FILE}" == site.db_url

    def test_the_site_comes_from_its_variable_too(self, tmp_path, monkeypatch):
        monkeypatch.setenv("BALSAM_FUTURES_SITE", str(tmp_path / "from_env"))
        _url, site = resolve_store_url()
        assert site.path == tmp_path / "from_env"

    def test_create_false_refuses_a_missing_site_and_creates_nothing(self, tmp_path):
        with pytest.raises(SiteError, match="no site at"):
            resolve_store_url(None, tmp_path / "nowhere", create=False)
        assert not (tmp_path / "nowhere").exists()
        (tmp_path / "empty").mkdir()  # a directory without the database is no site either
        with pytest.raises(SiteError, match="no site at"):
            resolve_store_url(None, tmp_path / "empty", create=False)

    def test_with_site_gives_the_site_of_a_store_at_a_url(self, tmp_path):
        url, site = resolve_store_url(PG_URL, tmp_path / "new", with_site=True)
        assert url == PG_URL and site.path == tmp_path / "new" and site.path.is_dir()
        (tmp_path / "bare").mkdir()  # no SQLite file needed: the store is elsewhere
        url, site = resolve_store_url(PG_URL, tmp_path / "bare", create=False, with_site=True)
        assert site.path == tmp_path / "bare"
        with pytest.raises(SiteError, match="no site at"):
            resolve_store_url(PG_URL, tmp_path / "nowhere", create=False, with_site=True)

    def test_a_bad_variable_is_an_error_naming_it(self, tmp_path, monkeypatch):
        monkeypatch.setenv("BALSAM_FUTURES_DB_URL", "host=h password=pw")
        with pytest.raises(ValueError, match="BALSAM_FUTURES_DB_URL") as info:
            resolve_store_url(None, tmp_path / "site")
        assert "pw" not in str(info.value)
        assert not (tmp_path / "site").exists()


def test_task_query_open_follows_the_same_rule(tmp_path):
    from balsam_futures.query import TaskQuery

    with pytest.raises(SiteError, match="no site at"):
        TaskQuery.open(site=str(tmp_path / "nowhere"), create=False)
    assert not (tmp_path / "nowhere").exists()
    q = TaskQuery.open(site=str(tmp_path / "site"))
    try:
        assert q.store.display_url.endswith(DB_FILE) and q.count() == 0
    finally:
        q.store.close()


# -- histories: every task's changes in one query ---------------------------------------------


@pytest.fixture(params=[pytest.param("sqlite"),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    url = (request.getfixturevalue("pg_url") if request.param == "postgres"
           else f"sqlite:///{tmp_path / 'balsam.db'}")
    store = open_store(url)
    yield store
    store.close()


def _tasks_with_history(store, n_failed: int, n_ready: int) -> tuple[list[int], list[int]]:
    failed = store.create_tasks([TaskSpec("python", b"p", TaskOptions(tags={"k": "f"}), "f")
                                 for _ in range(n_failed)])
    ready = store.create_tasks([TaskSpec("python", b"p", TaskOptions(), "r")
                                for _ in range(n_ready)])
    lid = store.register_launcher(LauncherInfo("h", 1))
    claimed = store.claim(lid, n_failed, tags={"k": "f"})
    store.record_outcomes(lid, [TaskOutcome(
        t.id, outcome_path(TaskState.RUN_ERROR, 0, 0, True), message=f"ran {t.id}")
        for t in claimed])
    return failed, ready


def test_histories_are_history_of_each_task_in_one_query(store, monkeypatch):
    failed, ready = _tasks_with_history(store, 3, 2)
    one_by_one = {i: store.history(i) for i in failed}
    assert all(one_by_one.values())  # the failed ones moved; the ready ones never did
    statements = []
    real = type(store)._exec_once
    monkeypatch.setattr(type(store), "_exec_once",
                        lambda self, *a: statements.append(a[1]) or real(self, *a))
    got = store.histories([*failed, *ready, 10_000])
    assert len(statements) == 1
    assert got == one_by_one  # same rows, same keys, oldest first; no entry without history
    assert got[failed[0]][-1]["to_state"] == TaskState.FAILED.value
    assert store.histories([]) == {}


def test_histories_of_more_tasks_than_a_statement_takes(store, monkeypatch):
    from balsam_futures.backends import connection

    monkeypatch.setattr("balsam_futures.backends.task_queries.BULK_CHUNK", 2)
    failed, _ready = _tasks_with_history(store, 5, 0)
    assert connection.BULK_CHUNK > 2
    assert store.histories(failed) == {i: store.history(i) for i in failed}


def test_task_query_rows_and_get_carry_the_history(store):
    from balsam_futures.query import TaskQuery

    failed, ready = _tasks_with_history(store, 2, 1)
    q = TaskQuery(store)
    rows = q.rows(history=True)
    assert [r["id"] for r in rows] == [*failed, *ready]
    assert rows[-1]["history"] == [] and rows[0]["history"] == store.history(failed[0])
    assert "history" not in q.rows()[0]
    assert q.get(failed[1], history=True)["history"] == store.history(failed[1])
    with pytest.raises(ValueError, match="no task 999"):
        q.get(999)
    assert q.filter(state="FAILED").retry() == 2
    assert q.by_state() == {"READY": 1, "RESTART_READY": 2}


# -- the CLI: one place for user errors, one store per command, choices from registries -------


def _probe_command(raises: BaseException):
    """A throwaway command on a copy of the CLI's group that raises ``raises``."""
    from balsam_futures.cli.main import _OneLineErrors

    group = _OneLineErrors(name="probe")

    @group.command("boom")
    def boom() -> None:
        raise raises

    return group


@pytest.mark.parametrize("exc", [
    SiteError("no site here"), ValueError("bad value"), TypeError("bad type"),
    ImportError("No module named 'matplotlib'"), PermissionError("cannot write plot.png"),
])
def test_a_user_error_in_any_command_is_one_error_line(exc):
    result = CliRunner().invoke(_probe_command(exc), ["boom"])
    assert result.exit_code == 1
    assert result.output == f"error: {exc}\n"


def test_a_password_in_an_error_is_masked():
    result = CliRunner().invoke(_probe_command(ValueError(f"bad {PG_URL.replace('@', ':pw@')}")),
                                ["boom"])
    assert result.exit_code == 1 and ":pw@" not in result.output and "***" in result.output


def test_other_exceptions_and_usage_errors_are_not_user_errors():
    result = CliRunner().invoke(_probe_command(RuntimeError("a bug")), ["boom"])
    assert isinstance(result.exception, RuntimeError)  # a bug keeps its traceback
    result = CliRunner().invoke(_probe_command(click.UsageError("needs a filter")), ["boom"])
    assert result.exit_code == 2 and "Error: needs a filter" in result.output
    result = CliRunner().invoke(_probe_command(BrokenPipeError(32, "Broken pipe")), ["boom"])
    assert "error:" not in result.output  # left to click, which exits quietly


def test_no_command_module_handles_user_errors_itself():
    from pathlib import Path

    import balsam_futures.cli as cli

    for module in Path(cli.__file__).parent.glob("*.py"):
        if module.name not in ("main.py", "_common.py"):
            text = module.read_text()
            assert "USER_ERRORS" not in text and "fail(" not in text, module


def _choices(command: click.Command, option: str) -> list[str]:
    [param] = [p for p in command.params if p.name == option]
    return list(param.type.choices)


def test_choices_come_from_the_registries():
    from balsam_futures.cli import main
    from balsam_futures.launcher.config import JOB_MODES
    from balsam_futures.launcher.mpi import launcher_names
    from balsam_futures.launcher.nodes import DETECTION_ORDER
    from balsam_futures.schedulers import SCHEDULERS

    launcher = main.commands["launcher"]
    submit = main.commands["queue"].commands["submit"]
    assert _choices(launcher, "mpi_launcher") == launcher_names()
    assert _choices(launcher, "platform") == list(DETECTION_ORDER)
    assert _choices(launcher, "job_mode") == _choices(submit, "job_mode") == list(JOB_MODES)
    assert _choices(submit, "scheduler") == list(SCHEDULERS)


def test_every_store_command_has_the_same_site_and_db_url_options():
    from balsam_futures.cli import main

    def commands(group):
        for cmd in group.commands.values():
            yield from commands(cmd) if isinstance(cmd, click.Group) else [cmd]

    seen = {}
    for cmd in commands(main):
        for p in cmd.params:
            if isinstance(p, click.Option) and p.name in ("site", "db_url"):
                seen.setdefault(p.name, set()).add((p.help, p.default, type(p.type)))
    assert {k: len(v) for k, v in seen.items()} == {"site": 1, "db_url": 1}


def test_show_and_ls_history_open_one_store_and_close_it(tmp_path, monkeypatch):
    from balsam_futures.backends.sqlite import SqliteStore
    from balsam_futures.cli import main

    site = tmp_path / "site"
    assert CliRunner().invoke(main, ["init", str(site)]).exit_code == 0
    store = open_store(f"sqlite:///{site / DB_FILE}")
    failed, _ready = _tasks_with_history(store, 2, 1)
    store.close()

    opened, closed, one_by_one = [], [], []
    real_init, real_close = SqliteStore.__init__, SqliteStore.close
    monkeypatch.setattr(SqliteStore, "__init__",
                        lambda self, *a, **kw: opened.append(self) or real_init(self, *a, **kw))
    monkeypatch.setattr(SqliteStore, "close",
                        lambda self: closed.append(self) or real_close(self))
    monkeypatch.setattr(SqliteStore, "history",
                        lambda self, i: one_by_one.append(i) or pytest.fail("history()"))
    for args in (["show", failed[0]], ["ls", "--history"], ["ls", "--history", "--json"]):
        opened.clear()
        closed.clear()
        result = CliRunner().invoke(main, [*map(str, args), "--site", str(site)])
        assert result.exit_code == 0, result.output
        assert len(opened) == 1 and closed == opened, args
    assert not one_by_one
    assert f"ran {failed[0]}" in result.output


def test_a_tag_given_twice_matches_either_value():
    from balsam_futures.cli._common import parse_tag_choices

    assert parse_tag_choices(("exp=a", "site=x", "exp=b", "exp=a")) == {
        "exp": ("a", "b"), "site": "x"}
    with pytest.raises(click.BadParameter):
        parse_tag_choices(("exp",))
