"""Restore validation end to end against real PostgreSQL clusters and real Azurite.

Each corruption is made the way it happens in life (a truncated or bit-flipped blob, a manifest
copied from another tenant, a deleted attachment, an unbalanced ledger, rows lost after the
manifest was written, a stopped sandbox) and exactly the intended check must fail; the others pass
or say they were not run. No scratch database may be left behind.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.connection import ensure_database, libpq_env
from continuity.adapters.postgres.proofs import identity_and_schema
from continuity.adapters.postgres.sandbox import Sandbox, production_dsns_of
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.tools import pgbin
from continuity.catalog.manifest import DUMP_FILE, MANIFEST_FILE, RECOVERY_TABLES, Manifest, backup_prefix
from continuity.kernel.errors import ServerUnavailable
from continuity.kernel.tenants import Registry
from continuity.validation.checks import CheckId, CheckStatus, VerdictStatus
from continuity.validation.odoo import schema as odoo_schema
from continuity.validation.service import Outcome, ValidationPorts, validate
from continuity.validation.wiring import local_ports

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
TENANTS = ("vt-good", "vt-ledger", "vt-attach", "vt-assert")


# ---- builders ----------------------------------------------------------------------------------


def make_registry(tenants: tuple[str, ...] = TENANTS, **overrides: Any) -> Registry:
    """The shipped tiers and servers, with test tenants on the primary cluster."""
    shipped = yaml.safe_load((ROOT / "config" / "tenants.yaml").read_text())
    rows = []
    for tid in tenants:
        row: dict[str, Any] = {"id": tid, "name": tid, "tier": "gold", "server": "weu-primary",
                               "database": "odoo_" + tid.replace("-", "_"), "primary_region": "westeurope",
                               "secondary_region": "northeurope",
                               "assertions": [{"name": "has-companies", "sql": "select count(*) > 0 from res_company",
                                               "expect": True}]}
        if tid == "vt-assert":
            row["assertions"] = [{"name": "has-companies", "sql": "select count(*) > 0 from res_company",
                                  "expect": True},
                                 {"name": "no-draft-invoices",
                                  "sql": "select count(*) = 0 from account_move where state = 'draft'",
                                  "expect": True}]
        row.update(overrides.get(tid, {}))
        rows.append(row)
    return Registry.model_validate({"tiers": shipped["tiers"], "servers": shipped["servers"], "tenants": rows})


def seed_tenant(stack: LocalStack, blobs: BlobStore, database: str, tenant: str, moves: int = 40,
                attachments: int = 6, draft: bool = False) -> None:
    """A small Odoo-shaped database (odoo_schema's DDL) with a balanced posted ledger and stored attachments."""
    admin = stack.dsn("primary")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"drop database if exists {database} with (force)")
    ensure_database(admin, database)
    with psycopg.connect(stack.dsn("primary", database), autocommit=True) as conn:
        for ddl in odoo_schema.TABLES_DDL:
            conn.execute(ddl)
        # Stable per tenant, as Odoo's database.uuid is for one database's lifetime.
        conn.execute(odoo_schema.DATABASE_UUID_INSERT_SQL, (str(uuid.uuid5(uuid.NAMESPACE_URL, f"test:{tenant}")),))
        conn.execute("insert into res_currency (id, name, symbol, rounding, decimal_places, active) "
                     "values (1, 'EUR', '€', 0.01, 2, true)")
        conn.execute("insert into res_partner (id, name, type, is_company, active) values (1, 'Main Co', 'contact', "
                     "true, true), (2, 'Customer', 'contact', true, true)")
        conn.execute("insert into res_company (id, name, partner_id, currency_id, fiscalyear_last_day, "
                     "fiscalyear_last_month, active) values (1, 'Main Co', 1, 1, 31, '12', true)")
        conn.execute("insert into account_account (id, name, code, account_type, company_id) values "
                     "(1, '{\"en_US\": \"Receivable\"}', '121000', 'asset_receivable', 1), "
                     "(2, '{\"en_US\": \"Revenue\"}', '400000', 'income', 1)")
        conn.execute("insert into account_journal (id, name, code, type, company_id, invoice_reference_type, "
                     "invoice_reference_model, default_account_id) values "
                     "(1, '{\"en_US\": \"Invoices\"}', 'INV', 'sale', 1, 'invoice', 'odoo', 2)")
        line_id = 0
        for n in range(1, moves + 1):
            amount = 100 + n
            conn.execute(
                "insert into account_move (id, name, date, state, move_type, journal_id, company_id, partner_id, "
                "currency_id, sequence_prefix, sequence_number, auto_post, amount_total) values "
                "(%s, %s, '2025-03-01', 'posted', 'out_invoice', 1, 1, 2, 1, 'INV/2025/', %s, 'no', %s)",
                (n, f"INV/2025/{n:05d}", n, amount))
            for account, debit, credit in ((1, amount, 0), (2, 0, amount)):
                line_id += 1
                conn.execute(
                    "insert into account_move_line (id, move_id, move_name, date, parent_state, journal_id, "
                    "company_id, account_id, display_type, debit, credit, balance, currency_id) values "
                    "(%s, %s, %s, '2025-03-01', 'posted', 1, 1, %s, 'product', %s, %s, %s, 1)",
                    (line_id, n, f"INV/2025/{n:05d}", account, debit, credit, debit - credit))
        if draft:
            conn.execute("insert into account_move (id, name, date, state, move_type, journal_id, company_id, "
                         "currency_id, auto_post) values (%s, '/', '2025-03-02', 'draft', 'out_invoice', 1, 1, 1, "
                         "'no')", (moves + 1,))
        blobs.ensure_containers(["attachments", "backups"])
        for n in range(1, attachments + 1):
            content = f"{tenant} attachment {n} ".encode() * 50
            sha1 = hashlib.sha1(content).hexdigest()
            fname = f"{sha1[:2]}/{sha1}"
            blobs.upload("attachments", f"{tenant}/{fname}", content)
            conn.execute("insert into ir_attachment (id, name, type, store_fname, checksum, file_size, res_model, "
                         "res_id) values (%s, %s, 'binary', %s, %s, %s, 'account.move', 1)",
                         (n, f"doc{n}.pdf", fname, sha1, len(content)))
        conn.execute("insert into ir_module_module (id, name, state, latest_version) values "
                     "(1, 'base', 'installed', '17.0.1.3'), "
                     "(2, 'account', 'installed', '17.0.1.2')")
        for ddl in odoo_schema.INDEXES_DDL:
            conn.execute(ddl)
        for ddl in odoo_schema.foreign_keys_ddl():
            conn.execute(ddl)


