"""The site's own PostgreSQL server (``balsam-futures db``) across a stop and a start: it keeps
its port, open stores carry on without an error, and as root the commands find the server's
user without ``--run-as``.

Each test has a private cluster in a directory the server's user can enter (as root the
server runs as ``postgres``), driven through the CLI in process, as a user would.
"""

from __future__ import annotations

import os
import shutil
import socket
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from balsam_futures.backends import open_store
from balsam_futures.cli import main
from balsam_futures.errors import StoreError
from balsam_futures.tasks import TaskOptions, TaskSpec

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

ROOT = os.geteuid() == 0
#: As root the cluster is created for an unprivileged user (PostgreSQL refuses root).
RUN_AS = ["--run-as", "postgres"] if ROOT else []


@pytest.fixture
def site(pg_site):
    return pg_site


def db(*args):
    """Run ``balsam-futures db ARGS``; returns (exit code, stdout, stdout and stderr)."""
    result = CliRunner().invoke(main, ["db", *map(str, args)])
    return result.exit_code, result.stdout, result.output


def start(site, *extra) -> str:
    code, out, both = db("start", "--site", site, *extra)
    assert code == 0, both
    return out.strip().splitlines()[-1]


def port_of(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["port"][0])


def spec(name: str) -> TaskSpec:
    return TaskSpec("python", b"p", TaskOptions(), name)


@pytest.mark.parametrize("first", ["read", "write"])
def test_stop_then_start_keeps_the_port_and_an_open_store_carries_on(site, first):
    url = start(site, *RUN_AS)
    store = open_store(url)
    try:
        before = store.create_tasks([spec("before")])  # this thread now holds a connection
        assert store.latest_event_id() >= 0
        code, _, both = db("stop", "--site", site)
        assert code == 0, both
        code, out, _ = db("status", "--site", site)
        assert (code, out.strip()) == (3, "stopped")
        assert start(site) == url, "the server moved: URLs handed out no longer reach it"
        # The first statement on the connection opened before the restart must not fail.
        if first == "read":
            assert [e.task_id for e in store.task_outcomes(before)] == before
        else:
            after = store.create_tasks([spec("after")])
            assert [t["name"] for t in store.get_tasks(after)] == ["after"]
    finally:
        store.close()


def test_a_statement_the_database_rejects_after_a_restart_runs_once(site):
    url = start(site, *RUN_AS)
    store = open_store(url)
    try:
        with store._raw_write() as cur:
            cur.execute("CREATE SEQUENCE runs")  # sequences ignore rollbacks: they count runs
        assert db("stop", "--site", site)[0] == 0
        assert start(site) == url
        with pytest.raises(StoreError) as raised, store._raw_write() as cur:
            cur.execute("SELECT nextval('runs') / 0")
        # The database's own error comes through (not a failed rollback's), and only once.
        assert type(raised.value.__cause__).__name__ == "DivisionByZero"
        with store._raw_write() as cur:
            cur.execute("SELECT last_value FROM runs")
            assert cur.fetchone()[0] == 1, "the rejected statement was run again"
    finally:
        store.close()


def test_a_taken_port_is_an_error_that_names_it_not_a_move(site):
    url = start(site, *RUN_AS)
    port = port_of(url)
    assert db("stop", "--site", site)[0] == 0
    # Let the server listen on TCP too (as for launchers on other nodes), and take its port.
    with open(site / "postgres" / "pgdata" / "postgresql.conf", "a") as conf:
        conf.write("\nlisten_addresses = '127.0.0.1'\n")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        code, _, both = db("start", "--site", site)
    assert code == 1, both
    [error] = both.strip().splitlines()  # one line, saying which port and what to do
    assert error.startswith("error: ") and f"port {port}" in error and "stop the other" in error
    assert (site / "postgres" / "port").read_text().strip() == str(port)
    assert start(site) == url, "once the port is free again, the server starts on it"


@pytest.mark.skipif(not ROOT, reason="only root needs --run-as")
def test_as_root_status_and_stop_find_the_servers_user_without_run_as(site):
    import psycopg2

    url = start(site, *RUN_AS)
    code, out, both = db("status", "--site", site)
    assert (code, out.strip()) == (0, f"running: {url}"), both
    code, _, both = db("stop", "--site", site)
    assert code == 0, both
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(url).close()  # stopped for real: nothing answers on its socket
    code, out, _ = db("status", "--site", site)
    assert (code, out.strip()) == (3, "stopped")
    assert start(site) == url  # started again as the data directory's owner
    psycopg2.connect(url).close()


@pytest.mark.skipif(not ROOT, reason="only root gets a pg_ctl that refuses to answer")
def test_as_root_a_status_pg_ctl_cannot_give_is_an_error_not_stopped(site):
    datadir = site / "postgres" / "pgdata"
    datadir.mkdir(parents=True)
    (datadir / "PG_VERSION").write_text("15\n")  # a cluster owned by root: pg_ctl refuses
    try:
        code, _, both = db("status", "--site", site)
    finally:
        shutil.rmtree(datadir)  # nothing for the fixture to stop
    assert code == 1, both
    [error] = both.strip().splitlines()
    assert error.startswith("error: cannot tell whether the server") and "--run-as" in error
