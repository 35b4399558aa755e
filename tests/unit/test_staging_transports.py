"""Data staging (``balsam_futures.staging``): spec checks, item planning and real transports.

Local copies, a real ``http.server`` in a thread and a real ``rsync`` between temporary
directories; only Globus is a stand-in client that records what it is given.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

from balsam_futures.errors import BalsamFuturesError
from balsam_futures.staging import (
    StageIn,
    StageOut,
    StagingError,
    TaskTransferReport,
    TransferItem,
    Transfers,
    parse_stage_in,
    parse_stage_out,
    specs_from_json,
    specs_to_json,
    stage_in_items,
    stage_out_items,
)
from balsam_futures.staging import globus as globus_transport
from balsam_futures.staging import rsync as rsync_transport
from balsam_futures.staging.base import TransferOptions

pytestmark = pytest.mark.timeout(60)

EP_A = "aaaaaaaa-1111-2222-3333-444444444444"
EP_B = "bbbbbbbb-1111-2222-3333-444444444444"
SITE_EP = "cccccccc-1111-2222-3333-444444444444"
RSYNC = shutil.which("rsync")
needs_rsync = pytest.mark.skipif(RSYNC is None, reason="rsync is not installed")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Recorder:
    """A stand-in for time.sleep that records the waits instead of waiting."""

    def __init__(self):
        self.waits = []

    def __call__(self, seconds):
        self.waits.append(seconds)


# --------------------------------------------------------------------------------------------
# Spec validation
# --------------------------------------------------------------------------------------------


class TestParse:
    def test_empty_values(self):
        assert parse_stage_in(None) == ()
        assert parse_stage_in([]) == ()
        assert parse_stage_out(()) == ()

    def test_accepted_urls(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        specs = parse_stage_in([
            ("/abs/a.dat", "a.dat"),
            ("rel/b.dat", "in/"),
            ("file:///abs/c.dat", "c.dat"),
            ("http://example.org:8080/d.dat", "d.dat"),
            (f"https://example.org/e.dat#sha256={'A' * 64}", "e.dat"),
            ("rsync://host/module/f.dat", "f.dat"),
            ("user@host:data/g.dat", "g.dat"),
            ("host:/data/h.dat", "h.dat"),
            (f"globus://{EP_A}/data/i.dat", "i.dat"),
            StageIn("/abs/j.dat", "sub/j.dat"),
        ])
        assert specs[0] == StageIn("/abs/a.dat", "a.dat")
        # A relative local path is made absolute against the current directory, now.
        assert specs[1] == StageIn(str(tmp_path / "rel/b.dat"), "in/")
        assert [s.url for s in specs[2:]] == [
            "file:///abs/c.dat", "http://example.org:8080/d.dat",
            f"https://example.org/e.dat#sha256={'A' * 64}", "rsync://host/module/f.dat",
            "user@host:data/g.dat", "host:/data/h.dat", f"globus://{EP_A}/data/i.dat",
            "/abs/j.dat"]

    def test_windows_drive_and_slash_before_colon_are_local_paths(self, tmp_path,
                                                                   monkeypatch):
        monkeypatch.chdir(tmp_path)
        (spec_a, spec_b) = parse_stage_in([("C:\\data\\x", "x"), ("dir/a:b", "y")])
        assert spec_a.url == str(tmp_path / "C:\\data\\x")
        assert spec_b.url == str(tmp_path / "dir/a:b")

    @pytest.mark.parametrize("url, words", [
        ("ftp://x/y", "stage_in[1]: unknown URL scheme 'ftp' in 'ftp://x/y'; use a local path, "
                      "file://, http(s)://, rsync://, host:path or globus://ENDPOINT/path"),
        ("", "stage_in[1]: empty URL"),
        ("a\0b", "stage_in[1]: URL 'a\\x00b' contains a NUL byte"),
        ("file://relative/x", "must be file:///absolute/path"),
        ("http:///nohost", "stage_in[1]: empty host in 'http:///nohost'"),
        ("http://host:99999/x", "bad port"),
        ("http://host/x#md5=abc", "'#sha256=' and 64 hex digits"),
        ("http://host/x#sha256=1234", "'#sha256=' and 64 hex digits"),
        (":path", "empty host in ':path'"),
        ("user@:path", "empty host"),
        ("host:", "no path after the ':'"),
        ("rsync://host/", "needs a module"),
        ("globus://not-a-uuid/x", "is not an endpoint UUID"),
        (f"globus://{EP_A}", "needs an absolute path"),
    ])
    def test_bad_urls_name_field_and_index(self, url, words):
        with pytest.raises(ValueError) as caught:
            parse_stage_in([("/ok", "ok"), (url, "x")])
        assert words in str(caught.value)
        assert str(caught.value).startswith("stage_in[1]: ")

    @pytest.mark.parametrize("value, error, words", [
        ("a.dat", TypeError, "stage_in: expected a list of (url, dest) pairs, not str"),
        ([("/a", "a", "extra")], TypeError, "stage_in[0]: expected a (url, dest) pair"),
        ([(3, "a")], TypeError, "stage_in[0]: URL must be a str, not int"),
        ([("/a", None)], TypeError, "stage_in[0]: dest must be a str, not NoneType"),
        ([("/a", "")], ValueError, "stage_in[0]: dest is empty"),
        ([("/a", "/abs")], ValueError, "must be relative"),
        ([("/a", "x/../../y")], ValueError, "no '..' component"),
        ([("/a", "x\0")], ValueError, "NUL byte"),
        ([("/a", ".")], ValueError, "is the working directory itself"),
        ([("http://h/", "dir/")], ValueError, "has none; name the file in dest"),
    ])
    def test_bad_stage_in(self, value, error, words):
        with pytest.raises(error) as caught:
            parse_stage_in(value)
        assert words in str(caught.value)

    def test_stage_out(self):
        specs = parse_stage_out([("*.out", "/results/"), ("log.txt", "host:logs/run1.txt"),
                                 StageOut("a/**/*.h5", f"globus://{EP_B}/store")])
        assert specs == (StageOut("*.out", "/results/"),
                         StageOut("log.txt", "host:logs/run1.txt"),
                         StageOut("a/**/*.h5", f"globus://{EP_B}/store"))

    @pytest.mark.parametrize("value, words", [
        ([("*.out", "http://h/up/")], "stage_out[0]: 'http://h/up/': http(s) URLs are "
                                      "download-only"),
        ([("../x", "/r/")], "stage_out[0]: pattern '../x' must stay inside"),
        ([("/abs/*", "/r/")], "must be relative"),
        ([("x", "gopher://h/x")], "stage_out[0]: unknown URL scheme 'gopher'"),
    ])
    def test_bad_stage_out(self, value, words):
        with pytest.raises(ValueError) as caught:
            parse_stage_out(value)
        assert words in str(caught.value)

    def test_json_round_trip(self):
        stage_in = parse_stage_in([("/a/b", "b"), ("host:x/y", "in/")])
        stage_out = parse_stage_out([("*.out", "/r/")])
        doc = specs_to_json(stage_in, stage_out)
        assert doc == {"in": [["/a/b", "b"], ["host:x/y", "in/"]], "out": [["*.out", "/r/"]]}
        assert specs_from_json(doc) == (stage_in, stage_out)
        assert specs_to_json((), ()) is None
        assert specs_from_json(None) == ((), ())

    def test_staging_error_is_a_balsam_futures_error(self):
        assert issubclass(StagingError, BalsamFuturesError)


# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------


class TestItems:
    def test_stage_in_items(self, tmp_path):
        digest = "b" * 64
        specs = parse_stage_in([("/src/a.dat", "a2.dat"), ("file:///src/b.dat", "in/"),
                                (f"http://h/p/c%20d.dat#sha256={digest}", "./"),
                                ("host:data/e.dat", "deep/er/")])
        assert stage_in_items(7, tmp_path, specs) == [
            TransferItem(7, "in", "/src/a.dat", str(tmp_path / "a2.dat")),
            TransferItem(7, "in", "/src/b.dat", str(tmp_path / "in/b.dat")),
            TransferItem(7, "in", "http://h/p/c%20d.dat", str(tmp_path / "c d.dat"), digest),
            TransferItem(7, "in", "host:data/e.dat", str(tmp_path / "deep/er/e.dat")),
        ]

    def test_stage_out_items(self, tmp_path):
        for name in ("b.out", "a.out", "log.txt", "sub/c.out"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(name)
        specs = parse_stage_out([("*.out", "/res"), ("log.txt", "host:logs/run.txt"),
                                 ("**/c.out", f"globus://{EP_B}/keep/")])
        assert stage_out_items(3, tmp_path, specs) == [
            TransferItem(3, "out", str(tmp_path / "a.out"), "/res/a.out"),
            TransferItem(3, "out", str(tmp_path / "b.out"), "/res/b.out"),
            TransferItem(3, "out", str(tmp_path / "log.txt"), "host:logs/run.txt"),
            TransferItem(3, "out", str(tmp_path / "sub/c.out"), f"globus://{EP_B}/keep/c.out"),
        ]

    def test_pattern_matching_nothing(self, tmp_path):
        with pytest.raises(StagingError) as caught:
            stage_out_items(1, tmp_path, parse_stage_out([("*.h5", "/r/")]))
        assert str(caught.value) == f"stage_out: '*.h5' matched no file in {tmp_path}"

    def test_two_matches_onto_one_destination(self, tmp_path):
        for name in ("a/x.out", "b/x.out"):
            (tmp_path / name).parent.mkdir(parents=True)
            (tmp_path / name).write_text(name)
        with pytest.raises(StagingError, match="would both go to /r/x.out"):
            stage_out_items(1, tmp_path, parse_stage_out([("*/x.out", "/r/")]))


# --------------------------------------------------------------------------------------------
# Local copies and links
# --------------------------------------------------------------------------------------------


class TestLocal:
    def test_copy_then_skip(self, tmp_path):
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.dat").write_bytes(b"alpha")
        (src / "b.dat").write_bytes(b"beta" * 1000)
        items = (stage_in_items(1, tmp_path / "w1", parse_stage_in([(str(src / "a.dat"), "in/"),
                                                                    (str(src / "b.dat"), "b")]))
                 + stage_in_items(2, tmp_path / "w2",
                                  parse_stage_in([(f"file://{src}/a.dat", "x/y/a")])))
        transfers = Transfers()
        assert transfers.run(items) == {1: TaskTransferReport(1, None, 2, 0, 1),
                                        2: TaskTransferReport(2, None, 1, 0, 1)}
        assert (tmp_path / "w1/in/a.dat").read_bytes() == b"alpha"
        assert (tmp_path / "w2/x/y/a").read_bytes() == b"alpha"
        assert not list((tmp_path / "w1").rglob(".*.part"))
        assert transfers.run(items) == {1: TaskTransferReport(1, None, 0, 2, 1),
                                        2: TaskTransferReport(2, None, 0, 1, 1)}
        # Same size, other bytes: copied again.
        (tmp_path / "w1/in/a.dat").write_bytes(b"ALPHA")
        assert transfers.run(items)[1] == TaskTransferReport(1, None, 1, 1, 1)
        assert (tmp_path / "w1/in/a.dat").read_bytes() == b"alpha"

    def test_link(self, tmp_path):
        (tmp_path / "a.dat").write_text("a")
        items = stage_in_items(1, tmp_path / "w", parse_stage_in([(str(tmp_path / "a.dat"),
                                                                   "a")]))
        transfers = Transfers(link=True)
        assert transfers.run(items)[1].copied == 1
        assert os.readlink(tmp_path / "w/a") == str(tmp_path / "a.dat")
        assert transfers.run(items)[1].skipped == 1

    def test_stage_out_locally(self, tmp_path):
        work = tmp_path / "w"
        work.mkdir()
        (work / "r.out").write_text("result")
        items = stage_out_items(4, work, parse_stage_out([("*.out", str(tmp_path / "keep"))]))
        assert Transfers(link=True).run(items)[4] == TaskTransferReport(4, None, 1, 0, 1)
        # Outputs are copied even with link=True: the working directory may be deleted.
        assert not os.path.islink(tmp_path / "keep/r.out")
        assert (tmp_path / "keep/r.out").read_text() == "result"

    def test_missing_source_fails_only_its_task_after_retries(self, tmp_path):
        (tmp_path / "ok.dat").write_text("ok")
        items = [TransferItem(1, "in", str(tmp_path / "ok.dat"), str(tmp_path / "w1/ok.dat")),
                 TransferItem(2, "in", str(tmp_path / "gone.dat"), str(tmp_path / "w2/g.dat"))]
        sleep = Recorder()
        reports = Transfers(retries=3, backoff=0.25, sleep=sleep).run(items)
        assert reports[1] == TaskTransferReport(1, None, 1, 0, 1)
        assert reports[2].error == (f"{tmp_path}/gone.dat -> {tmp_path}/w2/g.dat: the source "
                                    "does not exist (only files are staged)")
        assert reports[2].attempts == 3 and reports[2].copied == 0
        assert sleep.waits == [0.25, 0.5]

    def test_a_pinned_failure_is_not_retried_beyond_retries(self, tmp_path):
        (tmp_path / "ok.dat").write_text("ok")
        items = [TransferItem(1, "in", str(tmp_path / "ok.dat"), str(tmp_path / "w1/ok.dat")),
                 TransferItem(2, "in", str(tmp_path / "gone.dat"), str(tmp_path / "w2/g.dat"))]
        sleep = Recorder()
        reports = Transfers(retries=1, sleep=sleep).run(items)
        assert reports[2].attempts == 1 and reports[2].error
        assert sleep.waits == []

    def test_os_error_words(self, tmp_path):
        (tmp_path / "a.dat").write_text("a")
        (tmp_path / "blocker").write_text("a file where a directory should be")
        item = TransferItem(1, "in", str(tmp_path / "a.dat"), str(tmp_path / "blocker/a.dat"))
        report = Transfers(retries=1).run([item])[1]
        assert report.error.startswith(f"{tmp_path}/a.dat -> {tmp_path}/blocker/a.dat: "
                                       "FileExistsError: ")
        assert str(tmp_path / "blocker") in report.error

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="retries must be an integer >= 1"):
            Transfers(retries=0)
        with pytest.raises(ValueError, match="timeout must be"):
            Transfers(timeout=0)
        assert Transfers().run([]) == {}


# --------------------------------------------------------------------------------------------
# HTTP: a real server in a thread
# --------------------------------------------------------------------------------------------


class CountingServer:
    """A ThreadingHTTPServer over a directory that counts connections and requests, and can
    answer the next N GETs with 503."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str]] = []
        self.connections = 0
        self.fail_next = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so a connection serves many requests

            def setup(self):
                super().setup()
                with owner.lock:
                    owner.connections += 1

            def do_GET(self):
                with owner.lock:
                    owner.requests.append(("GET", self.path))
                    fail, owner.fail_next = owner.fail_next > 0, max(owner.fail_next - 1, 0)
                if fail:
                    self.send_error(503, "Try Later")
                    return
                super().do_GET()

            def do_HEAD(self):
                with owner.lock:
                    owner.requests.append(("HEAD", self.path))
                super().do_HEAD()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval only makes shutdown() quick at teardown.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def gets(self):
        return [path for method, path in self.requests if method == "GET"]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def web(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.dat").write_bytes(b"A" * 5000)
    (root / "b.dat").write_bytes(b"bee")
    server = CountingServer(root)
    yield server
    server.close()


class TestHttp:
    def test_one_connection_one_download_then_skip(self, web, tmp_path):
        items = (stage_in_items(1, tmp_path / "w1", parse_stage_in([(f"{web.url}/a.dat", "in/"),
                                                                    (f"{web.url}/b.dat", "b")]))
                 + stage_in_items(2, tmp_path / "w2",
                                  parse_stage_in([(f"{web.url}/a.dat", "a.dat")])))
        transfers = Transfers()
        assert transfers.run(items) == {1: TaskTransferReport(1, None, 2, 0, 1),
                                        2: TaskTransferReport(2, None, 1, 0, 1)}
        assert (tmp_path / "w1/in/a.dat").read_bytes() == b"A" * 5000
        assert (tmp_path / "w2/a.dat").read_bytes() == b"A" * 5000
        assert (tmp_path / "w1/b").read_bytes() == b"bee"
        assert sorted(web.gets()) == ["/a.dat", "/b.dat"]  # a.dat once for both tasks
        assert web.connections == 1
        # Second run: HEAD says same size and not newer, so nothing is downloaded again.
        web.requests.clear()
        assert transfers.run(items) == {1: TaskTransferReport(1, None, 0, 2, 1),
                                        2: TaskTransferReport(2, None, 0, 1, 1)}
        assert web.gets() == []
        assert sorted(web.requests) == [("HEAD", "/a.dat"), ("HEAD", "/b.dat")]

    def test_newer_on_the_server_is_fetched_again(self, web, tmp_path):
        items = stage_in_items(1, tmp_path / "w", parse_stage_in([(f"{web.url}/b.dat", "b")]))
        Transfers().run(items)
        os.utime(tmp_path / "w/b", (1_000_000, 1_000_000))  # older than the server's copy
        web.requests.clear()
        assert Transfers().run(items)[1].copied == 1
        assert web.gets() == ["/b.dat"]

    def test_checksum_fragment_skips_without_asking(self, web, tmp_path):
        url = f"{web.url}/b.dat#sha256={sha(b'bee')}"
        items = stage_in_items(1, tmp_path / "w", parse_stage_in([(url, "b")]))
        transfers = Transfers()
        assert transfers.run(items)[1] == TaskTransferReport(1, None, 1, 0, 1)
        web.requests.clear()
        assert transfers.run(items)[1] == TaskTransferReport(1, None, 0, 1, 1)
        assert web.requests == []

    def test_checksum_mismatch_fails_and_leaves_nothing(self, web, tmp_path):
        url = f"{web.url}/b.dat#sha256={'0' * 64}"
        items = stage_in_items(1, tmp_path / "w", parse_stage_in([(url, "b")]))
        report = Transfers(retries=2, sleep=Recorder()).run(items)[1]
        assert report.error.startswith(f"{web.url}/b.dat -> {tmp_path}/w/b: sha256 mismatch: "
                                       f"the URL says {'0' * 64}")
        assert report.attempts == 2
        assert not (tmp_path / "w").exists() or list((tmp_path / "w").iterdir()) == []

    def test_404_fails_only_its_task_and_is_not_retried(self, web, tmp_path):
        items = [TransferItem(1, "in", f"{web.url}/a.dat", str(tmp_path / "w1/a")),
                 TransferItem(2, "in", f"{web.url}/nope.dat", str(tmp_path / "w2/n"))]
        sleep = Recorder()
        reports = Transfers(sleep=sleep).run(items)
        assert reports[1] == TaskTransferReport(1, None, 1, 0, 1)
        assert reports[2].error == (f"{web.url}/nope.dat -> {tmp_path}/w2/n: "
                                    "HTTP 404 File not found")
        assert reports[2].attempts == 1
        assert sleep.waits == []

    def test_503_is_retried_with_backoff(self, web, tmp_path):
        web.fail_next = 2
        items = stage_in_items(5, tmp_path / "w", parse_stage_in([(f"{web.url}/b.dat", "b")]))
        sleep = Recorder()
        report = Transfers(retries=3, backoff=0.5, sleep=sleep).run(items)[5]
        assert report == TaskTransferReport(5, None, 1, 0, 3)
        assert sleep.waits == [0.5, 1.0]
        assert web.gets() == ["/b.dat"] * 3

    def test_503_past_retries_keeps_the_servers_words(self, web, tmp_path):
        web.fail_next = 10
        items = stage_in_items(5, tmp_path / "w", parse_stage_in([(f"{web.url}/b.dat", "b")]))
        report = Transfers(retries=2, sleep=Recorder()).run(items)[5]
        assert report.error == f"{web.url}/b.dat -> {tmp_path}/w/b: HTTP 503 Try Later"

    def test_connection_refused(self, web, tmp_path):
        url = web.url
        web.close()
        items = stage_in_items(1, tmp_path / "w", parse_stage_in([(f"{url}/b.dat", "b")]))
        report = Transfers(retries=1).run(items)[1]
        assert report.error.startswith(f"{url}/b.dat -> {tmp_path}/w/b: ConnectionRefusedError")


# --------------------------------------------------------------------------------------------
# rsync: real rsync between temporary directories
# --------------------------------------------------------------------------------------------


@pytest.fixture
def fake_remote_rsync(tmp_path):
    """A real rsync that treats host 'localhost:' as this machine (no ssh server here): the
    wrapper strips the prefix and logs each invocation, so batching can be counted."""
    log = tmp_path / "rsync.log"
    wrapper = tmp_path / "rsync-localhost"
    wrapper.write_text(f'#!/bin/bash\necho "$@" >> {log}\nexec {RSYNC} "${{@/#localhost:/}}"\n')
    wrapper.chmod(0o755)
    return wrapper, log


def invocations(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


class TestRsync:
    def test_command_lines_for_a_remote(self):
        items = [TransferItem(1, "out", "/w1/a.out", "user@hpc:results/a.out"),
                 TransferItem(2, "out", "/w2/b.out", "user@hpc:results/b.out"),
                 TransferItem(3, "out", "/w3/c.out", "user@hpc:other/c.out"),
                 TransferItem(1, "in", "rsync://mirror:873/mod/x/in.dat", "/w1/in.dat"),
                 TransferItem(1, "in", "rsync://mirror:873/mod/y/in2.dat", "/w1/in2.dat"),
                 TransferItem(2, "in", "hpc:data/a.dat", "/w2/renamed.dat"),
                 TransferItem(4, "out", "/w4/d.out", "hpc:d.out"),
                 TransferItem(5, "out", "/w5/e.out", "hpc:e.out")]
        batches = rsync_transport.plan(items, TransferOptions(rsync="rsync"))
        options = list(rsync_transport.OPTIONS)
        assert sorted(batch.argv() for batch in batches) == sorted([
            ["rsync", *options, "/w1/a.out", "/w2/b.out", "user@hpc:results/"],
            ["rsync", *options, "/w3/c.out", "user@hpc:other/"],
            ["rsync", *options, "rsync://mirror:873/mod/x/in.dat",
             "rsync://mirror:873/mod/y/in2.dat", "/w1/"],
            ["rsync", *options, "hpc:data/a.dat", "/w2/renamed.dat"],
            ["rsync", *options, "/w4/d.out", "/w5/e.out", "hpc:"],
        ])
        assert rsync_transport.remote_directory("host:x.dat") == "host:"
        assert rsync_transport.remote_directory("rsync://h/m/d/x") == "rsync://h/m/d/"

    def test_parse_itemized(self):
        out = ">f+++++++++ a.dat\n.f..T...... b.dat\n<fcsT...... c d.dat\ncd+++++++++ sub/\n"
        assert rsync_transport.parse_itemized(out) == {"a.dat", "c d.dat"}

    @needs_rsync
    def test_real_run_batches_then_skips(self, tmp_path, fake_remote_rsync):
        wrapper, log = fake_remote_rsync
        (tmp_path / "results").mkdir()
        items = []
        for task in (1, 2):
            work = tmp_path / f"w{task}"
            work.mkdir()
            (work / f"out{task}.dat").write_bytes(b"x" * task * 100)
            items += stage_out_items(task, work, parse_stage_out(
                [("*.dat", f"localhost:{tmp_path}/results/")]))
        transfers = Transfers(rsync=str(wrapper))
        assert transfers.run(items) == {1: TaskTransferReport(1, None, 1, 0, 1),
                                        2: TaskTransferReport(2, None, 1, 0, 1)}
        assert (tmp_path / "results/out2.dat").read_bytes() == b"x" * 200
        assert len(invocations(log)) == 1  # both tasks' files in one rsync process
        assert transfers.run(items) == {1: TaskTransferReport(1, None, 0, 1, 1),
                                        2: TaskTransferReport(2, None, 0, 1, 1)}
        assert len(invocations(log)) == 2

    @needs_rsync
    def test_real_stage_in_with_local_paths(self, tmp_path):
        # The rsync module's batch on plain local paths (what a localhost rsync would do).
        (tmp_path / "src").mkdir()
        (tmp_path / "src/a.dat").write_text("a")
        (tmp_path / "src/b.dat").write_text("b")
        items = [TransferItem(1, "in", str(tmp_path / "src/a.dat"), str(tmp_path / "w/a.dat")),
                 TransferItem(1, "in", str(tmp_path / "src/b.dat"), str(tmp_path / "w/b.dat"))]
        (batch,) = rsync_transport.plan(items, TransferOptions(rsync=RSYNC))
        assert [o.copied for o in batch.run()] == [1, 1]
        (tmp_path / "w/b.dat").write_text("B")
        assert [(o.copied, o.skipped) for o in batch.run()] == [(0, 1), (1, 0)]
        assert (tmp_path / "w/b.dat").read_text() == "b"

    @needs_rsync
    def test_bad_item_in_a_batch_fails_only_its_task(self, tmp_path, fake_remote_rsync):
        wrapper, log = fake_remote_rsync
        (tmp_path / "results").mkdir()
        (tmp_path / "w1").mkdir()
        (tmp_path / "w1/good.dat").write_text("good")
        items = [TransferItem(1, "out", str(tmp_path / "w1/good.dat"),
                              f"localhost:{tmp_path}/results/good.dat"),
                 TransferItem(2, "out", str(tmp_path / "w2/gone.dat"),
                              f"localhost:{tmp_path}/results/gone.dat")]
        sleep = Recorder()
        reports = Transfers(rsync=str(wrapper), retries=1, sleep=sleep).run(items)
        assert reports[1] == TaskTransferReport(1, None, 1, 0, 1)
        assert reports[2].attempts == 2
        assert reports[2].error.startswith(f"{tmp_path}/w2/gone.dat -> localhost:{tmp_path}/"
                                           "results/gone.dat: rsync exited with code 23: ")
        assert "gone.dat" in reports[2].error and "No such file" in reports[2].error
        assert (tmp_path / "results/good.dat").read_text() == "good"
        # The batch (rsync names the file it sent: exit 23 is a partial transfer), then the
        # item it did not name, alone.
        assert len(invocations(log)) == 2
        assert sleep.waits == [0.5]

    def test_missing_program(self, tmp_path):
        item = TransferItem(1, "in", "host:a.dat", str(tmp_path / "a.dat"))
        report = Transfers(rsync=str(tmp_path / "no-rsync"), sleep=Recorder()).run([item])[1]
        assert "the rsync program" in report.error and "was not found" in report.error
        assert report.attempts == 1


# --------------------------------------------------------------------------------------------
# Globus: a stand-in client
# --------------------------------------------------------------------------------------------


class StandInGlobus:
    """Records submitted TransferData documents; answers each task with the next status."""

    def __init__(self, statuses=("SUCCEEDED",), finish=True, files_skipped=0):
        self.statuses = list(statuses)
        self.finish = finish
        self.files_skipped = files_skipped
        self.submitted = []
        self.waits = []

    def submit_transfer(self, data):
        self.submitted.append(data)
        return {"task_id": f"task-{len(self.submitted)}"}

    def task_wait(self, task_id, *, timeout, polling_interval):
        self.waits.append((task_id, timeout, polling_interval))
        return self.finish

    def get_task(self, task_id):
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        task = {"task_id": task_id, "status": status, "files_skipped": self.files_skipped}
        if status == "FAILED":
            task.update(nice_status="PERMISSION_DENIED",
                        fatal_error={"code": "PERMISSION_DENIED", "description": "denied"})
        return task


def data_items(data):
    return [(d["source_path"], d["destination_path"]) for d in data["DATA"]]


class TestGlobus:
    def items(self, tmp_path):
        return [TransferItem(1, "in", f"globus://{EP_A}/data/x.dat", str(tmp_path / "w1/x")),
                TransferItem(2, "in", f"globus://{EP_A}/data/y.dat", str(tmp_path / "w2/y")),
                TransferItem(3, "out", str(tmp_path / "w3/r.out"), f"globus://{EP_B}/keep/r"),
                TransferItem(4, "in", f"globus://{EP_B}/data/z.dat", f"globus://{EP_A}/z")]

    def test_one_task_per_endpoint_pair(self, tmp_path):
        client = StandInGlobus()
        transfers = Transfers(globus_client=client, globus_endpoint=SITE_EP, timeout=120)
        reports = transfers.run(self.items(tmp_path))
        assert reports == {t: TaskTransferReport(t, None, 1, 0, 1) for t in (1, 2, 3, 4)}
        pairs = {(d["source_endpoint"], d["destination_endpoint"]): d for d in client.submitted}
        assert len(client.submitted) == 3 and set(pairs) == {
            (EP_A, SITE_EP), (SITE_EP, EP_B), (EP_B, EP_A)}
        assert data_items(pairs[EP_A, SITE_EP]) == [("/data/x.dat", str(tmp_path / "w1/x")),
                                                   ("/data/y.dat", str(tmp_path / "w2/y"))]
        assert data_items(pairs[SITE_EP, EP_B]) == [(str(tmp_path / "w3/r.out"), "/keep/r")]
        assert data_items(pairs[EP_B, EP_A]) == [("/data/z.dat", "/z")]
        for data in client.submitted:
            assert data["DATA_TYPE"] == "transfer"
            assert data["sync_level"] == 3  # Globus's code for "checksum"
            assert data["verify_checksum"] is True
        assert client.waits[0] == ("task-1", 120, globus_transport.POLLING_INTERVAL_S)
        assert (tmp_path / "w1").is_dir()  # local destination parents exist for Globus

    def test_failed_task_is_retried_item_by_item(self, tmp_path):
        client = StandInGlobus(statuses=["FAILED", "SUCCEEDED", "FAILED", "FAILED"])
        sleep = Recorder()
        # One slot: the stand-in answers in the order tasks are submitted, and batches run
        # at the same time would submit in any order.
        transfers = Transfers(globus_client=client, globus_endpoint=SITE_EP, retries=3,
                              sleep=sleep, slots=1)
        reports = transfers.run(self.items(tmp_path)[:2])
        assert reports[1] == TaskTransferReport(1, None, 1, 0, 2)
        assert reports[2].error == (f"globus://{EP_A}/data/y.dat -> {tmp_path}/w2/y: Globus "
                                    "task task-4 FAILED, nice_status=PERMISSION_DENIED, "
                                    "fatal_error=PERMISSION_DENIED: denied")
        assert reports[2].attempts == 3
        assert [data_items(d) for d in client.submitted[1:]] == [
            [("/data/x.dat", str(tmp_path / "w1/x"))], [("/data/y.dat", str(tmp_path / "w2/y"))],
            [("/data/y.dat", str(tmp_path / "w2/y"))]]
        assert sleep.waits == [0.5, 1.0]

    def test_all_files_skipped_by_checksum_sync(self, tmp_path):
        client = StandInGlobus(files_skipped=2)
        reports = Transfers(globus_client=client, globus_endpoint=SITE_EP).run(
            self.items(tmp_path)[:2])
        assert reports == {1: TaskTransferReport(1, None, 0, 1, 1),
                           2: TaskTransferReport(2, None, 0, 1, 1)}

    def test_sdk_is_imported_lazily(self):
        import subprocess
        import sys

        code = "import sys, balsam_futures.staging; print('globus_sdk' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout
        assert out.strip() == "False"

    def test_wait_timeout(self, tmp_path):
        client = StandInGlobus(finish=False)
        report = Transfers(globus_client=client, globus_endpoint=SITE_EP, retries=1,
                           timeout=30).run(self.items(tmp_path)[:1])[1]
        assert "Globus task task-1 did not finish within 30 s" in report.error

    def test_missing_endpoint_names_the_variable(self, tmp_path, monkeypatch):
        monkeypatch.delenv("BALSAM_FUTURES_GLOBUS_ENDPOINT", raising=False)
        client = StandInGlobus()
        reports = Transfers(globus_client=client).run(self.items(tmp_path))
        assert "BALSAM_FUTURES_GLOBUS_ENDPOINT" in reports[1].error
        assert reports[1].attempts == 1
        assert reports[4] == TaskTransferReport(4, None, 1, 0, 1)  # endpoint to endpoint
        monkeypatch.setenv("BALSAM_FUTURES_GLOBUS_ENDPOINT", SITE_EP)
        assert Transfers(globus_client=client).run(self.items(tmp_path))[1].error is None

    def test_missing_token_names_the_variable(self, tmp_path, monkeypatch):
        monkeypatch.delenv("BALSAM_FUTURES_GLOBUS_TOKEN", raising=False)
        report = Transfers(globus_endpoint=SITE_EP).run(self.items(tmp_path)[:1])[1]
        assert "BALSAM_FUTURES_GLOBUS_TOKEN" in report.error
        assert report.attempts == 1

    def test_missing_sdk(self, monkeypatch):
        import sys

        monkeypatch.setitem(sys.modules, "globus_sdk", None)
        with pytest.raises(StagingError, match=r"pip install 'balsam_futures\[globus\]'"):
            globus_transport.import_sdk()
