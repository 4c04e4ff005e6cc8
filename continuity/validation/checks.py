"""Restore checks and the verdict on a restored backup: pure decisions, no I/O.

Every check has a stable id, a status (pass / fail / warn / unavailable), a detail a human can act
on, and how long it took. The verdict is a sentence (Patroni style) plus a status, and a backup is
"recoverable within objectives" only when every check passed and both the RTO and the RPO hold.

Recovery time objective, scaled to production size (the formula, also in the README):

    projected_rto_s = measured_s * max(1, production_size_bytes / restored_size_bytes)

where ``measured_s`` is the wall time of the sandbox restore plus the validation checks, and
``restored_size_bytes`` the size of the restored (scratch) database. Restore time grows about
linearly with data volume (COPY and index builds dominate), so a restore of a smaller copy
projects linearly upward; a production size smaller than the restored one never scales down.

Recovery point objective: ``backup_age = run_at - backup.created_at`` (the dump's snapshot is taken
when it starts) must not exceed the tenant's RPO.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from continuity.catalog.manifest import MANIFEST_MISSING, Anchor, OdooInfo, TenantIdentity
from continuity.validation.odoo import versions


class CheckId(StrEnum):
    """Stable check ids; tenant assertions use ``assertion:{name}``."""

    MANIFEST_TENANT = "manifest_tenant"
    FILE_CHECKSUM = "file_checksum"
    ARCHIVE_READABLE = "archive_readable"
    IDENTITY = "identity"
    ARCHIVE_SAFE = "archive_safe"
    RESTORE_COMPLETED = "restore_completed"
    SCHEMA_PRESENT = "schema_present"
    TENANT_FINGERPRINT = "tenant_fingerprint"
    ROW_COUNTS = "row_counts"
    LEDGER = "ledger"
    INVOICE_NUMBERING = "invoice_numbering"
    ATTACHMENTS = "attachments"
    INDEXES = "indexes"


ASSERTION_PREFIX = "assertion:"

# The order checks run and are reported in; a failure of one in PREREQUISITES stops the run.
PIPELINE_ORDER: tuple[CheckId, ...] = (
    CheckId.MANIFEST_TENANT, CheckId.FILE_CHECKSUM, CheckId.ARCHIVE_READABLE, CheckId.IDENTITY, CheckId.ARCHIVE_SAFE,
    CheckId.RESTORE_COMPLETED, CheckId.SCHEMA_PRESENT, CheckId.TENANT_FINGERPRINT, CheckId.ROW_COUNTS, CheckId.LEDGER,
    CheckId.INVOICE_NUMBERING, CheckId.ATTACHMENTS, CheckId.INDEXES,
)
PREREQUISITES: frozenset[str] = frozenset({
    CheckId.MANIFEST_TENANT, CheckId.FILE_CHECKSUM, CheckId.ARCHIVE_READABLE, CheckId.IDENTITY, CheckId.ARCHIVE_SAFE,
    CheckId.RESTORE_COMPLETED,
})
# The prerequisites in pipeline order: what is reported "not run" after one of them stops the pipeline.
PREREQUISITES_ORDER: tuple[CheckId, ...] = tuple(c for c in PIPELINE_ORDER if c in PREREQUISITES)
# How far the manifest's created_at may be from the archive's own creation time and from the backup id's
# timestamp: pg_dump starts right after the snapshot is taken, and the id is made from created_at itself.
ARCHIVE_TIME_TOLERANCE = timedelta(minutes=10)
BACKUP_ID_TIME_TOLERANCE = timedelta(seconds=1)
# Clock skew allowed between the backup's server and the validation's before a created_at is "in the future".
FUTURE_SKEW = timedelta(minutes=5)


def assertion_check_id(name: str) -> str:
    return f"{ASSERTION_PREFIX}{name}"


class CheckStatus(StrEnum):
    PASS = "pass"  # noqa: S105 - a status, not a password
    FAIL = "fail"
    WARN = "warn"
    UNAVAILABLE = "unavailable"
    # The check does not apply to this database (e.g. the ledger when accounting is not installed): neither
    # a pass nor a failure, and no obstacle to "recoverable within objectives".
    NOT_APPLICABLE = "not_applicable"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check. ``data`` stays small (counts, ids, a few examples), never row sets."""

    id: str
    status: CheckStatus
    detail: str
    duration_s: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = str(self.status)
        out["duration_s"] = round(self.duration_s, 3)
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> CheckResult:
        return cls(id=str(raw["id"]), status=CheckStatus(raw["status"]), detail=str(raw["detail"]),
                   duration_s=float(raw.get("duration_s", 0.0)), data=dict(raw.get("data") or {}))


def not_run(check_id: str, because: str) -> CheckResult:
    """A check that could not run because an earlier one failed: unavailable, never a pass."""
    return CheckResult(check_id, CheckStatus.UNAVAILABLE, f"not run: {because}")


def stop_reason(results: Sequence[CheckResult]) -> str | None:
    """Why the pipeline must stop here, or None to go on: a failed prerequisite check."""
    for result in results:
        if result.id in PREREQUISITES and result.status is CheckStatus.FAIL:
            return f"{result.id} failed"
    return None


