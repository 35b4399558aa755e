"""`db start --listen`: the site's own PostgreSQL on TCP, for real over 127.0.0.1."""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner

from balsam_futures.backends import open_store
from balsam_futures.backends.pgserver import Listen, LocalPostgres
from balsam_futures.cli.main import main
from balsam_futures.errors import BalsamFuturesError
from balsam_futures.tasks import Resources, TaskOptions, TaskSpec, TaskState

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(150)]


def db(*args):
    result = CliRunner().invoke(main, ["db", *map(str, args)])
    return result.exit_code, result.stdout, result.output


def _run_as() -> list[str]:
    return ["--run-as", "postgres"] if os.geteuid() == 0 else []


def test_a_launcher_elsewhere_connects_by_tcp_with_the_site_password(pg_site, tmp_path,
                                                                      monkeypatch):
    code, out, both = db("start", "--site", pg_site, "--listen", "127.0.0.1", *_run_as())
    assert code == 0, both
    url = out.strip().splitlines()[-1]
    port = LocalPostgres(pg_site / "postgres").port()
    assert url == f"postgresql://balsam@127.0.0.1:{port}/balsam"  # no password in it
    pgpass = pg_site / "postgres" / "pgpass"
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
    password = pgpass.read_text().strip().split(":")[-1]
    assert len(password) >= 32 and password not in both

    hba = (pg_site / "postgres" / "pgdata" / "pg_hba.conf").read_text().splitlines()
    rules = [line.split() for line in hba if line.strip() and not line.startswith("#")]
    assert ["host", "all", "balsam", "127.0.0.1/32", "scram-sha-256"] in rules
    for rule in rules:  # trust on the private unix socket only, never on TCP
        assert rule[0] == "local" or rule[-1] == "scram-sha-256", rule

    env_out = CliRunner().invoke(main, ["env", str(pg_site)]).stdout
    assert f"export PGPASSFILE={pgpass}" in env_out

    # A launcher in another process, with only PGPASSFILE to find the password.
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    store = open_store(url)
    try:
        ids = store.create_tasks([TaskSpec("python", b"-", TaskOptions(
            data={"sim_seconds": 0.01, "sim_result": "over tcp"},
            resources=Resources(gpus_per_rank=1)), name="t") for _ in range(8)])
        proc = subprocess.run(
            [sys.executable, "-m", "balsam_futures", "launcher", "--site", str(pg_site),
             "--db-url", url, "--simulate", "--nodes", "2", "--gpus-per-node", "2",
             "--idle-timeout", "1"],
            env={**os.environ, "PGPASSFILE": str(pgpass)}, capture_output=True, text=True,
            timeout=90)
        assert proc.returncode == 0, proc.stderr
        assert password not in proc.stdout + proc.stderr
        events = store.task_outcomes(ids)
        assert [e.state for e in events] == [TaskState.JOB_FINISHED] * 8
        assert {pickle.loads(e.result) for e in events} == {"over tcp"}
    finally:
        store.close()

    # A wrong password, or none, is refused, and says so.
    wrong = tmp_path / "wrong-pgpass"
    wrong.write_text(f"*:{port}:*:balsam:not-the-password\n")
    wrong.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(wrong))
    with pytest.raises(BalsamFuturesError, match="password authentication failed"):
        open_store(url).close()
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(BalsamFuturesError, match="password"):
        open_store(url).close()

    # A restart keeps listening with the same password; --unix-only stops TCP.
    assert db("stop", "--site", pg_site)[0] == 0
    code, out, both = db("start", "--site", pg_site)
    assert code == 0 and out.strip().splitlines()[-1] == url, both
    assert pgpass.read_text().strip().split(":")[-1] == password
    assert db("stop", "--site", pg_site)[0] == 0
    code, out, both = db("start", "--site", pg_site, "--unix-only")
    assert code == 0 and "host=" in out, both
    hba = (pg_site / "postgres" / "pgdata" / "pg_hba.conf").read_text()
    assert "host " not in hba and "127.0.0.1" not in hba


def test_listen_settings_are_checked_naming_the_option():
    assert Listen.parse("127.0.0.1:5999") == Listen("127.0.0.1", 5999, "127.0.0.1/32")
    assert Listen.parse("[::1]", None).allow == "::1/128"
    assert Listen.parse("*", "10.1.0.0/16").allow == "10.1.0.0/16"
    with pytest.raises(ValueError, match="--allow"):
        Listen.parse("0.0.0.0")  # every interface: the clients must be named
    with pytest.raises(ValueError, match="--allow"):
        Listen.parse("127.0.0.1", "not-a-net")
    with pytest.raises(ValueError, match="port"):
        Listen.parse("127.0.0.1:99999")
    with pytest.raises(ValueError, match="HOST"):
        Listen.parse("127.0.0.1' -c log_statement='all")  # nothing but a host goes through
    code, _out, both = db("start", "--allow", "10.0.0.0/8")
    assert code != 0 and "--listen" in both
