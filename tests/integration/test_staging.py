"""Data staging through a real launcher: inputs downloaded from a real HTTP server on
127.0.0.1 and copied from local paths before the task is claimable for running, outputs
shipped after a successful run, failures recorded with the transfer's own words, on both
backends.  (The transports alone, rsync and Globus included: tests/unit/test_staging_*.)"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest

from balsam_futures import ShellApp
from balsam_futures.errors import StagingError

pytestmark = pytest.mark.timeout(120)
RESULT_S = 60


@pytest.fixture
def web(tmp_path):
    """A real HTTP server over a directory; yields (its base URL, the directory)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(params=["sqlite", "postgres"])
def executor(request, make_executor):
    db_url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    return make_executor(db_url=db_url)


def count_words(name):
    """Runs in the task's working directory, where its inputs were staged."""
    words = len(Path(name).read_text().split())
    Path("count.txt").write_text(str(words))
    return words


def states(ex, fut) -> list[str]:
    return [h["to_state"] for h in ex.store.history(fut.task_id)]


def test_inputs_come_in_before_the_run_and_outputs_go_out_after(executor, web, tmp_path):
    base, root = web
    (root / "words.txt").write_text("one two three four")
    local = tmp_path / "local.txt"
    local.write_text("x y")
    outbox = tmp_path / "outbox"
    digest = hashlib.sha256(b"one two three four").hexdigest()
    fut = executor.options(
        stage_in=[(f"{base}/words.txt#sha256={digest}", "words.txt"), (str(local), "in/")],
        stage_out=[("count.txt", f"file://{outbox}/"), ("in/*.txt", f"{outbox}/copies/")],
    ).submit(count_words, "words.txt")
    assert fut.result(timeout=RESULT_S) == 4
    assert (outbox / "count.txt").read_text() == "4"
    assert (outbox / "copies" / "local.txt").read_text() == "x y"
    assert states(executor, fut) == [
        "STAGING_IN", "STAGED_IN", "READY", "CLAIMED", "RUNNING", "RUN_DONE", "STAGING_OUT",
        "STAGED_OUT", "JOB_FINISHED"]
    row = executor.tasks().get(fut.task_id)
    assert row["staging"]["in"][1] == [str(local), "in/"]
    # It ran where its inputs were staged: where a shell task of its name would run.
    workdir = executor.site / "data" / "default" / f"{row['name']}_{fut.task_id}"
    assert (workdir / "words.txt").read_text() == "one two three four"
    assert (workdir / "count.txt").read_text() == "4"


def test_a_failed_download_fails_its_task_only_with_the_servers_words(executor, web, tmp_path):
    base, root = web
    (root / "ok.txt").write_text("a b")
    bad = executor.options(stage_in=[(f"{base}/missing.txt", "words.txt")]
                           ).submit(count_words, "words.txt")
    good = executor.options(stage_in=[(f"{base}/ok.txt", "words.txt")]
                            ).submit(count_words, "words.txt")
    assert good.result(timeout=RESULT_S) == 2
    with pytest.raises(StagingError, match="404"):
        bad.result(timeout=RESULT_S)
    history = executor.store.history(bad.task_id)
    assert [h["to_state"] for h in history] == ["STAGING_IN", "FAILED"]
    assert "404" in history[-1]["message"] and "stage_in failed" in history[-1]["message"]
    # A retry fetches the inputs again (now present on the server) and runs.
    (root / "missing.txt").write_text("c d e")
    assert executor.tasks().filter(id=bad.task_id).retry() == 1
    assert executor.tasks().get(bad.task_id)["state"] in (
        "AWAITING_STAGE_IN", "STAGING_IN", "STAGED_IN", "READY", "CLAIMED", "RUNNING",
        "JOB_FINISHED")


def test_an_output_pattern_that_matches_nothing_fails_the_task_after_its_run(executor,
                                                                            tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("w")
    fut = executor.options(stage_in=[(str(src), "in.txt")],
                           stage_out=[("*.dat", f"{tmp_path}/out/")]).submit(count_words,
                                                                           "in.txt")
    with pytest.raises(StagingError, match=r"'\*\.dat' matched no file"):
        fut.result(timeout=RESULT_S)
    assert states(executor, fut)[-3:] == ["RUN_DONE", "STAGING_OUT", "FAILED"]


def test_bad_urls_are_refused_at_submit_naming_the_field(executor):
    with pytest.raises(ValueError, match=r"stage_in\[0\].*ftp"):
        executor.options(stage_in=[("ftp://host/x", "x")])
    with pytest.raises(ValueError, match=r"stage_out\[0\]"):
        executor.options(stage_out=[("out.txt", "http://host/upload/")])
    with pytest.raises(ValueError, match=r"stage_in\[0\]"):
        executor.options(stage_in=[("/data/x", "../escape")])
    assert executor.tasks().count() == 0


def test_a_present_file_of_the_right_checksum_is_not_copied_again(executor, tmp_path):
    src = tmp_path / "big.txt"
    src.write_text("p q r")
    run = executor.options(workdir=str(tmp_path / "shared"), stage_in=[(str(src), "big.txt")])
    assert run.submit(count_words, "big.txt").result(timeout=RESULT_S) == 3
    second = run.submit(count_words, "big.txt")
    assert second.result(timeout=RESULT_S) == 3
    message = next(h["message"] for h in executor.store.history(second.task_id)
                   if h["to_state"] == "STAGED_IN")
    assert "0 file(s) transferred, 1 already present" in message


def test_a_shell_campaign_downloads_runs_and_ships_back(executor, web, tmp_path):
    base, root = web
    for i in range(3):
        (root / f"in{i}.txt").write_text(" ".join("w" * (i + 1)))
    app = ShellApp("wc -w < input.txt > words.txt", name="wc")
    outbox = tmp_path / "results"
    futs = [executor.options(stage_in=[(f"{base}/in{i}.txt", "input.txt")],
                             stage_out=[("words.txt", f"{outbox}/words{i}.txt")]).submit(app)
            for i in range(3)]
    for fut in futs:
        assert fut.result(timeout=RESULT_S).return_code == 0
    assert [int((outbox / f"words{i}.txt").read_text()) for i in range(3)] == [1, 2, 3]


def test_without_a_launcher_a_task_waits_for_its_inputs_visibly(make_executor, tmp_path):
    ex = make_executor(launcher=False)
    fut = ex.options(stage_in=[(str(tmp_path), "x/")]).submit(count_words, "x")
    assert fut.task_id is not None
    assert ex.tasks().get(fut.task_id)["state"] == "AWAITING_STAGE_IN"
    assert ex.tasks().filter(state="AWAITING_STAGE_IN").count() == 1
    fut.cancel()
    assert os.path.isdir(tmp_path)


def test_a_cached_call_with_other_inputs_is_another_call(make_executor, tmp_path):
    ex = make_executor(cache=True)
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("one")
    second.write_text("one two")
    counts = [ex.options(stage_in=[(str(src), "in.txt")]).submit(count_words, "in.txt")
              for src in (first, second, first)]
    assert [f.result(timeout=RESULT_S) for f in counts] == [1, 2, 1]
    rows = [ex.tasks().get(f.task_id) for f in counts]
    assert rows[1]["cached_from"] is None and rows[2]["cached_from"] == counts[0].task_id
