"""What the pages show, gathered from the catalog, the evidence store and the running workflows.

The HTTP triggers (:mod:`triggers.pages`) authorise the caller and read the Durable instances' statuses
(only a trigger holds the Durable client); these use cases read the rest and hand plain facts to the pure
renderers (:mod:`continuity.pages.html`, :mod:`continuity.pages.tenant`). Scope: every function takes the
caller and shows nothing outside its tenant scope, by the same rules as the JSON API.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from continuity.approvals.pending import PendingApproval, pending_approvals, visible_to
from continuity.incidents.open import OpenIncident, open_incidents
from continuity.kernel import settings
from continuity.kernel.errors import InvalidRequest
from continuity.kernel.identity import Principal, require_scope
from continuity.pages.html import OpenWork
from continuity.pages.tenant import Bundle, EvidenceView, TenantView, run_line
from continuity.validation.estate import EstateRow

# instance id, orchestration name, custom status, input: what the trigger reads of each running instance
Instance = tuple[str, str | None, Any, Any]
BUNDLE_PREFIX = "bundles/failover/"
BUNDLE_INSTANCE_RE = re.compile(r"^failover-(platform|[a-z][a-z0-9-]{1,39})$")
BUNDLE_RUN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
LISTED_BACKUPS = 20


@dataclass(frozen=True)
class Estate:
    rows: list[EstateRow]  # worst first
    open_work: dict[str, OpenWork]
    platform_approvals: int


def _pending(instances: Iterable[Instance], principal: Principal, now: datetime) -> list[PendingApproval]:
    return pending_approvals(((i, n, c) for i, n, c, _ in instances), principal, now)


def estate(principal: Principal, instances: Iterable[Instance], now: datetime) -> Estate:
    """Every tenant in the caller's scope (one catalog query), with its open incidents and pending approvals."""
    from continuity.validation.wiring import estate as estate_rows

    listed = list(instances)
    rows = estate_rows(principal.tenants)
    shown = {r.tenant for r in rows}
    work: dict[str, OpenWork] = {}
    for tenant, incidents in open_incidents(listed).items():
        if tenant in shown:
            work[tenant] = OpenWork(incidents=len(incidents))
    platform = 0
    for item in _pending(listed, principal, now):
        if item.kind == "failover" and item.subject == "platform":
            platform += 1
        elif item.subject in shown:
            before = work.get(item.subject, OpenWork())
            work[item.subject] = OpenWork(before.incidents, before.approvals + 1)
    return Estate(rows, work, platform)


def tenant_view(tenant: str, principal: Principal, instances: Iterable[Instance], now: datetime) -> TenantView:
    """One tenant's page: its estate row, last runs with checks, newest backups, open incidents and approvals.

    The caller's scope was checked on the tenant as named (the trigger's rule); an unregistered tenant raises.

    :raises UnknownTenant: not in the registry (404).
    """
    from continuity.adapters.postgres.catalog_store import PgCatalogStore
    from continuity.adapters.postgres.control_db import prepare
    from continuity.adapters.postgres.page_queries import tenant_runs
    from continuity.validation.wiring import estate as estate_rows
    from continuity.validation.wiring import registry_from_settings

    registered = registry_from_settings().get_tenant(tenant).id
    listed = list(instances)
    dsn = prepare()
    row = estate_rows([registered], dsn)[0]
    runs = tuple(run_line(r) for r in tenant_runs(dsn, registered))
    backups, _ = PgCatalogStore(dsn).list_backups(registered, limit=LISTED_BACKUPS)
    incidents: tuple[OpenIncident, ...] = tuple(open_incidents(listed).get(registered, []))
    approvals = tuple(p for p in _pending(listed, principal, now) if p.subject == registered)
    return TenantView(row=row, runs=runs, backups=tuple(backups), incidents=incidents, approvals=approvals,
                      archive=_archive_of(registered))


def _archive_of(tenant: str) -> dict[str, Any] | None:
    """The tenant's server's WAL archive as the catalog recorded it, or None when we do not archive it."""
    from continuity.kernel.errors import InvalidRequest
    from continuity.pitr import service as pitr
    from continuity.validation.wiring import registry_from_settings

    registry = registry_from_settings()
    server_id = registry.get_tenant(tenant).server
    try:
        pitr.archive_name(pitr.server_of(registry, server_id))
    except InvalidRequest:
        return None
    return pitr.recorded_windows([server_id]).get(server_id) or {"earliest": None, "latest": None, "gap": None}


def visible_bundles(names: Iterable[str], principal: Principal) -> tuple[Bundle, ...]:
    found = []
    for name in names:
        parts = name.removeprefix(BUNDLE_PREFIX).split("/")
        if not name.startswith(BUNDLE_PREFIX) or len(parts) != 2 or not parts[1].endswith(".json"):
            continue
        instance, run = parts[0], parts[1].removesuffix(".json")
        if not (BUNDLE_INSTANCE_RE.match(instance) and BUNDLE_RUN_RE.match(run)):
            continue
        if visible_to(principal, "failover", instance.removeprefix("failover-")):
            found.append(Bundle(instance, run, name))
    return tuple(sorted(found, key=lambda b: (b.instance_id, b.run_id)))


def evidence_view(principal: Principal) -> EvidenceView:
    """The chain head, the newest checkpoint and the failover bundles the caller's scope covers."""
    from continuity.adapters.postgres.control_db import prepare
    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.adapters.storage.evidence_store import EvidenceStore

    blobs = BlobStore()
    store = EvidenceStore(prepare(), blobs)
    head = store.head()
    checkpoint = store.reader.newest_checkpoint()
    blobs.ensure_containers([store.container])
    enforced = ("version-level immutability enforced by the storage account" if blobs.enforces_immutability()
                else "not enforced by this store (Azurite has no immutability policies)")
    return EvidenceView(head_seq=head.seq, head_hash=head.hash,
                        checkpoint_seq=checkpoint.seq if checkpoint else None,
                        checkpoint_hash=checkpoint.hash if checkpoint else None,
                        checkpoint_at=checkpoint.at if checkpoint else None, immutability=enforced,
                        bundles=visible_bundles(blobs.list_names(store.container, prefix=BUNDLE_PREFIX), principal))


def bundle(instance: str, run: str, principal: Principal) -> bytes:
    """One failover bundle's bytes, as stored in the evidence container.

    :raises InvalidRequest: not a failover instance id or run id. :raises Forbidden: outside the caller's scope.
    :raises BackupNotFound: no such bundle (404).
    """
    from continuity.adapters.storage.blob_store import BlobStore

    if not BUNDLE_INSTANCE_RE.match(instance) or not BUNDLE_RUN_RE.match(run):
        raise InvalidRequest("path: a bundle is named by a failover instance id (failover-SCOPE) and its run id")
    require_scope(principal, instance.removeprefix("failover-"), f"read the evidence bundle of {instance}")
    return BlobStore().download(settings.get("CONTINUITY_EVIDENCE_CONTAINER"), f"{BUNDLE_PREFIX}{instance}/{run}.json")


def statuses_of(found: Iterable[Any]) -> list[Instance]:
    """``(id, name, custom status, input)`` of the Durable client's status objects."""
    return [(str(s.instance_id), getattr(s, "name", None), s.custom_status, getattr(s, "input_", None))
            for s in found]

