"""Settings: sources, aliases, URL normalization, one-line errors, and the CLI's refusal to start. No database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values

from backend.settings import PROJECT_ROOT, Settings, SettingsError, load_settings, normalize_database_url

SECRET_NAMES = ("AUTH_SECRET", "BETTER_AUTH_SECRET", "JWT_SECRET")
SETTING_NAMES = {name.upper() for name in Settings.model_fields} | set(SECRET_NAMES)
GOOD_SECRET = "s" * 32


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the developer's or CI's environment (names are case-insensitive)."""
    for name in list(os.environ):
        if name.upper() in SETTING_NAMES:
            monkeypatch.delenv(name)


def load(**overrides: object) -> Settings:
    """Settings from the environment only: no `.env` file."""
    return load_settings(_env_file=None, **overrides)


def one_line_error(**overrides: object) -> str:
    with pytest.raises(SettingsError) as caught:
        load(**overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- sources --------------------------------------------------------------------------------------------------------


def test_environment_beats_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9100\nLOG_LEVEL=debug\nMODEL=gemini/from-dotenv\nHOST=localhost\n")
    monkeypatch.setenv("PORT", "9200")
    monkeypatch.setenv("HOST", "::1")
    settings = load_settings(_env_file=env_file)
    assert settings.port == 9200
    assert settings.host == "::1"
    assert settings.log_level == "DEBUG"  # only in .env, so .env still counts
    assert settings.model == "gemini/from-dotenv"


def test_explicit_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AUTH_SECRET", GOOD_SECRET)
    monkeypatch.setenv("PORT", "9300")
    settings = load(auth_secret=None, port=9400)
    assert settings.auth_secret is None
    assert settings.local_mode
    assert settings.port == 9400


def test_project_dotenv_holds_no_secrets():
    values = dotenv_values(PROJECT_ROOT / ".env")
    assert Settings.model_config["env_file"] == PROJECT_ROOT / ".env"
    assert not {name.upper() for name in values} & {*SECRET_NAMES, "GEMINI_API_KEY"}


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_aliases(monkeypatch: pytest.MonkeyPatch, name: str):
    monkeypatch.setenv(name, GOOD_SECRET)
    settings = load()
    assert settings.auth_secret == GOOD_SECRET
    assert not settings.local_mode


def test_auth_secret_wins_over_better_auth_secret(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BETTER_AUTH_SECRET", "b" * 40)
    monkeypatch.setenv("AUTH_SECRET", "a" * 40)
    assert load().auth_secret == "a" * 40


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_secret_means_local_mode(monkeypatch: pytest.MonkeyPatch, blank: str):
    monkeypatch.setenv("AUTH_SECRET", blank)
    assert load().local_mode


def test_cors_origins_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CORS_ORIGINS", " http://a.test, http://b.test ,,")
    assert load().cors_origins == ["http://a.test", "http://b.test"]


@pytest.mark.parametrize("path", ["/chatkit", "/chatkit/x", "/api/chat", "/api/files/up", "chatkit", "/a b", "/x/"])
def test_chatkit_path_is_its_own_route(monkeypatch: pytest.MonkeyPatch, path: str):
    monkeypatch.setenv("CHATKIT_PATH", path)
    with pytest.raises(SettingsError):
        load()


def test_chatkit_path_default_and_override(monkeypatch: pytest.MonkeyPatch):
    assert load().chatkit_path == "/api/chatkit"
    monkeypatch.setenv("CHATKIT_PATH", "/ck/v1")
    assert load().chatkit_path == "/ck/v1"


# --- database URL ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("postgres://u:p@db:5432/app", "postgresql+psycopg://u:p@db:5432/app"),
        ("postgresql://u@db/app", "postgresql+psycopg://u@db/app"),
        ("postgresql+psycopg://u@db/app", "postgresql+psycopg://u@db/app"),
        ("sqlite:///data/x.db", "sqlite+aiosqlite:///data/x.db"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_database_url_is_normalized(monkeypatch: pytest.MonkeyPatch, raw: str, normalized: str):
    assert normalize_database_url(raw) == normalized
    assert load(database_url=f"  {raw} ").database_url == normalized
    monkeypatch.setenv("DATABASE_URL", raw)
    assert load().database_url == normalized


def test_default_database_is_sqlite():
    settings = load()
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.is_sqlite
    assert settings.should_migrate_on_startup
    assert not load(database_url="postgresql://u@h/d").should_migrate_on_startup


@pytest.mark.parametrize(
    "url", ["mysql://u@h/db", "postgresql+asyncpg://u@h/db", "http://example.test", "not a url", ""]
)
def test_unsupported_database_url_names_database_url(url: str):
    assert one_line_error(database_url=url).startswith("invalid setting DATABASE_URL: ")


# --- secret and host ------------------------------------------------------------------------------------------------


def test_short_secret_names_auth_secret():
    message = one_line_error(auth_secret="s" * 31)
    assert message.startswith("invalid setting AUTH_SECRET: ")
    assert "32" in message


def test_short_secret_from_an_alias_names_auth_secret(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BETTER_AUTH_SECRET", "short")
    with pytest.raises(SettingsError, match=r"^invalid setting AUTH_SECRET: "):
        load()


def test_secret_length_counts_bytes():
    assert load(auth_secret="s" * 32).auth_secret == "s" * 32
    assert load(auth_secret="é" * 16).auth_secret == "é" * 16  # 32 bytes in UTF-8


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", "[::]"])
def test_local_mode_on_a_public_host_is_refused(host: str):
    message = one_line_error(host=host)
    assert message.startswith("invalid setting HOST: ")
    assert "AUTH_SECRET" in message


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10"])
def test_public_host_is_allowed_with_a_secret(host: str):
    settings = load(host=host, auth_secret=GOOD_SECRET)
    assert settings.host == host
    assert not settings.local_mode


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "LocalHost", "127.0.0.2"])
def test_local_mode_on_loopback_is_allowed(host: str):
    settings = load(host=host)
    assert settings.local_mode
    assert settings.host == host


def test_public_host_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOST", "0.0.0.0")
    with pytest.raises(SettingsError, match=r"^invalid setting HOST: "):
        load()


@pytest.mark.parametrize(
    ("name", "value"), [("PORT", "70000"), ("PORT", "http"), ("WORKERS", "0"), ("LOG_LEVEL", "loud")]
)
def test_bad_values_name_their_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load()
    assert str(caught.value).startswith(f"invalid setting {name}: ")
    assert "\n" not in str(caught.value)


# --- python -m backend ----------------------------------------------------------------------------------------------

CLI_CASES = {
    "public-host": {"HOST": "0.0.0.0"},
    "bad-port": {"PORT": "70000"},
    "unreachable-database": {
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none",
        "MIGRATE_ON_STARTUP": "true",
        "PORT": "0",
    },
}


@pytest.fixture(scope="module")
def cli_runs() -> dict[str, subprocess.CompletedProcess[str]]:
    """Start every `python -m backend` case at once (each pays the import time), then collect them."""
    base = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "backend"],
            cwd=PROJECT_ROOT,
            env={**base, "HOST": "127.0.0.1", **extra},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, extra in CLI_CASES.items()
    }
    results = {}
    try:
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=60)
            results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


@pytest.mark.parametrize(
    ("case", "prefix"),
    [
        ("public-host", "error: invalid setting HOST: "),
        ("bad-port", "error: invalid setting PORT: "),
        ("unreachable-database", "error: could not migrate the database at DATABASE_URL: "),
    ],
)
def test_cli_refuses_to_start_with_one_line(cli_runs, case: str, prefix: str):
    run = cli_runs[case]
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(prefix), run.stderr