# ---- check decisions (inputs are facts gathered by adapters) ---------------------------------------


def _examples(items: Iterable[Any], limit: int = 5) -> str:
    shown = [str(i) for i in list(items)[:limit]]
    return ", ".join(shown)


def check_manifest_tenant(tenant_id: str, manifest_tenant: str, blob_prefix: str,
                          source_database: str | None = None, tenant_database: str | None = None, *,
                          manifest_backup_id: str | None = None, path_backup_id: str | None = None) -> CheckResult:
    """The manifest must belong to the tenant (and the backup) whose folder it was found in."""
    problems = []
    if manifest_tenant != tenant_id:
        problems.append(f"manifest names tenant {manifest_tenant!r}, not {tenant_id!r}")
    if not blob_prefix.startswith(f"{tenant_id}/"):
        problems.append(f"backup folder {blob_prefix!r} is not under {tenant_id}/")
    if manifest_backup_id and path_backup_id and manifest_backup_id != path_backup_id:
        problems.append(f"manifest names backup {manifest_backup_id!r} but lies under {path_backup_id!r}")
    if source_database and tenant_database and source_database != tenant_database:
        problems.append(f"manifest's source database {source_database!r} is not the tenant's {tenant_database!r}")
    if problems:
        return CheckResult(CheckId.MANIFEST_TENANT, CheckStatus.FAIL,
                           "; ".join(problems) + "; quarantine this backup and check the backup job's tenant mapping")
    return CheckResult(CheckId.MANIFEST_TENANT, CheckStatus.PASS, f"manifest belongs to {tenant_id}")


def check_file_listed(name: str, listed: Sequence[str]) -> CheckResult | None:
    """A FILE_CHECKSUM failure when the manifest does not list ``name``, else None (go on and hash it)."""
    if name in listed:
        return None
    shown = _examples(repr(n) for n in listed) or "nothing"
    return CheckResult(CheckId.FILE_CHECKSUM, CheckStatus.FAIL,
                       f"the manifest lists no {name} (it lists {shown}): there is no checksum to hold the dump to; "
                       "the backup cannot be validated, fix the backup job's manifest",
                       data={"file": name, "listed": list(listed)[:10]})


def check_file_checksum(name: str, expected_sha256: str, expected_size: int, actual_sha256: str,
                        actual_size: int, *, anchor: Anchor | None = None,
                        stored_manifest_sha256: str | None = None) -> CheckResult:
    """The bytes in storage are the bytes that were cataloged.

    With an ``anchor`` (the catalog's record of its first ingest), the expected dump and the manifest are
    the cataloged ones: a manifest overwritten in storage afterwards, with checksums recomputed to match a
    tampered dump, fails here instead of vouching for it. Without one, the manifest in storage is all there
    is to compare with, which proves only that the two agree: a warning, never a pass.
    """
    data: dict[str, Any] = {"file": name, "expected_size": expected_size, "actual_size": actual_size}
    if anchor is not None:
        data["anchor"] = {"manifest_sha256": anchor.manifest_sha256, "dump_sha256": anchor.dump_sha256,
                          "evidence_seq": anchor.evidence_seq}
        if stored_manifest_sha256 == MANIFEST_MISSING:
            return CheckResult(CheckId.FILE_CHECKSUM, CheckStatus.FAIL,
                               f"manifest.json is gone from storage (it was {anchor.describe()}): the backup was "
                               "tampered with or partly deleted; restore from another one", data=data)
        if stored_manifest_sha256 is not None and stored_manifest_sha256 != anchor.manifest_sha256:
            return CheckResult(CheckId.FILE_CHECKSUM, CheckStatus.FAIL,
                               f"manifest.json in storage (sha256 {stored_manifest_sha256[:12]}…) is not the manifest "
                               f"{anchor.describe()} (sha256 {anchor.manifest_sha256[:12]}…): it was overwritten "
                               "after cataloging; treat the backup as tampered and restore from another one",
                               data=data)
        expected_sha256, expected_size = anchor.dump_sha256, anchor.dump_size
        data["expected_size"] = expected_size
    if actual_size != expected_size:
        source = f"was {anchor.describe()} with" if anchor else "the manifest says"
        return CheckResult(CheckId.FILE_CHECKSUM, CheckStatus.FAIL,
                           f"{name} is {actual_size} bytes, {source} {expected_size}: the blob is "
                           "truncated or was replaced; restore from another backup", data=data)
    if actual_sha256 != expected_sha256:
        source = f"the sha256 {anchor.describe()}" if anchor else "the manifest's"
        return CheckResult(CheckId.FILE_CHECKSUM, CheckStatus.FAIL,
                           f"{name} sha256 {actual_sha256[:12]}… differs from {source} {expected_sha256[:12]}…: "
                           "the blob is corrupted or was replaced; restore from another backup", data=data)
    if anchor is None:
        return CheckResult(CheckId.FILE_CHECKSUM, CheckStatus.WARN,
                           f"{name}: {actual_size} bytes, sha256 matches the manifest in storage, but the backup is "
                           "not anchored in the catalog: a manifest rewritten with the dump would match too",
                           data=data)
    return CheckResult(CheckId.FILE_CHECKSUM, CheckStatus.PASS,
                       f"{name}: {actual_size} bytes, sha256 matches what was {anchor.describe()}", data=data)


