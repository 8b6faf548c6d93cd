"""Settings errors name the environment variable and the bad value in one line; database URLs are normalised to
the async drivers chatwire ships with."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatwire.config import Settings, SettingsError, load_settings, normalise_database_url
from chatwire.preflight import PreflightError, check_combination, database_url_for_admin


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgres://h/db", "postgresql+asyncpg://h/db"),
        ("postgresql+asyncpg://h/db", "postgresql+asyncpg://h/db"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("", ""),
    ],
)
def test_database_urls_mean_the_async_drivers(url: str, expected: str) -> None:
    assert normalise_database_url(url) == expected
    assert Settings(database_url=url, _env_file=None).database_url == expected  # type: ignore[call-arg]


def test_bad_value_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWIRE_PORT", "eighty")
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    assert message.startswith("CHATWIRE_PORT='eighty': ") and "\n" not in message


def test_several_bad_values_say_how_many_more(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWIRE_PORT", "eighty")
    monkeypatch.setenv("CHATWIRE_PING_TIMEOUT", "soon")
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    assert "(and 1 more)" in message and "\n" not in message


def test_fleet_combinations(tmp_path: Path) -> None:
    base = {"data_dir": tmp_path, "_env_file": None, "redis_url": "redis://r:6379/0"}
    with pytest.raises(PreflightError, match="CHATWIRE_JWT_SECRET is empty"):
        check_combination(Settings(**base))  # type: ignore[arg-type]
    with pytest.raises(PreflightError, match=r"CHATWIRE_DATABASE_URL=.*PostgreSQL"):
        check_combination(Settings(**base, jwt_secret="s"))  # type: ignore[arg-type]
    check_combination(Settings(**base, jwt_secret="s", database_url="postgresql://h/db"))  # type: ignore[arg-type]
    check_combination(Settings(data_dir=tmp_path, _env_file=None))  # type: ignore[call-arg]  # embedded: fine


def test_admin_commands_never_create_a_database(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(PreflightError, match="no database at"):
        database_url_for_admin(settings)
    assert not (tmp_path / "data").exists()
    memory = Settings(data_dir=tmp_path, database_url="sqlite+aiosqlite:///:memory:", _env_file=None)  # type: ignore[call-arg]
    assert memory.sqlite_path is None


def test_an_empty_web_dir_means_the_bundled_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """`CHATWIRE_WEB_DIR=` (set but empty) is the documented default, never the current folder."""
    monkeypatch.setenv("CHATWIRE_WEB_DIR", "")
    assert Settings(_env_file=None).web_dir is None  # type: ignore[call-arg]
