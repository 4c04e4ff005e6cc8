"""The adversarial corpus (issue 14, item 8): every way we know to make a wrong backup look right.

Each case starts from a real tenant database and a real ``pg_dump -Fc`` and tampers with one thing,
the way an attacker with write access to storage (or to the source database) or a bug would:

- **after cataloging**: a good backup is cataloged (its first sight is the anchor), then its dump or
  manifest is changed in storage, with checksums recomputed where that helps the attacker;
- **first sight**: a forged backup whose manifest agrees with its dump byte for byte, written before the
  catalog ever saw it (so only the archive's own header and the restored data can give it away);
- **source tampered**: the tenant's database is changed, dumped, and stored with the pristine backup's
  manifest (checksums recomputed), or with a manifest recomputed from the changed database;
- **attachments**: the tenant's stored files are overwritten or deleted.

Every case runs through the real pipeline (anchored source, pg_restore into the real sandbox, the SQL
checks) and is recorded like a real run (catalog and evidence). Each asserts the check that must catch
it and its reason, that nothing crashed, and, across the corpus, that no scratch database is left, no
embedded command ran, and the evidence chain verifies and holds one record per run.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.connection import libpq_env
from continuity.adapters.postgres.sandbox import Sandbox, production_dsns_of
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.tools import pgbin
from continuity.catalog.manifest import DUMP_FILE, MANIFEST_FILE, backup_prefix
from continuity.kernel.tenants import Registry
from continuity.validation.checks import CheckId, CheckStatus, VerdictStatus
from continuity.validation.naming import run_id_for
from continuity.validation.service import Outcome, ValidationPorts, ValidationReport, record_report, validate
from continuity.validation.wiring import local_ports, open_recording
from tests.integration.test_restore_validation import make_registry, seed_tenant, take_backup, upload_backup

pytestmark = pytest.mark.stack

TENANT = "tc-corpus"
OTHER = "tc-other"
PRISTINE = "tc_corpus_pristine"
MARKER = Path("/tmp") / f"continuity-corpus-pwned-{secrets.token_hex(6)}"


# ---- the corpus's moving parts ----------------------------------------------------------------------


@dataclass
class Lab:
    """The tenant, its pristine database, a good backup of it, another tenant's, and ways to forge."""

    stack: LocalStack
    blobs: BlobStore
    registry: Registry
    ports: ValidationPorts
    good_dump: bytes
    good_manifest: dict[str, Any]
    other_dump: bytes
    other_manifest: dict[str, Any]

    @property
    def database(self) -> str:
        return self.registry.get_tenant(TENANT).database

    @property
    def other_database(self) -> str:
        return self.registry.get_tenant(OTHER).database

    def reset_database(self, template: str = PRISTINE) -> None:
        """The tenant's database as a copy of ``template`` (its pristine state unless said otherwise)."""
        with psycopg.connect(self.stack.dsn("primary"), autocommit=True) as conn:
            conn.execute(f"drop database if exists {self.database} with (force)")
            conn.execute(f"create database {self.database} template {template}")

    def redump(self, change: Callable[[psycopg.Connection], object], template: str = PRISTINE,
               manifest: bool = True) -> tuple[bytes, dict[str, Any]]:
        """Change the tenant's database, dump it, reset it. The manifest is computed from the changed database,
        or (``manifest=False``, for changes the backup job's own queries could not read) only dated."""
        self.reset_database(template)
        try:
            with psycopg.connect(self.stack.dsn("primary", self.database), autocommit=True) as conn:
                change(conn)
            if manifest:
                return take_backup(self.stack, self.database, TENANT)
            created = datetime.now(UTC)
            target = self.stack.dsn("primary", self.database)
            dump = subprocess.run([pgbin.tool("pg_dump"), "-Fc", f"--dbname={target}"], check=True,
                                  capture_output=True, env=libpq_env(), timeout=120).stdout
            return dump, {"created_at": created.isoformat(), "completed_at": datetime.now(UTC).isoformat()}
        finally:
            self.reset_database()


def consistent(manifest: dict[str, Any], dump: bytes, **changes: Any) -> dict[str, Any]:
    """``manifest`` with ``changes``, its dump checksum and size recomputed for ``dump`` (the attacker's move)."""
    return {**manifest, **changes, "files": [{"name": DUMP_FILE, "role": "database",
                                              "sha256": hashlib.sha256(dump).hexdigest(), "size": len(dump)}]}


