"""The catalog's record of each archived server's WAL archive: its base backups and recovery window, as
storage last showed them (continuity.pitr.service.refresh_window writes it; the estate and the RPO read it
without listing storage on every page)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from continuity.adapters.postgres.connection import connect


def record(dsn: str, window: dict[str, Any], archive_name: str, base_backups: Sequence[dict[str, Any]],
           refreshed_at: datetime) -> None:
    with connect(dsn) as conn:
        conn.execute(
            """insert into catalog.archive_windows (server, archive_name, earliest, latest, newest_segment, gap,
                                                     segments, base_backups, refreshed_at)
               values (%s, %s, %s, %s, %s, %s, %s, %s, %s)
               on conflict (server) do update set archive_name = excluded.archive_name,
                   earliest = excluded.earliest, latest = excluded.latest, newest_segment = excluded.newest_segment,
                   gap = excluded.gap, segments = excluded.segments, base_backups = excluded.base_backups,
                   refreshed_at = excluded.refreshed_at""",
            (window["server"], archive_name, window["earliest"], window["latest"], window["newest_segment"],
             window["gap"], int(window["segments"]), json.dumps(list(base_backups)), refreshed_at))


def windows(dsn: str, servers: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Server -> its recorded window (``earliest``, ``latest``, ``gap``, ``base_backups``, ``refreshed_at``)."""
    sql = ("select server, archive_name, earliest, latest, newest_segment, gap, segments, base_backups, refreshed_at "
           "from catalog.archive_windows")
    params: tuple[Any, ...] = ()
    if servers is not None:
        sql += " where server = any(%s)"
        params = (list(servers),)
    with connect(dsn) as conn:
        rows = conn.execute(sql, params).fetchall()
    out = {}
    for server, name, earliest, latest, newest, gap, segments, backups, refreshed in rows:
        out[str(server)] = {"server": str(server), "archive_name": name, "earliest": earliest, "latest": latest,
                            "newest_segment": newest, "gap": gap, "segments": int(segments),
                            "base_backups": backups if isinstance(backups, list) else json.loads(backups or "[]"),
                            "refreshed_at": refreshed}
    return out
