"""``BALSAM_FUTURES_*`` settings (``balsam_futures.config``) and the site directory
(``balsam_futures.sitedir``)."""

from __future__ import annotations

import os
import stat

import pytest

from balsam_futures import config
from balsam_futures.errors import SiteError
from balsam_futures.sitedir import DB_FILE, DEFAULT_SITE_NAME, open_site, resolve_site

pytestmark = pytest.mark.timeout(60)

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in config.SETTINGS:
        monkeypatch.delenv(config.PREFIX + name, raising=False)


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --------------------------------------------------------------------------------------------
# config.setting
# --------------------------------------------------------------------------------------------


class TestSettings:
    @pytest.mark.parametrize("name", sorted(config.SETTINGS))
    def test_default(self, name):
        assert config.setting(name) == config.SETTINGS[name].default

    def test_known_defaults(self):
        assert config.setting("MAX_PAYLOAD_BYTES") == 256 * 1024 * 1024
        assert config.setting("LEASE_SECONDS") == 30.0
        assert config.setting("LOG_LEVEL") == "INFO"
        assert config.setting("SITE") is None

    @pytest.mark.parametrize("name, raw, value", [
        ("MAX_PAYLOAD_BYTES", "1024", 1024),
        ("LEASE_SECONDS", "2.5", 2.5),
        ("LEASE_SECONDS", "7", 7.0),
        ("LOG_LEVEL", "DEBUG", "DEBUG"),
        ("SITE", "/scratch/site", "/scratch/site"),
        ("TASK_ID", "42", 42),
    ])
    def test_environment_overrides_the_default(self, monkeypatch, name, raw, value):
        monkeypatch.setenv(config.PREFIX + name, raw)
        got = config.setting(name)
        assert got == value
        assert type(got) is config.SETTINGS[name].kind

    def test_empty_value_means_default(self, monkeypatch):
        monkeypatch.setenv("BALSAM_FUTURES_LEASE_SECONDS", "")
        assert config.setting("LEASE_SECONDS") == 30.0

    def test_explicit_environ_mapping(self):
        assert config.setting("MAX_PAYLOAD_BYTES",
                              {"BALSAM_FUTURES_MAX_PAYLOAD_BYTES": "10"}) == 10
        assert config.setting("MAX_PAYLOAD_BYTES", {}) == 256 * 1024 * 1024

    @pytest.mark.parametrize("name, raw", [
        ("MAX_PAYLOAD_BYTES", "lots"),
        ("MAX_PAYLOAD_BYTES", "1.5"),
        ("LEASE_SECONDS", "thirty"),
        ("TASK_ID", "x7"),
    ])
    def test_bad_value_names_the_variable(self, monkeypatch, name, raw):
        monkeypatch.setenv(config.PREFIX + name, raw)
        with pytest.raises(ValueError) as info:
            config.setting(name)
        message = str(info.value)
        assert f"BALSAM_FUTURES_{name}" in message
        assert repr(raw) in message
        assert config.SETTINGS[name].kind.__name__ in message

    def test_unknown_setting(self):
        with pytest.raises(KeyError):
            config.setting("NO_SUCH_SETTING")
        with pytest.raises(KeyError):
            config.env_name("NO_SUCH_SETTING")

    def test_env_name(self):
        assert config.env_name("SITE") == "BALSAM_FUTURES_SITE"

    def test_every_setting_is_documented(self):
        for name, spec in config.SETTINGS.items():
            assert spec.name == name
            assert spec.help


# --------------------------------------------------------------------------------------------
# sitedir.open_site
# --------------------------------------------------------------------------------------------


