"""One model per GPU on a real GPU: what the driver shows each task, not just its variables.

Skipped where ``nvidia-smi`` finds no GPU or PyTorch with CUDA is missing (CI machines); run
on a GPU node with ``python -m pytest tests/gpu``.  The launcher detects the GPUs itself
(``nvidia-smi -L``), as it does in production.
"""

from __future__ import annotations

import os
import time

import pytest

from balsam_futures import BalsamExecutor, Resources
from balsam_futures.launcher.nodes import discover_nodes

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]



def real_gpus() -> tuple[str, ...]:
    # Checked in the test, not at import: the workers import this module too, and a worker
    # without a GPU (CUDA_VISIBLE_DEVICES="") must still be able to.
    gpus = discover_nodes(name="local")[0].gpus
    if not gpus:
        pytest.skip("no GPU on this machine (nvidia-smi -L lists none)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch here has no CUDA")
    return gpus


def train_on_gpu(seconds: float):
    """A real GPU workload: what this process's CUDA runtime sees, and when it ran."""
    import torch

    start = time.time()
    seen = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0)
    uuid = str(torch.cuda.get_device_properties(0).uuid)
    x = torch.randn(4096, 4096, device="cuda")
    while time.time() - start < seconds:
        x = (x @ x).tanh()
    torch.cuda.synchronize()
    return {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "count": seen, "name": name,
            "uuid": uuid, "start": start, "end": time.time(), "pid": os.getpid()}


def cpu_only():
    import torch

    return {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "count": torch.cuda.device_count()}


def test_each_gpu_task_sees_exactly_one_gpu_and_no_two_share_it(tmp_path):
    GPUS = real_gpus()  # noqa: N806
    workers = len(GPUS) + 2
    with BalsamExecutor(max_workers=workers, site=tmp_path / "site") as ex:
        gpu = ex.options(resources=Resources(gpus_per_rank=1))
        runs = [f.result(timeout=240) for f in
                [gpu.submit(train_on_gpu, 1.0) for _ in range(2 * len(GPUS) + 1)]]
        cpu = [f.result(timeout=60) for f in [ex.submit(cpu_only) for _ in range(2)]]
        profile = ex.store.list_runs()
    uuids = {}
    for r in runs:
        assert r["count"] == 1, r  # the driver shows it one GPU, not all of them
        assert r["visible"] in GPUS
        uuids.setdefault(r["visible"], set()).add(r["uuid"])
    # Each id is one physical GPU, and different ids are different GPUs.
    assert all(len(u) == 1 for u in uuids.values())
    assert len({next(iter(u)) for u in uuids.values()}) == len(uuids)
    for gpu_id in uuids:
        spans = sorted((r["start"], r["end"]) for r in runs if r["visible"] == gpu_id)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), \
            f"two runs used GPU {gpu_id} at once: {spans}"
    # Tasks that asked for no GPU see none.
    assert all(c == {"visible": "", "count": 0} for c in cpu)
    gpu_runs = [r for r in profile if any(r["gpus"][0])]
    assert len(gpu_runs) == len(runs)
    print(f"\n{len(runs)} runs on {runs[0]['name']} x{len(GPUS)}: ids {sorted(uuids)}")
