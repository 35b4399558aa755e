"""The site's settings.json, batch-job requests, and batch-script templates (packaged and
overridden by the site)."""

from __future__ import annotations

import json
import shlex

import pytest

from balsam_futures.schedulers import SCHEDULERS, get_scheduler
from balsam_futures.schedulers.base import BatchJobRequest, SitePolicyError, TemplateError
from balsam_futures.schedulers.manager import BatchJobManager
from balsam_futures.schedulers.policy import QueueLimits, SitePolicy, load_policy
from balsam_futures.schedulers.scripts import SCRIPT_FIELDS, render_script
from balsam_futures.sitedir import open_site

pytestmark = pytest.mark.timeout(30)


def write_settings(site, value):
    (site.path / "settings.json").write_text(json.dumps(value))


@pytest.fixture
def site(tmp_path):
    return open_site(tmp_path / "site")


def test_no_settings_file_means_local_and_no_limits(site):
    policy = load_policy(site.path)
    assert (policy.scheduler, policy.project, policy.queues, policy.service) == (
        "local", "", None, None)
    policy.check(BatchJobRequest(500, 10_000, queue="anything"), "local", 99)


def test_settings_are_read_and_enforced(site):
    write_settings(site, {
        "scheduler": "slurm", "project": "datascience",
        "queues": {"debug": {"max_nodes": 2, "max_wall_time_min": 60, "max_queued_jobs": 1},
                   "prod": {"max_nodes": 496}},
        "options": {"pre_run": ["module load conda"], "mpi_launcher": "srun"},
        "service": {"queue": "debug", "max_nodes": 2, "cores_per_node": 32,
                    "filter_tags": {"campaign": "a"}}})
    policy = load_policy(site.path)
    assert policy.scheduler == "slurm" and policy.project == "datascience"
    assert policy.queues == {"debug": QueueLimits(2, 60, 1), "prod": QueueLimits(496)}
    assert policy.service.cores_per_node == 32 and policy.service.filter_tags == {
        "campaign": "a"}
    policy.check(BatchJobRequest(2, 60, queue="debug"), "slurm", 0)
    policy.check(BatchJobRequest(400, 10_000, queue="prod"), "slurm", 50)
    with pytest.raises(SitePolicyError, match=r"queue 'regular' is not allowed at this site; "
                                              r"allowed queues: debug, prod \(see .*json\)"):
        policy.check(BatchJobRequest(1, 10, queue="regular"), "slurm", 0)
    with pytest.raises(SitePolicyError, match="a job without a queue is not allowed"):
        policy.check(BatchJobRequest(1, 10), "slurm", 0)
    with pytest.raises(SitePolicyError, match="at most 60 minutes per job, not 61"):
        policy.check(BatchJobRequest(1, 61, queue="debug"), "slurm", 0)
    with pytest.raises(SitePolicyError, match="allows 1 job"):
        policy.check(BatchJobRequest(1, 10, queue="debug"), "slurm", 1)


@pytest.mark.parametrize("settings, message", [
    ("{not json", "is not valid JSON"),
    (json.dumps({"schedular": "slurm"}), "unknown key(s) in the settings: schedular"),
    (json.dumps({"scheduler": "sge"}), "unknown scheduler 'sge'; choose one of local, slurm"),
    (json.dumps({"queues": {"debug": {"max_nodes": 0}}}),
     "queues.debug.max_nodes must be a whole number of at least 1, not 0"),
    (json.dumps({"queues": ["debug"]}), "queues must be a JSON object"),
    (json.dumps({"service": {"min_nodes": 4, "max_nodes": 2}}),
     "need 1 <= min_nodes <= max_nodes"),
    (json.dumps({"service": {"max_node": 2}}), "unknown key(s) in service: max_node"),
])
def test_bad_settings_name_the_file_and_the_key(site, settings, message):
    (site.path / "settings.json").write_text(settings)
    with pytest.raises(SitePolicyError) as info:
        load_policy(site.path)
    assert message in str(info.value) and "settings.json" in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_nodes=0), "num_nodes must be a whole number of at least 1"),
    (dict(wall_time_min=1.5), "wall_time_min must be a whole number"),
    (dict(queue="debug\n#SBATCH --uid=0"), "queue 'debug\\n#SBATCH --uid=0' may hold only"),
    (dict(project="a b"), "project 'a b' may hold only"),
    (dict(job_mode="hybrid"), "job_mode must be one of serial, mpi"),
    (dict(filter_tags={"a": 1}), "filter_tags must map names to strings"),
    (dict(options={"pre_run": "module load x"}), "options['pre_run'] must be a list"),
    (dict(options={"directives": ["-C gpu\n-N 99"]}), "a directive must be one line"),
])
def test_requests_are_checked_on_creation(kwargs, message):
    with pytest.raises((ValueError, TypeError)) as info:
        BatchJobRequest(**{"num_nodes": 1, "wall_time_min": 10, **kwargs})
    assert message in str(info.value)


