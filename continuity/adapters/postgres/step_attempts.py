"""When each attempt of a workflow step started, and moments a run must not forget: tables in the control database.

Durable Functions runs an activity at least once; after a host crash the step runs again from the start,
and a timing taken inside the activity would count only the last attempt. ``step_attempts`` keeps the first
attempt's start per (run, step), so a step's reported time runs from its first attempt, and counts the
attempts. ``run_moments`` keeps moments written once per run, whatever crashes follow (the instant a
tenant's database was fenced, the instant it was reopened): the first write wins, a re-run reads it back.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from datetime import datetime

import psycopg

from continuity.adapters.postgres.connection import connect

DDL = """
create table if not exists step_attempts (
    run_id            text        not null,
    step              text        not null,
    attempts          int         not null default 1,
    first_started_at  timestamptz not null,
    last_started_at   timestamptz not null,
    primary key (run_id, step)
);
create table if not exists run_moments (
    run_id  text        not null,
    moment  text        not null,
    at      timestamptz not null,
    primary key (run_id, moment)
)
"""

_ready: set[str] = set()
_ready_lock = threading.Lock()


@dataclass(frozen=True)
class Attempt:
    """This attempt of a step: its number (1 for the first) and when the first one started."""

    number: int
    first_started_at: datetime


class StepAttempts:
    """Attempts and moments of runs, in the control database at ``dsn``."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        with _ready_lock:
            if dsn not in _ready:
                with connect(dsn) as conn, contextlib.suppress(psycopg.errors.UniqueViolation):
                    conn.execute(DDL)  # two processes creating it at once: the loser's race is harmless
                _ready.add(dsn)

    def begin(self, run_id: str, step: str, at: datetime) -> Attempt:
        """Record that an attempt of (run, step) starts at ``at``; idempotent per attempt, never loses the first."""
        with connect(self.dsn) as conn:
            row = conn.execute(
                "insert into step_attempts as s (run_id, step, first_started_at, last_started_at) "
                "values (%s, %s, %s, %s) on conflict (run_id, step) do update "
                "set attempts = s.attempts + 1, last_started_at = excluded.last_started_at, "
                "first_started_at = least(s.first_started_at, excluded.first_started_at) "
                "returning attempts, first_started_at", (run_id, step, at, at)).fetchone()
        assert row is not None
        return Attempt(int(row[0]), row[1])

    def moment(self, run_id: str, name: str, at: datetime) -> datetime:
        """Record ``name`` at ``at`` unless it is recorded already; returns the recorded (first) instant."""
        with connect(self.dsn) as conn:
            conn.execute("insert into run_moments (run_id, moment, at) values (%s, %s, %s) "
                         "on conflict (run_id, moment) do nothing", (run_id, name, at))
            row = conn.execute("select at from run_moments where run_id = %s and moment = %s",
                               (run_id, name)).fetchone()
        assert row is not None
        return row[0]

    def get_moment(self, run_id: str, name: str) -> datetime | None:
        with connect(self.dsn) as conn:
            row = conn.execute("select at from run_moments where run_id = %s and moment = %s",
                               (run_id, name)).fetchone()
        return row[0] if row else None