@dataclass
class TakenBackup:
    tenant: str
    backup_id: str
    prefix: str
    dump: bytes
    manifest: dict[str, Any]


def new_backup_id(at: datetime) -> str:
    return f"{at:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def take_backup(stack: LocalStack, database: str, tenant: str) -> tuple[bytes, dict[str, Any]]:
    """pg_dump -Fc plus a manifest computed like the backup job does (row counts, ledger, identity, schema proof)."""
    created = datetime.now(UTC)
    dump = subprocess.run([pgbin.tool("pg_dump"), "-Fc", "--no-sync", f"--dbname={stack.dsn('primary', database)}"],
                          check=True, capture_output=True, env=libpq_env(), timeout=120).stdout
    with psycopg.connect(stack.dsn("primary", database), autocommit=True) as conn:
        counts = {t: int(conn.execute(odoo_schema.count_rows_sql(t)).fetchone()[0]) for t in RECOVERY_TABLES}
        totals = conn.execute(odoo_schema.LEDGER_TOTALS_SQL).fetchone()
        fingerprint = odoo_schema.fold_ledger(conn.execute(odoo_schema.LEDGER_MOVES_SQL))
        attachment_bytes = int(conn.execute("select coalesce(sum(file_size), 0) from ir_attachment").fetchone()[0])
        version = str(conn.execute("show server_version").fetchone()[0]).split()[0]
        identity, tables = identity_and_schema(conn)
    manifest = {
        "format": "continuity.backup-manifest/1", "tenant": tenant, "backup_id": "", "kind": "full",
        "created_at": created.isoformat(), "completed_at": datetime.now(UTC).isoformat(),
        "source": {"server": "weu-primary", "region": "westeurope", "database": database, "pg_version": version},
        "files": [{"name": DUMP_FILE, "role": "database", "sha256": hashlib.sha256(dump).hexdigest(),
                   "size": len(dump)}],
        "row_counts": counts,
        "ledger": {"fingerprint": fingerprint, "posted_moves": totals[0], "posted_lines": totals[1],
                   "debit_total": totals[2], "credit_total": totals[3]},
        "attachments": {"container": "attachments", "prefix": f"{tenant}/", "count": counts["ir_attachment"],
                        "bytes": attachment_bytes},
        "identity": identity.model_dump() if identity else None,
        "tables": {name: proof.model_dump() for name, proof in tables.items()},
    }
    return dump, manifest


