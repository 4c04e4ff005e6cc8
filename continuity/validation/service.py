"""Restore validation, the product's main job: pick a backup, restore it into the sandbox, prove it usable.

The use case in steps (each one an activity of the tenant-validation orchestration, and composed
in-process by :func:`validate` for the CLI's ``--local`` mode and the tests):

1. :func:`restore_into_sandbox`: manifest belongs to the tenant → stream the dump from storage to a
   temp file checking sha256 → ``pg_restore --list`` → the archive asks for nothing an Odoo dump does
   not (:mod:`continuity.validation.toc`) → create the scratch database → ``pg_restore`` as the
   scratch database's own non-superuser role.
2. :func:`run_restore_checks`: schema, row counts, ledger, invoice numbering, attachments, indexes,
   tenant assertions, against the scratch database.
3. :func:`conclude` (pure): recovery objectives and the verdict.
4. The caller records the result and always drops the scratch database (from a ``finally``).

Adapters are injected through :class:`ValidationPorts`; this module does no I/O of its own. A
failed prerequisite (manifest, checksum, archive, restore) stops the run: later checks are reported
"unavailable: not run", never as passes and never as failures of their own.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from continuity.catalog.manifest import BACKUP_ID_RE, DUMP_FILE, BackupRef
from continuity.kernel.errors import BackupNotFound
from continuity.kernel.tenants import Registry, Tenant
from continuity.pitr.rules import RecoveryWindow, archive_exposure_seconds
from continuity.validation import checks as rc
from continuity.validation import toc
from continuity.validation.checks import CheckId, CheckResult, Objectives, Verdict
from continuity.validation.naming import run_id_for, scratch_database_name

logger = logging.getLogger(__name__)

RESTORE_JOBS = 2
DEFAULT_SAMPLE_RATE = 1.0
# A restore that takes longer than the tenant's RTO times this factor is stopped: it has failed anyway.
DEADLINE_RTO_FACTOR = 2.0
MIN_DEADLINE_S = 300.0


class Outcome(StrEnum):
    PASSED = "passed"  # no check failed: the backup is marked VALIDATED
    FAILED = "failed"  # a check failed: FAILED_VALIDATION
    ERROR = "error"  # the run itself could not complete (sandbox down, storage down): nothing is marked


class BackupSource(Protocol):
    """Where backups come from (storage is the truth; the catalog is rebuildable from it)."""

    def latest_backup(self, tenant_id: str) -> BackupRef:
        """The newest backup of the tenant that has a manifest. :raises BackupNotFound: none."""
        ...

    def get_backup(self, tenant_id: str, backup_id: str) -> BackupRef:
        """:raises BackupNotFound: no such backup (or no manifest for it)."""
        ...

    def dump_chunks(self, ref: BackupRef) -> Iterable[bytes]:
        """The dump's bytes, streamed."""
        ...


class SandboxPort(Protocol):
    def verify_isolated(self) -> str: ...
    def create_scratch_database(self, tenant_id: str, now: datetime | None = None,
                                name: str | None = None) -> str: ...
    def drop_scratch_database(self, name: str) -> None: ...
    def scratch_dsn(self, dbname: str) -> str: ...
    def database_size(self, name: str) -> int: ...
    def has_amcheck(self) -> tuple[bool, str]: ...


class DownloadResult(Protocol):
    @property
    def path(self) -> Path: ...
    @property
    def sha256(self) -> str: ...
    @property
    def size(self) -> int: ...
    def discard(self) -> None: ...


class ArchiveListingResult(Protocol):
    @property
    def ok(self) -> bool: ...
    @property
    def toc_entries(self) -> int: ...
    @property
    def error(self) -> str: ...
    @property
    def lines(self) -> tuple[str, ...]:
        """``pg_restore --list`` output, line by line."""
        ...
    @property
    def definitions(self) -> str:
        """The SQL pg_restore would run for every entry except table data."""
        ...


class RestoreResult(Protocol):
    @property
    def returncode(self) -> int | None: ...
    @property
    def timed_out(self) -> bool: ...
    @property
    def errors(self) -> list[str]: ...


