"""Regional failover rules: what a failover touches, whether it may run, and in which order.

The one rule above all others: **never two writable primaries**. The old primary is fenced (made
read-only, or stopped) before the replica is promoted; a promotion is refused unless the fence is
confirmed, or the old primary is unreachable *and* the approver acknowledged exactly that.

Pure: observations come in from adapters (``continuity.adapters.postgres.failover_local`` and
``flexible_server``), decisions come out as sentences (Patroni-style ``*_refusal`` -> ``str | None``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from continuity.approvals.rules import Acknowledgement
from continuity.kernel.errors import Conflict, InvalidRequest
from continuity.kernel.steps import Milestones
from continuity.kernel.tenants import REGION_PATTERN, TENANT_ID_RE, Registry, Tenant

PLATFORM_SCOPE = "platform"
SCOPE_PATTERN = r"^(platform|[a-z][a-z0-9-]{1,39})$"
MAX_REASON_CHARS = 1000


class FailoverState(StrEnum):
    PREFLIGHT = "PREFLIGHT"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    REFUSED = "REFUSED"


class StepName(StrEnum):
    FENCE = "fence"
    PROMOTE = "promote"
    REPOINT = "repoint"
    VERIFY = "verify"
    COPY = "copy"  # drill only: copy the replica into the sandbox


class FindingStatus(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


class FenceState(StrEnum):
    READ_ONLY = "READ_ONLY"      # running, refuses writes (default_transaction_read_only, sessions ended)
    STOPPED = "STOPPED"          # shut down
    UNREACHABLE = "UNREACHABLE"  # could not be reached: not confirmed fenced
    NOT_FENCED = "NOT_FENCED"    # reachable and still accepts writes


def instance_id(scope: str) -> str:
    """One failover per scope: the orchestration instance id."""
    return f"failover-{scope}"


def validate_scope(scope: str) -> str:
    if not re.match(SCOPE_PATTERN, scope):
        raise InvalidRequest(f"scope {scope[:60]!r} must be 'platform' or a tenant id matching "
                             f"{TENANT_ID_RE.pattern}")
    return scope


# ---- what a failover touches -----------------------------------------------------------------


@dataclass(frozen=True)
class ServerPair:
    """A primary server and the replica of it that becomes primary in the target region."""

    primary: str
    replica: str
    primary_region: str
    target_region: str

    def to_json(self) -> dict[str, Any]:
        return {"primary": self.primary, "replica": self.replica, "primary_region": self.primary_region,
                "target_region": self.target_region}


@dataclass(frozen=True)
class FailoverPlan:
    """The servers to swap and the tenants that move with them."""

    scope: str
    target_region: str
    pairs: tuple[ServerPair, ...]
    tenants: tuple[str, ...]
    drill: bool = False
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"scope": self.scope, "target_region": self.target_region, "drill": self.drill,
                "pairs": [p.to_json() for p in self.pairs], "tenants": list(self.tenants), "notes": list(self.notes)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FailoverPlan:
        return cls(scope=raw["scope"], target_region=raw["target_region"], drill=bool(raw.get("drill")),
                   pairs=tuple(ServerPair(**p) for p in raw["pairs"]), tenants=tuple(raw["tenants"]),
                   notes=tuple(raw.get("notes", ())))


def _replica_in(registry: Registry, primary: str, region: str) -> str | None:
    for name, server in registry.servers.items():
        if server.replica_of == primary and server.region == region:
            return name
    return None


def plan_failover(registry: Registry, scope: str, target_region: str, drill: bool = False) -> FailoverPlan:
    """Resolve a scope and a target region into server pairs and affected tenants.

    A tenant-scoped failover moves the tenant's whole server: every tenant on it moves too, and the
    plan says so in ``notes``.

    :raises UnknownTenant: the scope names no tenant.
    :raises InvalidRequest: the region is malformed, or no replica of the affected server lives there.
    :raises Conflict: the affected server already is primary in the target region.
    """
    validate_scope(scope)
    if not re.match(REGION_PATTERN, target_region):
        raise InvalidRequest(f"target_region {target_region[:60]!r} must match {REGION_PATTERN}")
    if scope == PLATFORM_SCOPE:
        chosen: list[Tenant] = registry.list_tenants()
    else:
        chosen = [registry.get_tenant(scope)]
    primaries = sorted({t.server for t in chosen})
    pairs: list[ServerPair] = []
    for primary in primaries:
        server = registry.servers[primary]
        if server.region == target_region:
            raise Conflict(f"server {primary} already is primary in {target_region}; nothing to fail over")
        replica = _replica_in(registry, primary, target_region)
        if replica is None:
            known = sorted({s.region for s in registry.servers.values() if s.replica_of == primary})
            raise InvalidRequest(f"unknown target region {target_region!r} for server {primary}: it has replicas "
                                 f"in {', '.join(known) or 'no region'}")
        pairs.append(ServerPair(primary=primary, replica=replica, primary_region=server.region,
                                target_region=target_region))
    moving = tuple(sorted(t.id for t in registry.list_tenants() if t.server in primaries))
    notes: tuple[str, ...] = ()
    if scope != PLATFORM_SCOPE and len(moving) > 1:
        others = [t for t in moving if t != scope]
        notes = (f"{scope} shares server {', '.join(primaries)} with {', '.join(others)}: they move too",)
    return FailoverPlan(scope=scope, target_region=target_region, pairs=tuple(pairs), tenants=moving,
                        drill=drill, notes=notes)


# ---- preflight -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    check: str
    status: FindingStatus
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "status": str(self.status), "detail": self.detail, "data": self.data}


@dataclass(frozen=True)
class ReplicaObservation:
    server: str
    reachable: bool
    in_recovery: bool | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class PrimaryObservation:
    server: str
    reachable: bool
    read_only: bool | None = None
    detail: str = ""


@dataclass(frozen=True)
class BackupObservation:
    """The newest validated backup of a tenant, as the catalog knows it (None: no validated backup)."""

    tenant: str
    backup_id: str | None
    created_at: datetime | None = None
    catalog_available: bool = True


@dataclass(frozen=True)
class Preflight:
    findings: tuple[Finding, ...]

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.status is FindingStatus.FAIL)

    @property
    def required_acknowledgements(self) -> frozenset[str]:
        acks: set[str] = set()
        for f in self.findings:
            ack = f.data.get("acknowledge")
            if isinstance(ack, str):
                acks.add(ack)
        return frozenset(acks)

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.findings]

    @classmethod
    def from_json(cls, raw: Sequence[Mapping[str, Any]]) -> Preflight:
        return cls(tuple(Finding(check=f["check"], status=FindingStatus(f["status"]), detail=f["detail"],
                                 data=dict(f.get("data", {}))) for f in raw))


def assess_preflight(plan: FailoverPlan, *, replicas: Sequence[ReplicaObservation],
                     primaries: Sequence[PrimaryObservation], backups: Sequence[BackupObservation],
                     credentials: Mapping[str, bool], max_lag_seconds: float) -> Preflight:
    """Findings the approver sees before deciding.

    FAIL blocks the request (replica unreachable or not in recovery, recovery credentials missing);
    WARN needs a named acknowledgement when it changes the risk (primary unreachable: the fence cannot
    be confirmed; lag above the tightest RPO of the moving tenants); a tenant with no validated backup
    is reported, and needs an acknowledgement too.
    """
    findings: list[Finding] = []
    for r in replicas:
        if not r.reachable:
            findings.append(Finding("replica_reachable", FindingStatus.FAIL,
                                    f"replica {r.server} is unreachable: {r.detail or 'no connection'}",
                                    {"server": r.server}))
            continue
        if not r.in_recovery:
            findings.append(Finding("replica_in_recovery", FindingStatus.FAIL,
                                    f"replica {r.server} is not in recovery: it is already a primary; "
                                    "rebuild it as a replica before failing over to it", {"server": r.server}))
            continue
        findings.append(Finding("replica_in_recovery", FindingStatus.OK,
                                f"replica {r.server} is reachable and in recovery", {"server": r.server}))
        lag = {"server": r.server, "lag_bytes": r.lag_bytes, "lag_seconds": r.lag_seconds}
        if r.lag_seconds is not None and r.lag_seconds > max_lag_seconds:
            findings.append(Finding("replication_lag", FindingStatus.WARN,
                                    f"replica {r.server} lags {r.lag_bytes} bytes / {r.lag_seconds:.1f} s, more "
                                    f"than the tightest RPO ({max_lag_seconds:.0f} s) of the moving tenants",
                                    {**lag, "acknowledge": str(Acknowledgement.REPLICATION_LAG)}))
        else:
            shown = "unknown" if r.lag_seconds is None else f"{r.lag_seconds:.1f} s"
            findings.append(Finding("replication_lag", FindingStatus.OK,
                                    f"replica {r.server} lags {r.lag_bytes} bytes / {shown}", lag))
    for p in primaries:
        if not p.reachable:
            findings.append(Finding("primary_reachable", FindingStatus.WARN,
                                    f"primary {p.server} is unreachable: the fence cannot be confirmed, so a "
                                    "promotion risks two writable primaries if it comes back",
                                    {"server": p.server,
                                     "acknowledge": str(Acknowledgement.PRIMARY_UNREACHABLE)}))
        else:
            state = "already read-only" if p.read_only else "accepting writes (it will be fenced first)"
            findings.append(Finding("primary_reachable", FindingStatus.OK, f"primary {p.server} is {state}",
                                    {"server": p.server, "read_only": p.read_only}))
    for b in backups:
        if not b.catalog_available:
            findings.append(Finding("validated_backup", FindingStatus.WARN,
                                    f"{b.tenant}: the backup catalog is not available; newest validated backup "
                                    "unknown", {"tenant": b.tenant}))
        elif b.backup_id is None:
            findings.append(Finding("validated_backup", FindingStatus.WARN,
                                    f"{b.tenant}: no validated backup: if the failover goes wrong there is no "
                                    "proven restore point",
                                    {"tenant": b.tenant, "acknowledge": str(Acknowledgement.NO_VALIDATED_BACKUP)}))
        else:
            at = b.created_at.isoformat() if b.created_at else "unknown time"
            findings.append(Finding("validated_backup", FindingStatus.OK,
                                    f"{b.tenant}: newest validated backup {b.backup_id} ({at})",
                                    {"tenant": b.tenant, "backup_id": b.backup_id}))
    for name, present in sorted(credentials.items()):
        if present:
            findings.append(Finding("recovery_credentials", FindingStatus.OK,
                                    f"recovery credential {name} is present in the secret store", {"secret": name}))
        else:
            findings.append(Finding("recovery_credentials", FindingStatus.FAIL,
                                    f"recovery credential {name} is missing from the secret store; add it "
                                    "before failing over", {"secret": name}))
    return Preflight(tuple(findings))


def failover_refusal(plan: FailoverPlan, preflight: Preflight) -> str | None:
    """Why this failover may not even be put to an approver, or None."""
    if not plan.pairs:
        return f"scope {plan.scope} has no server to fail over"
    blocking = preflight.blocking
    if blocking:
        return "preflight failed: " + "; ".join(f.detail for f in blocking)
    return None


def recovery_secret_name(region: str) -> str:
    """The Key Vault secret holding the PostgreSQL recovery credential usable in ``region``."""
    return f"pg-recovery-{region}"


# ---- execution -------------------------------------------------------------------------------


def plan_steps(drill: bool) -> tuple[StepName, ...]:
    """The steps in order. A drill copies the replica into the sandbox and promotes the copy: it never
    fences the live primary nor repoints routing."""
    if drill:
        return (StepName.COPY, StepName.PROMOTE, StepName.VERIFY)
    return (StepName.FENCE, StepName.PROMOTE, StepName.REPOINT, StepName.VERIFY)


@dataclass(frozen=True)
class FenceResult:
    server: str
    state: FenceState
    detail: str
    final_lsn: str | None = None  # the old primary's WAL end after the fence; the replica must replay up to it

    def to_json(self) -> dict[str, Any]:
        return {"server": self.server, "state": str(self.state), "detail": self.detail, "final_lsn": self.final_lsn}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FenceResult:
        return cls(server=raw["server"], state=FenceState(raw["state"]), detail=raw["detail"],
                   final_lsn=raw.get("final_lsn"))


def promotion_refusal(fence: FenceResult | None, acknowledged: frozenset[str], drill: bool) -> str | None:
    """Why the replica may not be promoted now, or None: the never-two-writable-primaries rule.

    A drill promotes a sandbox copy that no client can reach, so it needs no fence.
    """
    if drill:
        return None
    if fence is None:
        return "the old primary has not been fenced: fence before promote"
    if fence.state in (FenceState.READ_ONLY, FenceState.STOPPED):
        return None
    if fence.state is FenceState.UNREACHABLE:
        if str(Acknowledgement.PRIMARY_UNREACHABLE) in acknowledged:
            return None
        return (f"old primary {fence.server} is unreachable and the approver did not acknowledge "
                f"{Acknowledgement.PRIMARY_UNREACHABLE}: refusing to risk two writable primaries")
    return f"old primary {fence.server} still accepts writes ({fence.detail}): refusing to promote"


def drill_refusal(target_host: str, target_tcp: bool, live_hosts: Sequence[str]) -> str | None:
    """Why a drill target is not a safe sandbox copy, or None."""
    if target_tcp:
        return f"drill target {target_host} accepts TCP; a drill copy must listen on a unix socket only"
    if target_host in live_hosts:
        return f"drill target {target_host} is a live server; a drill must never touch the live primary or replica"
    return None


# The first successful promote makes the target writable again; a failover reports no outage of its own.
MILESTONES = Milestones(live_key="approval_to_writable", live_step=StepName.PROMOTE)