def check_file_missing(name: str, anchor: Anchor | None, error: str) -> CheckResult:
    """A FILE_CHECKSUM failure: the backup's file cannot be read from storage at all."""
    cataloged = f" (it was {anchor.describe()})" if anchor else ""
    return CheckResult(CheckId.FILE_CHECKSUM, CheckStatus.FAIL,
                       f"{name} is gone from storage{cataloged}: {error[:200]}; restore from another backup",
                       data={"file": name})


def check_archive_readable(ok: bool, toc_entries: int, error: str) -> CheckResult:
    if not ok:
        return CheckResult(CheckId.ARCHIVE_READABLE, CheckStatus.FAIL,
                           f"pg_restore --list cannot read the archive: {error[:300]}; the dump is damaged",
                           data={"toc_entries": toc_entries})
    if toc_entries == 0:
        return CheckResult(CheckId.ARCHIVE_READABLE, CheckStatus.FAIL,
                           "the archive's table of contents is empty: the dump holds nothing to restore")
    return CheckResult(CheckId.ARCHIVE_READABLE, CheckStatus.PASS,
                       f"archive readable: {toc_entries} table-of-contents entries", data={"toc_entries": toc_entries})


@dataclass(frozen=True)
class IdentityFacts:
    """What says which database a backup is, and when it was taken (gathered before any restore)."""

    tenant_database: str
    manifest_database: str
    manifest_created_at: datetime
    manifest_pg_version: str
    backup_id: str
    folder_date: str  # ``yyyy/mm/dd`` of the backup's folder
    run_at: datetime
    archive_dbname: str | None
    archive_created_at: datetime | None  # naive, in ``archive_zone``
    archive_zone: str | None
    archive_server_version: str | None


def _major(version: str | None) -> str:
    return (version or "").strip().split(".")[0].split(" ")[0]