class ChecksRunner(Protocol):
    """Runs the SQL checks against a scratch database (adapters/check_runner.py); ``done`` are the checks
    already run while the restore went on, reported as they are."""

    def __call__(self, dsn: str, ref: BackupRef, tenant: Tenant, sample_rate: float,
                 amcheck: tuple[bool, str], done: Sequence[CheckResult] = ()) -> list[CheckResult]: ...


class ChecksDuringRestore(Protocol):
    """The checks that read only rows, started as their tables are loaded (adapters/check_runner.py)."""

    def tables_readable(self, tables: Iterable[str]) -> None: ...
    def finish(self) -> list[CheckResult]: ...
    def abandon(self) -> None: ...


class Restore(Protocol):
    """``pg_restore`` into the scratch database; ``on_finished`` is told each entry's dump id and ``KIND TAG``
    as it is done."""

    def __call__(self, dump: Path, dsn: str, jobs: int, deadline_s: float, /,
                 on_finished: Callable[[int, str], None] | None = None) -> RestoreResult: ...


@dataclass
class ValidationPorts:
    """The adapters a validation needs; built by :func:`continuity.validation.wiring.local_ports`."""

    registry: Registry
    source: BackupSource
    sandbox: SandboxPort
    download: Callable[[Iterable[bytes]], DownloadResult]
    list_archive: Callable[[Path], ArchiveListingResult]
    restore: Restore
    run_checks: ChecksRunner
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Starts the row checks while the restore goes on (dsn, backup, tenant, sample rate); None: all run after.
    checks_during_restore: Callable[[str, BackupRef, Tenant, float], ChecksDuringRestore] | None = None


def pick_backup(source: BackupSource, tenant_id: str, backup_id: str | None = None) -> BackupRef:
    """The requested backup, else the tenant's newest."""
    if backup_id:
        return source.get_backup(tenant_id, backup_id)
    return source.latest_backup(tenant_id)


def restore_deadline_s(rto_minutes: int) -> float:
    return max(MIN_DEADLINE_S, rto_minutes * 60.0 * DEADLINE_RTO_FACTOR)


@dataclass(frozen=True)
class RestoreStep:
    """What step 1 produced: its checks, whether the scratch database holds a restore, and timings."""

    checks: tuple[CheckResult, ...]
    scratch_database: str
    restored: bool
    restored_bytes: int
    seconds: float
    # Row checks that ran while the restore went on (their time is inside ``seconds``); step 2 reports them.
    during: tuple[CheckResult, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"checks": [c.to_json() for c in self.checks], "scratch_database": self.scratch_database,
                "restored": self.restored, "restored_bytes": self.restored_bytes, "seconds": round(self.seconds, 3),
                "during": [c.to_json() for c in self.during]}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RestoreStep:
        return cls(tuple(CheckResult.from_json(c) for c in raw["checks"]), raw["scratch_database"],
                   bool(raw["restored"]), int(raw["restored_bytes"]), float(raw["seconds"]),
                   tuple(CheckResult.from_json(c) for c in raw.get("during") or ()))


def _timed(started: float, result: CheckResult) -> CheckResult:
    return CheckResult(result.id, result.status, result.detail, time.monotonic() - started, result.data)


def _not_run_after(results: list[CheckResult], remaining: Sequence[CheckId]) -> list[CheckResult]:
    reason = rc.stop_reason(results) or "an earlier step failed"
    return results + [rc.not_run(c, reason) for c in remaining]