def fields(**changes):
    base = {name: "" for name in SCRIPT_FIELDS}
    base.update(batch_job_id=5, job_name="bf-5", num_nodes=2, wall_time_min=75,
                wall_time_hms="01:15:00", job_mode="mpi", filter_tags={"exp": "a b"},
                pre_run=["module load x"], directives=[], options={}, site="/s i/te",
                python="/usr/bin/python3", log_path="/s/logs/b.log", platform="slurm",
                workers=None, idle_timeout=None, scheduler="slurm", queue="debug",
                project="proj")
    base.update(changes)
    return base


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_packaged_template_renders_the_launcher_line(name):
    text = render_script(get_scheduler(name).template, fields(platform=name))
    assert text.startswith("#!/bin/bash\n")
    last = [ln for ln in text.splitlines() if ln.strip()][-1]
    assert shlex.split(last) == [
        "exec", "/usr/bin/python3", "-m", "balsam_futures", "launcher", "--site", "/s i/te",
        "--job-mode", "mpi", "--wall-time-min", "75", "--platform", name, "--tag", "exp=a b",
        "--batch-job-id", "5"]
    assert "module load x\n" in text and "export BALSAM_FUTURES_SITE='/s i/te'\n" in text
    assert "BALSAM_FUTURES_DB_URL" not in text  # the site's own store


def test_slurm_template_directives():
    text = render_script("slurm.sh.j2", fields(directives=["--constraint=gpu"], workers=4,
                                               idle_timeout=30, mpi_launcher="srun",
                                               db_url="postgresql://u@h/db"))
    assert text.splitlines()[1:8] == [
        "#SBATCH --job-name=bf-5", "#SBATCH --nodes=2", "#SBATCH --time=75",
        "#SBATCH --output=/s/logs/b.log", "#SBATCH --partition=debug",
        "#SBATCH --account=proj", "#SBATCH --constraint=gpu"]
    assert "export BALSAM_FUTURES_DB_URL=postgresql://u@h/db\n" in text
    assert " --mpi-launcher srun -n 4 --idle-timeout 30 " in text


def test_pbs_template_walltime_and_no_queue():
    text = render_script("pbs.sh.j2", fields(queue="", project=""))
    assert "#PBS -l walltime=01:15:00\n" in text and "#PBS -l select=2\n" in text
    assert "#PBS -q" not in text and "#PBS -A" not in text


def test_site_template_overrides_and_typos_are_errors(site):
    templates = site.path / "templates"
    templates.mkdir()
    (templates / "slurm.sh.j2").write_text("#!/bin/bash\n#SBATCH -N {{ num_nodes }}\n"
                                           "{% include 'body.sh.j2' %}")
    text = render_script("slurm.sh.j2", fields(), templates)
    assert text.startswith("#!/bin/bash\n#SBATCH -N 2\nexport BALSAM_FUTURES_SITE=")
    (templates / "slurm.sh.j2").write_text("#SBATCH -N {{ num_node }}\n")
    with pytest.raises(TemplateError) as info:
        render_script("slurm.sh.j2", fields(), templates)
    assert str(templates / "slurm.sh.j2") in str(info.value)
    assert "'num_node' is undefined" in str(info.value)
    (templates / "slurm.sh.j2").write_text("{% if %}\n")
    with pytest.raises(TemplateError, match="slurm.sh.j2, line 1"):
        render_script("slurm.sh.j2", fields(), templates)


def test_a_template_error_fails_the_submission_and_is_stored(site):
    (site.path / "templates").mkdir()
    (site.path / "templates" / "local.sh.j2").write_text("{{ nodes }}\n")
    from balsam_futures.backends import open_store

    store = open_store(site.db_url)
    manager = BatchJobManager(store, site, policy=SitePolicy())
    with pytest.raises(TemplateError):
        manager.submit(BatchJobRequest(1, 5))
    [job] = manager.jobs(history=True)
    assert job["state"] == "SUBMIT_FAILED" and "'nodes' is undefined" in job["error"]
    store.close()
