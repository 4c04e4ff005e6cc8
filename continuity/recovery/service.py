"""Tenant recovery use cases wired to the adapters: what each activity of the recovery orchestration does.

Every function takes and returns JSON-able dicts, is idempotent by its natural keys (the recovery's
run id and database names: a re-run restores into the same staging name, drives the cutover from what
the server shows, appends evidence once) and measures its own step. The rules come from
:mod:`continuity.recovery.rules`; the checks are the nightly validation's (:mod:`continuity.validation.service`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from continuity.catalog.manifest import KIND_POINT_IN_TIME
from continuity.failover import service as failover_service
from continuity.kernel import settings
from continuity.kernel.errors import ContinuityError
from continuity.kernel.tenants import Registry, Tenant
from continuity.recovery.rules import (
    BackupCandidate,
    BackupChoice,
    CutoverAction,
    CutoverPosition,
    DatabaseNames,
    StepName,
    choose_backup,
    how_chosen,
    marker,
    summarize_data_loss,
)
from continuity.validation import service as validation
from continuity.validation.naming import SWEEP_AFTER_MINUTES

logger = logging.getLogger(__name__)

CATALOG_PAGE = 500


def registry() -> Registry:
    return settings.configured_registry()


def _now() -> datetime:
    return datetime.now(UTC)


def _admin_dsn(reg: Registry, tenant: Tenant) -> str:
    from continuity.adapters.postgres.connection import server_dsn

    return server_dsn(reg.server_of(tenant), "postgres")


def _step(step: StepName, work: Callable[[], tuple[bool, str, dict[str, Any]]],
          run_id: str | None = None) -> dict[str, Any]:
    """One attempt of ``step``, timed from the step's first attempt (recorded in the control database)."""
    return failover_service.timed_step(str(step), work, run_id, f"recovery.{step}")


# The instants a tenant's database was fenced and opened again, kept once per run across crashes.
UNAVAILABLE_SINCE = "tenant.unavailable_since"
AVAILABLE_AGAIN = "tenant.available_again"


# ---- the request ---------------------------------------------------------------------------------


def _catalog() -> Any:
    from continuity.adapters.postgres.catalog_store import PgCatalogStore
    from continuity.adapters.postgres.control_db import prepare

    return PgCatalogStore(prepare())


def backups_of(tenant: str) -> list[BackupCandidate]:
    """Every cataloged backup of the tenant (any status), newest first."""
    store = _catalog()
    out: list[BackupCandidate] = []
    cursor: str | None = None
    while True:
        items, cursor = store.list_backups(tenant=tenant, limit=CATALOG_PAGE, cursor=cursor)
        out += [BackupCandidate(tenant=e.tenant, backup_id=e.backup_id, status=str(e.status),
                                created_at=e.created_at, status_reason=e.status_reason) for e in items]
        if cursor is None:
            return out


def owner_of_backup(backup_id: str) -> str | None:
    """The tenant the catalog holds ``backup_id`` under (None when it holds it under none)."""
    from continuity.adapters.postgres.connection import connect
    from continuity.adapters.postgres.control_db import prepare

    with connect(prepare()) as conn:
        row = conn.execute("select tenant from catalog.backups where backup_id = %s order by tenant limit 1",
                           (backup_id[:64],)).fetchone()
    return str(row[0]) if row else None


def choose(tenant_id: str, backup_id: str | None, before: datetime | None,
           running: str | None = None) -> dict[str, Any]:
    """The backup a recovery of ``tenant_id`` goes back to, or the refusal as an error.

    :raises UnknownTenant, Conflict, InvalidRequest, RecoveryRefused: see
        :func:`continuity.recovery.rules.choose_backup`.
    """
    tenant = registry().get_tenant(tenant_id)
    backups = backups_of(tenant.id)
    owner = owner_of_backup(backup_id) if backup_id and not any(b.backup_id == backup_id for b in backups) else None
    chosen = choose_backup(tenant.id, backups, backup_id=backup_id, before=before, owner_of_backup=owner,
                           running=running)
    return {"backup": chosen.to_json(), "choice": str(how_chosen(backup_id, before))}