def upload_backup(blobs: BlobStore, folder_tenant: str, dump: bytes, manifest: dict[str, Any],
                  created: datetime | None = None) -> TakenBackup:
    """Store a backup under ``folder_tenant``'s folder; the manifest is stored as given (it may lie)."""
    created = created or datetime.fromisoformat(manifest["created_at"])
    backup_id = new_backup_id(created)
    manifest = dict(manifest)
    if not manifest["backup_id"]:
        manifest["backup_id"] = backup_id
    Manifest.model_validate(manifest)  # the test only stores manifests the contract accepts
    prefix = backup_prefix(folder_tenant, backup_id, created)
    blobs.upload("backups", prefix + DUMP_FILE, dump)
    blobs.upload("backups", prefix + MANIFEST_FILE, json.dumps(manifest).encode())
    return TakenBackup(folder_tenant, backup_id, prefix, dump, manifest)


# ---- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Registry:
    return make_registry()


@pytest.fixture(scope="module")
def seeded(stack: LocalStack, blob_store: BlobStore, registry: Registry) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """Every test tenant seeded and backed up once; tests derive corrupted copies from these."""
    taken = {}
    for tenant in registry.tenants:
        seed_tenant(stack, blob_store, tenant.database, tenant.id, draft=tenant.id == "vt-assert")
        if tenant.id == "vt-assert":
            # A posted invoice deleted outright (not cancelled): its number leaves a gap.
            with psycopg.connect(stack.dsn("primary", tenant.database), autocommit=True) as conn:
                conn.execute("delete from account_move where id = 10")
        if tenant.id == "vt-ledger":
            # An unbalanced posted move, written before the backup (the backup faithfully copies it).
            with psycopg.connect(stack.dsn("primary", tenant.database), autocommit=True) as conn:
                conn.execute("update account_move_line set debit = debit + 7, balance = balance + 7 where id = 5")
        taken[tenant.id] = take_backup(stack, tenant.database, tenant.id)
    return taken


@pytest.fixture()
def ports(registry: Registry, blob_store: BlobStore, stack: LocalStack) -> ValidationPorts:
    return local_ports(registry, blobs=blob_store)


@pytest.fixture()
def sandbox(registry: Registry, stack: LocalStack) -> Iterator[Sandbox]:
    box = Sandbox(stack.dsn("sandbox"), production_dsns_of(registry))
    yield box
    assert box.list_scratch_databases() == [], "a scratch database was left behind"


def statuses(report: Any) -> dict[str, str]:
    return {c.id: str(c.status) for c in report.checks}


def failed(report: Any) -> list[str]:
    return [c.id for c in report.checks if c.status is CheckStatus.FAIL]


# ---- tests -------------------------------------------------------------------------------------


def test_good_backup_is_recoverable_within_objectives(ports: ValidationPorts, sandbox: Sandbox, blob_store: BlobStore,
                                                      seeded: dict[str, Any]) -> None:
    dump, manifest = seeded["vt-good"]
    backup = upload_backup(blob_store, "vt-good", dump, manifest)
    report = validate(ports, "vt-good", backup.backup_id)
    assert failed(report) == [], report.to_json()
    assert all(s == "pass" for s in statuses(report).values()), [c for c in report.checks if c.status != "pass"]
    assert report.outcome is Outcome.PASSED
    assert report.verdict.status is VerdictStatus.RECOVERABLE, report.verdict.reason
    assert report.verdict.reason.startswith("recoverable within objectives")
    assert report.objectives is not None and report.objectives.rto_met and report.objectives.rpo_met
    assert set(statuses(report)) == {*(str(c) for c in CheckId), "assertion:has-companies"}
    indexes = next(c for c in report.checks if c.id == CheckId.INDEXES)
    assert indexes.data["checked"] > 10
    # The row checks ran while post-data built the indexes (pg_restore reported their tables loaded); what
    # reads indexes and constraints, and the tenant's own SQL, ran after.
    during = {c.id for c in report.checks if c.data.get("during_restore")}
    assert during == {CheckId.LEDGER, CheckId.INVOICE_NUMBERING, CheckId.ROW_COUNTS, CheckId.ATTACHMENTS,
                      CheckId.TENANT_FINGERPRINT}, during


