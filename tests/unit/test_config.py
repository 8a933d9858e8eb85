"""Configuration: POCKET_DATABASE_URL to the library's environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from pocket.config import ConfigurationError, Settings


def test_unset_means_an_sqlite_file_in_the_current_directory(tmp_path: Path) -> None:
    settings = Settings.from_environ({}, cwd=tmp_path)
    assert settings.is_sqlite
    assert settings.env["SQLITE_DBNAME"] == str(tmp_path / "pocket.db")
    assert str(tmp_path / "pocket.db") in settings.description


def test_relative_and_absolute_sqlite_paths(tmp_path: Path) -> None:
    relative = Settings.from_url("sqlite:///data/p.db", cwd=tmp_path)
    absolute = Settings.from_url("sqlite:////var/lib/pocket/p.db", cwd=tmp_path)
    assert relative.env["SQLITE_DBNAME"] == str(tmp_path / "data/p.db")
    assert absolute.env["SQLITE_DBNAME"] == "/var/lib/pocket/p.db"


def test_a_postgresql_url_becomes_the_library_variables() -> None:
    settings = Settings.from_url("postgresql://ann:s%40cret@db.local:6543/wallets")
    assert settings.is_postgres
    assert dict(settings.env) == {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": "wallets",
        "POSTGRES_HOST": "db.local",
        "POSTGRES_PORT": "6543",
        "POSTGRES_USER": "ann",
        "POSTGRES_PASSWORD": "s@cret",
    }
    assert "s@cret" not in settings.description


def test_a_password_is_set_even_when_the_url_has_none() -> None:
    settings = Settings.from_url("postgresql://postgres@127.0.0.1/pocket")
    assert settings.env["POSTGRES_PASSWORD"] == ""
    assert settings.env["POSTGRES_PORT"] == "5432"


def test_the_library_variables_decide_when_no_url_is_set() -> None:
    settings = Settings.from_environ({"PERSISTENCE_MODULE": "eventsourcing.postgres"})
    assert settings.is_postgres
    assert dict(settings.env) == {}


@pytest.mark.parametrize(
    "url",
    [
        "mysql://x/y",
        "sqlite://",
        "sqlite:///",
        "postgresql://h:5432/",
        "postgresql://h:99999/db",
    ],
)
def test_urls_pocket_cannot_use_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_url(url)
