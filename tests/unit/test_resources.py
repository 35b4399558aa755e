"""Packing onto nodes: reservations never over-commit a node, backfill, whole nodes for MPI."""

from __future__ import annotations

import random

import pytest

from balsam_futures import Resources
from balsam_futures.launcher.nodes import NodeSpec
from balsam_futures.launcher.packing import NodePool

pytestmark = pytest.mark.timeout(30)


def pool(nodes=2, cores=4, gpus=2) -> NodePool:
    return NodePool([NodeSpec(f"n{i}", cores, tuple(str(g) for g in range(gpus)))
                     for i in range(nodes)])


def test_single_node_tasks_pack_by_cores_and_gpus():
    p = pool(nodes=1, cores=4, gpus=2)
    a = p.place(Resources(gpus_per_rank=1))
    b = p.place(Resources(gpus_per_rank=1))
    assert (a.gpus, b.gpus) == ((("0",),), (("1",),))
    assert p.place(Resources(gpus_per_rank=1)) is None  # GPUs gone
    assert p.place(Resources(ranks_per_node=2)) is not None  # cores left
    assert p.place(Resources()) is None  # cores gone
    p.release(a)
    assert p.place(Resources(gpus_per_rank=1)).gpus == (("0",),)


def test_node_packing_count_limits_tasks_per_node():
    p = pool(nodes=1, cores=64, gpus=0)
    three = Resources(node_packing_count=3)
    placed = [p.place(three) for _ in range(3)]
    assert all(placed)
    assert p.place(three) is None  # 3 x 1/3 fills the node though cores are left
    p.release(placed[0])
    assert p.place(three) is not None


def test_multi_node_tasks_take_idle_nodes_whole():
    p = pool(nodes=3, cores=4, gpus=2)
    small = p.place(Resources())
    assert small.hosts == ("n0",)
    big = p.place(Resources(num_nodes=2))
    assert big.hosts == ("n1", "n2") and big.gpus == (("0", "1"), ("0", "1"))
    assert p.place(Resources(num_nodes=2)) is None  # only n0 is partly free
    assert p.place(Resources()).hosts == ("n0",)  # but small tasks still fit there
    p.release(big)
    assert p.place(Resources(num_nodes=2)).hosts == ("n1", "n2")


def test_best_fit_keeps_idle_nodes_whole_for_multi_node_tasks():
    p = pool(nodes=2, cores=4, gpus=0)
    first = p.place(Resources())
    second = p.place(Resources())
    assert first.hosts == second.hosts  # the busy node again, not the idle one
    assert p.place(Resources(num_nodes=1, ranks_per_node=4)).hosts != first.hosts


@pytest.mark.parametrize("need, words", [
    (Resources(num_nodes=3), "needs 3 nodes and this launcher has 2"),
    (Resources(ranks_per_node=8), "needs 8 cores on one node"),
    (Resources(gpus_per_rank=8), "needs 8 GPUs on one node"),
    (Resources(num_nodes=2, ranks_per_node=4, gpus_per_rank=1), "needs 4 GPUs on each of 2"),
])
def test_never_fits_says_why(need, words):
    assert words in pool(nodes=2, cores=4, gpus=2).never_fits(need)


def test_fits_when_it_could_ever_run():
    assert pool().never_fits(Resources(num_nodes=2, ranks_per_node=4, gpus_per_rank=0)) is None


def test_fit_claim_takes_what_fits_and_backfills_around_a_large_task():
    p = pool(nodes=2, cores=4, gpus=0)
    p.place(Resources())  # n0 partly busy: no two idle nodes for the large task
    needs = [Resources(num_nodes=2), Resources(), Resources(ranks_per_node=4),
             Resources(ranks_per_node=4)]
    # The large task waits; the small ones behind it fit (3 cores on n0, 4 on n1).
    assert p.fit_claim(needs) == [1, 2]


def test_fit_claim_counts_the_claimed_backlog():
    p = pool(nodes=1, cores=2, gpus=0)
    assert p.fit_claim([Resources()] * 3, pending=[Resources()]) == [0]
    # A deeper backlog (tiny tasks) lets a slot hold more rounds of work.
    assert p.fit_claim([Resources()] * 5, pending=[Resources()], depth=2) == [0, 1, 2]


def test_random_place_and_release_never_over_commits():
    rng = random.Random(7)
    nodes = [NodeSpec(f"n{i}", 8, ("0", "1", "2", "3")) for i in range(6)]
    p = NodePool(nodes)
    held = []
    shapes = [Resources(), Resources(gpus_per_rank=1), Resources(ranks_per_node=2,
              gpus_per_rank=2), Resources(num_nodes=2), Resources(num_nodes=3, ranks_per_node=8),
              Resources(node_packing_count=4, threads_per_rank=2), Resources(ranks_per_node=8)]
    for _ in range(3000):
        if held and rng.random() < 0.45:
            p.release(held.pop(rng.randrange(len(held))))
        else:
            placed = p.place(rng.choice(shapes))
            if placed is not None:
                held.append(placed)
        cores = {n.hostname: 0 for n in nodes}
        gpus: dict[str, list[str]] = {n.hostname: [] for n in nodes}
        whole: dict[str, int] = {n.hostname: 0 for n in nodes}
        runs: dict[str, int] = {n.hostname: 0 for n in nodes}
        for h in held:
            for host, ids in zip(h.hosts, h.gpus):
                runs[host] += 1
                if len(h.hosts) > 1:
                    whole[host] += 1
                    cores[host] += 8
                else:
                    cores[host] += h.cores
                gpus[host].extend(ids)
        for n in nodes:
            assert cores[n.hostname] <= n.cores
            assert len(gpus[n.hostname]) == len(set(gpus[n.hostname])) <= 4  # none shared
            assert whole[n.hostname] == 0 or runs[n.hostname] == 1  # whole means alone


def test_one_node_fit_by_arithmetic_matches_the_simulation():
    rng = random.Random(3)
    shapes = [Resources(), Resources(gpus_per_rank=1), Resources(ranks_per_node=3),
              Resources(node_packing_count=2), Resources(threads_per_rank=2, gpus_per_rank=2),
              Resources(num_nodes=2)]
    for _ in range(300):
        p = NodePool([NodeSpec("n0", rng.randint(1, 8), tuple(map(str, range(rng.randint(0, 4)))))])
        for _ in range(rng.randint(0, 3)):
            p.place(rng.choice(shapes[:5]))
        needs = [rng.choice(shapes) for _ in range(rng.randint(0, 12))]
        pending = [rng.choice(shapes[:5]) for _ in range(rng.randint(0, 4))]
        depth = rng.randint(1, 3)
        assert p._fit_one_node(needs, pending, depth) == p._fit_simulated(needs, pending, depth)
