"""The operator's commands: `python -m backend usage ...` (every user's usage) and `python -m backend limits ...`.

They use `DATABASE_URL` (and `.env`) like the server, and print to stdout.

    python -m backend usage [--from 2026-12-01] [--to 2026-12-08] [--group-by user|day|model|conversation]
                            [--user ID] [--json]
    python -m backend limits show [USER]
    python -m backend limits set USER [--tokens-per-day N] [--tokens-per-month N] [--usd-per-month X]
                                      [--messages-per-minute N] [--max-turns-per-user N]
    python -m backend limits clear USER

In `limits set`, `0` lifts that limit for the user and `default` goes back to the setting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from sqlalchemy import delete
from sqlmodel import col, select

from backend.db import Database, create_database
from backend.errors import InvalidInputError
from backend.models import utcnow
from backend.settings import Settings, load_settings
from backend.usage.limits import LIMIT_NAMES, LimitsService
from backend.usage.models import UserLimits
from backend.usage.report import UsageReport, usage_report
from backend.usage.routes import time_range


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description="Usage reports and per-user limits.")
    commands = parser.add_subparsers(dest="command", required=True)
    usage = commands.add_parser("usage", help="every user's model usage from the ledger")
    usage.add_argument("--from", dest="start", help="ISO 8601 (default: this UTC month's start)")
    usage.add_argument("--to", dest="end", help="ISO 8601, exclusive (default: now)")
    usage.add_argument("--group-by", choices=["user", "day", "model", "conversation"], default="user")
    usage.add_argument("--user", help="one user only")
    usage.add_argument("--json", action="store_true", help="print JSON")
    limits = commands.add_parser("limits", help="per-user overrides of the limit settings")
    actions = limits.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="the settings, and every override (or one user's effective limits)")
    show.add_argument("user", nargs="?")
    set_ = actions.add_parser("set", help="override limits for one user (0: no limit; default: the setting)")
    set_.add_argument("user")
    for name in LIMIT_NAMES:
        set_.add_argument(f"--{name.replace('_', '-')}", dest=name)
    clear = actions.add_parser("clear", help="drop a user's overrides")
    clear.add_argument("user")
    return parser


def _value(name: str, raw: str) -> int | float | None:
    if raw == "default":
        return None
    try:
        value = float(raw) if name == "usd_per_month" else int(raw)
    except ValueError:
        raise InvalidInputError(f"--{name.replace('_', '-')}: a number, 0 or 'default'") from None
    if value < 0:
        raise InvalidInputError(f"--{name.replace('_', '-')}: must not be negative")
    return value


def _print_report(report: UsageReport, as_json: bool) -> None:
    if as_json:
        _out(report.model_dump_json(indent=2))
        return
    _out(f"{report.group_by:<36} {'calls':>7} {'input':>10} {'output':>10} {'total':>11} {'usd':>12} unpriced")
    for group in [*report.data]:
        _out(
            f"{group.key or '-':<36} {group.calls:>7} {group.input_tokens:>10} {group.output_tokens:>10} "
            f"{group.total_tokens:>11} {group.cost_usd:>12.6f} {group.unpriced_calls}"
        )
    t = report.total
    _out(
        f"{'total':<36} {t.calls:>7} {t.input_tokens:>10} {t.output_tokens:>10} {t.total_tokens:>11} "
        f"{t.cost_usd:>12.6f} {t.unpriced_calls}"
    )


async def _limits(database: Database, settings: Settings, args: argparse.Namespace) -> None:
    quotas = LimitsService(database, settings)
    if args.action == "set":
        values = {name: _value(name, getattr(args, name)) for name in LIMIT_NAMES if getattr(args, name) is not None}
        async with database.sessions() as session:
            row = await session.get(UserLimits, args.user) or UserLimits(user_id=args.user)
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = utcnow()
            session.add(row)
            await session.commit()
    elif args.action == "clear":
        async with database.sessions() as session:
            await session.exec(delete(UserLimits).where(col(UserLimits.user_id) == args.user))
            await session.commit()
    await quotas.refresh()
    if args.user:
        _out(json.dumps({"user_id": args.user, **_limits_dict(quotas, args.user)}))
        return
    _out(json.dumps({"settings": _limits_dict(quotas, None)}))
    async with database.sessions() as session:
        rows = (await session.exec(select(UserLimits).order_by(col(UserLimits.user_id)))).all()
    for row in rows:
        _out(json.dumps({"user_id": row.user_id, **{name: getattr(row, name) for name in LIMIT_NAMES}}))


def _limits_dict(quotas: LimitsService, user_id: str | None) -> dict[str, float]:
    limits = quotas.defaults if user_id is None else quotas.limits_of(user_id)
    return {name: getattr(limits, name) for name in LIMIT_NAMES}


async def _run(args: argparse.Namespace) -> None:
    settings = load_settings()
    database = create_database(settings)
    try:
        if args.command == "usage":
            start, end = time_range(args.start, args.end)
            _print_report(await usage_report(database, args.user, start, end, args.group_by), args.json)
        else:
            await _limits(database, settings, args)
    finally:
        await database.dispose()


async def run(argv: Sequence[str]) -> None:
    """Run one command (`argv` without the program name).

    Raises:
        InvalidInputError: A limit's value is not a number, 0 or `default`.
    """
    await _run(_parser().parse_args(list(argv)))


def main(argv: Sequence[str]) -> None:
    """Run one command; a bad argument exits with one line on stderr."""
    try:
        asyncio.run(run(argv))
    except InvalidInputError as error:
        sys.exit(f"error: {error.message}")
