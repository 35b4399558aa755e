"""rsync:// staging end to end: a real rsync daemon on 127.0.0.1 serves a module; a task's
inputs come from it and its outputs go back to it through a real launcher."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")]
RESULT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rsync_daemon(tmp_path):
    """(URL of the module, its directory)."""
    root = tmp_path / "module"
    root.mkdir()
    port = _free_port()
    conf = tmp_path / "rsyncd.conf"
    owner = "uid = root\ngid = root\n" if os.geteuid() == 0 else ""
    conf.write_text(f"use chroot = no\npid file = {tmp_path / 'rsyncd.pid'}\n{owner}"
                    f"[data]\npath = {root}\nread only = no\n")
    proc = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={conf}",
                             f"--port={port}", "--address=127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:  # until it accepts connections (or says why not)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"rsync daemon did not start: {proc.stderr.read().decode()}")
            time.sleep(0.05)
    yield f"rsync://127.0.0.1:{port}/data", root
    proc.terminate()
    proc.wait(timeout=10)


def shout(name):
    text = Path(name).read_text()
    Path("loud.txt").write_text(text.upper())
    return len(text)


def test_inputs_from_and_outputs_to_an_rsync_daemon(make_executor, rsync_daemon):
    url, root = rsync_daemon
    (root / "quiet.txt").write_text("hello rsync")
    (root / "results").mkdir()
    ex = make_executor()
    fut = ex.options(stage_in=[(f"{url}/quiet.txt", "quiet.txt")],
                     stage_out=[("loud.txt", f"{url}/results/")]).submit(shout, "quiet.txt")
    assert fut.result(timeout=RESULT_S) == 11
    assert (root / "results" / "loud.txt").read_text() == "HELLO RSYNC"
    states = [h["to_state"] for h in ex.store.history(fut.task_id)]
    assert states[:2] == ["STAGING_IN", "STAGED_IN"] and states[-2:] == ["STAGED_OUT",
                                                                          "JOB_FINISHED"]
    # The same inputs again, into the same working directory: rsync skips what is there.
    again = ex.options(workdir=f"default/shout_{fut.task_id}",
                       stage_in=[(f"{url}/quiet.txt", "quiet.txt")]).submit(shout, "quiet.txt")
    assert again.result(timeout=RESULT_S) == 11
    message = next(h["message"] for h in ex.store.history(again.task_id)
                   if h["to_state"] == "STAGED_IN")
    assert "0 file(s) transferred, 1 already present" in message, message
