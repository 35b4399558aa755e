"""A password in a database URL never shows: not in errors, logs, or process arguments."""

from __future__ import annotations

import pytest

from balsam_futures import BalsamExecutor, StoreUnavailable
from balsam_futures.backends import open_store

pytestmark = [pytest.mark.timeout(60)]

SECRET = "s3cr3t-Passw0rd"


def _noop():
    return None


def test_unreachable_server_error_hides_the_password():
    pytest.importorskip("psycopg2")
    with pytest.raises(StoreUnavailable) as info:
        open_store(f"postgresql://someone:{SECRET}@127.0.0.1:1/nodb")
    text = str(info.value) + repr(info.value)
    assert SECRET not in text
    assert "***" in text  # the URL is shown, redacted


@pytest.mark.postgres
def test_password_absent_from_logs_and_launcher_arguments(pg_url, tmp_path):
    # The test server trusts local connections, so the password is accepted and ignored.
    url = pg_url.replace("postgresql://balsam@", f"postgresql://balsam:{SECRET}@")
    with BalsamExecutor(max_workers=1, site=tmp_path / "site", db_url=url) as ex:
        assert ex.submit(_noop).result(timeout=30) is None
        assert SECRET not in ex.store.display_url
        with open(f"/proc/{ex._launcher.pid}/cmdline", "rb") as f:
            assert SECRET.encode() not in f.read()
    logs = list((tmp_path / "site" / "logs").iterdir())
    assert logs
    for log in logs:
        assert SECRET not in log.read_text()