def plan(tenant_id: str, requested_at: datetime, run_id: str, backup_id: str) -> dict[str, Any]:
    """Names and marker of a recovery, fixed at request time (so every re-run uses the same ones)."""
    tenant = registry().get_tenant(tenant_id)
    return {"names": DatabaseNames.of(tenant.database, requested_at).to_json(), "marker": marker(run_id, backup_id),
            "server": tenant.server}


# ---- evidence and events ---------------------------------------------------------------------------


def record_event(inp: dict[str, Any]) -> dict[str, Any]:
    """One evidence record (idempotent per run and key) and, when named, the matching event (shared with
    the failover workflow: the same chain, the same publisher)."""
    return failover_service.record_event(inp)


# ---- steps ----------------------------------------------------------------------------------------


def _context(inp: dict[str, Any]) -> tuple[Registry, Tenant, DatabaseNames, str]:
    reg = registry()
    tenant = reg.get_tenant(inp["tenant"])
    return reg, tenant, DatabaseNames.from_json(inp["names"]), str(inp["marker"])


def _ref(reg: Registry, tenant: Tenant, backup_id: str) -> validation.BackupRef:
    from continuity.validation.wiring import anchored_source

    # The cataloged manifest, not the one storage holds now (see validation.wiring.AnchoredBackupSource).
    return validation.pick_backup(anchored_source(reg, _blobs()), tenant.id, backup_id)


def _blobs() -> Any:
    from continuity.adapters.storage.blob_store import BlobStore

    return BlobStore()


def _databases(reg: Registry, tenant: Tenant, names: DatabaseNames, mark: str) -> Any:
    from continuity.adapters.postgres.tenant_recovery import TenantDatabases

    return TenantDatabases(_admin_dsn(reg, tenant), names, mark)


def confirm_backup(inp: dict[str, Any]) -> dict[str, Any]:
    """Re-check, when the workflow starts, that the chosen backup is still this tenant's and validated (a
    point-in-time extract: this tenant's, of that kind, intact; the staged copy's checks are its validation)."""
    reg = registry()
    if inp.get("point_in_time"):
        ref = _ref(reg, reg.get_tenant(inp["tenant"]), inp["backup_id"])
        if ref.manifest.kind != KIND_POINT_IN_TIME or ref.manifest.tenant != inp["tenant"]:
            raise ContinuityError(f"backup {inp['backup_id']} is not a point-in-time extract of {inp['tenant']}")
        chosen = {"backup": BackupCandidate(tenant=ref.manifest.tenant, backup_id=ref.backup_id, status="extract",
                                            created_at=ref.created_at).to_json(),
                  "choice": str(BackupChoice.POINT_IN_TIME)}
    else:
        chosen = choose(inp["tenant"], inp["backup_id"], None)
        ref = _ref(reg, reg.get_tenant(inp["tenant"]), inp["backup_id"])
    return {**chosen, "manifest": {"created_at": ref.manifest.created_at.isoformat(),
                                   "row_counts": dict(ref.manifest.row_counts),
                                   "ledger": ref.manifest.ledger.model_dump(),
                                   "attachments": ref.manifest.attachments.count}}


def rewind(inp: dict[str, Any]) -> dict[str, Any]:
    """Point in time: rewind the tenant's server to ``to`` in the sandbox (base backup + WAL replay), take
    only this tenant's database out of it as a cataloged point-in-time extract, remove the rewound copy.
    The live server and every other tenant on it are only read (one commit and a WAL switch, so the
    archive holds the target)."""
    from continuity.pitr import service as pitr

    reg = registry()
    tenant = reg.get_tenant(inp["tenant"])
    target = datetime.fromisoformat(inp["to"])

    def work() -> tuple[bool, str, dict[str, Any]]:
        try:
            shipped: dict[str, Any] | str = pitr.force_archive(reg, tenant.server)
        except ContinuityError as exc:  # a dead server: rewind from what the archive already holds
            shipped = f"not forced ({exc})"
        with pitr.rewound(reg, tenant.server, inp["run_id"], target=target) as copy:
            extract = pitr.extract_tenant(reg, tenant, copy)
            point = copy.to_json()
        data = {"point_in_time": point, "extract": extract, "archive": shipped}
        reached = point.get("reached") or "the end of the archived WAL"
        return True, (f"{tenant.server} rewound to {target.isoformat()} from base backup "
                      f"{point['base_backup']['backup_id']} + WAL {point['wal_first']}..{point['wal_last']} "
                      f"(stopped before the commit at {reached}); {tenant.database} extracted as backup "
                      f"{extract['backup_id']} (sha256 {extract['dump_sha256'][:16]}...)"), data

    return _step(StepName.REWIND, work, inp["run_id"])