def restore_into_sandbox(ports: ValidationPorts, ref: BackupRef, scratch_database: str,
                         jobs: int = RESTORE_JOBS, sample_rate: float = DEFAULT_SAMPLE_RATE) -> RestoreStep:
    """Step 1. Raises only when the run itself cannot proceed (sandbox not isolated or unreachable,
    storage unreachable); a bad backup is reported through failed checks instead.

    The row checks (ledger, invoice numbering, row counts, attachments, fingerprint) start as soon as the
    tables they read are loaded (``ports.checks_during_restore``), so most of their time is spent while
    post-data builds indexes rather than after; their results are kept only when the restore completed.
    """
    started = time.monotonic()
    tenant = ports.registry.get_tenant(ref.tenant)
    ports.sandbox.verify_isolated()
    results: list[CheckResult] = []

    def stopped() -> RestoreStep | None:
        """The step as it stands when the last check stopped the pipeline (the rest "not run"), else None."""
        if rc.stop_reason(results) is None:
            return None
        done = {r.id for r in results}
        rest = [c for c in rc.PREREQUISITES_ORDER if c not in done]
        return RestoreStep(tuple(_not_run_after(results, rest)), scratch_database, False, 0,
                           time.monotonic() - started)

    t = time.monotonic()
    results.append(_timed(t, rc.check_manifest_tenant(tenant.id, ref.manifest.tenant, ref.prefix,
                                                      ref.manifest.source.database, tenant.database,
                                                      manifest_backup_id=ref.manifest.backup_id,
                                                      path_backup_id=ref.backup_id)))
    t = time.monotonic()
    if not stopped():
        unlisted = rc.check_file_listed(DUMP_FILE, [f.name for f in ref.manifest.files])
        if unlisted is not None:
            results.append(_timed(t, unlisted))
        elif ref.catalog_refusal:
            results.append(rc.CheckResult(CheckId.FILE_CHECKSUM, rc.CheckStatus.FAIL,
                                          f"{ref.catalog_refusal}; a backup the catalog refused is never restored"))
    if (step := stopped()) is not None:
        return step
    try:
        download = ports.download(ports.source.dump_chunks(ref))
    except BackupNotFound as exc:
        results.append(_timed(t, rc.check_file_missing(DUMP_FILE, ref.anchor, str(exc))))
        step = stopped()
        assert step is not None
        return step
    try:
        expected = ref.manifest.file(DUMP_FILE)
        results.append(_timed(t, rc.check_file_checksum(DUMP_FILE, expected.sha256, expected.size, download.sha256,
                                                        download.size, anchor=ref.anchor,
                                                        stored_manifest_sha256=ref.stored_manifest_sha256)))
        if (step := stopped()) is not None:
            return step
        t = time.monotonic()
        listing = ports.list_archive(download.path)
        results.append(_timed(t, rc.check_archive_readable(listing.ok, listing.toc_entries, listing.error)))
        if (step := stopped()) is not None:
            return step
        t = time.monotonic()
        results.append(_timed(t, rc.check_identity(_identity_facts(ref, tenant.database, listing.lines,
                                                                   ports.clock()))))
        if (step := stopped()) is not None:
            return step
        # Decided before the scratch database exists: a hostile dump never reaches a server.
        t = time.monotonic()
        refusal = toc.archive_refusal(listing.lines, listing.definitions)
        results.append(_timed(t, rc.check_archive_safe(refusal, listing.toc_entries)))
        if (step := stopped()) is not None:
            return step
        t = time.monotonic()
        ports.sandbox.create_scratch_database(tenant.id, name=scratch_database)
        deadline = restore_deadline_s(ports.registry.rto_minutes(tenant))
        during, on_finished = _checks_during_restore(ports, ref, tenant, scratch_database, listing.lines,
                                                     sample_rate)
        try:
            outcome = ports.restore(download.path, _restore_dsn(ports.sandbox, scratch_database), jobs, deadline,
                                    on_finished=on_finished)
        except BaseException:
            if during is not None:
                during.abandon()
            raise
        results.append(_timed(t, rc.check_restore_completed(outcome.returncode, outcome.errors, outcome.timed_out,
                                                            deadline)))
    finally:
        download.discard()
    restored = rc.stop_reason(results) is None
    early: list[CheckResult] = []
    if during is not None:
        if restored:
            early = during.finish()
        else:
            during.abandon()
    size = ports.sandbox.database_size(scratch_database) if restored else 0
    return RestoreStep(tuple(results), scratch_database, restored, size, time.monotonic() - started, tuple(early))


