"""The campaign page in a real headless Chromium: what a person would check by looking."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from pageserver import PageServer

from balsam_futures import BalsamExecutor
from balsam_futures.cli import main

pytestmark = pytest.mark.timeout(120)

WAIT_S = 30


def wait_on(path, bound=20.0):
    """Block until file ``path`` exists (a gate the test opens), at most ``bound`` s."""
    import os
    import time

    deadline = time.monotonic() + bound
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return 1


def simulated(i):
    raise RuntimeError("simulated error")


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """A running campaign: 6 tasks held on a gate, one failed task; the page served."""
    pytest.importorskip("starlette", reason="the page needs the web extra")
    pytest.importorskip("uvicorn", reason="the page needs the web extra")
    root = tmp_path_factory.mktemp("page")
    site = root / "site"
    gate = root / "gate"
    ex = BalsamExecutor(max_workers=2, site=str(site))
    failed = ex.submit(simulated, 0)
    with pytest.raises(RuntimeError):
        failed.result(timeout=WAIT_S)
    held = [ex.submit(wait_on, str(gate)) for _ in range(6)]
    server = PageServer(f"sqlite:///{site / 'balsam.db'}", site=str(site))
    yield {"site": site, "gate": gate, "held": held, "failed": failed, "server": server}
    gate.touch()
    ex.shutdown(wait=True)
    server.stop()


def page_counts(driver):
    """The counts table as shown, read in one script (the page redraws it at every poll)."""
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#counts tbody tr')]"
        ".map(tr => [tr.dataset.state, Number(tr.children[1].textContent)]))")


def severe_console_entries(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_no_token_gets_403(campaign):
    base = campaign["server"].base
    for path in ("/", "/api/summary", "/api/counts", "/static/dashboard.js", "/task/1",
                 "/?token=wrong"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + path, timeout=10)
        assert err.value.code == 403, path
    with urllib.request.urlopen(campaign["server"].url("/api/summary"), timeout=10) as r:
        assert r.status == 200 and "launchers" in json.loads(r.read())


def test_page_shows_the_counts_and_updates_while_the_campaign_runs(campaign, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(campaign["server"].url())
    wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.1)
    wait.until(lambda d: page_counts(d).get("FAILED") == 1)
    before = page_counts(browser)
    assert before.get("JOB_FINISHED", 0) == 0 and sum(before.values()) == 7
    campaign["gate"].touch()  # the held tasks finish: the page must show it without a reload
    for fut in campaign["held"]:
        fut.result(timeout=WAIT_S)
    wait.until(lambda d: page_counts(d).get("JOB_FINISHED") == 6)
    out = CliRunner().invoke(main, ["ls", "--site", str(campaign["site"]), "--by-states",
                                    "--json"]).output
    assert page_counts(browser) == json.loads(out) == {"FAILED": 1, "JOB_FINISHED": 6}
    assert browser.find_element("id", "total").text == "7"
    groups = browser.find_element("id", "failures").text
    assert "RuntimeError: simulated error" in groups
    assert browser.find_elements("css selector", "#chart-util canvas")  # uPlot drew
    assert severe_console_entries(browser) == []


def test_task_page_shows_a_failed_tasks_error(campaign, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    task_id = campaign["failed"].task_id
    browser.get(campaign["server"].url(f"/task/{task_id}"))
    wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.1)
    wait.until(lambda d: "simulated error" in d.find_element("id", "error").text)
    history = browser.find_element("id", "history").text
    assert "RUNNING" in history and "RUN_ERROR" in history and "FAILED" in history
    assert f"task {task_id}" in browser.find_element("id", "title").text
    assert severe_console_entries(browser) == []


def test_the_static_files_are_packaged():
    from balsam_futures.web.app import STATIC

    names = {p.name for p in Path(STATIC).iterdir()}
    assert {"uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE", "index.html",
            "task.html", "dashboard.js"} <= names


def test_the_web_command_prints_a_url_with_its_token(campaign):
    import re
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "balsam_futures", "web", "--site",
                             str(campaign["site"]), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()  # printed once the port listens
        url = re.search(r"http://127\.0\.0\.1:\d+/\?token=[0-9a-f]{48}", line)
        assert url, line
        with urllib.request.urlopen(url.group(0), timeout=30) as r:
            assert r.status == 200 and b"balsam_futures campaign" in r.read()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url.group(0).split("?")[0], timeout=30)
        assert err.value.code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=30)
