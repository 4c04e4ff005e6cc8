"""Shared by the tenant-recovery integration and end-to-end tests and bench_recovery: a registry with
recovery tenants, a seeded tenant whose newest backup went through the real nightly validation, the
corruption (posted moves deleted), and the ledger as the manifest fingerprints it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import yaml

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.storage.blob_store import BlobStore
from continuity.kernel.tenants import Registry
from continuity.validation.odoo import schema as odoo_schema

ROOT = Path(__file__).resolve().parent.parent


def write_registry(path: Path, tenants: dict[str, str]) -> Registry:
    """The shipped tiers and servers with ``tenants`` (id -> database) on the primary; returns it loaded."""
    shipped = yaml.safe_load((ROOT / "config" / "tenants.yaml").read_text())
    rows = [{"id": tid, "name": tid, "tier": "gold", "server": "weu-primary", "database": db,
             "primary_region": "westeurope", "secondary_region": "northeurope",
             "assertions": [{"name": "has-companies", "sql": "select count(*) > 0 from res_company", "expect": True}]}
            for tid, db in tenants.items()]
    raw = {"tiers": shipped["tiers"], "servers": shipped["servers"], "tenants": rows}
    path.write_text(yaml.safe_dump(raw))
    return Registry.model_validate(raw)


def seed(stack: LocalStack, blobs: BlobStore, tenant: str, database: str, moves: int = 40,
         attachments: int = 4) -> None:
    from tests.integration.test_restore_validation import seed_tenant

    seed_tenant(stack, blobs, database, tenant, moves=moves, attachments=attachments)


def seed_demo(registry: Registry, tenant: str, scale: int) -> dict[str, Any]:
    """The demo generator's Odoo-shaped tenant at ``scale`` (rebuilt if it exists)."""
    from continuity.adapters.postgres.demo_seed import seed_tenant

    return seed_tenant(registry, registry.get_tenant(tenant), scale, force=True).to_json()


def backup_and_validate(registry: Registry, tenant: str, blobs: BlobStore) -> str:
    """Take a backup with the real backup job and validate it with the real nightly validation (sandbox
    restore + checks), recorded in the catalog; returns the backup id (VALIDATED)."""
    from continuity.adapters.tools.backup_taker import take_backup
    from continuity.validation.service import Outcome, record_report, validate
    from continuity.validation.wiring import local_ports, open_recording

    stored = take_backup(registry, tenant, store=blobs)
    report = validate(local_ports(registry, blobs=blobs), tenant, stored.backup_id)
    assert report.outcome is Outcome.PASSED, report.to_json()
    catalog, evidence, publish = open_recording(blobs)
    recorded = record_report(report, catalog=catalog, evidence=evidence, publish=lambda *a: None)
    assert recorded.cataloged, recorded.to_json()
    return stored.backup_id


def delete_posted_moves(dsn: str, count: int) -> list[int]:
    """The corruption: a faulty integration deletes ``count`` posted moves (and their lines)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = [int(r[0]) for r in conn.execute(
            "select id from account_move where state = 'posted' order by id desc limit %s", (count,))]
        conn.execute("delete from ir_attachment where res_model = 'account.move' and res_id = any(%s)", (ids,))
        conn.execute("delete from account_move_line where move_id = any(%s)", (ids,))
        conn.execute("delete from account_move where id = any(%s)", (ids,))
    return ids


def ledger_fingerprint(dsn: str) -> tuple[str, int]:
    """(fingerprint, posted moves) computed exactly as the backup manifest does."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        fingerprint = odoo_schema.fold_ledger(conn.execute(odoo_schema.LEDGER_MOVES_SQL))
        row = conn.execute("select count(*) from account_move where state = 'posted'").fetchone()
    return fingerprint, int(row[0]) if row else 0


def manifest_of(blobs: BlobStore, tenant: str, backup_id: str) -> dict[str, Any]:
    import json

    names = [n for n in blobs.list_names("backups", prefix=f"{tenant}/") if f"/{backup_id}/manifest.json" in n]
    assert names, f"no manifest for {backup_id}"
    data: dict[str, Any] = json.loads(blobs.download("backups", names[0]))
    return data


def database_names(stack: LocalStack, like: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        rows = conn.execute("select datname, datallowconn, coalesce(shobj_description(oid, 'pg_database'), '') "
                            "from pg_database where datname like %s order by 1", (like,)).fetchall()
    return {str(r[0]): {"allow_connections": bool(r[1]), "comment": str(r[2])} for r in rows}


def drop_databases(stack: LocalStack, like: str) -> None:
    from psycopg import sql

    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        for (name,) in conn.execute("select datname from pg_database where datname like %s", (like,)).fetchall():
            conn.execute(sql.SQL("alter database {} allow_connections true").format(sql.Identifier(name)))
            conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
