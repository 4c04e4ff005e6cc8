"""Point-in-time recovery of the servers we run: the archive's window, base backups, rewinds, the nightly proof.

:mod:`continuity.pitr.rules` decides; the local stack (the sandbox's throwaway clusters) and Barman's cloud
clients (:mod:`continuity.adapters.tools.barman_cloud`) do the work. Every rewound copy lives in the sandbox
(unix socket only, checked after start), never archives, and is removed whatever happened.

Supported servers: local clusters (``make run``, tests). PostgreSQL on VMs or AKS would use the same Barman
layout with the rewind run in the Function App's image (it carries the server binaries); Flexible Servers keep
Azure's own point-in-time restore (continuity.validation.pitr).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from continuity.kernel import settings
from continuity.kernel.errors import ContinuityError, InvalidRequest, SandboxNotIsolated
from continuity.kernel.tenants import Registry, Server, ServerKind, Tenant
from continuity.pitr.rules import (
    BaseBackup,
    RecoveryWindow,
    choose_base_backup,
    first_gap,
    point_in_time_refusal,
    recovery_settings,
    segment_number,
    segments_between,
    stop_time_from_log,
    window_of,
)

logger = logging.getLogger(__name__)

ARCHIVE_WAIT_SECONDS = 120.0
REWIND_TIMEOUT_SECONDS = 3600.0


class RecoveryChainBroken(ContinuityError):
    """The archive cannot replay to the target: a segment is missing or unreadable (named in the message)."""

    code = "recovery_chain_broken"


class PointInTimeUnavailable(ContinuityError):
    """The target time cannot be served by the server's archive (why, in the message)."""

    code = "point_in_time_unavailable"


def _stack() -> Any:
    from continuity.adapters.local.local_stack import LocalStack

    return LocalStack()


def archive_name(server: Server) -> str:
    """The server's folder in the WAL archive (Barman's server name)."""
    if server.kind is not ServerKind.LOCAL_CLUSTER or server.cluster != "primary":
        raise InvalidRequest(f"this server ({server.kind}, {server.cluster or server.host}) does not archive WAL to "
                             "our Barman archive: point-in-time recovery of a Flexible Server uses Azure's own "
                             "restore (continuity validate --pitr)")
    return str(_stack().archive_name())


def server_of(registry: Registry, server_id: str) -> Server:
    try:
        return registry.servers[server_id]
    except KeyError as exc:
        raise InvalidRequest(f"no server {server_id[:60]!r} in the registry "
                             f"(known: {', '.join(sorted(registry.servers))})") from exc


def archived_servers(registry: Registry) -> list[str]:
    """The registry's servers whose WAL we archive."""
    out = []
    for server_id, server in sorted(registry.servers.items()):
        try:
            archive_name(server)
        except InvalidRequest:
            continue
        out.append(server_id)
    return out


# ---- the archive's facts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveFacts:
    server: str
    backups: list[BaseBackup]
    window: RecoveryWindow
    segment_names: list[str]


def facts(registry: Registry, server_id: str) -> ArchiveFacts:
    """Base backups, segments and the recovery window, read from storage alone."""
    from continuity.adapters.storage.blob_store import BlobStore

    name = archive_name(server_of(registry, server_id))
    barman = _stack().barman()
    backups = barman.base_backups(name)
    segments = barman.segments(name, BlobStore(barman.connection_string))
    return ArchiveFacts(server_id, backups, window_of(server_id, backups, segments), [s.name for s in segments])


def window(registry: Registry, server_id: str) -> dict[str, Any]:
    """The server's window read from storage now, and recorded in the catalog (see :func:`refresh_window`)."""
    return refresh_window(registry, server_id)


def refresh_window(registry: Registry, server_id: str, found: ArchiveFacts | None = None) -> dict[str, Any]:
    """Rebuild the catalog's record of the server's archive from storage alone: base backups, the window."""
    from continuity.adapters.postgres import archive_catalog
    from continuity.adapters.postgres.control_db import prepare

    found = found or facts(registry, server_id)
    shown = {**found.window.to_json(), "base_backups_list": [b.to_json() for b in found.backups]}
    archive_catalog.record(prepare(), found.window.to_json(), archive_name(server_of(registry, server_id)),
                           shown["base_backups_list"], datetime.now(UTC))
    return shown