def _checks_during_restore(ports: ValidationPorts, ref: BackupRef, tenant: Tenant, scratch_database: str,
                           lines: Sequence[str], sample_rate: float,
                           ) -> tuple[ChecksDuringRestore | None, Callable[[int, str], None] | None]:
    """The row checks to start as tables load, and the listener pg_restore's finished entries go to."""
    if ports.checks_during_restore is None:
        return None, None
    during = ports.checks_during_restore(_early_checks_dsn(ports.sandbox, scratch_database), ref, tenant,
                                         sample_rate)
    progress = toc.LoadProgress(lines)

    def on_finished(dump_id: int, said: str) -> None:
        became = progress.finished(dump_id, said)
        if became:
            during.tables_readable(became)
    return during, on_finished


def _identity_facts(ref: BackupRef, tenant_database: str, lines: Sequence[str], now: datetime) -> rc.IdentityFacts:
    header = toc.archive_header(lines)
    parts = ref.prefix.strip("/").split("/")
    return rc.IdentityFacts(
        tenant_database=tenant_database, manifest_database=ref.manifest.source.database,
        manifest_created_at=ref.manifest.created_at, manifest_pg_version=ref.manifest.source.pg_version,
        backup_id=ref.backup_id, folder_date="/".join(parts[1:4]), run_at=now, archive_dbname=header.dbname,
        archive_created_at=header.created_at, archive_zone=header.created_zone,
        archive_server_version=header.server_version)


def _restore_dsn(sandbox: SandboxPort, name: str) -> str:
    """Where pg_restore connects: the sandbox's non-superuser restore role when it has one.

    Tenant recovery's staging target has none: it restores with owners into a database that is
    swapped into production, as the superuser by design (``tenant_recovery.restore_keeping_owners``);
    the TOC policy above still applies to it.
    """
    restore_dsn = getattr(sandbox, "restore_dsn", None)
    return str(restore_dsn(name)) if callable(restore_dsn) else sandbox.scratch_dsn(name)


def _checks_dsn(sandbox: SandboxPort, name: str, amcheck: bool) -> str:
    """Where the checks connect: as the restore role when the sandbox has one (a restored dump's views and
    functions run with the rights of whoever queries them, so never the superuser); else ``scratch_dsn``."""
    checks_dsn = getattr(sandbox, "checks_dsn", None)
    return str(checks_dsn(name, amcheck)) if callable(checks_dsn) else sandbox.scratch_dsn(name)


def _early_checks_dsn(sandbox: SandboxPort, name: str) -> str:
    """Where the row checks connect while the restore goes on: the restore role as it is (it owns what it
    restores; the grants :func:`_checks_dsn` adds are for amcheck and assertions, which come after), reading
    ``public`` only; else ``scratch_dsn`` (tenant recovery's staging target, as :func:`_checks_dsn`)."""
    rows_dsn = getattr(sandbox, "rows_dsn", None)
    return str(rows_dsn(name)) if callable(rows_dsn) else sandbox.scratch_dsn(name)


def run_restore_checks(ports: ValidationPorts, ref: BackupRef, step: RestoreStep,
                       sample_rate: float = DEFAULT_SAMPLE_RATE) -> list[CheckResult]:
    """Step 2: the checks against the restored database (all "not run" when step 1 stopped); those step 1
    already ran while the restore went on are reported as they came out."""
    tenant = ports.registry.get_tenant(ref.tenant)
    after_restore = [c for c in rc.PIPELINE_ORDER if c not in {r.id for r in step.checks}]
    if not step.restored:
        reason = rc.stop_reason(step.checks) or "the restore did not complete"
        names = [*after_restore, *(rc.assertion_check_id(a.name) for a in tenant.assertions)]
        return [rc.not_run(c, reason) for c in names]
    amcheck = ports.sandbox.has_amcheck()
    return ports.run_checks(_checks_dsn(ports.sandbox, step.scratch_database, amcheck[0]), ref, tenant,
                            sample_rate, amcheck, done=step.during)


