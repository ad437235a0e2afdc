"""Settings fail fast on unsafe values, parse what people write, and are documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.settings import PLACEHOLDER_SECRET_KEY, Settings

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "k" * 40


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No KEEL_* variable or .env of the developer's leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("KEEL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def make(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_production_refuses_the_placeholder_secret_key() -> None:
    with pytest.raises(ValidationError) as caught:
        make(environment="production")
    message = str(caught.value)
    assert "KEEL_SECRET_KEY is the development placeholder" in message
    assert "set a long random value" in message


def test_production_refuses_the_placeholder_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEEL_ENVIRONMENT", "production")
    monkeypatch.setenv("KEEL_SECRET_KEY", PLACEHOLDER_SECRET_KEY)
    with pytest.raises(ValidationError, match="development placeholder"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_production_refuses_a_short_secret_key() -> None:
    with pytest.raises(ValidationError, match="at least 32 characters"):
        make(environment="production", secret_key="short-but-not-the-placeholder")


def test_production_accepts_a_long_random_key() -> None:
    assert make(environment="production", secret_key=GOOD_KEY).secret_key == GOOD_KEY


def test_development_allows_the_placeholder() -> None:
    assert make().secret_key == PLACEHOLDER_SECRET_KEY


def test_cors_origins_parse_from_a_comma_separated_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEEL_CORS_ORIGINS", " http://localhost:3000, https://app.example.com ,")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.cors_origins == ["http://localhost:3000", "https://app.example.com"]


def test_empty_cors_origins_mean_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_CORS_ORIGINS", "")
    assert Settings(_env_file=None).cors_origins == []  # type: ignore[call-arg]


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_LOG_LEVEL", "debug")
    assert Settings(_env_file=None).log_level == "DEBUG"  # type: ignore[call-arg]


def test_defaults_keep_all_state_under_the_data_dir(tmp_path: Path) -> None:
    default = make()
    assert default.data_dir == Path("data")
    assert default.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'keel.db'}"
    assert default.temporal_db_path == tmp_path / "data" / "temporal.db"

    elsewhere = make(data_dir=tmp_path / "state")
    assert elsewhere.resolved_database_url.endswith(f"{tmp_path / 'state' / 'keel.db'}")
    assert elsewhere.temporal_db_path == tmp_path / "state" / "temporal.db"


def test_an_explicit_database_url_wins() -> None:
    url = "mysql+aiomysql://keel:pw@db:3306/keel"
    assert make(database_url=url).resolved_database_url == url


def test_a_dotenv_file_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("KEEL_API_PORT=9001\nKEEL_TASK_QUEUE=from-file\n")
    monkeypatch.setenv("KEEL_TASK_QUEUE", "from-env")
    settings = Settings()
    assert settings.api_port == 9001
    assert settings.task_queue == "from-env"


# -- .env.example ----------------------------------------------------------------------------

DOCUMENTED = re.compile(r"^#? ?(KEEL_[A-Z_]+)=(.*)$")


def documented_settings() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = DOCUMENTED.match(line)
        if match:
            assert match[1] not in found, f"{match[1]} is documented twice"
            found[match[1]] = match[2]
    return found


def test_env_example_documents_every_setting_and_nothing_else() -> None:
    expected = {f"KEEL_{name.upper()}" for name in Settings.model_fields}
    assert set(documented_settings()) == expected


def test_env_example_shows_the_real_defaults(tmp_path: Path) -> None:
    dotenv = tmp_path / "example.env"
    dotenv.write_text("".join(f"{k}={v}\n" for k, v in documented_settings().items()))
    from_example = Settings(_env_file=dotenv)  # type: ignore[call-arg]
    assert from_example.model_dump() == make().model_dump()
