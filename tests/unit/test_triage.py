"""The failure signature: what differs from task to task is masked, the cause is kept."""

from __future__ import annotations

import pickle

import pytest

from balsam_futures.errors import ShellTaskError
from balsam_futures.serialization import dump_exception
from balsam_futures.triage import (
    error_summary,
    group_failures,
    innermost_frame,
    mask,
    signature,
    unpack_error,
)

pytestmark = pytest.mark.timeout(30)


def test_mask_hides_numbers_paths_ids_and_addresses():
    text = ("object at 0x7f3a2c10 failed on /scratch/u/run12/out.h5 after 3.5e3 s, "
            "id 6f1c2a9e-0b1d-4c3e-9f00-1234567890ab, hash deadbeefdeadbeef99")
    assert mask(text) == ("object at <addr> failed on <path> after <n> s, id <uuid>, "
                          "hash <id>")


def test_python_error_summary_and_signature():
    def boom(i):
        raise ValueError(f"bad input {i}\nsecond line")

    blobs = []
    for i in range(2):
        try:
            boom(i)
        except ValueError as exc:
            blobs.append(dump_exception(exc, f"Task {i}"))
    assert error_summary(blobs[0]) == "ValueError: bad input 0"
    sigs = {signature(unpack_error(b)) for b in blobs}
    assert len(sigs) == 1
    (sig,) = sigs
    assert sig.startswith("ValueError: bad input <n> @ boom (test_triage.py:")


def test_shell_error_summary_keeps_the_code_and_last_line():
    err = ShellTaskError(3, "run.sh 7", workdir="/w/7", output_tail="step 1\nno space left "
                         "on /dev/sda1", task_id=7)
    blob = dump_exception(err, "Task 7")
    assert error_summary(blob) == "exit code 3: no space left on /dev/sda1"
    assert signature(unpack_error(blob)) == "shell exit code <n>: no space left on <path>"
    killed = dump_exception(ShellTaskError(-9, "x", task_id=1), "Task 1")
    assert error_summary(killed) == "signal SIGKILL"


def test_unreadable_errors_and_foreign_frames():
    assert unpack_error(b"not a pickle") is None and unpack_error(None) is None
    assert unpack_error(pickle.dumps([1])) is None
    assert error_summary(b"junk", "the task raised an exception") == \
        "the task raised an exception"
    tb = ('File "/x/balsam_futures/launcher/workers/process.py", line 266, in _run_task\n'
          'File "/home/me/model.py", line 9, in train\n'
          'File "/usr/lib/python3.11/json/decoder.py", line 3, in decode\n')
    assert innermost_frame(tb) == "train (model.py:9)"
    groups = group_failures([{"id": 1, "error": None, "updated_at": 1.0, "message": "x 1"},
                             {"id": 2, "error": None, "updated_at": 2.0, "message": "x 2"}])
    assert [(g.count, g.signature, g.first_seen, g.last_seen) for g in groups] == \
        [(2, "x <n>", 1.0, 2.0)]