@dataclass(frozen=True)
class ValidationReport:
    """One validation run of one backup: every check, the objectives and the verdict. JSON-small."""

    tenant: str
    backup_id: str
    run_id: str
    started_at: datetime
    finished_at: datetime
    outcome: Outcome
    checks: tuple[CheckResult, ...]
    objectives: Objectives | None
    verdict: Verdict
    scratch_database: str = ""
    error: str = ""

    @property
    def failed_checks(self) -> list[str]:
        return [c.id for c in self.checks if c.status is rc.CheckStatus.FAIL]

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant, "backup_id": self.backup_id, "run_id": self.run_id,
            "started_at": self.started_at.isoformat(), "finished_at": self.finished_at.isoformat(),
            "outcome": str(self.outcome), "verdict": str(self.verdict.status), "reason": self.verdict.reason,
            "within_objectives": self.verdict.within_objectives, "failed_checks": self.failed_checks,
            "checks": [c.to_json() for c in self.checks],
            "objectives": self.objectives.to_json() if self.objectives else None,
            "scratch_database": self.scratch_database, "error": self.error,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ValidationReport:
        checks = tuple(CheckResult.from_json(c) for c in raw["checks"])
        return cls(
            tenant=raw["tenant"], backup_id=raw["backup_id"], run_id=raw["run_id"],
            started_at=datetime.fromisoformat(raw["started_at"]),
            finished_at=datetime.fromisoformat(raw["finished_at"]),
            outcome=Outcome(raw["outcome"]), checks=checks,
            objectives=Objectives.from_json(raw["objectives"]) if raw.get("objectives") else None,
            verdict=Verdict(rc.VerdictStatus(raw["verdict"]), raw["reason"], tuple(raw["failed_checks"])),
            scratch_database=raw.get("scratch_database", ""), error=raw.get("error", ""),
        )


def conclude(registry: Registry, ref_tenant: str, backup_id: str, backup_created_at: datetime, run_id: str,
             started_at: datetime, finished_at: datetime, step: RestoreStep,
             checks: Sequence[CheckResult]) -> ValidationReport:
    """Step 3 (pure): evaluate the recovery objectives and decide the verdict."""
    tenant = registry.get_tenant(ref_tenant)
    results = (*step.checks, *checks)
    # A check run during the restore took its time inside step.seconds: counted once.
    measured = step.seconds + sum(c.duration_s for c in checks if not c.data.get("during_restore"))
    objectives = None
    if step.restored:
        objectives = rc.evaluate_objectives(
            rto_minutes=registry.rto_minutes(tenant), rpo_minutes=registry.rpo_minutes(tenant), measured_s=measured,
            restored_bytes=step.restored_bytes, production_size_bytes=tenant.production_size_bytes,
            backup_created_at=backup_created_at, run_at=started_at)
    verdict = rc.decide_verdict(results, objectives, registry.tier_of(tenant).sampled_validation)
    outcome = Outcome.PASSED if verdict.backup_valid else Outcome.FAILED
    return ValidationReport(tenant.id, backup_id, run_id, started_at, finished_at, outcome, results, objectives,
                            verdict, step.scratch_database)


def error_report(tenant_id: str, backup_id: str, run_id: str, started_at: datetime, finished_at: datetime,
                 error: str) -> ValidationReport:
    """The run could not complete (e.g. the sandbox is down): an ERROR outcome that marks nothing."""
    verdict = Verdict(rc.VerdictStatus.RECOVERABLE_OUTSIDE_OBJECTIVES, f"not validated: {error}", ())
    return ValidationReport(tenant_id, backup_id, run_id, started_at, finished_at, Outcome.ERROR, (), None,
                            verdict, error=error)


def validate(ports: ValidationPorts, tenant_id: str, backup_id: str | None = None, *,
             sample_rate: float = DEFAULT_SAMPLE_RATE, jobs: int = RESTORE_JOBS, run_id: str | None = None,
             scratch_name: Callable[[str, datetime], str] | None = None) -> ValidationReport:
    """All steps in-process, dropping the scratch database from a ``finally``.

    :raises ContinuityError: when the run cannot proceed (unknown tenant, no backup, sandbox not
        isolated or unreachable, storage unreachable); nothing is marked then.
    """
    tenant = ports.registry.get_tenant(tenant_id)
    started_at = ports.clock()
    ref = pick_backup(ports.source, tenant.id, backup_id)
    name = (scratch_name or (lambda t, at: scratch_database_name(t, at, secrets.token_hex(3))))(tenant.id, started_at)
    completed = False
    try:
        step = restore_into_sandbox(ports, ref, name, jobs, sample_rate)
        checks = run_restore_checks(ports, ref, step, sample_rate)
        completed = True
    finally:
        _drop_quietly(ports.sandbox, name, completed)
    return conclude(ports.registry, tenant.id, ref.backup_id, ref.created_at, run_id or run_id_for(tenant.id,
                    ref.backup_id), started_at, ports.clock(), step, checks)