def point_in_time_refusal(tenant_id: str, to: datetime) -> str | None:
    """Why the tenant cannot be recovered to ``to`` from its server's archive, or None (request time)."""
    from continuity.pitr import service as pitr
    from continuity.pitr.rules import point_in_time_refusal as refusal

    reg = registry()
    tenant = reg.get_tenant(tenant_id)
    found = pitr.facts(reg, tenant.server)
    return refusal(found.window, to, _now(), live_can_ship=True)


def stage(inp: dict[str, Any]) -> dict[str, Any]:
    """Restore the backup into the staging database (beside live), then bring back attachment files the
    restored database references and the store lacks."""
    from continuity.adapters.local.run_folders import open_run_folder, sweep_run_folders
    from continuity.adapters.postgres.tenant_recovery import (
        StagingTarget,
        referenced_attachments,
        restore_missing_attachments,
    )
    from continuity.adapters.tools.restore_runner import download_with_hash
    from continuity.validation.wiring import staging_ports

    reg, tenant, names, mark = _context(inp)

    def work() -> tuple[bool, str, dict[str, Any]]:
        target = StagingTarget(_admin_dsn(reg, tenant), names, mark)
        blobs = _blobs()
        sweep_run_folders(SWEEP_AFTER_MINUTES)
        # The dump lands in this run's own folder: an attempt killed mid-restore leaves it there, and the
        # next attempt (or the sweeper) removes it, never another run's.
        folder = open_run_folder(inp["run_id"], str(StepName.STAGE))
        try:
            ports = replace(staging_ports(reg, target, blobs),
                            download=partial(download_with_hash, directory=folder.path))
            ref = validation.pick_backup(ports.source, tenant.id, inp["backup_id"])
            restored = validation.restore_into_sandbox(ports, ref, names.staged, int(inp.get("jobs", 2)))
        finally:
            folder.remove()
        data: dict[str, Any] = {"restore": restored.to_json()}
        if not restored.restored:
            reason = next((c.detail for c in restored.checks if str(c.status) == "fail"), "restore did not complete")
            return False, f"backup {ref.backup_id} could not be restored into {names.staged}: {reason}", data
        attachments = restore_missing_attachments(blobs, settings.get("CONTINUITY_ATTACHMENT_CONTAINER"),
                                                  tenant.attachments, referenced_attachments(
                                                      target.scratch_dsn(names.staged)),
                                                  keep_container=settings.get("CONTINUITY_ATTACHMENT_KEEP_CONTAINER"))
        data["attachments"] = attachments
        return True, (f"backup {ref.backup_id} restored into {names.staged} ({restored.restored_bytes} bytes, "
                      f"{restored.seconds:.1f} s); attachments: {attachments['note']}"), data

    return _step(StepName.STAGE, work, inp["run_id"])