def recorded_windows(servers: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The archive windows as the catalog last recorded them (no storage listing): for pages and the RPO."""
    from continuity.adapters.postgres import archive_catalog
    from continuity.adapters.postgres.control_db import prepare

    return archive_catalog.windows(prepare(), servers)


def take_base_backup(registry: Registry, server_id: str) -> dict[str, Any]:
    """A base backup of the server into the archive, then the attachments of its tenants kept."""
    archive_name(server_of(registry, server_id))
    started = time.monotonic()
    backup_id = _stack().base_backup()
    kept = {t.id: _keep_or_say_why(registry, t) for t in registry.list_tenants() if t.server == server_id}
    refresh_window(registry, server_id)
    return {"server": server_id, "base_backup": backup_id, "seconds": round(time.monotonic() - started, 2),
            "attachments_kept": kept}


def force_archive(registry: Registry, server_id: str, restore_point: str | None = None,
                  wait_seconds: float = ARCHIVE_WAIT_SECONDS) -> dict[str, Any]:
    """On the live server: a commit after now (so a target just before it can be reached), an optional named
    restore point, a WAL switch, then wait until that segment is in the archive.

    :raises ServerUnavailable: the server cannot be reached or its archiver did not ship the segment in time.
    """
    from continuity.adapters.postgres.connection import server_dsn
    from continuity.adapters.postgres.wal_archiver import ship_current_wal

    server = server_of(registry, server_id)
    return ship_current_wal(server_dsn(server, "postgres"), server_id, restore_point, wait_seconds)


# ---- rewinds ---------------------------------------------------------------------------------------


@dataclass
class Rewound:
    """A server rewound in the sandbox: where it listens (a unix socket) and what it replayed."""

    name: str
    server: str
    port: int
    target: datetime | None
    target_name: str | None
    base_backup: BaseBackup
    wal_first: str
    wal_last: str
    reached: datetime | None
    restore_seconds: float
    replay_seconds: float

    def dsn(self, dbname: str = "postgres") -> str:
        return _stack().rewound_dsn(self.port, dbname)

    def to_json(self) -> dict[str, Any]:
        segments = len(segments_between(self.wal_first, self.wal_last))
        return {"copy": self.name, "server": self.server, "target": self.target.isoformat() if self.target else None,
                "target_name": self.target_name, "base_backup": self.base_backup.to_json(),
                "wal_first": self.wal_first, "wal_last": self.wal_last,
                "reached": self.reached.isoformat() if self.reached else None,
                "restore_seconds": round(self.restore_seconds, 2), "replay_seconds": round(self.replay_seconds, 2),
                "wal_segments": segments, "replay_mb_per_s": round(segments * 16 / max(self.replay_seconds, 0.001), 1)}


def copy_name(run_id: str) -> str:
    import hashlib

    return "copy-" + hashlib.sha256(run_id.encode()).hexdigest()[:12]


@contextmanager
def rewound(registry: Registry, server_id: str, run_id: str, *, target: datetime | None = None,
            target_name: str | None = None, now: datetime | None = None) -> Iterator[Rewound]:
    """The server rewound to ``target`` (a time) or ``target_name`` (a restore point) in the sandbox, removed
    on exit whatever happened.

    :raises PointInTimeUnavailable: the archive's window does not hold the target.
    :raises RecoveryChainBroken: a segment between the base backup and the newest is missing, or replay
        stopped before the target (the last segment it read is named).
    """
    stack = _stack()
    found = facts(registry, server_id)
    moment = now or datetime.now(UTC)
    if target is not None:
        refusal = point_in_time_refusal(found.window, target, moment)
        if refusal:
            raise (RecoveryChainBroken if found.window.gap else PointInTimeUnavailable)(refusal)
    chosen = choose_base_backup(found.backups, target or moment)
    if chosen is None:
        raise PointInTimeUnavailable(f"server {server_id} has no complete base backup before "
                                     f"{(target or moment).isoformat()}")
    newest = found.window.newest_segment or chosen.end_wal
    missing = first_gap(found.segment_names, chosen.begin_wal, newest)
    if missing is not None:
        raise RecoveryChainBroken(f"WAL segment {missing} of {server_id} is missing from the archive: replay from "
                                  f"base backup {chosen.backup_id} ({chosen.begin_wal}) cannot pass it")
    name = copy_name(run_id)
    started = time.monotonic()
    try:
        stack.restore_base_backup(name, chosen.backup_id)
        restored = time.monotonic()
        port = stack.rewound_port(name)
        started_ok = stack.start_rewound(name, recovery_settings(
            port=port, socket_dir=str(stack.socket_dir), restore_command=f"{stack.restore_script} %f %p",
            target=target, target_name=target_name), timeout=REWIND_TIMEOUT_SECONDS)
        if not started_ok:
            raise RecoveryChainBroken(_replay_failure(stack.rewound_log(name), chosen))
        _wait_promoted(stack, name, port, chosen)
        replayed = time.monotonic()
        reached, last = _replay_facts(stack, name, port)
        copy = Rewound(name=name, server=server_id, port=port, target=target, target_name=target_name,
                       base_backup=chosen, wal_first=chosen.begin_wal, wal_last=last or chosen.end_wal,
                       reached=reached, restore_seconds=restored - started, replay_seconds=replayed - restored)
        logger.info("server rewound in the sandbox", extra={"server": server_id, "copy": name,
                                                             "base_backup": chosen.backup_id})
        yield copy
    finally:
        stack.remove_rewound(name)


def _wait_promoted(stack: Any, name: str, port: int, base: BaseBackup) -> None:
    from continuity.adapters.postgres.wal_archiver import recovery_state

    deadline = time.monotonic() + REWIND_TIMEOUT_SECONDS
    while True:
        if not stack.rewound_running(name):
            raise RecoveryChainBroken(_replay_failure(stack.rewound_log(name), base))
        state = recovery_state(stack.rewound_dsn(port))
        if state is not None and state[1] != "":
            raise SandboxNotIsolated(f"the rewound copy {name} listens on {state[1]!r}: refused")
        if state is not None and not state[0]:
            return
        if time.monotonic() > deadline:
            raise RecoveryChainBroken(f"replay did not finish within {REWIND_TIMEOUT_SECONDS:.0f} s")
        # Polling a starting server: PostgreSQL has no notification for "recovery finished".
        time.sleep(0.2)


def _replay_failure(log: str, base: BaseBackup) -> str:
    import re

    restored = re.findall(r'restored log file "([0-9A-F]{24})" from archive', log)
    last = restored[-1] if restored else None
    after = None
    if last:
        from continuity.pitr.rules import segment_after

        after = segment_after(last)
    fatal = next((ln.split("FATAL:", 1)[1].strip() for ln in reversed(log.splitlines()) if "FATAL:" in ln), "")
    where = (f"replay read {last} last and could not continue into {after} (missing or corrupted)"
             if last else f"no segment after base backup {base.backup_id} ({base.begin_wal}) could be read")
    return f"the rewound copy stopped before its target: {where}" + (f"; PostgreSQL: {fatal}" if fatal else "")


def _replay_facts(stack: Any, name: str, port: int) -> tuple[datetime | None, str | None]:
    import re

    from continuity.adapters.postgres.wal_archiver import last_replayed_commit

    log = stack.rewound_log(name)
    reached = stop_time_from_log(log) or last_replayed_commit(stack.rewound_dsn(port))
    restored = re.findall(r'restored log file "([0-9A-F]{24})" from archive', log)
    last = max(restored, key=segment_number) if restored else None
    return reached, last


# ---- one tenant out of a rewound server -------------------------------------------------------------


def extract_tenant(registry: Registry, tenant: Tenant, copy: Rewound) -> dict[str, Any]:
    """The tenant's database as it was at the copy's target, stored and cataloged as a point-in-time extract
    (a dump + manifest like any backup, kind ``point-in-time``); only this tenant's database is read."""
    from continuity.adapters.tools.backup_taker import take_backup
    from continuity.catalog.manifest import PointInTime

    target = copy.target or copy.reached or datetime.now(UTC)
    stored = take_backup(registry, tenant.id, source_dsn=copy.dsn(tenant.database),
                         point_in_time=PointInTime(target=target, reached=copy.reached, server=copy.server,
                                                   base_backup=copy.base_backup.backup_id,
                                                   wal_first=copy.wal_first, wal_last=copy.wal_last))
    _catalog_now(stored)
    return {"backup_id": stored.backup_id, "dump_sha256": stored.sha256, "size": stored.size,
            "seconds": round(stored.seconds, 2)}


def _catalog_now(stored: Any) -> None:
    """Catalog the extract at once (the BlobCreated event would too, later): the recovery reads it next."""
    from continuity.catalog.service import open_catalog

    catalog = open_catalog()
    catalog.ingest_blob(stored.manifest)


# ---- attachments kept by the product ----------------------------------------------------------------


def _keep_or_say_why(registry: Registry, tenant: Tenant) -> dict[str, Any]:
    """The base backup is stored whatever happens here: a tenant whose database is missing or unreachable
    gets its reason, the others their copies."""
    try:
        return keep_attachments(registry, tenant)
    except Exception as exc:  # noqa: BLE001 - psycopg's errors reach a service only as Exception
        return {"error": (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}


def keep_attachments(registry: Registry, tenant: Tenant) -> dict[str, Any]:
    """Copy every attachment file the tenant's live database references, and the kept store lacks, into the
    kept container. The filestore is content-addressed (a name is its sha1), so a file never changes, it only
    goes away: this copy is what brings back files deleted after a recovery target on stores without blob
    versioning (Azurite). In Azure, versioning and soft delete do it as well; the copy is then a second
    line."""
    from continuity.adapters.postgres.connection import server_dsn
    from continuity.adapters.postgres.tenant_recovery import referenced_attachments
    from continuity.adapters.storage.blob_store import BlobStore

    blobs = BlobStore()
    source = settings.get("CONTINUITY_ATTACHMENT_CONTAINER")
    keep = settings.get("CONTINUITY_ATTACHMENT_KEEP_CONTAINER")
    referenced = referenced_attachments(server_dsn(registry.server_of(tenant), tenant.database))
    kept = {n.removeprefix(tenant.attachments) for n in blobs.list_names(keep, prefix=tenant.attachments)}
    present = {n.removeprefix(tenant.attachments) for n in blobs.list_names(source, prefix=tenant.attachments)}
    copied, absent = 0, []
    for name in sorted(set(referenced) - kept):
        if name not in present:
            absent.append(name)
            continue
        blobs.upload(keep, tenant.attachments + name, blobs.download(source, tenant.attachments + name),
                     overwrite=True)
        copied += 1
    return {"referenced": len(referenced), "copied": copied, "already_kept": len(set(referenced) & kept),
            "absent": absent[:20]}


# ---- the nightly proof of the archive ----------------------------------------------------------------


def prove_archive(registry: Registry, server_id: str, run_id: str, sample_rate: float = 1.0) -> dict[str, Any]:
    """Prove the server's archive restores: a named restore point on the live server, its segment shipped,
    then the newest base backup restored and replayed to that point in the sandbox, each tenant's checks
    run on the rewound copy, the copy removed. Recorded in the evidence chain, pass or fail; a missing or
    corrupted segment fails the proof naming it."""
    from continuity.adapters.postgres import pitr_checks
    from continuity.adapters.postgres.check_runner import AttachmentStore
    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.pitr.rules import restore_point_name
    from continuity.validation.checks import CheckStatus
    from continuity.validation.wiring import open_recording

    started_at = datetime.now(UTC)
    started = time.monotonic()
    point = restore_point_name(run_id)
    tenants = [t for t in registry.list_tenants() if t.server == server_id]
    result: dict[str, Any] = {"server": server_id, "run_id": run_id, "restore_point": point,
                              "started_at": started_at.isoformat(), "tenants": {}}
    try:
        result["archive"] = force_archive(registry, server_id, restore_point=point)
        with rewound(registry, server_id, run_id, target_name=point) as copy:
            result["rewind"] = copy.to_json()
            blobs = BlobStore()
            container = settings.get("CONTINUITY_ATTACHMENT_CONTAINER")
            store = AttachmentStore(list_names=lambda prefix: blobs.list_names(container, prefix=prefix),
                                    read=lambda name: blobs.download(container, name))
            for tenant in tenants:
                checked = time.monotonic()
                checks, size = pitr_checks.run_pitr_checks(copy.dsn(tenant.database), tenant,
                                                           sample_rate=sample_rate, seed=run_id,
                                                           attachment_store=store)
                failed = [c.id for c in checks if c.status is CheckStatus.FAIL]
                seconds = copy.restore_seconds + copy.replay_seconds + (time.monotonic() - checked)
                rto_s = registry.rto_minutes(tenant) * 60
                result["tenants"][tenant.id] = {
                    "failed_checks": failed, "size": size, "seconds": round(seconds, 2), "rto_seconds": rto_s,
                    "within_rto": seconds <= rto_s,
                    "checks": {c.id: {"status": str(c.status), "detail": c.detail} for c in checks}}
        failed_tenants = sorted(t for t, r in result["tenants"].items() if r["failed_checks"] or not r["within_rto"])
        result["ok"] = not failed_tenants
        result["reason"] = (f"checks failed or RTO missed for {', '.join(failed_tenants)}" if failed_tenants else
                            f"replayed to restore point {point} from base backup "
                            f"{result['rewind']['base_backup']['backup_id']} "
                            f"({result['rewind']['wal_segments']} segments); {len(tenants)} tenant(s) checked")
    except ContinuityError as exc:
        result["ok"] = False
        result["reason"] = str(exc)
        result["code"] = exc.code
    result["seconds"] = round(time.monotonic() - started, 2)
    result["finished_at"] = datetime.now(UTC).isoformat()
    try:
        result["window"] = refresh_window(registry, server_id)
    except ContinuityError as exc:  # the proof's verdict stands; the record is refreshed next time
        result["window"] = {"error": str(exc)}
    _, evidence, _ = open_recording()
    record = evidence.append(actor="validation", action="pitr.archive_proof" if result["ok"] else
                             "pitr.archive_proof_failed", subject=f"servers/{server_id}/archive", data=result,
                             idempotency_key=f"archive-proof:{run_id}")
    result["evidence_seq"] = getattr(record, "seq", None)
    logger.info("archive proof", extra={"server": server_id, "run_id": run_id, "ok": result["ok"]})
    return result


def nightly_proof(registry: Registry, server_id: str, run_id: str) -> dict[str, Any]:
    """The nightly's proof of one archived server; a server whose archive holds no base backup yet is
    reported as not provable (nothing can be restored from it) without a rewind."""
    found = facts(registry, server_id)
    if not any(b.done for b in found.backups):
        return {"server": server_id, "run_id": run_id, "ok": None, "skipped": True,
                "reason": f"no base backup in the archive of {server_id} yet: point-in-time recovery is not "
                          f"possible until one is taken (`continuity pitr base-backup {server_id}`)"}
    return prove_archive(registry, server_id, run_id)


# ---- retention of the archive ------------------------------------------------------------------------


def apply_archive_retention(registry: Registry, server_id: str, now: datetime | None = None,
                            dry_run: bool = False, actor: str = "retention") -> dict[str, Any]:
    """Delete the base backups (and, with them, the WAL) the server's tenants' tiers no longer need, with
    Barman's own ``barman-cloud-backup-delete``; the strictest tier on the server decides. Recorded."""
    from continuity.pitr.rules import plan_archive_retention
    from continuity.validation.wiring import open_recording

    name = archive_name(server_of(registry, server_id))
    moment = now or datetime.now(UTC)
    policies = [registry.tiers[t.tier].retention for t in registry.list_tenants() if t.server == server_id]
    found = facts(registry, server_id)
    plan = plan_archive_retention(
        found.backups, window_days=max((p.pitr_window_days for p in policies), default=7),
        min_base_backups=max((p.base_backups_min for p in policies), default=2),
        immutable_days=max((p.immutable_days for p in policies), default=0), now=moment)
    deleted: list[str] = []
    if not dry_run:
        barman = _stack().barman()
        for backup_id, _ in plan.delete:
            barman.delete_backup(name, backup_id)
            deleted.append(backup_id)
    after = facts(registry, server_id) if deleted else found
    refresh_window(registry, server_id, after)
    result = {"server": server_id, "as_of": moment.isoformat(), "dry_run": dry_run, "plan": plan.to_json(),
              "deleted": deleted, "window_after": after.window.to_json()}
    if not dry_run:
        _, evidence, _ = open_recording()
        record = evidence.append(actor=actor, action="retention.archive", subject=f"servers/{server_id}/archive",
                                 data=result)
        result["evidence_seq"] = getattr(record, "seq", None)
    return result


def archive_retention_for_run(registry: Registry, as_of: datetime) -> list[dict[str, Any]]:
    """The daily retention run's part for the WAL archive: every archived server holding base backups."""
    results = []
    for server_id in archived_servers(registry):
        if not any(b.done for b in facts(registry, server_id).backups):
            continue  # nothing archived to keep or delete yet
        results.append(apply_archive_retention(registry, server_id, as_of))
    return results