def _drop_quietly(sandbox: SandboxPort, name: str, must_succeed: bool) -> None:
    """Drop the scratch database. When the run already failed, a drop failure must not hide its error
    (the sweeper removes what is left); after a run that went through, a failed drop raises."""
    from continuity.kernel.errors import ContinuityError

    try:
        sandbox.drop_scratch_database(name)
    except ContinuityError:
        if must_succeed:
            raise
        logger.warning("could not drop scratch database %s; the sweeper will", name)


# ---- recording ---------------------------------------------------------------------------------


class CatalogPort(Protocol):
    def record_validation(self, *, tenant: str, backup_id: str, run_id: str, started_at: datetime,
                          finished_at: datetime, passed: bool, checks: Any, durations: dict[str, float],
                          summary: dict[str, Any], error: bool = False) -> Any: ...


class EvidencePort(Protocol):
    def append(self, *, actor: str, action: str, subject: str, data: Any = None,
               idempotency_key: str | None = None, at: datetime | None = None) -> Any: ...


def summary_of(report: ValidationReport) -> dict[str, Any]:
    """What the catalog, evidence and events keep of a run: ids, statuses and numbers, never row sets."""
    return {
        "run_id": report.run_id, "tenant": report.tenant, "backup_id": report.backup_id,
        "outcome": str(report.outcome), "verdict": str(report.verdict.status), "reason": report.verdict.reason,
        "within_objectives": report.verdict.within_objectives, "failed_checks": report.failed_checks,
        "checks": {c.id: str(c.status) for c in report.checks},
        "objectives": report.objectives.to_json() if report.objectives else None,
        "started_at": report.started_at.isoformat(), "finished_at": report.finished_at.isoformat(),
    }


@dataclass(frozen=True)
class Recorded:
    """What recording did; every part says whether it happened, and why not."""

    cataloged: bool
    catalog_note: str
    evidence_seq: int | None
    published: bool
    publish_note: str

    def to_json(self) -> dict[str, Any]:
        return {"cataloged": self.cataloged, "catalog_note": self.catalog_note, "evidence_seq": self.evidence_seq,
                "published": self.published, "publish_note": self.publish_note}


def record_report(report: ValidationReport, *, catalog: CatalogPort, evidence: EvidencePort,
                  publish: Callable[[str, dict[str, Any], dict[str, Any] | None], None],
                  actor: str = "validation") -> Recorded:
    """Catalog (a validation row per attempt, and the backup's status), evidence, then the outgoing event.

    Every outcome is recorded in both: a pass (VALIDATED), a failure (FAILED_VALIDATION) and an error (an
    AVAILABLE backup becomes UNVERIFIED; a judged one keeps its verdict). Evidence is appended with the run
    id (one per attempt) as idempotency key, so a retried activity appends once and a re-validation appends
    its own record.
    """
    from continuity.kernel.errors import ContinuityError

    summary = summary_of(report)
    cataloged, note = False, "catalog not updated: no backup was picked"
    if BACKUP_ID_RE.match(report.backup_id):
        errored = report.outcome is Outcome.ERROR
        try:
            entry = catalog.record_validation(
                tenant=report.tenant, backup_id=report.backup_id, run_id=report.run_id,
                started_at=report.started_at, finished_at=report.finished_at,
                passed=report.outcome is Outcome.PASSED, checks=[c.to_json() for c in report.checks],
                durations={c.id: round(c.duration_s, 3) for c in report.checks}, summary=summary, error=errored)
            cataloged = True
            note = str(getattr(entry, "status", "")) or str(report.outcome)
        except ContinuityError as exc:
            # e.g. a backup the catalog rejected at ingest: the run is still evidence, the status stays.
            note = f"catalog not updated: {exc}"
    action = {Outcome.PASSED: "validation.passed", Outcome.FAILED: "validation.failed",
              Outcome.ERROR: "validation.error"}[report.outcome]
    record = evidence.append(actor=actor, action=action, subject=f"{report.tenant}/{report.backup_id}",
                             data={**summary, "catalog": note}, idempotency_key=f"validation:{report.run_id}",
                             at=report.finished_at)
    head = record.head.to_json() if hasattr(record, "head") else None
    event_type = "continuity.validation.succeeded" if report.outcome is Outcome.PASSED else \
        "continuity.validation.failed"
    published, publish_note = True, "published"
    try:
        publish(event_type, summary, head)
    except ContinuityError as exc:
        published, publish_note = False, f"event not published: {exc}"
        logger.warning("validation event not published: %s", exc, extra={"tenant": report.tenant,
                                                                         "run_id": report.run_id})
    return Recorded(cataloged, note, getattr(record, "seq", None), published, publish_note)


