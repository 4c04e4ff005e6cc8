"""Backups on each tier's schedule: survey what is due (and whether each archived server's recovery chain is
whole), then take it. The timer's orchestration (``orchestrations.scheduled_backups``) and
``continuity backup --due`` both run these steps; :mod:`continuity.backups.schedule` decides.

Inputs and outputs are JSON-able dicts. A failed backup is an answer (``ok: false`` and why), never an
exception into the orchestration: the next tick retries what is still due.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from continuity.backups.schedule import base_backups_due, dumps_due, server_intervals
from continuity.incidents.chain import ArchiverState, chain_break, restorable_until
from continuity.kernel import settings
from continuity.kernel.errors import ContinuityError, InvalidRequest
from continuity.kernel.tenants import Registry

logger = logging.getLogger(__name__)

ACTOR = "backup-scheduler"


def _control_dsn() -> str:
    from continuity.adapters.postgres.control_db import prepare

    return prepare()


def archiver_of(registry: Registry, server_id: str) -> ArchiverState:
    from continuity.adapters.postgres.backup_schedule import archiver_state
    from continuity.adapters.postgres.connection import server_dsn

    return archiver_state(server_dsn(registry.servers[server_id], "postgres"), server_id)


def _replication(registry: Registry) -> list[dict[str, Any]] | str:
    """Each replica's lag, logged as the ``replication.lag`` event the Azure Monitor alert counts; a failure
    to observe is reported, never a reason to skip this tick's backups."""
    from continuity.failover import service as failover

    try:
        return failover.report_replication_lag(registry)
    except ContinuityError as exc:
        return str(exc)[:300]


def survey(now: datetime, registry: Registry | None = None) -> dict[str, Any]:
    """What is due at ``now`` (a decision with its reason per tenant and per archived server) and the state of
    each archived server's recovery chain. One catalog query for every tenant; each archive read once."""
    from continuity.adapters.postgres.backup_schedule import newest_dumps
    from continuity.pitr import service as pitr

    registry = registry or settings.configured_registry()
    replication = _replication(registry)
    tenants = registry.list_tenants()
    newest = newest_dumps(_control_dsn(), [t.id for t in tenants]) if tenants else {}
    dumps = dumps_due({t.id: registry.tier_of(t).schedule.dump_minutes for t in tenants}, newest, now)
    errors: list[dict[str, str]] = []
    archived = set()
    for server_id in sorted({t.server for t in tenants}):
        try:
            pitr.archive_name(pitr.server_of(registry, server_id))
            archived.add(server_id)
        except InvalidRequest:
            continue  # a server whose WAL we do not archive (a Flexible Server: Azure's own backups)
        except ContinuityError as exc:
            errors.append({"server": server_id, "code": exc.code, "message": str(exc)[:500]})
    intervals = server_intervals((t.server, registry.tier_of(t).schedule.base_backup_hours)
                                 for t in tenants if t.server in archived)
    newest_base: dict[str, datetime | None] = {}
    chains: list[dict[str, Any]] = []
    for server_id in sorted(intervals):
        try:
            found = pitr.facts(registry, server_id)
            pitr.refresh_window(registry, server_id, found)  # each tick keeps the catalog's record current
            archiver = archiver_of(registry, server_id)
        except ContinuityError as exc:
            # An unreadable archive is not "no base backup": take nothing for it this tick, and say why.
            errors.append({"server": server_id, "code": exc.code, "message": str(exc)[:500]})
            continue
        done = [b for b in found.backups if b.done]
        newest_base[server_id] = max((b.begin_time for b in done), default=None)
        broken = chain_break(found.window, archiver)
        until = restorable_until(found.window, found.backups, found.segment_names)
        chains.append({"server": server_id, "break": broken.to_json() if broken else None,
                       "restorable_until": until.isoformat() if until else None,
                       "window": found.window.to_json(), "archiver": archiver.to_json(),
                       "tenants": [{"tenant": t.id, "rpo_minutes": registry.rpo_minutes(t)}
                                   for t in tenants if t.server == server_id]})
    bases = base_backups_due({s: h for s, h in intervals.items() if s in newest_base}, newest_base, now)
    return {"at": now.isoformat(), "dumps": [d.to_json() for d in dumps],
            "base_backups": [d.to_json() for d in bases], "chains": chains, "errors": errors,
            "replication": replication,
            "due": {"dumps": [d.subject for d in dumps if d.due], "base_backups": [d.subject for d in bases if d.due]}}


def take_dump(tenant: str, run_id: str, registry: Registry | None = None) -> dict[str, Any]:
    """A dump of the tenant with the backup job, cataloged at once (the next tick must see it)."""
    from continuity.adapters.tools.backup_taker import take_backup
    from continuity.catalog.service import open_catalog

    log = {"tenant": tenant, "run_id": run_id}
    try:
        stored = take_backup(registry or settings.configured_registry(), tenant)
        outcome = open_catalog(actor=ACTOR).ingest_blob(stored.manifest)
    except ContinuityError as exc:
        logger.warning("scheduled dump failed: %s", exc, extra=log)
        return {"kind": "dump", "subject": tenant, "ok": False, "code": exc.code, "error": str(exc)[:500]}
    logger.info("scheduled dump taken", extra={**log, "backup_id": stored.backup_id})
    return {"kind": "dump", "subject": tenant, "ok": not outcome.rejected, "backup_id": stored.backup_id,
            "size": stored.size, "seconds": round(stored.seconds, 2), "catalog": str(outcome.action)}


def take_base_backup(server: str, run_id: str, registry: Registry | None = None) -> dict[str, Any]:
    """A base backup of the server into its WAL archive (and its tenants' attachments kept)."""
    from continuity.pitr import service as pitr

    log = {"server": server, "run_id": run_id}
    try:
        taken = pitr.take_base_backup(registry or settings.configured_registry(), server)
    except ContinuityError as exc:
        logger.warning("scheduled base backup failed: %s", exc, extra=log)
        return {"kind": "base-backup", "subject": server, "ok": False, "code": exc.code, "error": str(exc)[:500]}
    logger.info("scheduled base backup taken", extra={**log, "base_backup": taken["base_backup"]})
    return {"kind": "base-backup", "subject": server, "ok": True, "base_backup": taken["base_backup"],
            "seconds": taken["seconds"]}


def take_due(now: datetime, run_id: str) -> dict[str, Any]:
    """Survey at ``now`` and take what is due, one after another (``continuity backup --due``)."""
    registry = settings.configured_registry()
    found = survey(now, registry)
    taken = [take_base_backup(s, run_id, registry) for s in found["due"]["base_backups"]]
    taken += [take_dump(t, run_id, registry) for t in found["due"]["dumps"]]
    return {**found, "taken": taken}
