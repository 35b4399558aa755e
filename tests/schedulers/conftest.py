"""Fixtures for the scheduler tests: a site whose batch jobs run real launchers, and a real
one-node Slurm cluster (munged, slurmctld, slurmd) in a temporary directory.

The cluster is started once per session, as the Debian packages ``slurm-wlm`` and ``munge``
install it (``.ci/run`` installs them); where they are missing, or where this user cannot run
slurmd's jobs (it must be root), the Slurm tests are skipped with the reason.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from schedtools import wait_until

from balsam_futures.backends import open_store
from balsam_futures.sitedir import open_site


@pytest.fixture
def job_site(tmp_path):
    """A site whose batch jobs run a real launcher (the packaged templates)."""
    site = open_site(tmp_path / "site")
    yield site
    # A failed test may leave a local launcher running (one without an idle timeout).
    from balsam_futures.schedulers.local import LocalScheduler, _alive

    store = open_store(site.db_url)
    try:
        for job in store.batch_jobs(states=["QUEUED", "RUNNING", "PENDING_DELETION"]):
            if job["scheduler"] == "local" and _alive(int(job["scheduler_id"])):
                LocalScheduler().delete(job["scheduler_id"])
    finally:
        store.close()


@pytest.fixture
def executor(job_site):
    """An executor without a launcher of its own: its tasks wait for batch jobs."""
    from balsam_futures import BalsamExecutor

    ex = BalsamExecutor(launcher=False, site=job_site.path)
    yield ex
    # Never wait here: after a failed test there may be no launcher to finish the tasks.
    ex.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def job_store(job_site):
    store = open_store(job_site.db_url)
    yield store
    store.close()


# -- a real Slurm cluster ---------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmCluster:
    conf: Path
    node: str
    env: dict[str, str]  # what scheduler commands need (SLURM_CONF)

    def run(self, *argv: str) -> str:
        return subprocess.run(argv, env={**os.environ, **self.env}, capture_output=True,
                              text=True, check=True, timeout=30).stdout


def _sbin(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


SLURM_CONF = """\
ClusterName=bftest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={base}/munge/munge.socket.2
CredType=cred/munge
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 CPUs=8 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=down Nodes=ALL MaxTime=INFINITE State=DOWN
"""


@pytest.fixture(scope="session")
def slurm_cluster():
    """munged, slurmctld and slurmd of a one-node cluster (partitions ``debug``, up, and
    ``down``, where jobs wait forever), torn down at the end of the session."""
    binaries = {name: _sbin(name) for name in ("munged", "slurmctld", "slurmd", "sbatch",
                                               "squeue", "scancel", "sinfo")}
    missing = [name for name, path in binaries.items() if path is None]
    if missing:
        pytest.skip(f"Slurm is not installed here (missing {', '.join(missing)}; "
                    "apt-get install slurm-wlm munge slurm-wlm-torque)")
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster runs slurmd, which must be root to start jobs")
    base = Path(tempfile.mkdtemp(prefix="bf-slurm-"))
    for sub in ("munge", "state", "spool"):
        (base / sub).mkdir(mode=0o700)
    key = base / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    ctld_port, slurmd_port = _free_ports(2)
    conf = base / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=host, base=base, node="bfnode",
                                      ctld_port=ctld_port, slurmd_port=slurmd_port))
    env = {"SLURM_CONF": str(conf)}
    full_env = {**os.environ, **env}
    procs: list[subprocess.Popen] = []
    try:
        # Foreground daemons (-F / -D) are our children: they stop with the session.
        procs.append(subprocess.Popen(
            [binaries["munged"], "-F", "--force", f"--socket={base}/munge/munge.socket.2",
             f"--key-file={key}", f"--pid-file={base}/munge/munged.pid",
             f"--seed-file={base}/munge/seed", f"--log-file={base}/munge/munged.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(lambda: (base / "munge" / "munge.socket.2").exists(), 10, 0.01,
                   "the munge socket")
        procs.append(subprocess.Popen([binaries["slurmctld"], "-D", "-i"], env=full_env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([binaries["slurmd"], "-D", "-N", "bfnode"],
                                      env=full_env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        cluster = SlurmCluster(conf, "bfnode", env)

        def idle():
            for p in procs:
                if p.poll() is not None:
                    logs = "\n".join(f.read_text()[-2000:] for f in base.glob("*.log"))
                    pytest.fail(f"{p.args[0]} exited with code {p.returncode}:\n{logs}")
            try:
                return cluster.run(binaries["sinfo"], "-h", "-o", "%t", "-n", "bfnode",
                                   "-p", "debug").strip() == "idle"
            except subprocess.CalledProcessError:
                return False

        wait_until(idle, 30, 0.02, "the Slurm node to become idle")
        yield cluster
    finally:
        if len(procs) == 3:
            user = pwd.getpwuid(os.geteuid()).pw_name
            subprocess.run([binaries["scancel"], "--quiet", f"--user={user}"], env=full_env,
                           capture_output=True, timeout=30)
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(base, ignore_errors=True)