def recoverability(tenant_id: str, rto_minutes: int, rpo_minutes: int, newest_backup: tuple[str, datetime] | None,
                   last_validation: dict[str, Any] | None, now: datetime,
                   archive: RecoveryWindow | str | None = None) -> dict[str, Any]:
    """Where a tenant stands now: its RPO exposure and its last validation's verdict.

    :param newest_backup: the tenant's newest dump (kind ``full``: a point-in-time extract holds data as of its
        target, not its creation, and never counts).
    :param archive: for a tenant on a server whose WAL we archive, that server's recovery window (or why it
        could not be read): the exposure is then now minus the newest archived WAL, not the dump's age. An
        archive that cannot be read or rewound leaves the dump's age as the measure, and says so.
    """
    out: dict[str, Any] = {"tenant": tenant_id, "rto_minutes": rto_minutes, "rpo_minutes": rpo_minutes,
                           "newest_backup": None, "last_validation": last_validation}
    if newest_backup is None:
        return {**out, "recoverable_within_objectives": False,
                "reason": f"tenant {tenant_id} has no backup in the catalog"}
    backup_id, created_at = newest_backup
    age_s = max(0.0, (now - created_at).total_seconds())
    exposure_s, source, note = age_s, "dump", ""
    if isinstance(archive, RecoveryWindow):
        archived = archive_exposure_seconds(archive, now) if archive.restorable else None
        if archived is not None:
            exposure_s, source = archived, "archive"
        else:
            why = f"segment {archive.gap} is missing" if archive.gap else "no complete base backup with its WAL"
            note = f" (the WAL archive of {archive.server} cannot be rewound: {why})"
    elif isinstance(archive, str):
        note = f" (the WAL archive could not be read: {archive})"
    rpo_met = exposure_s <= rpo_minutes * 60
    out["newest_backup"] = {"backup_id": backup_id, "created_at": created_at.isoformat(), "age_s": round(age_s, 1),
                            "rpo_met": rpo_met}
    out["rpo_exposure"] = {"source": source, "seconds": round(exposure_s, 1),
                           "newest_archived_wal": archive.latest.isoformat()
                           if isinstance(archive, RecoveryWindow) and archive.latest else None}
    measured = (f"newest archived WAL is {exposure_s / 60:.1f} min old" if source == "archive" else
                f"newest backup is {age_s / 60:.1f} min old{note}")
    if last_validation is None:
        return {**out, "recoverable_within_objectives": False,
                "reason": "no backup of this tenant has been validated yet"}
    reasons = []
    if not last_validation.get("within_objectives"):
        reasons.append(f"last validation ({last_validation.get('backup_id')}): {last_validation.get('reason')}")
    if not rpo_met:
        reasons.append(f"{measured}, RPO is {rpo_minutes} min")
    if reasons:
        return {**out, "recoverable_within_objectives": False, "reason": "; ".join(reasons)}
    return {**out, "recoverable_within_objectives": True,
            "reason": f"last validation of {last_validation.get('backup_id')} was within objectives and the "
                      f"{measured} (RPO {rpo_minutes} min)"}
