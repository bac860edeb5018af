"""Settings: safe defaults in development, clear refusals in production."""

import stat

import pytest

from mailer_app.settings import ConfigurationError, Settings, normalize_database_url


def test_production_refuses_to_run_without_master_key(tmp_path, monkeypatch):
    monkeypatch.delenv("MASTER_KEY", raising=False)
    settings = Settings(environment="prod", data_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="MASTER_KEY is not set.*generate-key"):
        settings.master_keys()
    assert not (tmp_path / "master.key").exists()


def test_development_generates_one_private_master_key_and_reuses_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MASTER_KEY", raising=False)
    first = Settings(environment="dev", data_dir=tmp_path).master_keys()
    second = Settings(environment="dev", data_dir=tmp_path).master_keys()
    assert first == second and len(first) == 1
    mode = stat.S_IMODE((tmp_path / "master.key").stat().st_mode)
    assert mode == 0o600, oct(mode)


def test_master_key_list_is_newest_first_for_rotation(tmp_path):
    settings = Settings(environment="prod", data_dir=tmp_path, master_key="new, old")
    assert settings.master_keys() == ["new", "old"]


def test_default_database_is_sqlite_under_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url() == f"sqlite:///{tmp_path / 'mailer.db'}"


def test_postgres_urls_use_the_psycopg3_driver():
    assert normalize_database_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_database_url("postgresql://h/db") == "postgresql+psycopg://h/db"
    assert normalize_database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_production_requires_redis_url_but_development_has_a_private_one(tmp_path, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        Settings(environment="prod", data_dir=tmp_path).resolved_redis_url()
    dev_url = Settings(environment="dev", data_dir=tmp_path).resolved_redis_url()
    assert dev_url.startswith("unix://") and str(tmp_path) in dev_url
