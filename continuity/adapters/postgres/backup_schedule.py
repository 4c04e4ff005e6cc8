"""What the backup schedule reads from PostgreSQL: each tenant's newest dump in the catalog (one query for
every tenant) and a live server's ``pg_stat_archiver``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import psycopg

from continuity.adapters.postgres.connection import connect
from continuity.incidents.chain import ArchiverState
from continuity.kernel.errors import ServerUnavailable

# A dump that is on its way or kept counts as taken; one the catalog refused or lost does not.
NOT_TAKEN = ("rejected", "missing", "deleted")


def newest_dumps(control_dsn: str, tenants: Sequence[str]) -> dict[str, datetime]:
    """Tenant -> when its newest dump (kind ``full``; never a point-in-time extract) was taken; tenants
    without one are absent. One query, walking ``backups_tenant_created`` per tenant."""
    sql = """
        select t.tenant, n.created_at
        from unnest(%s::text[]) as t(tenant)
        join lateral (select b.created_at from catalog.backups b
                      where b.tenant = t.tenant and b.kind = 'full' and b.status <> all(%s::text[])
                      order by b.created_at desc limit 1) n on true"""
    with connect(control_dsn) as conn:
        rows = conn.execute(sql, (list(tenants), list(NOT_TAKEN))).fetchall()
    return {str(tenant): created_at for tenant, created_at in rows}


def archiver_state(dsn: str, server: str) -> ArchiverState:
    """The server's ``pg_stat_archiver`` row.

    :raises ServerUnavailable: the server cannot be reached.
    """
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("select archived_count, last_archived_wal, last_archived_time, failed_count, "
                               "last_failed_wal, last_failed_time from pg_stat_archiver").fetchone()
    except psycopg.OperationalError as exc:
        raise ServerUnavailable(f"server {server} cannot be reached: {str(exc).strip().splitlines()[0]}") from exc
    if row is None:
        raise ServerUnavailable(f"server {server} has no pg_stat_archiver row")
    return ArchiverState(archived_count=int(row[0] or 0), last_archived_wal=row[1], last_archived_time=row[2],
                         failed_count=int(row[3] or 0), last_failed_wal=row[4], last_failed_time=row[5])
