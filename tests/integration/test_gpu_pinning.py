"""One model per GPU: each worker of the local launcher sees only its own GPUs.

No GPU is needed: the launcher is given virtual GPU ids, and tasks report what they see.
"""

from __future__ import annotations

import os
import time

import pytest

from balsam_futures import Resources

pytestmark = pytest.mark.timeout(60)


def seen_gpus(rendezvous, expected):
    """Wait (bounded) until ``expected`` tasks run at once, then report this one's GPUs."""
    open(os.path.join(rendezvous, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 20
    while len(os.listdir(rendezvous)) < expected:
        assert time.monotonic() < deadline, "tasks did not run concurrently"
        time.sleep(0.005)
    return os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("ZE_AFFINITY_MASK")


def test_concurrent_gpu_tasks_see_exactly_their_own_ids(make_executor, tmp_path):
    ex = make_executor(max_workers=4, gpus=4)
    gpu = ex.options(resources=Resources(gpus_per_rank=1))
    futs = [gpu.submit(seen_gpus, str(tmp_path), 4) for _ in range(4)]
    seen = [f.result(timeout=30) for f in futs]
    assert sorted(cuda for cuda, _ in seen) == ["0", "1", "2", "3"]  # none shared
    assert all(cuda == ze for cuda, ze in seen)


def test_gpu_tasks_go_to_gpu_workers_and_cpu_tasks_to_the_others(make_executor, tmp_path):
    ex = make_executor(max_workers=4, gpus=2)  # slots 0,1 have a GPU each; 2,3 have none
    gpu = ex.options(resources=Resources(gpus_per_rank=1))
    gpu_dir, cpu_dir = tmp_path / "gpu", tmp_path / "cpu"
    gpu_dir.mkdir()
    cpu_dir.mkdir()
    gpu_futs = [gpu.submit(seen_gpus, str(gpu_dir), 2) for _ in range(2)]
    cpu_futs = [ex.submit(seen_gpus, str(cpu_dir), 2) for _ in range(2)]
    assert sorted(f.result(timeout=30)[0] for f in gpu_futs) == ["0", "1"]
    assert [f.result(timeout=30)[0] for f in cpu_futs] == ["", ""]


def test_a_task_needing_more_gpus_than_the_node_has_is_refused_at_submit(make_executor):
    ex = make_executor(max_workers=2, gpus=2)
    with pytest.raises(ValueError, match="needs 3 GPUs on one node"):
        ex.options(resources=Resources(gpus_per_rank=3)).submit(os.getpid)
    no_gpu = make_executor(max_workers=1, gpus=0)
    with pytest.raises(ValueError, match="needs 1 GPUs on one node"):
        no_gpu.options(resources=Resources(gpus_per_rank=1)).submit(os.getpid)
    with pytest.raises(ValueError, match="needs 2 nodes"):
        ex.options(resources=Resources(num_nodes=2)).submit(os.getpid)
    with pytest.raises(ValueError, match="needs 4 cores"):
        ex.options(resources=Resources(threads_per_rank=4)).submit(os.getpid)


def test_a_two_gpu_task_gets_both_gpus_after_the_one_gpu_tasks(make_executor):
    ex = make_executor(max_workers=3, gpus=2)
    one = ex.options(resources=Resources(gpus_per_rank=1))
    two = ex.options(resources=Resources(gpus_per_rank=2))
    firsts = [one.submit(hold_gpu, "", 0, 0.3) for _ in range(2)]
    both = two.submit(hold_gpu, "", 0, 0)
    gpus, start, _ = both.result(timeout=30)
    assert gpus == "0,1"
    # It waited for both GPUs to be free: it started after the one-GPU runs ended.
    assert all(start >= f.result()[2] for f in firsts)


def hold_gpu(rendezvous, expected, hold_s):
    """Record (pid, GPUs, start, end) of a run that holds its GPU for ``hold_s``."""
    start = time.time()
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    time.sleep(hold_s)
    return gpus, start, time.time()


def test_gpu_tasks_beyond_the_gpus_never_share_one(make_executor):
    ex = make_executor(max_workers=4, gpus=2)
    one = ex.options(resources=Resources(gpus_per_rank=1))
    runs = [f.result(timeout=60) for f in [one.submit(hold_gpu, "", 0, 0.2) for _ in range(6)]]
    for gpu in ("0", "1"):
        spans = sorted((s, e) for g, s, e in runs if g == gpu)
        assert spans, f"GPU {gpu} was never used"
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), \
            f"two runs held GPU {gpu} at once: {spans}"
    assert {g for g, _, _ in runs} == {"0", "1"}
