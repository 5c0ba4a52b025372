"""One logging set-up for our loggers and uvicorn's (error and access): text lines, or JSON lines for production.

`configure_logging` is called by `create_app` (so `uvicorn backend.app:create_app --factory` gets it too) and by
`python -m backend`, which also hands `logging_config` to uvicorn so that every worker process starts with it.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from backend.request_ids import install_log_records
from backend.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class TextFormatter(logging.Formatter):
    """`TEXT_FORMAT`, with `-` for a record made before the request-id log records were installed."""

    def __init__(self, format: str = TEXT_FORMAT) -> None:
        """Create the formatter (dictConfig passes `format`)."""
        super().__init__(format)

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as one text line."""
        if not hasattr(record, "request_id"):
            record.request_id = "-"
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (UTC, ISO 8601), `level`, `logger`, `message`, `request_id`, `exception`.

    `request_id` and `exception` only when the record has them.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a single line of JSON."""
        entry: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", "-")
        if rid != "-":
            entry["request_id"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def logging_config(settings: Settings) -> dict[str, Any]:
    """The `logging.config.dictConfig` dictionary for these settings (also uvicorn's `log_config`).

    Args:
        settings: Reads `log_level` and `log_format` (`text` or `json`).

    Returns:
        A config with one stderr handler on the root logger; uvicorn's loggers lose their own handlers and propagate
        to it, so every line has the same format.
    """
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if settings.log_format == "json"
        else {"()": f"{__name__}.TextFormatter", "format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"},
        },
        "loggers": {name: {"handlers": [], "propagate": True} for name in UVICORN_LOGGERS},
        "root": {"level": settings.log_level, "handlers": ["default"]},
    }


def configure_logging(settings: Settings) -> None:
    """Apply `logging_config(settings)` to this process, every record carrying its request's id."""
    install_log_records()
    logging.config.dictConfig(logging_config(settings))