def check(inp: dict[str, Any]) -> dict[str, Any]:
    """The nightly validation's checks on the staged copy, its verdict, and the data-loss report."""
    from continuity.adapters.postgres.tenant_recovery import StagingTarget, data_loss_facts
    from continuity.validation.wiring import staging_ports

    reg, tenant, names, mark = _context(inp)

    def work() -> tuple[bool, str, dict[str, Any]]:
        target = StagingTarget(_admin_dsn(reg, tenant), names, mark)
        ports = staging_ports(reg, target)
        ref = validation.pick_backup(ports.source, tenant.id, inp["backup_id"])
        step = validation.RestoreStep.from_json(inp["restore"])
        started = _now()
        checks = validation.run_restore_checks(ports, ref, step, float(inp.get("sample_rate", 1.0)))
        target.remove_check_extensions(names.staged)  # the staged copy goes live as the backup made it
        report = validation.conclude(reg, tenant.id, ref.backup_id, ref.created_at, inp["run_id"], started, _now(),
                                     step, checks)
        # An extract's data is as of its target, not its dump time: data loss is counted from the target.
        as_of = ref.manifest.point_in_time.target if ref.manifest.point_in_time else ref.created_at
        facts = data_loss_facts(target.scratch_dsn(tenant.database), target.scratch_dsn(names.staged), as_of)
        loss = summarize_data_loss(ref.backup_id, as_of, _now(), facts)
        data = {"verdict": str(report.verdict.status), "verdict_reason": report.verdict.reason,
                "failed_checks": report.failed_checks,
                "checks": {c.id: {"status": str(c.status), "detail": c.detail} for c in report.checks},
                "data_loss": loss.to_json()}
        if report.failed_checks:
            return False, f"the staged copy failed checks: {report.verdict.reason}", data
        return True, f"the staged copy passed the validation checks; {loss.sentence}", data

    return _step(StepName.CHECKS, work, inp["run_id"])


def _availability_recorder(run_id: str) -> Callable[[CutoverAction, str], None]:
    """Records, once per run and before it happens, the instant the tenant's database is fenced, and the
    instant it accepts connections again, after it does: a crash in between cannot shorten the window."""
    store = failover_service._attempts()

    def on_action(action: CutoverAction, phase: str) -> None:
        if store is None:
            return
        if action is CutoverAction.FENCE_LIVE and phase == "before":
            store.moment(run_id, UNAVAILABLE_SINCE, _now())
        elif action in (CutoverAction.REOPEN_LIVE, CutoverAction.UNFENCE_LIVE) and phase == "after":
            store.moment(run_id, AVAILABLE_AGAIN, _now())

    return on_action


def unavailability(run_id: str) -> dict[str, Any] | None:
    """The window the tenant's database refused connections in this run, as recorded (None before a fence,
    or when the control database cannot be reached); ``until`` None while it is still fenced."""
    store = failover_service._attempts()
    since = store.get_moment(run_id, UNAVAILABLE_SINCE) if store is not None else None
    if store is None or since is None:
        return None
    until = store.get_moment(run_id, AVAILABLE_AGAIN)
    return {"since": since.isoformat(), "until": until.isoformat() if until else None,
            "seconds": round((until - since).total_seconds(), 3) if until else None}


def _drive(step: StepName, target: CutoverPosition, inp: dict[str, Any]) -> dict[str, Any]:
    reg, tenant, names, mark = _context(inp)

    def work() -> tuple[bool, str, dict[str, Any]]:
        result = _databases(reg, tenant, names, mark).drive(target, on_action=_availability_recorder(inp["run_id"]))
        done = ", ".join(a["action"] for a in result["actions"]) or "nothing to do (already there)"
        window = unavailability(inp["run_id"])
        if window is not None:
            result["unavailable"] = window
        return True, f"{result['detail']} ({done})", result

    return _step(step, work, inp["run_id"])


def fence(inp: dict[str, Any]) -> dict[str, Any]:
    """Only this tenant's live database refuses connections and has no session left."""
    return _drive(StepName.FENCE, CutoverPosition.FENCED, inp)


def swap(inp: dict[str, Any]) -> dict[str, Any]:
    """live → pre_recovery and staged → live, in one transaction."""
    return _drive(StepName.SWAP, CutoverPosition.SWAPPED, inp)


def reopen(inp: dict[str, Any]) -> dict[str, Any]:
    return _drive(StepName.REOPEN, CutoverPosition.REOPENED, inp)


