"""Retention use cases wired to the adapters: the dry-run plan, runs applied in batches, legal holds, the audit.

A run (orchestration ``retention-YYYYMMDD``) goes :func:`begin_run` (one run at a time: a lease in the
control database) → :func:`prepare_run` (plan at the run's ``as_of`` from the catalog, the registry's
policies and the holds; the storage-changing actions stored in batches of at most 256 blobs) →
:func:`apply_batch` per batch → :func:`finish_run`. Every outcome is recorded in the catalog and the
evidence chain. A batch whose store calls failed records what did happen and raises, so the
orchestrator's retry (or a restart of the run) does only what is left: done actions are skipped, a
restarted run plans again from the catalog, which already holds the applied changes.

Deletes are checked against the legal holds again right before they run: a hold set after planning wins.
JSON-able dicts in and out; adapters are imported lazily (this module stays free of Azure imports).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from continuity.catalog.model import EXPECTED_IN_STORAGE, BackupStatus, CatalogEntry
from continuity.kernel.errors import ContinuityError
from continuity.kernel.identity import Principal
from continuity.kernel.tenants import Registry, StorageTier
from continuity.retention.holds import LegalHold, check_clear, check_set, held_reason, new_hold, planning_holds
from continuity.retention.planner import (
    Delete,
    Holds,
    RetentionAction,
    RetentionCandidate,
    RetentionPlan,
    action_from_dict,
    format_time,
    plan_retention,
    policies_from_registry,
)

if TYPE_CHECKING:
    from continuity.adapters.postgres.catalog_store import PgCatalogStore
    from continuity.adapters.postgres.retention_records import HoldStore, RetentionRecords
    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.adapters.storage.evidence_store import EvidenceStore
    from continuity.adapters.storage.retention_store import RetentionStore

logger = logging.getLogger(__name__)

BLOBS_PER_BACKUP = 2  # manifest.json and db.dump
BATCH_BLOBS = 256  # one Blob Batch call per batch activity
SKIPPED = "SKIPPED"
INCOMPLETE = frozenset({"FAILED", "NOT_ATTEMPTED"})
NOT_ENFORCED_NOTE = "not enforced by this store"
# Clock skew tolerated between a caller's as_of and ours.
FUTURE_SKEW = timedelta(minutes=5)


class RetentionBatchIncomplete(ContinuityError):
    """Some actions of a batch did not complete (store unreachable or failing); retrying does only the rest."""

    code = "retention_batch_incomplete"
    http_status = 503


@dataclass
class RetentionPorts:
    """Everything the use cases touch; :func:`open_ports` wires the configured ones."""

    registry: Registry
    container: str
    blobs: BlobStore
    catalog: PgCatalogStore
    store: RetentionStore
    records: RetentionRecords
    holds: HoldStore
    evidence: EvidenceStore


def open_ports(registry: Registry | None = None, store: RetentionStore | None = None) -> RetentionPorts:
    """The retention ports of the configured control database, storage account and tenant registry."""
    from continuity.adapters.postgres.catalog_store import PgCatalogStore
    from continuity.adapters.postgres.control_db import prepare
    from continuity.adapters.postgres.retention_records import HoldStore, RetentionRecords
    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.adapters.storage.evidence_store import EvidenceStore
    from continuity.adapters.storage.retention_store import RetentionStore
    from continuity.kernel import settings

    dsn = prepare()
    blobs = BlobStore()
    container = settings.get("CONTINUITY_BACKUP_CONTAINER")
    evidence = EvidenceStore(dsn, blobs)
    blobs.ensure_containers([evidence.container])
    return RetentionPorts(registry=registry or settings.configured_registry(), container=container, blobs=blobs,
                          catalog=PgCatalogStore(dsn), store=store or RetentionStore.from_blob_store(blobs, container),
                          records=RetentionRecords(dsn), holds=HoldStore(dsn), evidence=evidence)


# ---- snapshot ---------------------------------------------------------------------------------

def candidate_of(entry: CatalogEntry) -> RetentionCandidate:
    """A catalog entry as the planner reads it (an unknown storage tier counts as hot: it can only move colder)."""
    tier = (entry.storage_tier or "hot").lower()
    if tier not in {t.value for t in StorageTier}:
        tier = StorageTier.HOT.value
    return RetentionCandidate(tenant=entry.tenant, backup_id=entry.backup_id, created_at=entry.created_at,
                              status=str(entry.status).upper(), tier=tier, immutable_until=entry.immutable_until,
                              legal_hold=entry.legal_hold)


def _entries(ports: RetentionPorts, tenant: str | None = None) -> list[CatalogEntry]:
    return [e for e in ports.catalog.iter_entries()
            if e.container == ports.container and (tenant is None or e.tenant == tenant)]


def current_holds(ports: RetentionPorts) -> Holds:
    return planning_holds(ports.registry, ports.holds.list_holds())


def plan(ports: RetentionPorts, now: datetime, tenant: str | None = None,
         scope: frozenset[str] | None = None) -> RetentionPlan:
    """What retention would do at ``now`` (nothing is changed).

    Tenants are planned independently (each by its own tier's policy and holds), so the plan of the
    tenants in ``scope`` is the whole plan restricted to them.

    :param scope: only these tenants (a scoped caller's); None: every tenant.
    :raises UnknownTenant: ``tenant`` is not in the registry.
    """
    if tenant is not None:
        ports.registry.get_tenant(tenant)
    candidates = [candidate_of(e) for e in _entries(ports, tenant)
                  if e.status is not BackupStatus.DELETED and (scope is None or e.tenant in scope)]
    return plan_retention(candidates, policies_from_registry(ports.registry), current_holds(ports), now)


def plan_document(ports: RetentionPorts, now: datetime, tenant: str | None = None,
                  scope: frozenset[str] | None = None) -> dict[str, Any]:
    """The dry-run answer: the plan, the holds it respected, and whether the store enforces locks.

    :param scope: a scoped caller's tenants: the plan and the holds list only these; None: every tenant.
    """
    planned = plan(ports, now, tenant, scope)
    enforced = ports.blobs.enforces_immutability()
    holds = current_holds(ports)
    held_tenants = sorted(t for t in holds.tenants if scope is None or t in scope)
    held_backups = sorted(f"{t}/{b}" for t, b in holds.backups if scope is None or t in scope)
    return {**planned.to_dict(), "dry_run": True, "tenant": tenant, "container": ports.container,
            "holds": {"tenants": held_tenants, "backups": held_backups},
            "store_enforces_immutability": enforced,
            "immutability": "enforced by the store" if enforced else
            f"{NOT_ENFORCED_NOTE}: SET_IMMUTABILITY is recorded but storage will not lock the blobs"}


# ---- runs -------------------------------------------------------------------------------------

def _record(ports: RetentionPorts, *, actor: str, action: str, subject: str, data: dict[str, Any],
            key: str | None = None) -> dict[str, Any]:
    record = ports.evidence.append(actor=actor, action=action, subject=subject, data=data, idempotency_key=key)
    return {"seq": record.seq, "hash": record.hash}


def record_refusal(ports: RetentionPorts, actor: str, run_id: str, reason: str, code: str) -> dict[str, Any]:
    """Evidence that a retention start was refused and nothing was executed."""
    return _record(ports, actor=actor, action="retention.refused", subject=f"retention/{run_id}",
                   data={"reason": reason, "code": code, "executed": False})


def admit_run(ports: RetentionPorts, requested_by: str, as_of: datetime | None, clock: datetime) -> str:
    """The instance id of the run a start request asks for (``retention-YYYYMMDD``), or the refusal.

    An early answer for the caller: the lease :func:`begin_run` takes inside the run stays the authority, so
    two starts that both pass here still apply one at a time (the loser is refused there and recorded).

    :raises InvalidRequest: ``as_of`` is ahead of the clock.
    :raises Conflict: another run is applying (recorded as a refusal).
    """
    from continuity.kernel.errors import Conflict, InvalidRequest

    if as_of is not None and as_of > clock + FUTURE_SKEW:
        # Applying "as of" a later time would delete backups before their policy says so.
        raise InvalidRequest(f"as_of {as_of.isoformat()} is in the future; retention never runs ahead of the clock "
                             "(plan it as a dry run instead: GET /api/retention/plan?as_of=...)")
    instance = f"retention-{(as_of or clock):%Y%m%d}"
    running = running_run(ports)
    if running is not None and running["run_id"] != instance:
        refusal = Conflict(f"retention run {running['run_id']} is applying (requested by {running['requested_by']}); "
                           "wait for it to finish, then start again")
        record_refusal(ports, requested_by, instance, str(refusal), refusal.code)
        raise refusal
    return instance


def begin_run(ports: RetentionPorts, run_id: str, as_of: datetime, requested_by: str) -> dict[str, Any]:
    """Take the one-run-at-a-time lease. A refusal (another run applying) is an answer, recorded, not raised."""
    from continuity.kernel.errors import Conflict

    try:
        state, run = ports.records.begin_run(run_id, as_of, requested_by)
    except Conflict as exc:
        head = record_refusal(ports, requested_by, run_id, str(exc), exc.code)
        logger.warning("retention run refused: %s", exc, extra={"run_id": run_id})
        return {"run_id": run_id, "state": "refused", "reason": str(exc), "chain_head": head}
    logger.info("retention run %s", state, extra={"run_id": run_id, "as_of": format_time(run.as_of)})
    return {"run_id": run_id, "state": state, "as_of": format_time(run.as_of), "summary": run.summary}


def batches_of(actions: Sequence[RetentionAction], blobs_per_batch: int = BATCH_BLOBS) -> list[list[RetentionAction]]:
    """Split actions so that no batch names more than ``blobs_per_batch`` blobs (the Blob Batch limit)."""
    size = max(1, blobs_per_batch // BLOBS_PER_BACKUP)
    return [list(actions[i:i + size]) for i in range(0, len(actions), size)]


def prepare_run(ports: RetentionPorts, run_id: str, blobs_per_batch: int = BATCH_BLOBS) -> dict[str, Any]:
    """Plan the run at its ``as_of`` and store its storage-changing actions in batches."""
    run = _run(ports, run_id)
    planned = plan(ports, run.as_of)
    batches = [[a.to_dict() for a in batch] for batch in batches_of(planned.changes, blobs_per_batch)]
    summary = {"planned": planned.summary(), "batches": len(batches)}
    sha = ports.records.store_plan(run_id, batches, summary)
    head = _record(ports, actor=run.requested_by, action="retention.planned", subject=f"retention/{run_id}",
                   data={"as_of": format_time(run.as_of), "plan_sha256": sha, "summary": planned.summary(),
                         "batches": len(batches), "container": ports.container},
                   key=f"retention.planned:{run_id}:{sha[:24]}")
    return {"run_id": run_id, "as_of": format_time(run.as_of), "batches": len(batches),
            "summary": planned.summary(), "plan_sha256": sha, "chain_head": head}


def _run(ports: RetentionPorts, run_id: str) -> Any:
    from continuity.kernel.errors import Conflict

    run = ports.records.get_run(run_id)
    if run is None:
        raise Conflict(f"no retention run {run_id}; start it before planning or applying")
    return run


def apply_batch(ports: RetentionPorts, run_id: str, batch: int) -> dict[str, Any]:
    """Apply one stored batch; done actions of this run are skipped, deletes of backups held now are not run.

    :raises RetentionBatchIncomplete: after recording, when some actions failed or were not attempted.
    """
    run = _run(ports, run_id)
    ports.records.renew_lease(run_id)
    actions = [action_from_dict(a) for a in ports.records.load_batch(run_id, batch)]
    done = ports.records.done_keys(run_id)
    todo = [a for a in actions if (a.tenant, a.backup_id, a.kind.value) not in done]
    holds = current_holds(ports)
    skipped: list[tuple[RetentionAction, str, str]] = []
    to_apply: list[RetentionAction] = []
    for action in todo:
        reason = held_reason(holds, action.tenant, action.backup_id) if isinstance(action, Delete) else None
        if reason:
            skipped.append((action, SKIPPED, f"not deleted: {reason} was set after planning"))
        else:
            to_apply.append(action)
    outcomes = ports.store.apply(to_apply) if to_apply else []
    results = [(o.action, o.status.value, o.detail) for o in outcomes] + skipped
    ports.records.record_outcomes(run_id, batch, run.as_of, results)
    listed = [{"kind": a.kind.value, "tenant": a.tenant, "backup_id": a.backup_id, "status": status,
               "detail": detail, **({"to": a.to_dict()["to"]} if "to" in a.to_dict() else {}),
               **({"until": a.to_dict()["until"]} if "until" in a.to_dict() else {})}
              for a, status, detail in results]
    digest = hashlib.sha256(json.dumps(listed, sort_keys=True).encode()).hexdigest()[:24]
    head = None
    if listed:
        head = _record(ports, actor=run.requested_by, action="retention.batch_applied", subject=f"retention/{run_id}",
                       data={"batch": batch, "as_of": format_time(run.as_of), "actions": listed},
                       key=f"retention.batch:{run_id}:{batch}:{digest}")
    counts = Counter(status for _, status, _ in results)
    incomplete = [(a, s, d) for a, s, d in results if s in INCOMPLETE]
    logger.info("retention batch applied", extra={"run_id": run_id, "batch": batch, "counts": dict(counts)})
    if incomplete:
        first = incomplete[0]
        raise RetentionBatchIncomplete(
            f"{len(incomplete)} of {len(results)} action(s) in batch {batch} of {run_id} did not complete "
            f"(first: {first[0].kind.value} {first[0].tenant}/{first[0].backup_id}: {first[2]}); "
            "what completed is recorded, a retry does only the rest")
    return {"run_id": run_id, "batch": batch, "actions": len(actions), "already_done": len(actions) - len(todo),
            "counts": dict(counts), "chain_head": head}


def finish_run(ports: RetentionPorts, run_id: str, error: str | None = None) -> dict[str, Any]:
    """Close the run (release the lease) with a summary of every recorded outcome; evidence of the end."""
    run = _run(ports, run_id)
    outcomes = ports.records.outcomes(run_id)
    counts: dict[str, dict[str, int]] = {}
    for o in outcomes:
        counts.setdefault(o["action"], {}).setdefault(o["status"], 0)
        counts[o["action"]][o["status"]] += 1
    refused = [f"{o['action']} {o['tenant']}/{o['backup_id']}: {o['detail']}" for o in outcomes
               if o["status"] in ("REFUSED", SKIPPED, *INCOMPLETE)]
    state = "failed" if error else "completed"
    summary = {"as_of": format_time(run.as_of), "outcomes": counts, "not_done": refused[:50],
               "not_done_count": len(refused), "error": error,
               "store_enforces_immutability": ports.blobs.enforces_immutability()}
    finished = ports.records.finish_run(run_id, state, summary)
    head = _record(ports, actor=run.requested_by, action=f"retention.{state}", subject=f"retention/{run_id}",
                   data=summary, key=f"retention.{state}:{run_id}:{(finished.plan_sha256 or 'none')[:24]}")
    return {"run_id": run_id, "state": state, **finished.summary, "chain_head": head}


def run_status(ports: RetentionPorts, run_id: str) -> dict[str, Any] | None:
    run = ports.records.get_run(run_id)
    if run is None:
        return None
    return {**run.to_json(), "outcomes": [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in o.items()}
                                          for o in ports.records.outcomes(run_id)]}


def running_run(ports: RetentionPorts) -> dict[str, Any] | None:
    run = ports.records.running_run()
    return run.to_json() if run else None


# ---- legal holds ------------------------------------------------------------------------------

def _status_of(ports: RetentionPorts, tenant: str, backup_id: str) -> str | None:
    from continuity.kernel.errors import BackupNotFound

    try:
        entry = ports.catalog.get_backup(tenant, backup_id)
    except BackupNotFound:
        return None
    return str(entry.status) if entry.container == ports.container else None


def _hold_blobs(ports: RetentionPorts, tenant: str, backup_id: str | None,
                exclude: Iterable[str] = ()) -> list[str]:
    skip = set(exclude)
    names: list[str] = []
    for entry in _entries(ports, tenant):
        if entry.status is BackupStatus.DELETED or entry.backup_id in skip:
            continue
        if backup_id is None or entry.backup_id == backup_id:
            names += [entry.manifest_blob, entry.dump_blob]
    return names


def set_hold(ports: RetentionPorts, actor: Principal, tenant: str, backup_id: str | None, reason: str,
             now: datetime | None = None) -> dict[str, Any]:
    """Record a legal hold (and set it on the blobs where the store supports holds); refusals are recorded.

    :raises Forbidden, UnknownTenant, BackupNotFound, Conflict, InvalidRequest: nothing is changed.
    """
    subject = f"hold/{tenant[:60]}" + (f"/{backup_id[:100]}" if backup_id else "")
    try:
        status = _status_of(ports, tenant, backup_id) if backup_id else None
        check_set(ports.registry, tenant, backup_id, reason, actor, status)
    except ContinuityError as exc:
        _record(ports, actor=actor.name, action="hold.refused", subject=subject,
                data={"verb": "set", "reason": reason[:500] if isinstance(reason, str) else None,
                      "refusal": str(exc), "code": exc.code, "executed": False})
        raise
    hold, created = ports.holds.set_hold(new_hold(tenant, backup_id, reason, actor, now or datetime.now(UTC)))
    storage = ports.store.set_legal_hold(_hold_blobs(ports, tenant, backup_id), True) if created else None
    storage_json = {"status": storage.status.value, "detail": storage.detail} if storage else None
    head = _record(ports, actor=actor.name, action="hold.set" if created else "hold.already_set", subject=hold.subject,
                   data={"tenant": tenant, "backup_id": backup_id, "reason": reason.strip(), "storage": storage_json,
                         "active_since": hold.to_json()["set_at"], "first_set_by": hold.set_by})
    return {"hold": hold.to_json(), "created": created, "storage": storage_json, "chain_head": head}


def clear_hold(ports: RetentionPorts, actor: Principal, tenant: str, backup_id: str | None, reason: str,
               now: datetime | None = None) -> dict[str, Any]:
    """Clear an active hold set through the API; refusals are recorded.

    :raises Forbidden, UnknownTenant, HoldNotFound, Conflict, InvalidRequest: nothing is changed.
    """
    subject = f"hold/{tenant[:60]}" + (f"/{backup_id[:100]}" if backup_id else "")
    try:
        known = any(t.id == tenant for t in ports.registry.tenants)
        active = ports.holds.get_active(tenant, backup_id) if known else None
        check_clear(ports.registry, tenant, backup_id, reason, actor, active)
    except ContinuityError as exc:
        _record(ports, actor=actor.name, action="hold.refused", subject=subject,
                data={"verb": "clear", "reason": reason[:500] if isinstance(reason, str) else None,
                      "refusal": str(exc), "code": exc.code, "executed": False})
        raise
    cleared = ports.holds.clear_hold(tenant, backup_id, actor.name, reason.strip(), now or datetime.now(UTC))
    if cleared is None:  # cleared concurrently between the check and the update
        from continuity.retention.holds import HoldNotFound

        raise HoldNotFound(f"the legal hold on {subject.removeprefix('hold/')} was cleared by someone else meanwhile")
    # Blobs still held another way (the tenant, or the backup itself) keep their storage hold.
    holds = current_holds(ports)
    if holds.tenant_held(tenant):
        names: list[str] = []
    else:
        names = _hold_blobs(ports, tenant, backup_id, exclude=[b for t, b in holds.backups if t == tenant])
    storage = ports.store.set_legal_hold(names, False)
    storage_json = {"status": storage.status.value, "detail": storage.detail}
    head = _record(ports, actor=actor.name, action="hold.cleared", subject=cleared.subject,
                   data={"tenant": tenant, "backup_id": backup_id, "reason": reason.strip(), "storage": storage_json,
                         "set_by": cleared.set_by, "set_reason": cleared.reason})
    return {"hold": cleared.to_json(), "storage": storage_json, "chain_head": head}


def list_holds(ports: RetentionPorts, tenant: str) -> dict[str, Any]:
    entry = ports.registry.get_tenant(tenant)
    history: list[LegalHold] = ports.holds.list_holds(tenant, active_only=False)
    return {"tenant": tenant, "registry_hold": entry.legal_hold,
            "active": [h.to_json() for h in history if h.active],
            "history": [h.to_json() for h in history if not h.active]}


# ---- compliance audit -------------------------------------------------------------------------

def audit(ports: RetentionPorts, as_of: datetime | None = None, tenant: str | None = None) -> dict[str, Any]:
    """Compare storage (every blob's tier, immutability policy and legal hold) with the catalog and the plan.

    :param as_of: the time the plan is judged at; default the ``as_of`` of the last completed run (what
        storage should reflect now), else the current time.
    :returns: a report whose ``deviations`` is empty when storage, catalog and plan agree.
    """
    last = ports.records.last_completed()
    when = as_of or (last.as_of if last else datetime.now(UTC))
    enforced = ports.blobs.enforces_immutability()
    holds = current_holds(ports)
    entries = _entries(ports, tenant)
    listed = set(ports.blobs.list_names(ports.container))
    deviations: list[dict[str, Any]] = []

    def deviate(entry: CatalogEntry | RetentionAction, kind: str, detail: str) -> None:
        deviations.append({"tenant": entry.tenant, "backup_id": entry.backup_id, "kind": kind, "detail": detail})

    tiers: Counter[str] = Counter()
    locked = held = blobs_read = 0
    for entry in entries:
        names = [entry.manifest_blob, entry.dump_blob]
        present = [n for n in names if n in listed]
        if entry.status is BackupStatus.DELETED:
            if present:
                deviate(entry, "not_deleted", f"deleted by retention in the catalog but {len(present)} blob(s) "
                                              f"remain in storage: {', '.join(present)}")
            continue
        if entry.status not in EXPECTED_IN_STORAGE:
            continue
        missing = [n for n in names if n not in listed]
        if missing and entry.status is not BackupStatus.PENDING:
            deviate(entry, "missing", f"catalog status {entry.status} but {', '.join(missing)} is not in storage")
        expected_tier = (entry.storage_tier or "hot").lower()
        lock_expected = entry.immutable_until is not None and entry.immutable_until > when
        locked += lock_expected
        hold_expected = bool(entry.legal_hold) or held_reason(holds, entry.tenant, entry.backup_id) is not None
        held += hold_expected
        for state in ports.store.read_locks(present):
            blobs_read += 1
            actual = (state.tier or "").lower()
            tiers[actual or "unknown"] += 1
            if actual != expected_tier:
                deviate(entry, "tier", f"{state.name} is in tier {actual or 'unknown'}; the catalog says "
                                       f"{expected_tier}")
            if enforced and lock_expected and (state.immutable_until is None
                                               or state.immutable_until < entry.immutable_until):  # type: ignore[operator]
                deviate(entry, "immutability", f"{state.name} is immutable until "
                        f"{format_time(state.immutable_until) if state.immutable_until else 'never'}; the catalog "
                        f"says {format_time(entry.immutable_until)}")  # type: ignore[arg-type]
            if enforced and hold_expected and not state.legal_hold:
                deviate(entry, "legal_hold", f"{state.name} has no legal hold in storage; the backup is held")
    # Due at ``when`` only what existed then: a backup taken since the last run is the next run's to judge.
    created = {(e.tenant, e.backup_id): e.created_at for e in entries}
    for action in plan(ports, when, tenant).changes:
        born = created.get((action.tenant, action.backup_id))
        if born is not None and born > when:
            continue
        deviate(action, "not_applied", f"due at {format_time(when)} but not applied: {action.kind.value} "
                f"({action.reason})")
    note = "enforced by the store" if enforced else (
        f"{NOT_ENFORCED_NOTE}: {locked} backup(s) the policy locks and {held} held backup(s) are protected only "
        "by this control plane's refusals, not by storage")
    return {"ok": not deviations, "as_of": format_time(when), "tenant": tenant, "container": ports.container,
            "last_run": last.run_id if last else None, "backups_checked": len(entries), "blobs_read": blobs_read,
            "tiers": dict(sorted(tiers.items())), "store_enforces_immutability": enforced,
            "immutability": {"expected_locked_backups": locked, "expected_held_backups": held, "note": note},
            "deviations": deviations}