def check_identity(facts: IdentityFacts) -> CheckResult:
    """The archive is the tenant's database, dumped when the manifest says: header, times and versions agree.

    The archive header is written by pg_dump inside the dump's bytes; a manifest copied from another
    tenant, a ``created_at`` moved to pass the RPO, or a time in the future all disagree with it.
    """
    problems: list[str] = []
    created = facts.manifest_created_at.astimezone(UTC)
    if facts.archive_dbname is None:
        problems.append("the archive header names no database (not a pg_dump custom-format archive of one)")
    elif facts.archive_dbname != facts.tenant_database:
        problems.append(f"the archive was dumped from database {facts.archive_dbname!r}, not the tenant's "
                        f"{facts.tenant_database!r}: it is another database's dump")
    if facts.manifest_database != facts.tenant_database:
        problems.append(f"the manifest names database {facts.manifest_database!r}, not the tenant's "
                        f"{facts.tenant_database!r}")
    if created > facts.run_at.astimezone(UTC) + FUTURE_SKEW:
        problems.append(f"created_at {created.isoformat()} is in the future (now {facts.run_at.isoformat()}): "
                        "a backup cannot be newer than the run validating it")
    if facts.archive_created_at is None:
        problems.append("the archive header has no readable creation time")
    elif (facts.archive_zone or "").upper() not in ("UTC", "GMT", "Z", "+00", "UCT"):
        problems.append(f"the archive's creation time is in zone {facts.archive_zone!r}; it cannot be compared "
                        "with created_at (take backups with TZ=UTC)")
    else:
        archived = facts.archive_created_at.replace(tzinfo=UTC)
        if abs(archived - created) > ARCHIVE_TIME_TOLERANCE:
            problems.append(f"created_at {created.isoformat()} is {_delta(archived - created)} from the archive's "
                            f"own creation time {archived.isoformat()} (tolerance "
                            f"{ARCHIVE_TIME_TOLERANCE.total_seconds() / 60:.0f} min)")
    try:
        id_time = datetime.strptime(facts.backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if abs(id_time - created) > BACKUP_ID_TIME_TOLERANCE:
            problems.append(f"backup id {facts.backup_id} says {id_time.isoformat()} but created_at says "
                            f"{created.isoformat()}")
    except ValueError:
        problems.append(f"backup id {facts.backup_id!r} carries no time")
    if facts.folder_date != f"{created:%Y/%m/%d}":
        problems.append(f"the backup lies in folder {facts.folder_date} but created_at is {created:%Y/%m/%d}")
    if facts.archive_server_version and _major(facts.archive_server_version) != _major(facts.manifest_pg_version):
        problems.append(f"the archive was dumped from PostgreSQL {facts.archive_server_version}, the manifest says "
                        f"{facts.manifest_pg_version}")
    data = {"archive_dbname": facts.archive_dbname, "archive_created_at":
            facts.archive_created_at.isoformat() if facts.archive_created_at else None,
            "archive_server_version": facts.archive_server_version}
    if problems:
        return CheckResult(CheckId.IDENTITY, CheckStatus.FAIL,
                           "; ".join(problems) + "; this is not the backup it claims to be: quarantine it", data=data)
    return CheckResult(CheckId.IDENTITY, CheckStatus.PASS,
                       f"archive of {facts.archive_dbname} created {facts.archive_created_at} UTC, as the manifest "
                       f"says (PostgreSQL {facts.archive_server_version})", data=data)


def _delta(delta: timedelta) -> str:
    seconds = abs(delta.total_seconds())
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def check_tenant_fingerprint(expected: TenantIdentity | None, restored: TenantIdentity | None,
                             established: tuple[str, TenantIdentity] | None = None) -> CheckResult:
    """The restored database is the one the backup recorded, and the one the tenant has had so far.

    :param expected: the manifest's identity (None: the manifest predates identity proofs).
    :param restored: the same, read from the restored database (None: it has no res_company).
    :param established: (backup id, identity) of the tenant's newest validated backup, if any.

    Odoo's database uuid decides (it survives every dump and restore, two databases never share it):
    a uuid other than the tenant's fails. Companies that differ from the tenant's last validated backup
    only warn: a company renamed, added or removed is legitimate, and indistinguishable from a swap.
    """
    if restored is None:
        return CheckResult(CheckId.TENANT_FINGERPRINT, CheckStatus.FAIL,
                           "the restored database has no companies (res_company): it is not an Odoo tenant database")
    data: dict[str, Any] = {"companies": restored.companies, "database_uuid": restored.database_uuid}
    if expected is None:
        return CheckResult(CheckId.TENANT_FINGERPRINT, CheckStatus.UNAVAILABLE,
                           "the manifest records no tenant fingerprint (taken before identity proofs existed); "
                           "the restored database cannot be compared", data=data)
    if restored.database_uuid != expected.database_uuid or restored.companies_sha256 != expected.companies_sha256:
        return CheckResult(CheckId.TENANT_FINGERPRINT, CheckStatus.FAIL,
                           f"the restored database (uuid {restored.database_uuid}, {restored.companies} companies "
                           f"{restored.companies_sha256[:12]}…) is not the one the backup recorded (uuid "
                           f"{expected.database_uuid}, {expected.companies} companies "
                           f"{expected.companies_sha256[:12]}…): the dump is another database's", data=data)
    if established is not None:
        by, known = established
        if known.database_uuid and restored.database_uuid != known.database_uuid:
            return CheckResult(CheckId.TENANT_FINGERPRINT, CheckStatus.FAIL,
                               f"the restored database's uuid {restored.database_uuid} is not the tenant's "
                               f"{known.database_uuid} (its last validated backup {by}): another tenant's database, "
                               "or the tenant's database was replaced; find out which before relying on it",
                               data=data)
        if known.companies_sha256 != restored.companies_sha256:
            return CheckResult(CheckId.TENANT_FINGERPRINT, CheckStatus.WARN,
                               f"the companies ({restored.companies}) differ from those of the tenant's last "
                               f"validated backup {by} ({known.companies}): a company renamed, added or removed, or "
                               "another tenant's data; confirm with the tenant before relying on it", data=data)
    uuid = f"database uuid {restored.database_uuid}" if restored.database_uuid else "no database uuid"
    return CheckResult(CheckId.TENANT_FINGERPRINT, CheckStatus.PASS,
                       f"{uuid}, {restored.companies} compan{'y' if restored.companies == 1 else 'ies'} as recorded "
                       "at backup time" + (f" and as in {established[0]}" if established else ""), data=data)


def schema_proof_problems(expected: Mapping[str, Any], actual: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What differs between the tables recorded at backup time (manifest ``tables``) and the restored ones:
    a missing table, altered columns, and each index or constraint missing or altered, by name."""
    problems: list[str] = []
    for table, proof in sorted(expected.items()):
        got = actual.get(table)
        if got is None:
            problems.append(f"table {table} missing")
            continue
        if got.get("columns") != proof.columns:
            problems.append(f"columns of {table} altered")
        for kind in ("indexes", "constraints"):
            want: Mapping[str, str] = getattr(proof, kind)
            have: Mapping[str, str] = got.get(kind, {})
            missing = sorted(n for n in want if n not in have)
            altered = sorted(n for n in want if n in have and have[n] != want[n])
            if missing:
                problems.append(f"{table}: {kind} missing ({_examples(missing, 4)})")
            if altered:
                problems.append(f"{table}: {kind} altered ({_examples(altered, 4)})")
    return problems


def check_archive_safe(refusal: str | None, toc_entries: int) -> CheckResult:
    """Nothing in the archive asks the sandbox for more than an Odoo database (``validation.toc``'s verdict)."""
    if refusal:
        return CheckResult(CheckId.ARCHIVE_SAFE, CheckStatus.FAIL,
                           f"{refusal}; treat this backup as hostile and find out who wrote it",
                           data={"toc_entries": toc_entries})
    return CheckResult(CheckId.ARCHIVE_SAFE, CheckStatus.PASS,
                       f"all {toc_entries} table-of-contents entries are kinds an Odoo dump holds, and their SQL "
                       "runs no program, touches no server file or role", data={"toc_entries": toc_entries})


def check_restore_completed(returncode: int | None, errors: Sequence[str], timed_out: bool,
                            deadline_s: float) -> CheckResult:
    if timed_out:
        return CheckResult(CheckId.RESTORE_COMPLETED, CheckStatus.FAIL,
                           f"pg_restore did not finish within {deadline_s:.0f}s and was stopped; raise the deadline "
                           "or the sandbox's resources")
    if returncode != 0 or errors:
        shown = errors[0][:300] if errors else f"exit code {returncode}"
        return CheckResult(CheckId.RESTORE_COMPLETED, CheckStatus.FAIL,
                           f"pg_restore reported {max(len(errors), 1)} error(s), first: {shown}",
                           data={"errors": len(errors)})
    return CheckResult(CheckId.RESTORE_COMPLETED, CheckStatus.PASS, "pg_restore finished without errors")


NOT_ODOO = "not an Odoo database (no ir_module_module)"


def odoo_not_applicable(odoo: OdooInfo | None) -> dict[str, str]:
    """Checks that do not apply to this database, each with why (``check id -> reason``).

    Not Odoo: every Odoo check. Odoo without the ``account`` module: the ledger and the numbering.
    """
    if odoo is None:
        return {c: f"not applicable: {NOT_ODOO}" for c in (
            CheckId.TENANT_FINGERPRINT, CheckId.ROW_COUNTS, CheckId.LEDGER, CheckId.INVOICE_NUMBERING,
            CheckId.ATTACHMENTS, CheckId.INDEXES)}
    out: dict[str, str] = {}
    if "account" not in odoo.modules:
        reason = "not applicable: accounting (module account) is not installed"
        out[CheckId.LEDGER] = out[CheckId.INVOICE_NUMBERING] = reason
    return out


def expected_odoo_schema(odoo: OdooInfo | None) -> dict[str, tuple[str, ...]] | str:
    """The tables and columns recovery needs in this Odoo (:func:`versions.expected_columns`), or why unknown."""
    if odoo is None:
        return NOT_ODOO
    if odoo.major is None:
        return f"the Odoo version is unknown (base module version {odoo.version!r})"
    try:
        return versions.expected_columns(odoo.major, odoo.modules)
    except ValueError as exc:
        return str(exc)


def check_schema_present(expected: Mapping[str, Sequence[str]] | str, present: Mapping[str, Sequence[str]],
                         proof_problems: Sequence[str] | None = None, odoo: OdooInfo | None = None) -> CheckResult:
    """Every expected table exists with every expected column, and, when the manifest recorded the recovery
    tables' shape at backup time, each of their columns, indexes and constraints is restored as it was.

    :param expected: :func:`expected_odoo_schema`'s answer: the columns, or why they are unknown.
    :param proof_problems: :func:`schema_proof_problems` of the restore (None: the manifest has no proof).
    """
    if isinstance(expected, str):
        # Never a pass, never a failure of the backup: the Odoo checks cannot judge what they cannot describe.
        return CheckResult(CheckId.SCHEMA_PRESENT, CheckStatus.UNAVAILABLE,
                           f"{expected}: the Odoo checks do not apply; only the generic checks ran",
                           data={"odoo_version": odoo.version if odoo else None})
    missing_tables = sorted(t for t in expected if t not in present)
    missing_columns = sorted(f"{t}.{c}" for t, cols in expected.items() if t in present
                             for c in cols if c not in set(present[t]))
    parts = []
    if missing_tables:
        parts.append(f"missing table(s): {_examples(missing_tables, 10)}")
    if missing_columns:
        parts.append(f"missing column(s): {_examples(missing_columns, 10)}")
    if proof_problems:
        parts.append("differs from the schema recorded at backup time: " + "; ".join(proof_problems[:8]))
    if parts:
        return CheckResult(CheckId.SCHEMA_PRESENT, CheckStatus.FAIL,
                           "; ".join(parts) + "; the restore is not the complete Odoo database that was backed up",
                           data={"missing_tables": missing_tables[:20], "missing_columns": missing_columns[:20],
                                 "proof_problems": list(proof_problems or ())[:20]})
    proof = ("; indexes, constraints and columns of the recovery tables as recorded at backup time"
             if proof_problems is not None else "; the manifest records no schema proof to compare with")
    which = f"Odoo {odoo.major}" if odoo is not None and odoo.major else "Odoo"
    return CheckResult(CheckId.SCHEMA_PRESENT, CheckStatus.PASS,
                       f"the {len(expected)} tables recovery needs in {which} are present with their columns{proof}",
                       data={"schema_proof": proof_problems is not None,
                             "odoo_version": odoo.version if odoo is not None else None})


def check_row_counts(expected: Mapping[str, int], actual: Mapping[str, int | None]) -> CheckResult:
    """Row counts of the restored tables equal the manifest's, table by table."""
    if not expected:
        return CheckResult(CheckId.ROW_COUNTS, CheckStatus.FAIL,
                           "the manifest records no row counts: nothing to compare; fix the backup job")
    diffs = {t: (n, actual.get(t)) for t, n in sorted(expected.items()) if actual.get(t) != n}
    if diffs:
        shown = _examples(f"{t} {got if got is not None else 'missing'} vs {want}" for t, (want, got) in diffs.items())
        return CheckResult(CheckId.ROW_COUNTS, CheckStatus.FAIL,
                           f"{len(diffs)} table(s) differ from the manifest (restored vs manifest): {shown}",
                           data={"differs": {t: {"manifest": w, "restored": g}
                                             for t, (w, g) in list(diffs.items())[:20]}})
    return CheckResult(CheckId.ROW_COUNTS, CheckStatus.PASS,
                       f"row counts of {len(expected)} tables equal the manifest's ({sum(expected.values())} rows)")


@dataclass(frozen=True)
class LedgerFacts:
    """What the ledger queries found in the restored database."""

    posted_moves: int
    posted_lines: int
    debit_total: str
    credit_total: str
    unbalanced_moves: Sequence[str] = ()  # names or ids of posted moves whose debit != credit
    unbalanced_move_count: int = 0
    company_imbalances: Mapping[str, str] = field(default_factory=dict)  # company id -> sum(debit - credit)
    lines_missing_move: int = 0
    lines_missing_account: int = 0


def check_ledger(facts: LedgerFacts, manifest_posted_moves: int | None = None,
                 manifest_posted_lines: int | None = None, manifest_debit_total: str | None = None,
                 manifest_credit_total: str | None = None) -> CheckResult:
    """Every posted move balances, the trial balance is zero per company, no line dangles, totals match."""
    problems = []
    if facts.unbalanced_move_count:
        problems.append(f"{facts.unbalanced_move_count} posted move(s) unbalanced "
                        f"(e.g. {_examples(facts.unbalanced_moves)})")
    if facts.company_imbalances:
        problems.append("trial balance not zero for company "
                        + _examples(f"{c} ({v})" for c, v in sorted(facts.company_imbalances.items())))
    if facts.lines_missing_move:
        problems.append(f"{facts.lines_missing_move} line(s) point at a missing move")
    if facts.lines_missing_account:
        problems.append(f"{facts.lines_missing_account} line(s) point at a missing account")
    if manifest_posted_moves is not None and manifest_posted_moves != facts.posted_moves:
        problems.append(f"{facts.posted_moves} posted moves restored, the manifest says {manifest_posted_moves}")
    if manifest_posted_lines is not None and manifest_posted_lines != facts.posted_lines:
        problems.append(f"{facts.posted_lines} posted lines restored, the manifest says {manifest_posted_lines}")
    if manifest_debit_total is not None and _num(manifest_debit_total) != _num(facts.debit_total):
        problems.append(f"debit total {facts.debit_total} differs from the manifest's {manifest_debit_total}")
    if manifest_credit_total is not None and _num(manifest_credit_total) != _num(facts.credit_total):
        problems.append(f"credit total {facts.credit_total} differs from the manifest's {manifest_credit_total}")
    data = {"posted_moves": facts.posted_moves, "posted_lines": facts.posted_lines,
            "unbalanced_moves": facts.unbalanced_move_count, "lines_missing_move": facts.lines_missing_move,
            "lines_missing_account": facts.lines_missing_account}
    if problems:
        return CheckResult(CheckId.LEDGER, CheckStatus.FAIL,
                           "; ".join(problems) + "; the ledger is not finance-correct: investigate before relying "
                           "on this backup", data=data)
    return CheckResult(CheckId.LEDGER, CheckStatus.PASS,
                       f"{facts.posted_moves} posted moves balanced, trial balance zero per company, "
                       "no dangling lines", data=data)


def _num(text: str) -> Any:
    from decimal import Decimal, InvalidOperation

    try:
        return Decimal(text)
    except InvalidOperation:
        return text


@dataclass(frozen=True)
class SequenceGap:
    journal: str
    year: int
    after: int  # last number present before the gap
    missing: int  # how many numbers are missing


def check_invoice_numbering(gaps: Sequence[SequenceGap], duplicates: Sequence[str], sequences: int) -> CheckResult:
    """Posted sequences per journal and year have no gaps and no duplicate numbers; either fails.

    A gap in posted (or cancelled: Odoo keeps their numbers) invoice numbers is an audit finding: a
    restore that lost an invoice from the middle of a sequence is not the books that were backed up.
    """
    gap_text = _examples(f"{g.journal} {g.year} after {g.after} ({g.missing} missing)" for g in gaps)
    data: dict[str, Any] = {"sequences": sequences, "gaps": len(gaps), "duplicates": len(duplicates)}
    if duplicates:
        return CheckResult(CheckId.INVOICE_NUMBERING, CheckStatus.FAIL,
                           f"{len(duplicates)} posted number(s) used twice (e.g. {_examples(duplicates)})"
                           + (f"; gaps: {gap_text}" if gaps else ""), data=data)
    if gaps:
        return CheckResult(CheckId.INVOICE_NUMBERING, CheckStatus.FAIL,
                           f"{len(gaps)} gap(s) in posted sequences: {gap_text}; a posted invoice is missing from "
                           "the restore (or from production: compare before an auditor asks)", data=data)
    return CheckResult(CheckId.INVOICE_NUMBERING, CheckStatus.PASS,
                       f"{sequences} posted sequence(s) per journal and year without gaps", data=data)


def check_attachments(total: int, missing: Sequence[str], hashed: int, mismatched: Sequence[str],
                      sample_rate: float, unreferenced: Sequence[str] = ()) -> CheckResult:
    """Every stored attachment exists in the attachment store; the hashed ones match their sha1.

    The filestore's accounts are reported whole: referenced and present, referenced and missing, sha1
    mismatches, and files in the store that no attachment references (orphans: not a restore problem, but
    tenant data outside the database's knowledge, so they are counted and named).
    """
    data = {"total": total, "missing": len(missing), "hashed": hashed, "mismatched": len(mismatched),
            "sample_rate": sample_rate, "present": total - len(missing), "unreferenced": len(unreferenced)}
    rate_text = "all" if sample_rate >= 1.0 else f"a {sample_rate:.0%} sample"
    orphans = (f"; {len(unreferenced)} file(s) in the store are referenced by no attachment "
               f"(e.g. {_examples(unreferenced, 3)})") if unreferenced else ""
    problems = []
    if missing:
        problems.append(f"{len(missing)} of {total} attachment file(s) missing from the store "
                        f"(e.g. {_examples(missing, 3)})")
    if mismatched:
        problems.append(f"{len(mismatched)} of {hashed} hashed file(s) do not match their sha1 checksum "
                        f"(e.g. {_examples(mismatched, 3)})")
    if problems:
        return CheckResult(CheckId.ATTACHMENTS, CheckStatus.FAIL,
                           "; ".join(problems) + "; restore the files from the attachment store's versions" + orphans,
                           data=data)
    return CheckResult(CheckId.ATTACHMENTS, CheckStatus.PASS,
                       f"{total} attachment file(s) present; sha1 verified on {rate_text} ({hashed} file(s))"
                       + orphans, data=data)


def check_indexes(available: bool, why_unavailable: str, checked: int, corrupt: Mapping[str, str]) -> CheckResult:
    if not available:
        # Never a fake pass: no amcheck means the indexes were not verified.
        return CheckResult(CheckId.INDEXES, CheckStatus.UNAVAILABLE,
                           f"indexes not verified: {why_unavailable}")
    if corrupt:
        shown = _examples(f"{name}: {err[:120]}" for name, err in sorted(corrupt.items()))
        return CheckResult(CheckId.INDEXES, CheckStatus.FAIL,
                           f"amcheck found {len(corrupt)} corrupt B-tree index(es): {shown}; REINDEX them and "
                           "check the source server", data={"checked": checked, "corrupt": len(corrupt)})
    if checked == 0:
        # amcheck over nothing proves nothing: a dump stripped of its indexes must not read as verified.
        return CheckResult(CheckId.INDEXES, CheckStatus.UNAVAILABLE,
                           "unavailable: nothing to check: the finance tables have no B-tree index",
                           data={"checked": 0})
    return CheckResult(CheckId.INDEXES, CheckStatus.PASS,
                       f"amcheck bt_index_check passed on {checked} B-tree index(es) of the finance tables",
                       data={"checked": checked})


def check_assertion(name: str, expect: Any, got: Any, error: str | None) -> CheckResult:
    check_id = assertion_check_id(name)
    if error is not None:
        return CheckResult(check_id, CheckStatus.FAIL,
                           f"tenant assertion {name!r} could not run: {error[:300]}; fix it in the tenant registry")
    if got != expect:
        return CheckResult(check_id, CheckStatus.FAIL,
                           f"tenant assertion {name!r} returned {got!r}, expected {expect!r}")
    return CheckResult(check_id, CheckStatus.PASS, f"tenant assertion {name!r} holds ({got!r})")


# ---- recovery objectives and the verdict ----------------------------------------------------------


def projected_restore_seconds(measured_s: float, restored_bytes: int, production_size_bytes: int | None) -> float:
    """``measured_s * max(1, production_size_bytes / restored_bytes)``; see the module docstring."""
    if not production_size_bytes or restored_bytes <= 0 or production_size_bytes <= restored_bytes:
        return measured_s
    return measured_s * (production_size_bytes / restored_bytes)


@dataclass(frozen=True)
class Objectives:
    """Recovery objectives evaluated for one run."""

    rto_s: float
    rpo_s: float
    measured_s: float
    restored_bytes: int
    production_size_bytes: int | None
    projected_s: float
    backup_age_s: float

    @property
    def rto_met(self) -> bool:
        return self.projected_s <= self.rto_s

    @property
    def rpo_met(self) -> bool:
        return self.backup_age_s <= self.rpo_s

    @property
    def scale(self) -> float:
        return self.projected_s / self.measured_s if self.measured_s else 1.0

    def to_json(self) -> dict[str, Any]:
        return {"rto_s": self.rto_s, "rpo_s": self.rpo_s, "measured_s": round(self.measured_s, 3),
                "restored_bytes": self.restored_bytes, "production_size_bytes": self.production_size_bytes,
                "projected_s": round(self.projected_s, 3), "backup_age_s": round(self.backup_age_s, 3),
                "rto_met": self.rto_met, "rpo_met": self.rpo_met}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Objectives:
        return cls(rto_s=float(raw["rto_s"]), rpo_s=float(raw["rpo_s"]), measured_s=float(raw["measured_s"]),
                   restored_bytes=int(raw["restored_bytes"]), production_size_bytes=raw.get("production_size_bytes"),
                   projected_s=float(raw["projected_s"]), backup_age_s=float(raw["backup_age_s"]))


def evaluate_objectives(*, rto_minutes: int, rpo_minutes: int, measured_s: float, restored_bytes: int,
                        production_size_bytes: int | None, backup_created_at: datetime,
                        run_at: datetime) -> Objectives:
    return Objectives(
        rto_s=rto_minutes * 60.0, rpo_s=rpo_minutes * 60.0, measured_s=measured_s, restored_bytes=restored_bytes,
        production_size_bytes=production_size_bytes,
        projected_s=projected_restore_seconds(measured_s, restored_bytes, production_size_bytes),
        backup_age_s=max(0.0, (run_at - backup_created_at).total_seconds()),
    )


class VerdictStatus(StrEnum):
    RECOVERABLE = "recoverable"  # every check passed, RTO and RPO hold
    RECOVERABLE_OUTSIDE_OBJECTIVES = "recoverable_outside_objectives"  # nothing failed, but not all proven/in time
    NOT_RECOVERABLE = "not_recoverable"  # a check failed


@dataclass(frozen=True)
class Verdict:
    status: VerdictStatus
    reason: str
    failed_checks: tuple[str, ...]

    @property
    def backup_valid(self) -> bool:
        """Whether the backup is marked VALIDATED (no check failed) rather than FAILED_VALIDATION."""
        return self.status is not VerdictStatus.NOT_RECOVERABLE

    @property
    def within_objectives(self) -> bool:
        return self.status is VerdictStatus.RECOVERABLE


def _minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def sampled_rate(results: Sequence[CheckResult]) -> float | None:
    """The attachment sample rate of a run that hashed only a sample (None: every attachment was hashed)."""
    for result in results:
        rate = result.data.get("sample_rate") if result.id == CheckId.ATTACHMENTS else None
        if isinstance(rate, int | float) and rate < 1.0:
            return float(rate)
    return None


def decide_verdict(results: Sequence[CheckResult], objectives: Objectives | None,
                   sampling_allowed: bool = False) -> Verdict:
    """The verdict as a sentence; "recoverable within objectives" only when everything passed and both hold.

    A run that hashed only a sample of the attachments says "sampled" in its verdict, and is within
    objectives only when the tenant's tier allows sampled validation.
    """
    failed = tuple(r.id for r in results if r.status is CheckStatus.FAIL)
    if failed:
        return Verdict(VerdictStatus.NOT_RECOVERABLE, f"not recoverable: check(s) failed: {', '.join(failed)}", failed)
    if not results:
        return Verdict(VerdictStatus.RECOVERABLE_OUTSIDE_OBJECTIVES, "not proven: no check ran", ())
    reasons = []
    unproven = [r.id for r in results if r.status not in (CheckStatus.PASS, CheckStatus.NOT_APPLICABLE)]
    if any(r.id == CheckId.SCHEMA_PRESENT and r.detail.startswith(NOT_ODOO) for r in results):
        reasons.append("not an Odoo database: only the generic checks ran")
    if unproven:
        reasons.append(f"check(s) not passed (warn/unavailable): {', '.join(unproven)}")
    rate = sampled_rate(results)
    if rate is not None and not sampling_allowed:
        reasons.append(f"sampled: attachment sha1 verified on a {rate:.0%} sample, and the tier requires all")
    if objectives is None:
        reasons.append("recovery objectives not measured")
    else:
        if not objectives.rto_met:
            scaled = (f" (measured {_minutes(objectives.measured_s)} scaled x{objectives.scale:.1f} to production size)"
                      if objectives.scale > 1.0 else "")
            reasons.append(f"projected restore {_minutes(objectives.projected_s)}{scaled} exceeds RTO "
                           f"{_minutes(objectives.rto_s)}")
        if not objectives.rpo_met:
            reasons.append(f"backup age {_minutes(objectives.backup_age_s)} exceeds RPO {_minutes(objectives.rpo_s)}")
    if reasons:
        return Verdict(VerdictStatus.RECOVERABLE_OUTSIDE_OBJECTIVES,
                       "restorable, but not within objectives: " + "; ".join(reasons), ())
    assert objectives is not None
    sampled = f" (sampled: attachment sha1 on a {rate:.0%} sample, as the tier allows)" if rate is not None else ""
    return Verdict(VerdictStatus.RECOVERABLE,
                   f"recoverable within objectives{sampled}: all {len(results)} checks passed, projected restore "
                   f"{_minutes(objectives.projected_s)} <= RTO {_minutes(objectives.rto_s)}, backup age "
                   f"{_minutes(objectives.backup_age_s)} <= RPO {_minutes(objectives.rpo_s)}", ())


def attachment_sample(keys: Sequence[str], rate: float, seed: str) -> list[str]:
    """A reproducible sample of ``ceil(len(keys) * rate)`` keys (all of them at rate >= 1).

    The same seed (the backup id) picks the same files, so a rerun hashes the same sample.
    """
    import hashlib
    import math

    if not 0.0 < rate <= 1.0:
        raise ValueError(f"attachment sample rate must be in (0, 1], got {rate}")
    if rate >= 1.0:
        return list(keys)
    want = math.ceil(len(keys) * rate)
    ranked = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    return ranked[:want]
