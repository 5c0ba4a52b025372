"""The operator's list of recent feedback: `python -m backend.feedback`.

It uses `DATABASE_URL` (and `.env`) like the server and prints to stdout, one line per rating, newest first. The rated
reply's text is printed only with `--with-text`; comments are what the user wrote to the operator and are shown.

    python -m backend.feedback [--since 2026-12-01] [--until 2026-12-08] [--rating down|up|any] [--user ID]
                               [--limit 100] [--with-text] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import timedelta

from backend.db import create_database
from backend.errors import InvalidInputError
from backend.feedback.report import FeedbackEntry, recent_feedback
from backend.models import FeedbackRating, utcnow
from backend.settings import load_settings
from backend.usage.routes import parse_instant

DEFAULT_DAYS = 7
MAX_LIMIT = 10_000


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend.feedback", description="Recent feedback on replies.")
    parser.add_argument("--since", help=f"ISO 8601 (default: {DEFAULT_DAYS} days ago)")
    parser.add_argument("--until", help="ISO 8601, exclusive (default: now)")
    parser.add_argument("--rating", choices=["down", "up", "any"], default="down", help="default: down")
    parser.add_argument("--user", help="one user only")
    parser.add_argument("--limit", type=int, default=100, help="at most this many (default: 100)")
    parser.add_argument("--with-text", action="store_true", help="also print the rated reply's text")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    return parser


def _rating(value: str) -> FeedbackRating | None:
    if value == "up":
        return "up"
    if value == "down":
        return "down"
    return None


def _line(entry: FeedbackEntry, with_text: bool) -> str:
    comment = json.dumps(entry.comment, ensure_ascii=False) if entry.comment else "-"
    line = (
        f"{entry.updated_at.isoformat(timespec='seconds')} {entry.rating:<4} user={entry.user_id} "
        f"conversation={entry.conversation_id} message={entry.message_id} agent={entry.agent or '-'} comment={comment}"
    )
    if with_text:
        line += f" reply={json.dumps(entry.reply or '', ensure_ascii=False)}"
    return line


async def run(argv: Sequence[str]) -> None:
    """Print the feedback that `argv` (without the program name) selects.

    Raises:
        InvalidInputError: A bound is not ISO 8601, `--until` is not after `--since`, or `--limit` is out of range.
    """
    args = _parser().parse_args(list(argv))
    now = utcnow()
    since = parse_instant(args.since, "--since") or now - timedelta(days=DEFAULT_DAYS)
    until = parse_instant(args.until, "--until") or now
    if until <= since:
        raise InvalidInputError("--until: must be after --since")
    if not 1 <= args.limit <= MAX_LIMIT:
        raise InvalidInputError(f"--limit: from 1 to {MAX_LIMIT}")
    database = create_database(load_settings())
    try:
        entries = await recent_feedback(
            database,
            since=since,
            until=until,
            rating=_rating(args.rating),
            user_id=args.user,
            limit=args.limit,
            with_text=args.with_text,
        )
    finally:
        await database.dispose()
    for entry in entries:
        if args.json:
            _out(entry.model_dump_json(exclude=None if args.with_text else {"reply"}))
        else:
            _out(_line(entry, args.with_text))


def main(argv: Sequence[str]) -> None:
    """Run the command; a bad argument exits with one line on stderr."""
    try:
        asyncio.run(run(argv))
    except InvalidInputError as error:
        sys.exit(f"error: {error.message}")