def verify(inp: dict[str, Any]) -> dict[str, Any]:
    """Smoke queries on the live database (it is the recovered copy, schema whole, assertions hold); the
    original is then kept read-only for forensics. A drill verifies the staged copy instead."""
    from continuity.adapters.postgres.tenant_recovery import smoke

    reg, tenant, names, mark = _context(inp)
    drill = bool(inp.get("drill"))

    def work() -> tuple[bool, str, dict[str, Any]]:
        databases = _databases(reg, tenant, names, mark)
        ref = _ref(reg, tenant, inp["backup_id"])
        target = names.staged if drill else names.live
        result = smoke(databases.dsn(target), mark, ref.manifest, tenant.assertions)
        if not result["ok"]:
            return False, (f"verification of {target} failed: recovered copy {result['is_recovered_copy']}, "
                           f"failed checks {result['failed_checks']}"), result
        kept = "drill: the live database was not touched" if drill else databases.keep_pre_recovery()
        ledger = "matches" if result["ledger_matches_manifest"] else "differs from"
        return True, f"{target} is the recovered copy, its ledger {ledger} the backup's manifest; {kept}", \
            {**result, "kept": kept}

    return _step(StepName.VERIFY, work, inp["run_id"])


def rollback(inp: dict[str, Any]) -> dict[str, Any]:
    """Back to the live database as it was; the staged copy is dropped unless it already served clients."""
    reg, tenant, names, mark = _context(inp)

    def work() -> tuple[bool, str, dict[str, Any]]:
        databases = _databases(reg, tenant, names, mark)
        position, why = databases.position()
        served = position is CutoverPosition.REOPENED
        result = databases.drive(CutoverPosition.STAGED, forward_only=False,
                                 on_action=_availability_recorder(inp["run_id"]))
        dropped = False if served else databases.drop_staged()
        kept = f"; {names.staged} kept: it accepted connections before the rollback" if served else ""
        window = unavailability(inp["run_id"])
        if window is not None:
            result["unavailable"] = window
        return True, f"rolled back from {position}: {names.live} is the original again{kept}", \
            {**result, "from": str(position), "staged_dropped": dropped}

    return _step(StepName.ROLLBACK, work, inp["run_id"])


def cleanup(inp: dict[str, Any]) -> dict[str, Any]:
    """Drop the staged copy (drill, refusal, rejection, expiry); the live database is not touched."""
    reg, tenant, names, mark = _context(inp)

    def work() -> tuple[bool, str, dict[str, Any]]:
        databases = _databases(reg, tenant, names, mark)
        position, _ = databases.position()
        if position not in (CutoverPosition.STAGED, CutoverPosition.UNKNOWN):
            raise ContinuityError(f"refusing to drop {names.staged}: the cutover stands at {position}")
        dropped = databases.drop_staged()
        return True, f"{names.staged} {'dropped' if dropped else 'was already gone'}", {"dropped": dropped}

    return _step(StepName.CLEANUP, work, inp["run_id"])


def backup_after(inp: dict[str, Any]) -> dict[str, Any]:
    """A fresh backup of the recovered state, cataloged at once: the tenant's next nightly validation
    (which validates each tenant's newest backup) then runs on the recovered state."""
    from continuity.adapters.tools.backup_taker import take_backup
    from continuity.catalog.service import open_catalog

    reg = registry()

    def work() -> tuple[bool, str, dict[str, Any]]:
        blobs = _blobs()
        stored = take_backup(reg, inp["tenant"], store=blobs)
        manifest_blob = stored.manifest
        open_catalog(None, blobs, actor="recovery").ingest_blob(manifest_blob, actor="recovery")
        return True, f"backup {stored.backup_id} of the recovered state taken and cataloged", \
            {"backup_id": stored.backup_id, "manifest_blob": manifest_blob}

    return _step(StepName.BACKUP, work, inp.get("run_id"))


def databases_status(tenant_id: str, names: dict[str, Any], mark: str) -> dict[str, Any]:
    reg = registry()
    tenant = reg.get_tenant(tenant_id)
    databases = _databases(reg, tenant, DatabaseNames.from_json(names), mark)
    position, why = databases.position()
    return {"position": str(position), "detail": why, "observation": databases.observe().to_json()}