def test_latest_backup_is_picked_when_no_id_given(ports: ValidationPorts, sandbox: Sandbox, blob_store: BlobStore,
                                                  seeded: dict[str, Any]) -> None:
    dump, manifest = seeded["vt-good"]
    older = upload_backup(blob_store, "vt-good", dump, {**manifest, "created_at": "2020-01-01T00:00:00+00:00"},
                          created=datetime(2020, 1, 1, tzinfo=UTC))
    newest = upload_backup(blob_store, "vt-good", dump, {**manifest, "created_at": datetime.now(UTC).isoformat()})
    report = validate(ports, "vt-good")
    assert report.backup_id == newest.backup_id != older.backup_id


def cataloged_then_replaced(ports: ValidationPorts, blobs: BlobStore, tenant: str, dump: bytes,
                            manifest: dict[str, Any], damaged: bytes) -> TakenBackup:
    """A good backup, cataloged (its first sight anchors it), whose dump is then replaced in storage."""
    backup = upload_backup(blobs, tenant, dump, manifest)
    assert ports.source.get_backup(tenant, backup.backup_id).anchor is not None
    blobs.upload("backups", backup.prefix + DUMP_FILE, damaged, overwrite=True)
    return backup


def test_dump_truncated_after_cataloging_fails_only_the_checksum(ports: ValidationPorts, sandbox: Sandbox,
                                                                 blob_store: BlobStore,
                                                                 seeded: dict[str, Any]) -> None:
    dump, manifest = seeded["vt-good"]
    backup = cataloged_then_replaced(ports, blob_store, "vt-good", dump, manifest, dump[: len(dump) // 2])
    report = validate(ports, "vt-good", backup.backup_id)
    assert failed(report) == [CheckId.FILE_CHECKSUM]
    checksum = next(c for c in report.checks if c.id == CheckId.FILE_CHECKSUM)
    assert "truncated" in checksum.detail and "was cataloged at" in checksum.detail
    assert statuses(report)[CheckId.RESTORE_COMPLETED] == "unavailable"
    assert report.outcome is Outcome.FAILED and report.verdict.status is VerdictStatus.NOT_RECOVERABLE


def test_dump_truncated_before_cataloging_is_refused_as_the_catalog_rejected_it(
        ports: ValidationPorts, sandbox: Sandbox, blob_store: BlobStore, seeded: dict[str, Any]) -> None:
    dump, manifest = seeded["vt-good"]
    backup = upload_backup(blob_store, "vt-good", dump[: len(dump) // 2], manifest)
    report = validate(ports, "vt-good", backup.backup_id)
    assert failed(report) == [CheckId.FILE_CHECKSUM]
    assert next(c for c in report.checks if c.id == CheckId.FILE_CHECKSUM).detail.startswith(
        f"the catalog rejected this backup at ingest: db.dump is {len(dump) // 2} bytes; the manifest says {len(dump)}")
    assert statuses(report)[CheckId.ARCHIVE_READABLE] == "unavailable"


def test_bit_flipped_dump_fails_only_the_checksum(ports: ValidationPorts, sandbox: Sandbox, blob_store: BlobStore,
                                                 seeded: dict[str, Any]) -> None:
    dump, manifest = seeded["vt-good"]
    flipped = bytearray(dump)
    flipped[len(flipped) // 2] ^= 0x01
    backup = cataloged_then_replaced(ports, blob_store, "vt-good", dump, manifest, bytes(flipped))
    report = validate(ports, "vt-good", backup.backup_id)
    assert failed(report) == [CheckId.FILE_CHECKSUM]
    assert "corrupted" in next(c for c in report.checks if c.id == CheckId.FILE_CHECKSUM).detail


def test_truncated_dump_with_matching_manifest_fails_the_restore(ports: ValidationPorts, sandbox: Sandbox,
                                                                 blob_store: BlobStore,
                                                                 seeded: dict[str, Any]) -> None:
    """A backup job that hashed a dump it had cut short: the checksum holds, the archive does not."""
    dump, manifest = seeded["vt-good"]
    cut = dump[: int(len(dump) * 0.8)]
    lying = {**manifest, "files": [{"name": DUMP_FILE, "role": "database",
                                    "sha256": hashlib.sha256(cut).hexdigest(), "size": len(cut)}]}
    backup = upload_backup(blob_store, "vt-good", cut, lying)
    report = validate(ports, "vt-good", backup.backup_id)
    assert statuses(report)[CheckId.FILE_CHECKSUM] == "pass"
    assert len(failed(report)) == 1
    assert failed(report)[0] in (CheckId.ARCHIVE_READABLE, CheckId.RESTORE_COMPLETED)
    # Whatever a row check read of the tables the cut dump did load is dropped with the failed restore.
    assert not any(c.data.get("during_restore") for c in report.checks)
    assert statuses(report)[CheckId.LEDGER] == "unavailable"


def test_manifest_from_another_tenant_fails_only_the_manifest_tenant_check(
        ports: ValidationPorts, sandbox: Sandbox, blob_store: BlobStore, seeded: dict[str, Any]) -> None:
    dump, manifest = seeded["vt-attach"]
    other = upload_backup(blob_store, "vt-attach", dump, manifest)
    # The other tenant's dump and manifest, copied into vt-good's folder.
    backup = upload_backup(blob_store, "vt-good", dump, other.manifest)
    report = validate(ports, "vt-good", backup.backup_id)
    assert failed(report) == [CheckId.MANIFEST_TENANT]
    detail = report.checks[0].detail
    assert "manifest names tenant 'vt-attach', not 'vt-good'" in detail
    assert all(c.status is CheckStatus.UNAVAILABLE for c in report.checks[1:])


def test_missing_attachment_fails_only_the_attachment_check(ports: ValidationPorts, sandbox: Sandbox,
                                                            blob_store: BlobStore, stack: LocalStack,
                                                            seeded: dict[str, Any]) -> None:
    dump, manifest = seeded["vt-attach"]
    backup = upload_backup(blob_store, "vt-attach", dump, manifest)
    with psycopg.connect(stack.dsn("primary", "odoo_vt_attach"), autocommit=True) as conn:
        fname = conn.execute("select store_fname from ir_attachment where id = 3").fetchone()[0]
    blob_store.delete("attachments", f"vt-attach/{fname}")
    report = validate(ports, "vt-attach", backup.backup_id)
    assert failed(report) == [CheckId.ATTACHMENTS]
    check = next(c for c in report.checks if c.id == CheckId.ATTACHMENTS)
    assert fname in check.detail and check.data["missing"] == 1


def test_tampered_attachment_fails_its_sha1_and_the_rate_is_reported(ports: ValidationPorts, sandbox: Sandbox,
                                                                     blob_store: BlobStore, stack: LocalStack,
                                                                     seeded: dict[str, Any]) -> None:
    dump, manifest = seeded["vt-attach"]
    backup = upload_backup(blob_store, "vt-attach", dump, manifest)
    with psycopg.connect(stack.dsn("primary", "odoo_vt_attach"), autocommit=True) as conn:
        fname = conn.execute("select store_fname from ir_attachment where id = 2").fetchone()[0]
    blob_store.upload("attachments", f"vt-attach/{fname}", b"overwritten by ransomware")
    report = validate(ports, "vt-attach", backup.backup_id, sample_rate=1.0)
    check = next(c for c in report.checks if c.id == CheckId.ATTACHMENTS)
    assert check.status is CheckStatus.FAIL and check.data["mismatched"] == 1
    sampled = validate(ports, "vt-attach", backup.backup_id, sample_rate=0.5)
    check = next(c for c in sampled.checks if c.id == CheckId.ATTACHMENTS)
    assert check.data["sample_rate"] == 0.5 and check.data["hashed"] < check.data["total"]


def test_unbalanced_ledger_fails_only_the_ledger_check(ports: ValidationPorts, sandbox: Sandbox,
                                                       blob_store: BlobStore, seeded: dict[str, Any]) -> None:
    dump, manifest = seeded["vt-ledger"]
    backup = upload_backup(blob_store, "vt-ledger", dump, manifest)
    report = validate(ports, "vt-ledger", backup.backup_id)
    assert failed(report) == [CheckId.LEDGER]
    ledger = next(c for c in report.checks if c.id == CheckId.LEDGER)
    assert ledger.data.get("during_restore"), "the ledger read the loaded rows while the indexes were built"
    detail = ledger.detail
    assert "1 posted move(s) unbalanced (e.g. INV/2025/00003)" in detail
    assert "trial balance not zero for company 1 (7" in detail


def test_rows_deleted_after_the_manifest_fail_only_the_row_counts(ports: ValidationPorts, sandbox: Sandbox,
                                                                  blob_store: BlobStore,
                                                                  seeded: dict[str, Any]) -> None:
    dump, manifest = seeded["vt-good"]
    counts = dict(manifest["row_counts"])
    counts["res_partner"] += 3  # the manifest saw three partners the dump no longer has
    backup = upload_backup(blob_store, "vt-good", dump, {**manifest, "row_counts": counts})
    report = validate(ports, "vt-good", backup.backup_id)
    assert failed(report) == [CheckId.ROW_COUNTS]
    assert "res_partner 2 vs 5" in next(c for c in report.checks if c.id == CheckId.ROW_COUNTS).detail


def test_failing_tenant_assertion_fails_only_itself(ports: ValidationPorts, sandbox: Sandbox,
                                                    blob_store: BlobStore, seeded: dict[str, Any]) -> None:
    dump, manifest = seeded["vt-assert"]
    backup = upload_backup(blob_store, "vt-assert", dump, manifest)
    report = validate(ports, "vt-assert", backup.backup_id)
    # vt-assert's seed also leaves a gap in its invoice numbers (the next test); nothing else fails.
    assert failed(report) == [CheckId.INVOICE_NUMBERING, "assertion:no-draft-invoices"]
    assert statuses(report)["assertion:has-companies"] == "pass"


def test_gap_in_posted_numbers_fails_naming_journal_year_and_place(ports: ValidationPorts, sandbox: Sandbox,
                                                                          blob_store: BlobStore,
                                                                          seeded: dict[str, Any]) -> None:
    dump, manifest = seeded["vt-assert"]
    backup = upload_backup(blob_store, "vt-assert", dump, manifest)
    report = validate(ports, "vt-assert", backup.backup_id)
    numbering = next(c for c in report.checks if c.id == CheckId.INVOICE_NUMBERING)
    assert numbering.status is CheckStatus.FAIL
    assert "INV INV/2025/ 2025 after 9 (1 missing)" in numbering.detail
    assert report.verdict.status is VerdictStatus.NOT_RECOVERABLE


def test_tenant_assertion_cannot_write(stack: LocalStack, blob_store: BlobStore, sandbox: Sandbox,
                                       seeded: dict[str, Any]) -> None:
    registry = make_registry(("vt-good",), **{"vt-good": {"assertions": [
        {"name": "sneaky-write", "sql": "delete from res_partner returning true", "expect": True}]}})
    dump, manifest = seeded["vt-good"]
    backup = upload_backup(blob_store, "vt-good", dump, manifest)
    report = validate(local_ports(registry, blobs=blob_store), "vt-good", backup.backup_id)
    check = next(c for c in report.checks if c.id == "assertion:sneaky-write")
    assert check.status is CheckStatus.FAIL and "read-only" in check.detail


def test_rpo_breach_keeps_the_backup_valid_but_outside_objectives(ports: ValidationPorts, sandbox: Sandbox,
                                                                  blob_store: BlobStore,
                                                                  seeded: dict[str, Any]) -> None:
    dump, manifest = seeded["vt-good"]
    backup = upload_backup(blob_store, "vt-good", dump, manifest)
    # The run happens three hours after the backup (the archive's own time agrees with created_at).
    later = datetime.fromisoformat(manifest["created_at"]) + timedelta(hours=3)
    report = validate(replace(ports, clock=lambda: later), "vt-good", backup.backup_id)
    assert report.outcome is Outcome.PASSED
    assert report.verdict.status is VerdictStatus.RECOVERABLE_OUTSIDE_OBJECTIVES
    assert "exceeds RPO 15.0 min" in report.verdict.reason


def test_created_at_moved_back_to_dodge_nothing_fails_identity(ports: ValidationPorts, sandbox: Sandbox,
                                                               blob_store: BlobStore, seeded: dict[str, Any]) -> None:
    dump, manifest = seeded["vt-good"]
    old = datetime.now(UTC) - timedelta(hours=3)
    backup = upload_backup(blob_store, "vt-good", dump, {**manifest, "created_at": old.isoformat()}, created=old)
    report = validate(ports, "vt-good", backup.backup_id)
    assert failed(report) == [CheckId.IDENTITY]
    assert "from the archive's own creation time" in next(c for c in report.checks if c.id == CheckId.IDENTITY).detail


def test_sandbox_down_raises_a_clear_error_and_validates_nothing(registry: Registry, blob_store: BlobStore,
                                                                 stack: LocalStack, seeded: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    dump, manifest = seeded["vt-good"]
    backup = upload_backup(blob_store, "vt-good", dump, manifest)
    gone = Sandbox(f"host={tmp_path} port=5999 user=continuity dbname=postgres connect_timeout=2",
                   production_dsns_of(registry))
    ports = replace(local_ports(registry, blobs=blob_store), sandbox=gone)
    with pytest.raises(ServerUnavailable) as err:
        validate(ports, "vt-good", backup.backup_id)
    assert "the sandbox at" in str(err.value) and "nothing was validated" in str(err.value)
    live = Sandbox(stack.dsn("sandbox"), production_dsns_of(registry))
    assert live.list_scratch_databases() == []


# ---- the real demo seed and backup job, recorded in the catalog and the evidence chain ----------------

DEMO = "acme-finance"


@pytest.fixture(scope="module")
def demo_registry() -> Registry:
    """The shipped registry: the catalog only ingests backups of tenants it knows."""
    from continuity.kernel.tenants import load_registry

    return load_registry(ROOT / "config" / "tenants.yaml")


@pytest.fixture(scope="module")
def demo_backup(stack: LocalStack, blob_store: BlobStore, demo_registry: Registry) -> Any:
    from continuity.adapters.postgres.demo_seed import seed_tenant as real_seed
    from continuity.adapters.tools.backup_taker import take_backup as real_backup

    tenant = demo_registry.get_tenant(DEMO)
    real_seed(demo_registry, tenant, 1, force=True, store=blob_store)
    return real_backup(demo_registry, DEMO, store=blob_store)


def test_demo_seed_backup_validates_and_is_recorded_validated(demo_registry: Registry, demo_backup: Any,
                                                              blob_store: BlobStore, sandbox: Sandbox) -> None:
    from continuity.adapters.postgres.catalog_store import PgCatalogStore
    from continuity.adapters.postgres.control_db import prepare
    from continuity.catalog.model import BackupStatus
    from continuity.validation.service import record_report
    from continuity.validation.wiring import open_recording

    report = validate(local_ports(demo_registry, blobs=blob_store), DEMO, demo_backup.backup_id)
    assert failed(report) == [], [c.to_json() for c in report.checks if c.status is CheckStatus.FAIL]
    assert report.outcome is Outcome.PASSED
    catalog, evidence, publish = open_recording(blob_store)
    recorded = record_report(report, catalog=catalog, evidence=evidence, publish=publish)
    assert recorded.cataloged and recorded.catalog_note == "validated"
    assert recorded.evidence_seq is not None
    entry = PgCatalogStore(prepare()).get_backup(DEMO, demo_backup.backup_id)
    assert entry.status is BackupStatus.VALIDATED
    assert entry.last_validation is not None and entry.last_validation["run_id"] == report.run_id
    again = record_report(report, catalog=catalog, evidence=evidence, publish=publish)
    assert again.evidence_seq == recorded.evidence_seq  # a retried activity appends once


def test_failed_validation_is_recorded_failed_and_names_the_check(demo_registry: Registry, demo_backup: Any,
                                                                  blob_store: BlobStore, sandbox: Sandbox) -> None:
    from continuity.adapters.postgres.catalog_store import PgCatalogStore
    from continuity.adapters.postgres.control_db import prepare
    from continuity.catalog.model import BackupStatus
    from continuity.validation.service import record_report
    from continuity.validation.wiring import open_recording

    raw = json.loads(blob_store.download("backups", demo_backup.manifest))
    raw["row_counts"]["res_partner"] += 1
    dump = blob_store.download("backups", demo_backup.dump)
    lying = upload_backup(blob_store, DEMO, dump, {**raw, "backup_id": ""})
    report = validate(local_ports(demo_registry, blobs=blob_store), DEMO, lying.backup_id)
    assert failed(report) == [CheckId.ROW_COUNTS]
    events: list[tuple[str, dict[str, Any]]] = []
    catalog, evidence, _ = open_recording(blob_store)
    recorded = record_report(report, catalog=catalog, evidence=evidence,
                             publish=lambda kind, summary, head: events.append((kind, summary)))
    assert recorded.cataloged and recorded.catalog_note == "failed_validation"
    assert PgCatalogStore(prepare()).get_backup(DEMO, lying.backup_id).status is BackupStatus.FAILED_VALIDATION
    assert events == [("continuity.validation.failed", events[0][1])]
    assert events[0][1]["failed_checks"] == ["row_counts"]


def test_error_run_leaves_an_available_backup_unverified_and_is_one_attempt_in_both_records(
        demo_registry: Registry, demo_backup: Any, blob_store: BlobStore) -> None:
    from continuity.adapters.postgres.catalog_store import PgCatalogStore, validation_attempts
    from continuity.adapters.postgres.control_db import prepare
    from continuity.catalog.model import BackupStatus
    from continuity.validation.naming import run_id_for
    from continuity.validation.service import error_report, record_report
    from continuity.validation.wiring import open_recording

    store = PgCatalogStore(prepare())
    before = {e.backup_id: e for e in store.list_backups(tenant=DEMO, limit=100)[0]}
    now = datetime.now(UTC)
    run_id = run_id_for(DEMO, demo_backup.backup_id, 90)
    report = error_report(DEMO, demo_backup.backup_id, run_id, now, now,
                          "the sandbox at '/nowhere' port 1 is unreachable")
    catalog, evidence, _ = open_recording(blob_store)
    recorded = record_report(report, catalog=catalog, evidence=evidence, publish=lambda *a: None)
    assert recorded.cataloged and recorded.evidence_seq is not None
    after = store.get_backup(DEMO, demo_backup.backup_id)
    was = before[demo_backup.backup_id].status
    # Judged backups keep their verdict; one only "available" is now "attempted, not concluded".
    expected = was if was in (BackupStatus.VALIDATED, BackupStatus.FAILED_VALIDATION) else BackupStatus.UNVERIFIED
    assert after.status is expected
    assert after.last_validation == before[demo_backup.backup_id].last_validation
    assert (run_id, "error") in validation_attempts(DEMO, demo_backup.backup_id)
    records = evidence.records(subject=f"{DEMO}/{demo_backup.backup_id}")
    record = next(r for r in records if r.seq == recorded.evidence_seq)
    assert record.action == "validation.error" and record.data["run_id"] == run_id




def test_a_restore_step_run_again_after_a_crash_starts_over_in_its_own_scratch_database(
        ports: ValidationPorts, sandbox: Sandbox, blob_store: BlobStore, seeded: dict[str, Any]) -> None:
    """At-least-once delivery (issue 16): the restore activity re-runs with the scratch name its run chose.

    The first attempt's database exists (here complete; after a real crash partial); the second attempt
    must not fail with DuplicateDatabase but restore again, and the checks see one clean restore.
    """
    from continuity.validation.naming import scratch_database_name
    from continuity.validation.service import restore_into_sandbox, run_restore_checks

    dump, manifest = seeded["vt-good"]
    backup = upload_backup(blob_store, "vt-good", dump, manifest)
    ref = ports.source.get_backup("vt-good", backup.backup_id)
    name = scratch_database_name("vt-good", datetime.now(UTC), secrets.token_hex(3))
    try:
        first = restore_into_sandbox(ports, ref, name)
        again = restore_into_sandbox(ports, ref, name)
        assert first.restored and again.restored, again.to_json()
        checks = run_restore_checks(ports, ref, again)
        assert [c.id for c in checks if c.status is CheckStatus.FAIL] == []
        assert next(c for c in checks if c.id == CheckId.ROW_COUNTS).status is CheckStatus.PASS
    finally:
        sandbox.drop_scratch_database(name)
