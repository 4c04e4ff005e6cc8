"""SQL the point-in-time service needs from a live server's archiver and from a rewound copy."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from continuity.kernel.errors import ServerUnavailable


def ship_current_wal(dsn: str, server: str, restore_point: str | None, wait_seconds: float) -> dict[str, Any]:
    """A commit now (so a target just before it can be reached), an optional named restore point, a WAL
    switch, then wait until the archiver reports that segment shipped.

    :raises ServerUnavailable: the server cannot be reached or did not ship the segment in time.
    """
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise ServerUnavailable(f"server {server} cannot be reached: {str(exc).strip().splitlines()[0]}") from exc
    with conn:
        if restore_point:
            conn.execute("select pg_create_restore_point(%s)", (restore_point,))
        conn.execute("select pg_current_xact_id()")  # a commit record, time-stamped now
        row = conn.execute("select pg_walfile_name(pg_switch_wal())").fetchone()
        segment = str(row[0]) if row else ""
        deadline = time.monotonic() + wait_seconds
        while True:
            state = conn.execute("select last_archived_wal, last_failed_wal, last_failed_time, "
                                 "last_archived_time from pg_stat_archiver").fetchone()
            archived = str(state[0] or "")[:24] if state else ""
            if archived and segment and archived[8:] >= segment[8:]:
                return {"segment": segment, "archived": archived,
                        "archived_at": state[3].isoformat() if state and state[3] else None}
            if time.monotonic() > deadline:
                failed = f"; the archiver last failed on {state[1]} at {state[2]}" if state and state[1] else ""
                raise ServerUnavailable(f"segment {segment} of {server} was not archived within {wait_seconds:.0f} s "
                                        f"(last archived {archived or 'none'}{failed})")
            # The server's own archiver view is the only signal: the archive is another system we cannot wait on.
            time.sleep(0.2)


def recovery_state(dsn: str) -> tuple[bool, str] | None:
    """(still in recovery, listen_addresses) of a starting copy, or None while it accepts no connection."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("select pg_is_in_recovery(), current_setting('listen_addresses')").fetchone()
    except psycopg.OperationalError:
        return None  # still replaying: "the database system is starting up"
    return (bool(row[0]), str(row[1])) if row else None


def last_replayed_commit(dsn: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("select pg_last_xact_replay_timestamp()").fetchone()
    return row[0] if row and row[0] else None
