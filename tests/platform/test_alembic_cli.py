"""`alembic upgrade head` from a shell says what it did (the production install runs it by hand)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from backend.settings import PROJECT_ROOT

ALEMBIC = Path(sys.executable).parent / "alembic"


def test_the_cli_prints_each_migration_it_runs(tmp_path: Path):
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    upgraded = subprocess.run(
        [str(ALEMBIC), "upgrade", "head"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert "Running upgrade  -> 0001" in upgraded.stderr, upgraded.stderr
    again = subprocess.run(
        [str(ALEMBIC), "upgrade", "head"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and "Running upgrade" not in again.stderr, "nothing left to do, and it says so"
    assert "Context impl SQLiteImpl" in again.stderr
