"""Each scheduler class: exact command lines, and parsing of recorded output (tests/schedulers/
data).  No scheduler runs: the one subprocess call (``Scheduler._run``) is replaced by a fake
that records argv and answers with the recorded text."""

from __future__ import annotations

from pathlib import Path

import pytest

from balsam_futures.schedulers import get_scheduler
from balsam_futures.schedulers.base import (
    BatchJobState,
    SchedulerCommandFailed,
    SchedulerCommandNotFound,
    SchedulerError,
    SchedulerSubmitError,
)
from balsam_futures.schedulers.flux import f58_to_int

pytestmark = pytest.mark.timeout(30)

DATA = Path(__file__).parent / "data"
B = BatchJobState


def recorded(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


class FakeRun:
    """Stands in for ``Scheduler._run``: records argv and stdin, answers from a script."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, argv, *, stdin=None, ok=frozenset({0}), cwd=None):
        self.calls.append((list(argv), stdin))
        self.cwd = cwd
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def scheduler_with(name, *answers):
    sched = get_scheduler(name)
    fake = sched._run = FakeRun(*answers)
    return sched, fake


# -- one suite, every scheduler ---------------------------------------------------------------

CASES = {
    # name: (submit output, expected id, status output, {id: (state, native)})
    "slurm": ("42\n", "42", recorded("slurm_squeue.txt"),
              {"1": (B.FINISHED, "COMPLETED"), "4": (B.RUNNING, "RUNNING"),
               "2": (B.FINISHED, "CANCELLED"), "5": (B.QUEUED, "PENDING")}),
    "pbs": ("1234.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov\n",
            "1234.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov",
            recorded("pbs_qstat_f_pbspro.txt"),
            {"1234.polaris-pbs-01": (B.RUNNING, "R"), "1235.polaris-pbs-01": (B.QUEUED, "Q")}),
    "cobalt": (recorded("cobalt_qsub.txt"), "512300", recorded("cobalt_qstat.txt"),
               {"512300": (B.RUNNING, "running"), "512301": (B.QUEUED, "queued"),
                "512302": (B.QUEUED, "user_hold")}),
    "lsf": (recorded("lsf_bsub.txt"), "901234", recorded("lsf_bjobs.json"),
            {"901234": (B.RUNNING, "RUN"), "901235": (B.QUEUED, "PEND"),
             "901236": (B.FINISHED, "EXIT")}),
    "flux": (recorded("flux_batch.txt"), "1234", recorded("flux_jobs.txt"),
             {"6731191091817518": (B.RUNNING, "RUN"), "633528662": (B.QUEUED, "SCHED"),
              "1234": (B.FINISHED, "INACTIVE")}),
}

SUBMIT_ARGV = {
    "slurm": ["sbatch", "--parsable", "{script}"],
    "pbs": ["qsub", "{script}"],
    "cobalt": ["qsub", "{script}"],
    "lsf": ["bsub"],
    "flux": ["flux", "batch", "{script}"],
}
STATUS_ARGV = {
    "slurm": ["squeue", "--noheader", "--states=all", "--jobs={ids}",
              "--format=%i|%T|%P|%D|%l|%M|%r"],
    "pbs": ["qstat", "-f", "{*ids}"],
    "cobalt": ["qstat", "--header", "JobID:State:Queue:Nodes:WallTime:RunTime", "{*ids}"],
    "lsf": ["bjobs", "-a", "-json", "-o", "jobid stat queue nexec_host exit_code", "{*ids}"],
    "flux": ["flux", "jobs", "-n", "--format={id.dec}|{state}|{result}|{nnodes}|{runtime}",
             "{*ids}"],
}
DELETE_ARGV = {"slurm": ["scancel"], "pbs": ["qdel"], "cobalt": ["qdel"], "lsf": ["bkill"],
               "flux": ["flux", "cancel"]}


def expand(template, script="", ids=()):
    out = []
    for word in template:
        if word == "{*ids}":
            out.extend(ids)
        else:
            out.append(word.replace("{script}", str(script)).replace("{ids}", ",".join(ids)))
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_submit_command_and_id(name, tmp_path):
    out, expected_id, _status, _states = CASES[name]
    script = tmp_path / "bf-job-1.sh"
    script.write_text("#!/bin/bash\n#DIRECTIVES\nexec launcher\n")
    sched, fake = scheduler_with(name, out)
    assert sched.submit(script, tmp_path / "job.log") == expected_id
    argv, stdin = fake.calls[0]
    assert argv == expand(SUBMIT_ARGV[name], script)
    # LSF reads the directives only from a script on stdin; the others get the path.
    assert stdin == (script.read_text() if name == "lsf" else None)
    assert fake.cwd == tmp_path  # the script's folder


@pytest.mark.parametrize("name", sorted(CASES))
def test_status_command_and_parsing(name):
    _out, _id, status_text, expected = CASES[name]
    ids = list(expected)
    sched, fake = scheduler_with(name, status_text, "")  # "" answers a history command
    found = sched.statuses(ids)
    assert fake.calls[0][0] == expand(STATUS_ARGV[name], ids=ids)
    assert {i: (s.state, s.native) for i, s in found.items()} == expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_delete_command(name):
    sched, fake = scheduler_with(name, "")
    sched.delete("77")
    assert fake.calls[0][0] == DELETE_ARGV[name] + ["77"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_unknown_native_state_keeps_the_job_state(name, caplog):
    sched = get_scheduler(name)
    assert sched.translate("NO_SUCH_STATE") is None
    assert "NO_SUCH_STATE" in caplog.text


@pytest.mark.parametrize("name", sorted(CASES))
def test_submit_answer_without_an_id_is_an_error(name, tmp_path):
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/bash\n")
    sched, _fake = scheduler_with(name, "something went sideways\n")
    with pytest.raises(SchedulerSubmitError, match="no job id"):
        sched.submit(script, tmp_path / "log")


# -- details of each system ---------------------------------------------------------------------


def test_slurm_status_details_and_history_for_jobs_gone_from_squeue():
    sched, fake = scheduler_with("slurm", recorded("slurm_squeue.txt"), recorded("slurm_sacct.txt"))
    found = sched.statuses(["4", "5", "7", "8", "9", "10"])
    # Jobs squeue no longer lists are asked of sacct, in one call.
    assert fake.calls[1][0] == ["sacct", "--noheader", "--parsable2", "--allocations",
                                "--jobs=7,8,9,10",
                                "--format=JobID,State,Partition,NNodes,Timelimit,Elapsed,"
                                "ExitCode"]
    assert found["5"].details["reason"] == "PartitionDown"
    assert found["5"].details["queue"] == "down"
    assert (found["8"].state, found["8"].native) == (B.FINISHED, "CANCELLED")  # "by 1000"
    assert found["9"].native == "TIMEOUT" and found["9"].details["exit_code"] == "0:15"
    assert "10" not in found  # known to neither: gone


def test_slurm_history_failure_is_not_an_error():
    # Without accounting, sacct fails ("Slurm accounting storage is disabled").
    sched, _ = scheduler_with("slurm", recorded("slurm_squeue.txt"), SchedulerCommandFailed(
        "sacct exited with code 1", argv=["sacct"], returncode=1,
        stderr="Slurm accounting storage is disabled"))
    assert set(sched.statuses(["4", "99"])) == {"4"}


def test_slurm_single_unknown_id_means_gone():
    err = "slurm_load_jobs error: Invalid job id specified\n"
    sched, _ = scheduler_with("slurm", SchedulerCommandFailed(
        "squeue exited with code 1", argv=["squeue"], returncode=1, stderr=err), "")
    assert sched.statuses(["999"]) == {}


def test_slurm_rejection_carries_its_words(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/bash\n")
    stderr = recorded("slurm_sbatch_rejected.txt")
    sched, _ = scheduler_with("slurm", SchedulerCommandFailed(
        "sbatch exited with code 1", argv=["sbatch"], returncode=1, stderr=stderr))
    with pytest.raises(SchedulerSubmitError) as info:
        sched.submit(script, tmp_path / "log")
    assert "invalid partition specified: nosuch" in str(info.value)
    assert info.value.returncode == 1 and info.value.stderr == stderr


def test_slurm_parsable_with_cluster_name():
    sched = get_scheduler("slurm")
    assert sched._parse_submit_output("5150;perlmutter\n") == "5150"


def test_pbs_continuation_lines_wrapper_format_and_history():
    sched, fake = scheduler_with("pbs", recorded("pbs_qstat_f_pbspro.txt"),
                                 recorded("pbs_qstat_xf_finished.txt"))
    found = sched.statuses(["1234.polaris-pbs-01", "1235.polaris-pbs-01", "1230.polaris-pbs-01"])
    assert fake.calls[1][0] == ["qstat", "-x", "-f", "1230.polaris-pbs-01"]
    running = found["1234.polaris-pbs-01"]
    assert running.details["comment"].endswith("(x3006c0s13b1n0:ncpus=64)")
    assert running.details["nodes"] == "2" and running.details["time_limit"] == "00:30:00"
    assert found["1230.polaris-pbs-01"].state is B.FINISHED
    assert found["1230.polaris-pbs-01"].details["exit_code"] == "0"
    # Slurm's Torque wrapper: "Job Id:<tab>4" and tab-indented attributes.
    wrapped = get_scheduler("pbs")._parse_status_output(
        recorded("pbs_qstat_f_slurm_wrapper.txt"))
    assert {k: (v.state, v.details["queue"]) for k, v in wrapped.items()} == {
        "4": (B.RUNNING, "debug"), "5": (B.QUEUED, "down")}


def test_pbs_ids_match_whatever_server_name_qstat_prints():
    sched, _ = scheduler_with("pbs", recorded("pbs_qstat_f_pbspro.txt"), "")
    found = sched.statuses(["1235.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov"])
    assert found["1235.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov"].state is B.QUEUED


def test_lsf_unknown_id_is_gone_not_an_error():
    sched, _ = scheduler_with("lsf", recorded("lsf_bjobs.json"))
    found = sched.statuses(["901236", "901299"])
    assert set(found) == {"901236"} and found["901236"].details["exit_code"] == "130"


def test_flux_f58_ids():
    # Pairs from flux-core's FLUID tests; "f" is the ASCII-locale prefix.
    assert f58_to_int("ƒNH") == 1234
    assert f58_to_int("ƒxyzzy") == 633528662
    assert f58_to_int("fuZZybuNNy") == 6731191091817518
    with pytest.raises(ValueError):
        f58_to_int("ƒ0OIl")  # not in the alphabet


def test_status_command_failure_raises_with_the_evidence():
    # A controller that does not answer must not make jobs look finished.
    boom = SchedulerCommandFailed("squeue exited with code 1: Unable to contact slurm "
                                  "controller", argv=["squeue"], returncode=1,
                                  stderr="slurm_load_jobs error: Unable to contact slurm "
                                         "controller (connect failure)")
    sched, _ = scheduler_with("slurm", boom)
    with pytest.raises(SchedulerCommandFailed, match="Unable to contact"):
        sched.statuses(["4"])


def test_unparsable_status_answer_is_an_error():
    sched, _ = scheduler_with("lsf", "<html>maintenance</html>")
    with pytest.raises(SchedulerError, match="cannot read the answer of bjobs"):
        sched.statuses(["1"])


def test_missing_command_names_it(tmp_path):
    # The real runner, with a PATH that holds none of the scheduler's commands.
    sched = get_scheduler("slurm", env={"PATH": str(tmp_path)})
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/bash\n")
    with pytest.raises(SchedulerCommandNotFound) as info:
        sched.submit(script, tmp_path / "log")
    assert "'sbatch' was not found on PATH" in str(info.value)
    assert info.value.argv == ["sbatch", "--parsable", str(script)]


def test_real_runner_keeps_stdout_stderr_and_code(tmp_path):
    sched = get_scheduler("slurm")
    with pytest.raises(SchedulerCommandFailed) as info:
        sched._run(["sh", "-c", "echo out; echo 'sbatch: error: nope' >&2; exit 3"])
    exc = info.value
    assert (exc.returncode, exc.stdout, exc.stderr) == (3, "out\n", "sbatch: error: nope\n")
    assert str(exc) == "sh exited with code 3: sbatch: error: nope"
