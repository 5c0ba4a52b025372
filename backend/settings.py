"""Application settings, read from the environment with `.env` as the fallback (the real environment always wins)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from backend.mcp_config import McpServerConfig, parse_mcp_servers

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE_URL = f"sqlite+aiosqlite:///{PROJECT_ROOT / 'data' / 'chat.db'}"
MIN_SECRET_BYTES = 32


MIN_METRICS_TOKEN = 16


class SettingsError(Exception):
    """A setting has a bad value. The message is one line that names the setting."""


def is_loopback(host: str) -> bool:
    """Tell whether `host` names only the local machine.

    Args:
        host: A host name or IP address as given to the server.

    Returns:
        True for `localhost` and loopback addresses (127.0.0.0/8, ::1).
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalize_database_url(url: str) -> str:
    """Map the URL spellings operators use onto the async drivers this app runs on.

    Args:
        url: `postgres://`, `postgresql://`, `postgresql+psycopg://`, `sqlite://` or `sqlite+aiosqlite://`.

    Returns:
        The URL with the async driver named (`postgresql+psycopg`, `sqlite+aiosqlite`).

    Raises:
        ValueError: For any other scheme.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("must be a URL such as sqlite+aiosqlite:///path.db or postgresql://user@host/db")
    mapping = {
        "postgres": "postgresql+psycopg",
        "postgresql": "postgresql+psycopg",
        "postgresql+psycopg": "postgresql+psycopg",
        "sqlite": "sqlite+aiosqlite",
        "sqlite+aiosqlite": "sqlite+aiosqlite",
    }
    if scheme not in mapping:
        raise ValueError(f"unsupported scheme {scheme!r}; use postgresql://, postgres:// or sqlite+aiosqlite://")
    return f"{mapping[scheme]}://{rest}"


class Settings(BaseSettings):
    """Every knob the server has. Names are the environment variables (case-insensitive)."""

    model_config = SettingsConfigDict(
        env_file=PROJECT_ROOT / ".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    database_url: str = Field(default=DEFAULT_SQLITE_URL)
    migrate_on_startup: bool | None = Field(
        default=None, description="Run `alembic upgrade head` at start-up. Default: on for SQLite, off otherwise."
    )
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0, description="Give up opening a connection after this.")
    db_statement_timeout_seconds: float = Field(
        default=5.0, gt=0, description="PostgreSQL `statement_timeout`: cancel any statement that runs longer."
    )
    db_lock_timeout_seconds: float = Field(
        default=5.0, gt=0, description="PostgreSQL `lock_timeout`: give up waiting for a row or table lock."
    )
    db_call_timeout_seconds: float = Field(
        default=8.0,
        gt=0,
        description="PostgreSQL: give up on any one round trip (a statement, a fetch, a commit) after this; 503. "
        "Above the statement and lock timeouts, so the server's own answer comes first; this bounds a frozen server.",
    )
    sqlite_busy_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="SQLite: how long a transaction waits for the one writer slot. A burst queues for a while.",
    )

    model: str = Field(default="gemini/gemini-2.5-flash")
    gemini_api_key: str | None = Field(default=None)
    gemini_api_base: str | None = Field(default=None)
    offline_model: bool | None = Field(
        default=None, description="Force the offline demo model on or off. Default: on when no API key is set."
    )
    model_timeout_seconds: float = Field(default=120.0, gt=0)
    model_retries: int = Field(default=2, ge=0, le=10)
    model_usage_source: Literal["finish_chunk", "usage_chunk", "litellm_model"] = Field(
        default="finish_chunk",
        description=(
            "Where each streamed model call's usage comes from: LiteLLM's finish chunk (default; the stream ends "
            "there), its usage chunk (`include_usage`, documented behaviour only), or the SDK's LitellmModel "
            "(LiteLLM rebuilds every reply and runs its cost and logging)."
        ),
    )
    max_turns: int = Field(default=10, ge=1, le=100)
    titles: bool = Field(
        default=True,
        description="Name a new conversation with the model after its first message (`off`: keep the message's start).",
    )
    title_model: str | None = Field(
        default=None, description="The LiteLLM model string for titles (default: `MODEL`); same key and base URL."
    )
    title_timeout_seconds: float = Field(
        default=15.0, gt=0, le=120, description="Give up on a title call after this; the first-message title stays."
    )

    auth_secret: str | None = Field(
        default=None, validation_alias=AliasChoices("AUTH_SECRET", "BETTER_AUTH_SECRET", "JWT_SECRET")
    )
    jwt_issuer: str | None = Field(default=None)
    jwt_audience: str | None = Field(default=None)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    host: str = Field(default="127.0.0.1")
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(default="INFO")
    log_format: Literal["text", "json"] = Field(default="text", description="`json`: one JSON object per line.")
    loop_stall_ms: float = Field(
        default=100.0,
        ge=0,
        description="Log a WARNING, with the code holding it, when the event loop is held longer than this; 0: off.",
    )

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    agui_path: str = Field(
        default="/api/agui",
        pattern=r"^(/[A-Za-z0-9._~-]+)+$",
        description="Where AG-UI clients post `RunAgentInput` (rejoin: `{AGUI_PATH}/{threadId}/stream`).",
    )
    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, description="Cap on all request headers together (names and values); 431 above."
    )
    max_message_chars: int = Field(default=16_000, ge=1)
    chatkit_path: str = Field(
        default="/api/chatkit",
        pattern=r"^/[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
        description="Where OpenAI's ChatKit client posts its requests (`api.url`); see backend/protocols/CHATKIT.md.",
    )
    keepalive_seconds: float = Field(default=15.0, gt=0)
    history_max_items: int = Field(default=200, ge=1)
    on_disconnect: Literal["continue", "cancel"] = Field(
        default="continue",
        description="What a client disconnect does to its turn: it goes on and is stored, or it is cancelled.",
    )
    max_turn_seconds: float = Field(default=600.0, gt=0, description="The longest a turn may run.")
    event_flush_seconds: float = Field(
        default=0.25, gt=0, le=5, description="How long a turn's events may wait in memory before they are logged."
    )
    event_retention_hours: float = Field(
        default=168.0, gt=0, description="How long the event log of a finished turn is kept (the message stays)."
    )
    save_retry_seconds: float = Field(
        default=30.0, ge=0, description="How long a reply waits in memory while the database is unreachable."
    )
    heartbeat_seconds: float = Field(default=3.0, gt=0, description="How often a process proves it is alive.")
    stale_after_seconds: float = Field(
        default=10.0, gt=0, description="After this long without a heartbeat, a process's turns are taken over."
    )

    mcp_servers: Annotated[list[McpServerConfig], NoDecode] = Field(
        default_factory=list, description="External MCP servers for the agent: JSON, or a path to a JSON file."
    )
    mcp_connect_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long start-up waits for the MCP servers' first connection."
    )
    mcp_health_seconds: float = Field(default=15.0, gt=0, description="How often an idle MCP server is pinged.")
    mcp_reconnect_max_seconds: float = Field(default=60.0, gt=0, description="Longest wait between reconnections.")

    file_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="Largest accepted upload (413 above).")
    files_per_message_max: int = Field(default=10, ge=1, description="Most attachments on one chat message.")
    file_storage: Literal["local", "database"] | None = Field(
        default=None, description="Where file bytes live. Default: `local` with SQLite, `database` otherwise."
    )
    file_storage_dir: Path = Field(default=PROJECT_ROOT / "data" / "files", description="Root of `local` storage.")
    file_unattached_ttl_seconds: float = Field(default=24 * 3600.0, gt=0)
    file_sweep_interval_seconds: float = Field(default=600.0, gt=0)
    file_quota_bytes: int = Field(default=0, ge=0, description="Total upload bytes per user; 0 means no quota.")
    message_attachment_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1,
        description="Most bytes of all attachments of one chat message together (413 attachments_too_large above).",
    )
    history_attachment_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=0,
        description="Budget for re-sending earlier messages' attachments; the new message's own files use it up first.",
    )
    max_turns_per_user: int = Field(
        default=3,
        ge=0,
        description="Most replies one user may have running at once, in all processes (429 above; a per-user override "
        "with `python -m backend limits set`); 0: no limit.",
    )

    # Quotas and rate limits per user (0: none); `python -m backend limits set` overrides them for one user.
    tokens_per_day: int = Field(default=0, ge=0, description="Model tokens per user per UTC day; 0: no limit.")
    tokens_per_month: int = Field(default=0, ge=0, description="Model tokens per user per UTC month; 0: no limit.")
    usd_per_month: float = Field(default=0.0, ge=0, description="Model cost in USD per user per UTC month; 0: none.")
    messages_per_minute: int = Field(default=0, ge=0, description="Chat messages per user per minute; 0: no limit.")

    metrics: Literal["off", "token", "port"] = Field(
        default="off",
        description="Prometheus metrics: off; `token`: GET /metrics with METRICS_TOKEN as bearer; `port`: open on "
        "METRICS_PORT.",
    )
    metrics_token: str | None = Field(default=None, description="The bearer token of GET /metrics (METRICS=token).")
    metrics_port: int = Field(default=9464, ge=1, le=65535, description="The metrics port (METRICS=port).")

    @field_validator("chatkit_path")
    @classmethod
    def _chatkit_path_is_its_own(cls, value: str) -> str:
        taken = ("/chatkit", "/api/chat", "/api/conversations", "/api/files", "/api/tasks", "/mcp", "/schema")
        if any(value == path or value.startswith(f"{path}/") for path in taken):
            raise ValueError(f"CHATKIT_PATH must not be (or be under) one of {', '.join(taken)}")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return normalize_database_url(value.strip())

    @field_validator(
        "gemini_api_key", "gemini_api_base", "auth_secret", "jwt_issuer", "jwt_audience", "metrics_token", mode="before"
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("mcp_servers", mode="before")
    @classmethod
    def _parse_mcp_servers(cls, value: object) -> object:
        return parse_mcp_servers(value) if value is None or isinstance(value, str | dict) else value

    @field_validator("auth_secret")
    @classmethod
    def _secret_length(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes for HS256")
        return value

    @model_validator(mode="after")
    def _metrics_token_given(self) -> Settings:
        if self.metrics == "token" and (self.metrics_token is None or len(self.metrics_token) < MIN_METRICS_TOKEN):
            raise ValueError(f"METRICS=token needs METRICS_TOKEN of at least {MIN_METRICS_TOKEN} characters")
        return self

    @model_validator(mode="after")
    def _local_mode_only_on_loopback(self) -> Settings:
        if self.auth_secret is None and not is_loopback(self.host):
            raise ValueError(
                f"HOST: {self.host!r} is not a loopback address, and without AUTH_SECRET every request would be the "
                f"one local user. Set AUTH_SECRET (or BETTER_AUTH_SECRET), or bind HOST to 127.0.0.1"
            )
        return self

    @property
    def local_mode(self) -> bool:
        """True when no secret is configured and every request is the single local user."""
        return self.auth_secret is None

    @property
    def is_sqlite(self) -> bool:
        """True when the database is the embedded SQLite file."""
        return self.database_url.startswith("sqlite")

    @property
    def should_migrate_on_startup(self) -> bool:
        """Whether start-up applies migrations (explicit setting, else only for SQLite)."""
        return self.is_sqlite if self.migrate_on_startup is None else self.migrate_on_startup

    @property
    def file_storage_backend(self) -> Literal["local", "database"]:
        """Where uploads are stored: the explicit setting, else `local` for SQLite and `database` otherwise."""
        if self.file_storage is not None:
            return self.file_storage
        return "local" if self.is_sqlite else "database"

    @property
    def use_offline_model(self) -> bool:
        """Whether the deterministic offline demo model answers instead of a real provider."""
        return self.gemini_api_key is None if self.offline_model is None else self.offline_model


def describe_error(error: ValidationError) -> str:
    """Turn a settings validation error into one line that names the setting.

    Args:
        error: The pydantic error raised while building `Settings`.

    Returns:
        For example `invalid setting PORT: Input should be less than or equal to 65535`.
    """
    first = error.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    if not first["loc"]:
        return f"invalid setting {message}"
    return f"invalid setting {str(first['loc'][0]).upper()}: {message}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, `.env` and explicit overrides.

    Args:
        **overrides: Field values that win over the environment (used by tests and the CLI).

    Returns:
        Validated settings.

    Raises:
        SettingsError: With a one-line message naming the bad setting.
    """
    try:
        return Settings(**cast(dict[str, Any], overrides))
    except ValidationError as error:
        raise SettingsError(describe_error(error)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, loaded once."""
    return load_settings()
