"""`GET /api/usage`: the caller's own model usage. Operators see every user's with `python -m backend usage`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from litestar import Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.security.jwt import Token

from backend.auth import User
from backend.db import Database
from backend.errors import InvalidInputError
from backend.models import utcnow
from backend.usage.limits import month_start
from backend.usage.report import UsageReport, usage_report

MAX_RANGE_DAYS = 366
GroupByParam = Literal["day", "model", "conversation"]


def parse_instant(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 date or date-time (UTC when it names no zone), or None when absent.

    Raises:
        InvalidInputError: The value is not ISO 8601.
    """
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(f"{name}: not an ISO 8601 date or date-time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def time_range(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """The report's `[from, to)`: by default from the start of this UTC month to now.

    Raises:
        InvalidInputError: A bound is malformed, `to` is not after `from`, or the range exceeds a year.
    """
    now = utcnow()
    begin = parse_instant(start, "from") or month_start(now)
    finish = parse_instant(end, "to") or now
    if finish <= begin:
        raise InvalidInputError("to: must be after from")
    if finish - begin > timedelta(days=MAX_RANGE_DAYS):
        raise InvalidInputError(f"the range may span at most {MAX_RANGE_DAYS} days")
    return begin, finish


@get("/api/usage", operation_id="GetUsage", tags=["usage"])
async def get_usage(
    request: Request[User, Token, State],
    user: NamedDependency[User],
    start: Annotated[
        str | None, QueryParameter(name="from", description="ISO 8601; default: this UTC month's start.")
    ] = None,
    end: Annotated[str | None, QueryParameter(name="to", description="ISO 8601, exclusive; default: now.")] = None,
    group_by: Annotated[GroupByParam, QueryParameter(description="How to group the ledger's rows.")] = "day",
) -> UsageReport:
    """The caller's model calls, tokens and cost from `from` to `to`, grouped by UTC day, model or conversation."""
    begin, finish = time_range(start, end)
    database: Database = request.app.state.database
    return await usage_report(database, user.id, begin, finish, group_by)
