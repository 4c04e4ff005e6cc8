"""The "recovery chain broken" incident wired to the adapters: what each activity of
``orchestrations.recovery_chain_incident`` does (and the raising step of the backup timer's orchestration).

One incident per break (server, cause, segment): raising it again is answered with ``new: false``. Events
and escalation are those of a failed backup (:mod:`continuity.incidents.service`): ``continuity.recovery_chain.broken``
per tenant of the server (Application Insights custom event ``recovery_chain.broken``), then
``continuity.rpo.at_risk`` / ``continuity.rpo.breached`` when the exposure says so.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from continuity.incidents import service as incident_service
from continuity.incidents.chain import ChainCause, chain_break, restorable_until
from continuity.kernel import settings
from continuity.kernel.errors import ContinuityError
from continuity.kernel.events import EventType, make_event
from continuity.pitr.rules import first_gap

logger = logging.getLogger(__name__)

ACTOR = "incident-responder"


def _evidence() -> Any:
    from continuity.adapters.postgres.control_db import prepare
    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.adapters.storage.evidence_store import EvidenceStore

    return EvidenceStore(prepare(), BlobStore())


def subject_of(server: str) -> str:
    return f"servers/{server}/recovery-chain"


def raise_incident(request: dict[str, Any]) -> dict[str, Any]:
    """Record the break in the evidence chain, once per break; ``new`` says whether this run recorded it
    (only then does the caller start the incident)."""
    brk, run_id = request["break"], request["run_id"]
    record = _evidence().append(
        actor=ACTOR, action="incident.recovery_chain_broken", subject=subject_of(brk["server"]),
        data={**brk, "detected_by": run_id, "tenants": [t["tenant"] for t in request["tenants"]],
              "restorable_until": request.get("restorable_until")},
        idempotency_key=f"recovery_chain.broken:{brk['key']}"[:200])
    new = record.data.get("detected_by") == run_id
    logger.warning("recovery chain broken: %s", brk["reason"],
                   extra={"server": brk["server"], "run_id": run_id, "new": new})
    return {"new": new, "evidence_seq": record.seq, "first_detected_by": record.data.get("detected_by")}


def publish_broken(incident: dict[str, Any]) -> dict[str, Any]:
    """``continuity.recovery_chain.broken`` for each tenant on the server, and each tenant's newest recovery
    point (the archive's restorable point or its newest good dump, whichever is newer)."""
    from continuity.adapters.azure.event_publisher import EventPublisher

    until = _at(incident.get("restorable_until"))
    head = _evidence().head().to_json()
    now = datetime.now(UTC)
    events, newest = [], {}
    for tenant in incident["tenants"]:
        tid = tenant["tenant"]
        dump = incident_service.newest_good_backup_at(tid)
        best = max((t for t in (until, dump) if t is not None), default=None)
        newest[tid] = best.isoformat() if best else None
        events.append(make_event(EventType.RECOVERY_CHAIN_BROKEN, event_id=f"{incident['key']}-{tid}",
                                 subject=f"tenants/{tid}/recovery-chain", at=now, tenant=tid, chain_head=head,
                                 server=incident["server"], cause=incident["cause"], segment=incident["segment"],
                                 reason=incident["reason"], incident=incident["key"]))
    if events:
        EventPublisher().publish(events)
    return {"published": len(events), "newest_recovery_point": newest}


def repair(request: dict[str, Any]) -> dict[str, Any]:
    """One retry: for a missing segment, a new base backup (replay can then start after the gap) and a check
    that the chain from it is whole; for a failing archiver, a check that it ships again. A failure is an
    answer, not an exception."""
    from continuity.backups.service import archiver_of
    from continuity.pitr import service as pitr

    server, attempt = request["server"], request["attempt"]
    registry = settings.configured_registry()
    try:
        taken = None
        if request["cause"] == ChainCause.MISSING_SEGMENT:
            taken = pitr.take_base_backup(registry, server)["base_backup"]
        found = pitr.facts(registry, server)
        archiver = archiver_of(registry, server)
    except ContinuityError as exc:
        logger.warning("repair %d of the recovery chain failed: %s", attempt, exc, extra={"server": server})
        return {"attempt": attempt, "ok": False, "error": str(exc)[:500]}
    still = chain_break(found.window, archiver)
    newest = max((b for b in found.backups if b.done), key=lambda b: b.end_time, default=None)
    whole = newest is not None and found.window.newest_segment is not None and first_gap(
        found.segment_names, newest.begin_wal, found.window.newest_segment) is None
    ok = whole and not (still and still.cause is ChainCause.ARCHIVER_FAILING)
    until = restorable_until(found.window, found.backups, found.segment_names)
    detail = (f"replay from base backup {newest.backup_id if newest else None} reaches the newest archived WAL"
              if ok else (still.reason if still else "no complete base backup with a whole chain after it"))
    logger.info("repair %d of the recovery chain: %s", attempt, detail, extra={"server": server, "ok": ok})
    return {"attempt": attempt, "ok": ok, "base_backup": taken, "detail": detail,
            "restorable_until": until.isoformat() if until else None}


def record_outcome(summary: dict[str, Any]) -> dict[str, Any]:
    record = _evidence().append(
        actor=ACTOR, action=f"incident.recovery_chain_{summary['outcome']}", subject=subject_of(summary["server"]),
        data={"incident": summary["incident"], "attempts": summary["attempts"], "tenants": summary["tenants"]},
        idempotency_key=f"recovery_chain.outcome:{summary['incident']}"[:200])
    return {"evidence_seq": record.seq}


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
