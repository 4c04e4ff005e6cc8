"""Write a demo tenant's Odoo-shaped data into its PostgreSQL database and its filestore into blob storage.

One transaction per tenant: tables, COPY of every row, indexes, foreign keys and the marker row
commit together, so a database is either fully seeded or untouched. Attachments are uploaded
before the commit; their names are content-addressed, so an upload left behind by a failed seed
is the same file a retry uploads.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from continuity.adapters.postgres.connection import connect, ensure_database, server_dsn
from continuity.adapters.storage.blob_store import BlobStore
from continuity.demo.dataset import GENERATOR_VERSION, Attachment, DemoTenant, Row, scale_size
from continuity.kernel import settings
from continuity.kernel.errors import Conflict, InvalidRequest
from continuity.kernel.tenants import Registry, Tenant
from continuity.validation.odoo.schema import (
    COLUMNS,
    DATABASE_UUID_INSERT_SQL,
    INDEXES_DDL,
    SEED_MARKER_DDL,
    SEED_MARKER_TABLE,
    TABLES_DDL,
    foreign_keys_ddl,
    reset_sequences_ddl,
)

logger = logging.getLogger(__name__)

FLUSH_LINES = 50_000


@dataclass
class SeedResult:
    """What ``seed_tenant`` did: ``seeded``, ``rebuilt`` or ``already seeded`` (nothing written)."""

    tenant: str
    database: str
    scale: int
    status: str
    row_counts: dict[str, int]
    attachments: int
    attachment_bytes: int
    database_bytes: int
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "database": self.database, "scale": self.scale, "status": self.status,
                "row_counts": self.row_counts, "rows": sum(self.row_counts.values()),
                "attachments": self.attachments, "attachment_bytes": self.attachment_bytes,
                "database_bytes": self.database_bytes, "seconds": round(self.seconds, 2)}


def attachment_blob_name(tenant: Tenant, fname: str) -> str:
    """Where an Odoo filestore file lives in the attachments container: ``{prefix}{ab/abcdef…}``."""
    return f"{tenant.attachments}{fname}"


def seed_tenant(registry: Registry, tenant: Tenant, scale: int, *, force: bool = False,
                store: BlobStore | None = None) -> SeedResult:
    """Seed one tenant's database with demo data at ``scale``; idempotent (``force`` rebuilds a demo database).

    :raises Conflict: the tenant is seeded at another scale (without ``force``), or its database
        holds tables that are not demo data (never overwritten, even with ``force``).
    :raises InvalidRequest: the scale is out of range.
    :raises StoreUnavailable, ServerUnavailable: storage or PostgreSQL cannot be reached.
    """
    try:
        scale_size(scale)
    except ValueError as exc:
        raise InvalidRequest(f"--scale: {exc}") from exc
    started = time.monotonic()
    server = registry.server_of(tenant)
    admin_dsn = server_dsn(server, "postgres")
    dsn = server_dsn(server, tenant.database)
    container = settings.get("CONTINUITY_ATTACHMENT_CONTAINER")
    store = store or BlobStore()
    store.ensure_containers([container])  # fail on unreachable storage before touching the database

    ensure_database(admin_dsn, tenant.database)
    rebuilt = False
    with connect(dsn) as conn:
        existing = _marker(conn, tenant)
        same = existing is not None and existing["scale"] == scale and existing["generator"] == GENERATOR_VERSION
        if existing is not None and same and not force:
            return SeedResult(tenant=tenant.id, database=tenant.database, scale=scale, status="already seeded",
                              row_counts=dict(existing["row_counts"]), attachments=existing["row_counts"].get(
                                  "ir_attachment", 0), attachment_bytes=existing["attachment_bytes"],
                              database_bytes=_database_bytes(conn), seconds=time.monotonic() - started)
        if existing is None and _user_tables(conn):
            raise Conflict(f"database {tenant.database!r} of tenant {tenant.id} holds tables that are not demo data; "
                           "refusing to seed over it (point the tenant at an empty database)")
    # A demo database made by an older generator is ours (its marker says so) and out of date: rebuilt, as if
    # --force had been given, so a developer's stack follows the demo schema without a `make clean`.
    outdated = existing is not None and existing["scale"] == scale and existing["generator"] != GENERATOR_VERSION
    if existing is not None:
        if not force and not outdated:
            raise Conflict(f"tenant {tenant.id} is already seeded at scale {existing['scale']} "
                           f"(generator {existing['generator']}); re-run with --scale {existing['scale']}, "
                           "or add --force to drop and rebuild its demo database")
        with connect(admin_dsn) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(tenant.database)))
        ensure_database(admin_dsn, tenant.database)
        rebuilt = True

    demo = DemoTenant(tenant.id, tenant.name, scale)
    with connect(dsn, autocommit=False) as conn:
        counts, attachments = _load(conn, demo, store, container, tenant)
        attachment_bytes = sum(len(a.content) for a in attachments)
        conn.execute(
            sql.SQL("INSERT INTO {} (tenant, scale, generator, row_counts, attachment_bytes) "
                    "VALUES (%s, %s, %s, %s, %s)").format(sql.Identifier(SEED_MARKER_TABLE)),
            (tenant.id, scale, GENERATOR_VERSION, Jsonb(counts), attachment_bytes))
        conn.commit()
    with connect(dsn) as conn:
        conn.execute("ANALYZE")
        size = _database_bytes(conn)
    result = SeedResult(tenant=tenant.id, database=tenant.database, scale=scale,
                        status="rebuilt" if rebuilt else "seeded", row_counts=counts, attachments=len(attachments),
                        attachment_bytes=attachment_bytes, database_bytes=size, seconds=time.monotonic() - started)
    logger.info("demo tenant seeded", extra={"tenant": tenant.id, "scale": scale, "rows": sum(counts.values())})
    return result


def _marker(conn: psycopg.Connection, tenant: Tenant) -> dict[str, Any] | None:
    present = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{SEED_MARKER_TABLE}",)).fetchone()
    if not present or not present[0]:
        return None
    row = conn.execute(
        sql.SQL("SELECT scale, generator, row_counts, attachment_bytes FROM {} WHERE tenant = %s").format(
            sql.Identifier(SEED_MARKER_TABLE)), (tenant.id,)).fetchone()
    if row is None:
        raise Conflict(f"database {tenant.database!r} holds demo data of another tenant; "
                       f"refusing to seed tenant {tenant.id} into it")
    return {"scale": row[0], "generator": row[1], "row_counts": row[2], "attachment_bytes": row[3]}


def _user_tables(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
                       ).fetchone()
    return int(row[0]) if row else 0


def _database_bytes(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def _copy(conn: psycopg.Connection, table: str, rows: Iterable[Row]) -> int:
    """COPY rows into ``table`` (columns from the schema); returns how many."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS[table]))
    count = 0
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def _load(conn: psycopg.Connection, demo: DemoTenant, store: BlobStore, container: str,
          tenant: Tenant) -> tuple[dict[str, int], list[Attachment]]:
    # Index and foreign-key builds at large scales sort millions of rows: give them memory.
    conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
    for ddl in (*TABLES_DDL, SEED_MARKER_DDL):
        conn.execute(ddl)  # our own constant DDL text
    # Odoo writes a random uuid when it creates a database; the demo's is derived from the tenant, so a
    # re-seeded demo tenant is still "the same database" to the validation's identity check.
    conn.execute(DATABASE_UUID_INSERT_SQL, (str(uuid.uuid5(uuid.NAMESPACE_URL, f"continuity-demo:{tenant.id}")),))
    counts = dict.fromkeys(COLUMNS, 0)
    for table, rows in demo.reference_rows().items():
        counts[table] += _copy(conn, table, rows)
    counts["res_partner"] += _copy(conn, "res_partner", demo.iter_partners())

    moves: list[Row] = []
    lines: list[Row] = []
    attachments: list[Attachment] = []

    def flush() -> None:
        counts["account_move"] += _copy(conn, "account_move", moves)
        counts["account_move_line"] += _copy(conn, "account_move_line", lines)
        moves.clear()
        lines.clear()

    for item in demo.iter_ledger():
        moves.append(item.move)
        lines.extend(item.lines)
        if item.attachment is not None:
            attachments.append(item.attachment)
        if len(lines) >= FLUSH_LINES:
            flush()
    flush()

    for attachment in attachments:
        # Content-addressed: the same name always holds the same bytes, so overwriting is harmless.
        store.upload(container, attachment_blob_name(tenant, attachment.store_fname), attachment.content,
                     tags={"tenant": tenant.id, "kind": "attachment"},
                     metadata={"checksum": attachment.checksum}, overwrite=True)
    counts["ir_attachment"] += _copy(conn, "ir_attachment", (a.row for a in attachments))

    for ddl in (*INDEXES_DDL, *foreign_keys_ddl(), *reset_sequences_ddl()):
        conn.execute(ddl)
    return counts, attachments