class TestSite:
    def test_creates_a_private_site_with_data_and_logs(self, tmp_path):
        site = open_site(tmp_path / "site")
        assert site.path == tmp_path / "site"
        assert site.path.is_dir()
        assert mode_of(site.path) == 0o700
        assert site.data_dir == site.path / "data" and site.data_dir.is_dir()
        assert site.logs_dir == site.path / "logs" and site.logs_dir.is_dir()
        assert mode_of(site.data_dir) == 0o700
        assert mode_of(site.logs_dir) == 0o700
        assert site.db_path == site.path / DB_FILE
        assert site.db_url == f"sqlite:///{site.path / DB_FILE}"
        assert not site.db_path.exists(), "opening the site must not create the database"

    def test_opening_twice_keeps_contents(self, tmp_path):
        site = open_site(tmp_path / "site")
        (site.data_dir / "keep").write_text("x")
        again = open_site(str(tmp_path / "site"))
        assert again == site
        assert (again.data_dir / "keep").read_text() == "x"

    def test_existing_directory_missing_subdirectories(self, tmp_path):
        (tmp_path / "site").mkdir()
        site = open_site(tmp_path / "site")
        assert site.data_dir.is_dir() and site.logs_dir.is_dir()

    def test_creates_missing_parents(self, tmp_path):
        site = open_site(tmp_path / "a" / "b" / "site")
        assert site.path.is_dir()
        assert mode_of(site.path) == 0o700

    def test_environment_variable_is_used(self, monkeypatch, tmp_path):
        monkeypatch.setenv("BALSAM_FUTURES_SITE", str(tmp_path / "from_env"))
        site = open_site()
        assert site.path == tmp_path / "from_env"
        assert site.data_dir.is_dir()

    def test_explicit_path_wins_over_the_environment(self, monkeypatch, tmp_path):
        monkeypatch.setenv("BALSAM_FUTURES_SITE", str(tmp_path / "from_env"))
        site = open_site(tmp_path / "explicit")
        assert site.path == tmp_path / "explicit"
        assert not (tmp_path / "from_env").exists()

    def test_default_is_in_the_working_directory(self, monkeypatch, tmp_path):
        monkeypatch.chdir(tmp_path)
        assert resolve_site() == tmp_path / DEFAULT_SITE_NAME
        assert open_site().path == tmp_path / DEFAULT_SITE_NAME
        assert (tmp_path / DEFAULT_SITE_NAME / "logs").is_dir()

    def test_relative_and_user_paths_are_made_absolute(self, monkeypatch, tmp_path):
        monkeypatch.chdir(tmp_path)
        assert resolve_site("rel") == tmp_path / "rel"
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert resolve_site("~/s") == tmp_path / "home" / "s"

    def test_resolve_creates_nothing(self, tmp_path):
        resolve_site(tmp_path / "nothing")
        assert not (tmp_path / "nothing").exists()

    def test_path_that_is_a_file(self, tmp_path):
        path = tmp_path / "site"
        path.write_text("not a directory")
        with pytest.raises(SiteError) as info:
            open_site(path)
        assert str(path) in str(info.value)
        assert "not a directory" in str(info.value)
        assert isinstance(info.value, OSError)

    @pytest.mark.parametrize("blocked", ["file_in_the_way", "dev_null"])
    def test_parent_that_cannot_hold_a_directory(self, tmp_path, blocked):
        # A regular file (or /dev/null) where a parent directory should be: mkdir fails even
        # for root, unlike a permissions check.
        if blocked == "dev_null":
            path = "/dev/null/site"
        else:
            (tmp_path / "file").write_text("x")
            path = tmp_path / "file" / "site"
        with pytest.raises(SiteError) as info:
            open_site(path)
        message = str(info.value)
        assert str(path) in message
        assert "site=" in message
        assert "BALSAM_FUTURES_SITE" in message
        assert "writable directory" in message

    @pytest.mark.skipif(RUNNING_AS_ROOT, reason="root bypasses directory permissions")
    def test_read_only_parent(self, tmp_path):
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o500)
        try:
            with pytest.raises(SiteError) as info:
                open_site(parent / "site")
        finally:
            parent.chmod(0o700)
        assert str(parent / "site") in str(info.value)
        assert "BALSAM_FUTURES_SITE" in str(info.value)

    @pytest.mark.skipif(RUNNING_AS_ROOT, reason="root bypasses directory permissions")
    def test_existing_site_that_is_not_writable(self, tmp_path):
        site = open_site(tmp_path / "site")
        site.path.chmod(0o500)
        try:
            with pytest.raises(SiteError, match="not writable"):
                open_site(site.path)
        finally:
            site.path.chmod(0o700)
