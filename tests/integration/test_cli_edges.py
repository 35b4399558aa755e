"""The command line at its edges: no site, values the store must not get, illegal state moves,
broken URLs and settings; every one is a single ``error:`` line and exit status 1."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from balsam_futures.backends import open_store
from balsam_futures.cli import main
from balsam_futures.tasks import TaskOptions, TaskSpec

pytestmark = pytest.mark.timeout(60)

SECRET = "s3cr3t-Passw0rd"


def run(*args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    return result.exit_code, result.output


def assert_one_error_line(code, out, *fragments):
    assert code == 1, out
    assert out.startswith("error: ") and out.count("\n") == 1, out
    assert "Traceback" not in out
    for fragment in fragments:
        assert fragment in out, out


@pytest.fixture
def site(tmp_path):
    """A site with one READY task; returns (path, task id)."""
    path = tmp_path / "site"
    assert run("init", path)[0] == 0
    store = open_store(f"sqlite:///{path / 'balsam.db'}")
    [task_id] = store.create_tasks([TaskSpec("python", b"p", TaskOptions(), "t")])
    store.close()
    return path, task_id


def task_row(path, task_id):
    code, out = run("ls", "--site", path, "--id", task_id, "--json")
    assert code == 0
    return json.loads(out)[0]


# -- commands that read a site do not create one ---------------------------------------------


@pytest.mark.parametrize("args", [
    ["ls"], ["ls", "--by-states"], ["show", "1"], ["stats"], ["retry", "--state", "FAILED"],
    ["kill", "--id", "1"], ["rm", "--id", "1"], ["modify", "1", "priority=2"],
    ["queue", "ls"], ["queue", "rm", "1"],
])
def test_commands_at_a_path_with_no_site_say_so_and_create_nothing(tmp_path, args):
    nowhere = tmp_path / "nowhere"
    code, out = run(*args, "--site", nowhere)
    assert_one_error_line(code, out, f"error: no site at {nowhere} (create one with "
                                     "balsam-futures init, or pass --site/--db-url)")
    assert not nowhere.exists()


def test_a_directory_without_a_database_is_no_site_either(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_error_line(*run("ls", "--site", empty), "no site at")
    assert list(empty.iterdir()) == []


def test_init_still_creates_a_site_that_ls_then_reads(tmp_path):
    path = tmp_path / "fresh"
    assert run("init", path)[0] == 0
    assert run("ls", "--site", path, "--by-states", "--json") == (0, "{}\n")


# -- modify checks values as submit() does ---------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ("ranks_per_node=0", "ranks_per_node must be >= 1"),
    ("num_nodes=-5", "num_nodes must be >= 1"),
    ("priority=1e20", "priority must be an integer, not '1e20'"),
    ("priority=99999999999999999999", "priority must be >= -2147483648 and <= 2147483647"),
    ("max_retries=-1", "max_retries must be >= 0"),
    ("wall_time_s=nan", "wall_time_s: timeout must be > 0"),
    ("wall_time_s=soon", "wall_time_s must be a number of seconds, not 'soon'"),
    ("priority", "'priority' is not FIELD=VALUE"),
])
def test_modify_refuses_values_submit_refuses(site, change, message):
    path, task_id = site
    assert_one_error_line(*run("modify", "--site", path, task_id, change), message)
    row = task_row(path, task_id)
    assert (row["num_nodes"], row["ranks_per_node"], row["priority"]) == (1, 1, 0)


def test_modify_of_a_valid_value_is_applied(site):
    path, task_id = site
    code, out = run("modify", "--site", path, task_id, "ranks_per_node=4", "priority=-3")
    assert code == 0 and out == f"modified task {task_id}\n"
    row = task_row(path, task_id)
    assert (row["ranks_per_node"], row["priority"]) == (4, -3)


# -- modify state=: only legal moves, never into a launcher's states -------------------------


@pytest.mark.parametrize("state, why", [
    ("RUNNING", " (only a launcher moves tasks there)"),
    ("CLAIMED", " (only a launcher moves tasks there)"),
    ("JOB_FINISHED", ""),
    ("RESTART_READY", ""),
])
def test_modify_refuses_an_illegal_move_with_the_allowed_targets(site, state, why):
    path, task_id = site
    code, out = run("modify", "--site", path, task_id, f"state={state}")
    assert_one_error_line(code, out, f"error: task {task_id} is READY and cannot be moved to "
                                     f"{state}{why}; it can be moved to: CANCELLED")
    assert task_row(path, task_id)["state"] == "READY"


def test_modify_makes_a_legal_move(site):
    path, task_id = site
    assert run("modify", "--site", path, task_id, "state=CANCELLED")[0] == 0
    assert task_row(path, task_id)["state"] == "CANCELLED"
    # CANCELLED is final: nothing further is allowed.
    assert_one_error_line(*run("modify", "--site", path, task_id, "state=READY"),
                          "it can be moved to: no other state")


def test_modify_of_a_missing_task(site):
    path, _ = site
    assert_one_error_line(*run("modify", "--site", path, 999, "priority=1"), "no task 999")


# -- URLs: broken ones are errors, passwords never show --------------------------------------


def test_a_port_that_is_not_a_number_is_one_error_line_with_the_password_masked(site):
    path, _ = site
    url = f"postgresql://u:{SECRET}@host:abc/db?password={SECRET}"
    for args in (["ls"], ["queue", "ls"], ["stats"]):
        code, out = run(*args, "--site", path, "--db-url", url)
        assert_one_error_line(code, out, "port must be a number",
                              "postgresql://u:***@host:abc/db?password=***")
        assert SECRET not in out


def test_a_query_parameter_that_does_not_parse_is_an_error_with_the_password_masked():
    pytest.importorskip("psycopg2")
    # The password glued to the port by a second "?": SQLAlchemy's message quotes both.
    code, out = run("ls", "--db-url", f"postgresql://u@/db?port=5432?password={SECRET}")
    assert_one_error_line(code, out, "database URL postgresql://u@/db?port=5432?password=***")
    assert SECRET not in out


def test_a_query_password_is_masked_in_a_connection_error(tmp_path):
    pytest.importorskip("psycopg2")
    url = f"postgresql://someone@127.0.0.1:1/nodb?sslmode=disable&password={SECRET}"
    code, out = run("ls", "--db-url", url)
    assert_one_error_line(code, out, "password=***", "is unavailable")
    assert SECRET not in out


def test_a_bad_setting_is_one_error_line_naming_the_variable(site):
    path, _ = site
    code, out = run("launcher", "--site", path, "--idle-timeout", "0.1",
                    env={"BALSAM_FUTURES_LEASE_SECONDS": "abc"})
    assert_one_error_line(code, out, "BALSAM_FUTURES_LEASE_SECONDS='abc'")
    code, out = run("ls", env={"BALSAM_FUTURES_DB_URL": f"host=h password={SECRET}"})
    assert_one_error_line(code, out, "BALSAM_FUTURES_DB_URL")
    assert SECRET not in out


def test_virtual_nodes_on_a_batch_systems_nodes_are_refused_by_the_librarys_rule(tmp_path):
    path = tmp_path / "site"
    code, out = run("launcher", "--site", path, "--platform", "pbs", "--nodes", "2")
    assert_one_error_line(code, out, "virtual nodes (--nodes) are for the local platform; pbs "
                                     "says how many nodes the allocation has")
    assert not path.exists()


def test_db_upgrade_of_a_site_reports_its_schema_version(site):
    path, _ = site
    code, out = run("db", "upgrade", "--site", path)
    assert code == 0 and out.startswith(f"{path / 'balsam.db'}: schema version ")


# -- launcher logs ---------------------------------------------------------------------------


def test_launcher_logs_are_private(make_executor, site_dir):
    ex = make_executor(max_workers=1)
    assert ex.submit(int, "7").result(timeout=30) == 7
    logs = list((site_dir / "logs").glob("launcher-*.log"))
    assert logs
    for log in logs:
        assert stat.S_IMODE(os.stat(log).st_mode) == 0o600


@pytest.mark.postgres
def test_a_query_password_is_absent_from_launcher_logs(pg_url, tmp_path):
    from balsam_futures import BalsamExecutor

    # The test server trusts local connections: the password is accepted and ignored.
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}password={SECRET}"
    with BalsamExecutor(max_workers=1, site=tmp_path / "site", db_url=url) as ex:
        assert ex.submit(int, "7").result(timeout=30) == 7
        assert SECRET not in ex.store.display_url
    logs = list((tmp_path / "site" / "logs").iterdir())
    assert logs
    for log in logs:
        assert SECRET not in log.read_text()
