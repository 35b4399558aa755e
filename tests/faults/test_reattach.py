"""Re-attach on the embedded default: a master killed with SIGKILL mid-campaign, and a new
master that attaches to the campaign by tag and gets every result.

The killed master's own launcher notices that its control pipe closed, stops and requeues what
it held; the new master's launcher runs the rest.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from balsam_futures import BalsamExecutor

pytestmark = pytest.mark.timeout(120)

HERE = Path(__file__).resolve().parent

MASTER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    import faultload
    from balsam_futures import BalsamExecutor
    ex = BalsamExecutor(max_workers=2, site={site!r})
    run = ex.options(tags={{"campaign": "pi"}})
    futs = [run.submit(faultload.nap, i, 0.01) for i in range({n})]
    ex.flush()
    print("submitted", flush=True)
    for f in futs:
        f.result()
        print("result", flush=True)
""")


def test_master_killed_with_sigkill_then_attached(tmp_path):
    site, n = tmp_path / "site", 150
    master = subprocess.Popen(
        [sys.executable, "-c", MASTER.format(here=str(HERE), site=str(site), n=n)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert master.stdout.readline().strip() == "submitted"
        for _ in range(10):
            assert master.stdout.readline().strip() == "result"
        master.kill()
        master.wait()
    finally:
        if master.poll() is None:
            master.kill()
    sys.path.insert(0, str(HERE))
    try:
        with BalsamExecutor(max_workers=2, site=site) as ex:
            futs = ex.attach(tags={"campaign": "pi"})
            results = sorted(f.result(timeout=60) for f in futs)
            counts = ex.store.count_by_state()
    finally:
        sys.path.remove(str(HERE))
    print(f"\n[sqlite master kill -9 + attach] submitted={n} attached={len(futs)} "
          f"finished={counts.get('JOB_FINISHED', 0)} lost={n - len(results)}")
    assert results == list(range(n))
    assert counts == {"JOB_FINISHED": n}


SUBMIT_AND_EXIT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    import faultload
    from balsam_futures import BalsamExecutor
    ex = BalsamExecutor(site={site!r}, launcher=False)
    for i in range({n}):
        ex.submit(faultload.identity, i)
    # no shutdown, no flush: the interpreter's exit must still store every task
""")


def test_a_master_that_exits_right_after_submitting_loses_nothing(tmp_path):
    site, n = tmp_path / "site", 2000
    subprocess.run([sys.executable, "-c", SUBMIT_AND_EXIT.format(here=str(HERE), site=str(site),
                                                                 n=n)], check=True, timeout=60)
    sys.path.insert(0, str(HERE))
    try:
        with BalsamExecutor(max_workers=2, site=site) as ex:
            assert ex.store.count_by_state() == {"READY": n}
            futs = ex.attach(ex.tasks().ids())
            assert sorted(f.result(timeout=60) for f in futs) == list(range(n))
    finally:
        sys.path.remove(str(HERE))