def flip(data: bytes, at: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[at] ^= mask
    return bytes(out)


@dataclass(frozen=True)
class Stored:
    backup_id: str
    prefix: str


@dataclass(frozen=True)
class Case:
    """One tampering: how it is made, and the check (status and reason) that must catch it."""

    name: str
    check: str
    reason: str
    make: Callable[[Lab], Stored]
    status: CheckStatus = CheckStatus.FAIL
    sample_rate: float = 1.0
    also: Callable[[ValidationReport], None] | None = None


def first_sight(lab: Lab, dump: bytes, manifest: dict[str, Any], created: datetime | None = None) -> Stored:
    """``dump`` and ``manifest`` stored as a new backup (its id and folder from ``created`` or created_at)."""
    stored = upload_backup(lab.blobs, TENANT, dump, manifest, created=created)
    return Stored(stored.backup_id, stored.prefix)


def forged(lab: Lab, dump: bytes) -> Stored:
    """``dump`` with the good backup's manifest, its checksum and size recomputed to match."""
    return first_sight(lab, dump, consistent(lab.good_manifest, dump))


def cataloged(lab: Lab, then: Callable[[Stored], None]) -> Stored:
    """The good backup, cataloged (anchored), then ``then`` changes storage."""
    stored = upload_backup(lab.blobs, TENANT, lab.good_dump, {**lab.good_manifest, "backup_id": ""})
    ref = lab.ports.source.get_backup(TENANT, stored.backup_id)
    assert ref.anchor is not None and ref.catalog_refusal is None
    backup = Stored(stored.backup_id, stored.prefix)
    then(backup)
    return backup


def put(lab: Lab, backup: Stored, name: str, data: bytes) -> None:
    lab.blobs.upload("backups", backup.prefix + name, data, overwrite=True)


def put_all(lab: Lab, backup: Stored, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        put(lab, backup, name, data)


def source_tampered(lab: Lab, change: Callable[[psycopg.Connection], object]) -> Stored:
    """The changed database's dump, stored with the pristine backup's manifest (checksums recomputed)."""
    dump, fresh = lab.redump(change, manifest=False)
    # Dated as the new dump is (its archive header says when it was made), everything else pristine.
    return first_sight(lab, dump, consistent(lab.good_manifest, dump, created_at=fresh["created_at"],
                                             completed_at=fresh["completed_at"]))


def recomputed(lab: Lab, change: Callable[[psycopg.Connection], object], template: str = PRISTINE) -> Stored:
    """The changed database's dump with a manifest wholly recomputed from it: every count agrees."""
    dump, manifest = lab.redump(change, template)
    return first_sight(lab, dump, manifest)


def attachment_names(lab: Lab) -> list[str]:
    return sorted(lab.blobs.list_names("attachments", prefix=f"{TENANT}/"))


def plant_copy_to_program(conn: psycopg.Connection) -> None:
    conn.execute(f"""
        create function public.pwn(x integer) returns integer language plpgsql as $$
        begin
          if current_database() like 'scratch%' then copy (select 1) to program 'touch {MARKER}'; end if;
          return x;
        end $$""")
    conn.execute("alter table account_move add constraint account_move_pwn check (public.pwn(id) = id)")


def plant_event_trigger(conn: psycopg.Connection) -> None:
    conn.execute(f"""
        create function public.on_ddl() returns event_trigger language plpgsql as $$
        begin copy (select 1) to program 'touch {MARKER}'; end $$""")
    conn.execute("create event trigger pwn_ddl on ddl_command_end execute function public.on_ddl()")


def flipped_toc_definition(lab: Lab) -> Stored:
    at = lab.good_dump.find(b"CREATE TABLE public.res_partner")
    assert at > 0
    return forged(lab, flip(flip(lab.good_dump, at + 14, 0xC0), at + 15, 0xC0))  # invalid UTF-8 in the text


def other_tenants_dump_as_ours(lab: Lab) -> Stored:
    """The other tenant's dump, its row counts, ledger and attachments copied along, relabelled as ours."""
    source = {**lab.other_manifest["source"], "database": lab.database}
    return first_sight(lab, lab.other_dump, consistent(lab.other_manifest, lab.other_dump, tenant=TENANT,
                                                       source=source, attachments=lab.good_manifest["attachments"]))


def backup_id_from_another_time(lab: Lab) -> Stored:
    created = datetime.fromisoformat(lab.good_manifest["created_at"])
    # Two seconds off (the tolerance is one), towards the middle of the day so the folder date still agrees.
    skew = timedelta(seconds=2) if created.astimezone(UTC).hour < 12 else timedelta(seconds=-2)
    backup_id = f"{created + skew:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    prefix = backup_prefix(TENANT, backup_id, created)
    manifest = {**lab.good_manifest, "backup_id": backup_id}
    lab.blobs.upload("backups", prefix + DUMP_FILE, lab.good_dump)
    lab.blobs.upload("backups", prefix + MANIFEST_FILE, json.dumps(manifest).encode())
    return Stored(backup_id, prefix)


def edited(lab: Lab, **changes: Any) -> Stored:
    return first_sight(lab, lab.good_dump, consistent(lab.good_manifest, lab.good_dump, **changes))


def with_index_proof_altered(lab: Lab) -> Stored:
    tables = json.loads(json.dumps(lab.good_manifest["tables"]))
    tables["account_move"]["indexes"]["account_move_unique_name"] = "0" * 16
    return edited(lab, tables=tables)


def _drop_secondary_indexes_and_foreign_keys(conn: psycopg.Connection) -> None:
    for (name,) in conn.execute("select conname from pg_constraint where contype in ('f', 'u') "
                                "and connamespace = 'public'::regnamespace").fetchall():
        table = conn.execute("select conrelid::regclass::text from pg_constraint where conname = %s",
                             (name,)).fetchone()
        assert table is not None
        conn.execute(f'alter table {table[0]} drop constraint "{name}"')
    for (name,) in conn.execute("select indexrelid::regclass::text from pg_index i join pg_class t "
                                "on t.oid = i.indrelid where t.relnamespace = 'public'::regnamespace "
                                "and not i.indisprimary").fetchall():
        conn.execute(f"drop index {name}")


def _drop_every_index(conn: psycopg.Connection) -> None:
    _drop_secondary_indexes_and_foreign_keys(conn)
    for (table, name) in conn.execute("select conrelid::regclass::text, conname from pg_constraint "
                                      "where contype = 'p' and connamespace = 'public'::regnamespace").fetchall():
        conn.execute(f'alter table {table} drop constraint "{name}"')


def _unbalance(conn: psycopg.Connection) -> None:
    conn.execute("update account_move_line set debit = debit + 7, balance = balance + 7 where id = 5")


def _attachment_overwritten(lab: Lab) -> Stored:
    """One stored file replaced (the dump and manifest are the good ones)."""
    name = attachment_names(lab)[0]
    lab.blobs.upload("attachments", name, b"not the file the invoice points at", overwrite=True)
    return first_sight(lab, lab.good_dump, lab.good_manifest)


def _attachment_deleted(lab: Lab) -> Stored:
    lab.blobs.container("attachments").delete_blob(attachment_names(lab)[0])
    return first_sight(lab, lab.good_dump, lab.good_manifest)


def _assert_sampled(report: ValidationReport) -> None:
    assert report.verdict.status is VerdictStatus.RECOVERABLE_OUTSIDE_OBJECTIVES, report.verdict.reason
    assert "sampled: attachment sha1 verified on a 10% sample" in report.verdict.reason


def _assert_indexes_not_a_pass(report: ValidationReport) -> None:
    indexes = next(c for c in report.checks if c.id == CheckId.INDEXES)
    assert indexes.status is CheckStatus.UNAVAILABLE
    assert indexes.detail.startswith("unavailable: nothing to check")


CASES: tuple[Case, ...] = (
    # -- the dump changed in storage after cataloging
    Case("dump truncated to half after cataloging", CheckId.FILE_CHECKSUM, "truncated or was replaced",
         lambda lab: cataloged(lab, lambda b: put(lab, b, DUMP_FILE, lab.good_dump[: len(lab.good_dump) // 2]))),
    Case("dump short by one byte after cataloging", CheckId.FILE_CHECKSUM, "truncated or was replaced",
         lambda lab: cataloged(lab, lambda b: put(lab, b, DUMP_FILE, lab.good_dump[:-1]))),
    Case("one bit flipped in the data after cataloging", CheckId.FILE_CHECKSUM, "differs from the sha256 cataloged",
         lambda lab: cataloged(lab, lambda b: put(lab, b, DUMP_FILE, flip(lab.good_dump, len(lab.good_dump) // 2)))),
    Case("one bit flipped in the archive header after cataloging", CheckId.FILE_CHECKSUM,
         "differs from the sha256 cataloged",
         lambda lab: cataloged(lab, lambda b: put(lab, b, DUMP_FILE, flip(lab.good_dump, 12)))),
    Case("bytes appended to the dump after cataloging", CheckId.FILE_CHECKSUM, "truncated or was replaced",
         lambda lab: cataloged(lab, lambda b: put(lab, b, DUMP_FILE, lab.good_dump + b"\0" * 512))),
    Case("dump emptied after cataloging", CheckId.FILE_CHECKSUM, "is 0 bytes",
         lambda lab: cataloged(lab, lambda b: put(lab, b, DUMP_FILE, b""))),
    Case("dump replaced by another dump of the same tenant", CheckId.FILE_CHECKSUM, "cataloged at",
         lambda lab: cataloged(lab, lambda b: put(lab, b, DUMP_FILE, lab.redump(lambda conn: None)[0]))),
    Case("dump deleted after cataloging", CheckId.FILE_CHECKSUM, "db.dump is gone from storage",
         lambda lab: cataloged(lab, lambda b: lab.blobs.container("backups").delete_blob(b.prefix + DUMP_FILE))),
    # -- the manifest changed in storage after cataloging
    Case("dump truncated and the manifest rewritten to match", CheckId.FILE_CHECKSUM, "overwritten after cataloging",
         lambda lab: cataloged(lab, lambda b: put_all(lab, b, {
             DUMP_FILE: lab.good_dump[:-100],
             MANIFEST_FILE: json.dumps(consistent({**lab.good_manifest, "backup_id": b.backup_id},
                                                  lab.good_dump[:-100])).encode()}))),
    Case("manifest row counts rewritten after cataloging", CheckId.FILE_CHECKSUM, "overwritten after cataloging",
         lambda lab: cataloged(lab, lambda b: put(lab, b, MANIFEST_FILE, json.dumps(
             {**lab.good_manifest, "backup_id": b.backup_id,
              "row_counts": {**lab.good_manifest["row_counts"], "account_move": 1}}).encode()))),
    Case("manifest deleted after cataloging", CheckId.FILE_CHECKSUM, "manifest.json is gone from storage",
         lambda lab: cataloged(lab, lambda b: lab.blobs.container("backups").delete_blob(b.prefix + MANIFEST_FILE))),
    # -- forged before the catalog saw them, manifest and dump agreeing byte for byte
    Case("another tenant's backup copied into this tenant's folder", CheckId.MANIFEST_TENANT,
         f"manifest names tenant '{OTHER}', not '{TENANT}'",
         lambda lab: first_sight(lab, lab.other_dump, lab.other_manifest)),
    Case("manifest names another backup id than its folder", CheckId.MANIFEST_TENANT, "manifest names backup",
         lambda lab: first_sight(lab, lab.good_dump, {**lab.good_manifest, "backup_id": "20200101T000000Z-abcdef"})),
    Case("manifest names another source database", CheckId.MANIFEST_TENANT, "source database 'odoo_elsewhere'",
         lambda lab: edited(lab, source={**lab.good_manifest["source"], "database": "odoo_elsewhere"})),
    Case("manifest lists its dump under another name", CheckId.FILE_CHECKSUM, "the manifest lists no db.dump",
         lambda lab: first_sight(lab, lab.good_dump, {**consistent(lab.good_manifest, lab.good_dump), "files": [
             {**consistent(lab.good_manifest, lab.good_dump)["files"][0], "name": "database.dump"}]})),
    Case("random bytes with a matching manifest", CheckId.ARCHIVE_READABLE, "cannot read the archive",
         lambda lab: forged(lab, secrets.token_bytes(4096))),
    Case("dump cut inside its table of contents, manifest matching", CheckId.ARCHIVE_READABLE,
         "cannot read the archive", lambda lab: forged(lab, lab.good_dump[:600])),
    Case("dump cut in its data, manifest matching", CheckId.ARCHIVE_READABLE, "the dump is damaged",
         lambda lab: forged(lab, lab.good_dump[: int(len(lab.good_dump) * 0.8)])),
    Case("another tenant's dump with its counts, ledger and attachments relabelled as ours", CheckId.IDENTITY,
         "the archive was dumped from database 'odoo_tc_other'", other_tenants_dump_as_ours),
    Case("created_at moved a day back", CheckId.IDENTITY, "from the archive's own creation time",
         lambda lab: (lambda at: first_sight(lab, lab.good_dump, consistent(lab.good_manifest, lab.good_dump,
                                                                            created_at=at.isoformat()), created=at))(
             datetime.fromisoformat(lab.good_manifest["created_at"]) - timedelta(days=1))),
    Case("created_at three hours in the future", CheckId.IDENTITY, "is in the future",
         lambda lab: (lambda at: first_sight(lab, lab.good_dump, consistent(lab.good_manifest, lab.good_dump,
                                                                            created_at=at.isoformat()), created=at))(
             datetime.now(UTC) + timedelta(hours=3))),
    Case("backup id made at another time than created_at", CheckId.IDENTITY, "but created_at says",
         backup_id_from_another_time),
    Case("manifest claims another PostgreSQL major version", CheckId.IDENTITY, "the manifest says 14.9",
         lambda lab: edited(lab, source={**lab.good_manifest["source"], "pg_version": "14.9"})),
    Case("row counts edited in a matching manifest", CheckId.ROW_COUNTS, "differ from the manifest",
         lambda lab: edited(lab, row_counts={**lab.good_manifest["row_counts"], "account_move_line": 3})),
    Case("ledger fingerprint edited", CheckId.LEDGER, "ledger fingerprint",
         lambda lab: edited(lab, ledger={**lab.good_manifest["ledger"], "fingerprint": "e" * 64})),
    Case("ledger debit total edited", CheckId.LEDGER, "debit total",
         lambda lab: edited(lab, ledger={**lab.good_manifest["ledger"], "debit_total": "1.00"})),
    Case("tenant fingerprint edited", CheckId.TENANT_FINGERPRINT, "is not the one the backup recorded",
         lambda lab: edited(lab, identity={**lab.good_manifest["identity"], "companies_sha256": "f" * 64})),
    Case("schema proof of an index edited", CheckId.SCHEMA_PRESENT, "indexes altered (account_move_unique_name)",
         with_index_proof_altered),
    # -- the source database changed, stored with the pristine backup's manifest
    Case("unique keys, foreign keys and secondary indexes dropped", CheckId.SCHEMA_PRESENT,
         "constraints missing", lambda lab: source_tampered(lab, _drop_secondary_indexes_and_foreign_keys)),
    Case("one foreign key dropped", CheckId.SCHEMA_PRESENT,
         "account_move_line: constraints missing (account_move_line_move_id_fkey)",
         lambda lab: source_tampered(lab, lambda conn: conn.execute(
             "alter table account_move_line drop constraint account_move_line_move_id_fkey"))),
    Case("the unique invoice number index dropped", CheckId.SCHEMA_PRESENT,
         "account_move: indexes missing (account_move_unique_name)",
         lambda lab: source_tampered(lab, lambda conn: conn.execute("drop index account_move_unique_name"))),
    Case("a column's type changed", CheckId.SCHEMA_PRESENT, "columns of account_move altered",
         lambda lab: source_tampered(lab, lambda conn: conn.execute(
             "alter table account_move alter column ref type varchar(8)"))),
    Case("every index dropped: amcheck has nothing to check", CheckId.SCHEMA_PRESENT, "indexes missing",
         lambda lab: source_tampered(lab, _drop_every_index), also=_assert_indexes_not_a_pass),
    # -- the source database changed, every number of the manifest recomputed to agree
    Case("a posted invoice deleted mid-sequence", CheckId.INVOICE_NUMBERING, "INV INV/2025/ 2025 after 4 (1 missing)",
         lambda lab: recomputed(lab, lambda conn: conn.execute("delete from account_move where id = 5"))),
    Case("a posted move made unbalanced", CheckId.LEDGER, "posted move(s) unbalanced",
         lambda lab: recomputed(lab, _unbalance)),
    Case("another tenant's database restored under this tenant's name", CheckId.TENANT_FINGERPRINT,
         "is not the tenant's", lambda lab: recomputed(lab, lambda conn: None, template=lab.other_database)),
    # -- attachments changed in the store
    Case("an attachment overwritten", CheckId.ATTACHMENTS, "do not match their sha1", _attachment_overwritten),
    Case("an attachment deleted", CheckId.ATTACHMENTS, "missing from the store", _attachment_deleted),
    # -- hostile archives
    Case("invalid UTF-8 flipped into a table definition", CheckId.RESTORE_COMPLETED, "pg_restore reported",
         flipped_toc_definition),
    Case("COPY TO PROGRAM in a function a constraint calls", CheckId.ARCHIVE_SAFE,
         "COPY ... TO/FROM PROGRAM runs a shell command",
         lambda lab: recomputed(lab, plant_copy_to_program)),
    Case("an event trigger", CheckId.ARCHIVE_SAFE, "EVENT TRIGGER",
         lambda lab: recomputed(lab, plant_event_trigger)),
    # -- last, as they pass: legitimate-looking changes that must still not read "within objectives"
    Case("the tenant's company renamed", CheckId.TENANT_FINGERPRINT, "differ from those of the tenant's last",
         lambda lab: recomputed(lab, lambda conn: conn.execute("update res_company set name = 'Renamed Co'")),
         status=CheckStatus.WARN),
    Case("a validation that hashed a 10% sample of the attachments", CheckId.ATTACHMENTS,
         "sha1 verified on a 10% sample", lambda lab: first_sight(lab, lab.good_dump, lab.good_manifest),
         status=CheckStatus.PASS, sample_rate=0.1, also=_assert_sampled),
)


@dataclass
class Outcomes:
    reports: dict[str, ValidationReport] = field(default_factory=dict)
    crashes: dict[str, str] = field(default_factory=dict)
    evidence_seqs: dict[str, int | None] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)
    established: str = ""


@pytest.fixture(scope="module")
def outcomes(stack: LocalStack, blob_store: BlobStore) -> Iterator[Outcomes]:
    """Run the whole corpus once (each case from a clean state), recording every run like a real one."""
    registry = make_registry((TENANT, OTHER))
    tenant_db, other_db = registry.get_tenant(TENANT).database, registry.get_tenant(OTHER).database
    seed_tenant(stack, blob_store, tenant_db, TENANT, moves=12, attachments=3)
    seed_tenant(stack, blob_store, other_db, OTHER, moves=9, attachments=2)
    with psycopg.connect(stack.dsn("primary", other_db), autocommit=True) as conn:
        conn.execute("update res_company set name = 'Other Co'")
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        conn.execute(f"drop database if exists {PRISTINE}")
        conn.execute(f"create database {PRISTINE} template {tenant_db}")
    good_dump, good_manifest = take_backup(stack, tenant_db, TENANT)
    other_dump, other_manifest = take_backup(stack, other_db, OTHER)
    ports = local_ports(registry, blobs=blob_store)
    lab = Lab(stack, blob_store, registry, ports, good_dump, good_manifest, other_dump, other_manifest)
    catalog, evidence, _ = open_recording(blob_store)
    attachments = {name: blob_store.download("attachments", name) for name in attachment_names(lab)}
    sandbox = Sandbox(stack.dsn("sandbox"), production_dsns_of(registry))
    result = Outcomes()

    # The tenant's history: one good backup validated first, as every tenant has before an attack.
    good = first_sight(lab, good_dump, good_manifest)
    report = validate(ports, TENANT, good.backup_id)
    assert report.outcome is Outcome.PASSED and not report.failed_checks, report.to_json()
    record_report(report, catalog=catalog, evidence=evidence, publish=lambda *a: None)
    result.established = good.backup_id

    for case in CASES:
        try:
            stored = case.make(lab)
            report = validate(ports, TENANT, stored.backup_id, sample_rate=case.sample_rate,
                              run_id=run_id_for(TENANT, stored.backup_id))
            recorded = record_report(report, catalog=catalog, evidence=evidence, publish=lambda *a: None)
            result.reports[case.name] = report
            result.evidence_seqs[case.name] = recorded.evidence_seq
        except Exception as exc:  # noqa: BLE001 - a crash is what the corpus looks for; each test reports its own
            result.crashes[case.name] = f"{type(exc).__name__}: {exc}"
        finally:
            for name, data in attachments.items():
                blob_store.upload("attachments", name, data, overwrite=True)
    result.leftovers = sandbox.list_scratch_databases()
    yield result
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        conn.execute(f"drop database if exists {PRISTINE}")
    MARKER.unlink(missing_ok=True)


def test_the_corpus_holds_at_least_thirty_distinct_tamperings() -> None:
    assert len({c.name for c in CASES}) == len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_tampering_is_caught_by_its_check_for_its_reason(case: Case, outcomes: Outcomes) -> None:
    assert case.name not in outcomes.crashes, outcomes.crashes[case.name]
    report = outcomes.reports[case.name]
    checks = {c.id: c for c in report.checks}
    assert case.check in checks, report.to_json()
    caught = checks[case.check]
    assert caught.status is case.status, (caught.status, caught.detail)
    assert case.reason in caught.detail, caught.detail
    if case.status is CheckStatus.FAIL:
        assert report.outcome is Outcome.FAILED and report.verdict.status is VerdictStatus.NOT_RECOVERABLE
        # The first failure is the intended one: nothing earlier in the pipeline was what caught it.
        assert report.failed_checks[0] == case.check, report.failed_checks
    else:
        assert report.verdict.status is not VerdictStatus.RECOVERABLE, report.verdict.reason
    if case.also is not None:
        case.also(report)


def test_no_case_crashed_left_a_scratch_database_or_ran_an_embedded_command(outcomes: Outcomes) -> None:
    assert outcomes.crashes == {}
    assert outcomes.leftovers == []
    assert not MARKER.exists()
    assert len(outcomes.reports) == len(CASES)


def test_evidence_verifies_and_holds_one_record_per_run(outcomes: Outcomes, blob_store: BlobStore) -> None:
    _, evidence, _ = open_recording(blob_store)
    assert evidence.verify().ok
    for name, report in outcomes.reports.items():
        records = [r for r in evidence.records(subject=f"{TENANT}/{report.backup_id}")
                   if r.action.startswith("validation.")]
        assert [r.seq for r in records] == [outcomes.evidence_seqs[name]], name
        assert records[0].data["run_id"] == report.run_id
        assert records[0].action == f"validation.{report.outcome}"


def test_a_revalidation_appends_its_own_record_and_the_catalog_agrees(outcomes: Outcomes,
                                                                     blob_store: BlobStore) -> None:
    """A second attempt on a backup that failed is a run of its own, in the catalog and the chain."""
    from continuity.adapters.postgres.catalog_store import PgCatalogStore, validation_attempts
    from continuity.adapters.postgres.control_db import prepare
    from continuity.validation.wiring import plan_attempt

    report = outcomes.reports["ledger fingerprint edited"]
    registry = make_registry((TENANT, OTHER))
    attempt = plan_attempt(TENANT, report.backup_id, force=True)
    assert attempt.run_id == run_id_for(TENANT, report.backup_id, 2)
    again = validate(local_ports(registry, blobs=blob_store), TENANT, report.backup_id, run_id=attempt.run_id)
    catalog, evidence, _ = open_recording(blob_store)
    recorded = record_report(again, catalog=catalog, evidence=evidence, publish=lambda *a: None)
    assert recorded.evidence_seq not in outcomes.evidence_seqs.values()
    runs = [r.data["run_id"] for r in evidence.records(subject=f"{TENANT}/{report.backup_id}")
            if r.action.startswith("validation.")]
    assert runs == [report.run_id, attempt.run_id]
    assert [run for run, _ in validation_attempts(TENANT, report.backup_id)] == runs
    assert PgCatalogStore(prepare()).get_backup(TENANT, report.backup_id).status.value == "failed_validation"
    assert plan_attempt(TENANT, report.backup_id) == replace(attempt, concluded=True, outcome="failed")
