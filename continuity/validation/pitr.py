"""Point-in-time restore validation on Azure Database for PostgreSQL Flexible Server: pure decisions.

For a tenant whose server is a Flexible Server, restore validation can prove the service's own
point-in-time restore instead of (or besides) our logical dumps: Azure creates a *new* server from the
source as it was at a chosen moment, in an isolated network; the same checks then run over psycopg;
the new server is deleted whatever happened. This module decides, without I/O:

* :func:`choose_restore_point`: an explicit time, or the newest point Azure can restore, inside the
  window ``[earliest restore date, now - RESTORE_LAG]``;
* :func:`target_server_name`: ``pitr-{tenant}-{yyyymmddhhmm}`` within Azure's server-name rules;
* :func:`isolation_from` / :func:`isolation_refusal` / :func:`restore_network`: how the restored server is
  isolated, decided by the source's network mode as Azure allows it (a public-access source restores to
  public access, then gets a private endpoint in the isolated subnet; a VNet-integrated source restores into
  the isolated delegated subnet), or the run is refused before anything is created;
* :func:`next_poll`: after one GET of the long-running operation, wait (a durable timer, never a sleep),
  done, failed or timed out;
* :func:`conclude_pitr`: the verdict over the checks, with the objectives a PITR measures.

What a PITR cannot check: there is no manifest, so row counts and the ledger's totals/fingerprint
(which compare against a logical backup's manifest) are reported *unavailable*, never passed; the
ledger's own consistency (balanced moves, zero trial balance, no dangling line) is still checked.

Honesty note: nothing here, nor the adapter, has run against real Azure from this repository; the
ARM exchange is proven at the HTTP transport level with ARM's documented response shapes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from continuity.kernel.errors import ContinuityError, InvalidRequest, SandboxNotIsolated
from continuity.validation import checks as rc
from continuity.validation.checks import CheckId, CheckResult, CheckStatus, Objectives, Verdict

# Azure restores up to a few minutes before now (WAL is archived about every five minutes).
RESTORE_LAG = timedelta(minutes=5)
# Flexible Server keeps 7 days of backups unless configured otherwise (7-35).
DEFAULT_RETENTION_DAYS = 7
MIN_POLL_SECONDS = 5
DEFAULT_POLL_SECONDS = 30
DEFAULT_TIMEOUT_MINUTES = 60
# Azure's rule for Flexible Server names: 3-63 chars, lowercase letters, digits and hyphens,
# starting with a letter or digit and not ending with a hyphen.
SERVER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
SUBNET_ID_RE = re.compile(
    r"^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[-\w._()]{1,90}/providers/Microsoft\.Network/"
    r"virtualNetworks/[-\w._]{2,64}/subnets/[-\w._]{1,80}$", re.IGNORECASE)
DNS_ZONE_ID_RE = re.compile(
    r"^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[-\w._()]{1,90}/providers/Microsoft\.Network/"
    r"privateDnsZones/[a-z0-9][a-z0-9.-]*\.postgres\.database\.azure\.com$", re.IGNORECASE)

# Checks that compare against a logical backup's manifest: a PITR has none.
MANIFEST_BOUND = (CheckId.ROW_COUNTS,)
NO_MANIFEST = "a point-in-time restore has no manifest to compare against (row counts are compared for logical backups)"


class RestoreFailed(ContinuityError):
    """Azure reported the restore operation Failed or Canceled."""

    code = "pitr_restore_failed"
    http_status = 502


class OperationState(StrEnum):
    """ARM's async-operation status values (``Azure-AsyncOperation`` GET body ``status``)."""

    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"


class NetworkMode(StrEnum):
    """How the restored server is reached, fixed by the source's network mode.

    Microsoft Learn, *Backup and restore in Azure Database for PostgreSQL flexible server*, "Restore and
    networking" (MicrosoftDocs/azure-databases-docs, articles/postgresql/flexible-server/concepts-backup-restore.md
    @ 8b651bcfc4d2b708cf0e0d9ef554af05a868b542): "If your source server is configured with a *public access*
    network, you can only restore to public access. If your source server is configured with a *private access*
    virtual network, you can restore either to the same virtual network or to a different virtual network. You
    can't perform PITR across public and private access." and, after a restore, "private endpoints ... are not
    copied over from the original server".
    """

    # Public-access source (no delegatedSubnetResourceId): restored with public network access disabled, then
    # reached through a private endpoint of its own in the isolated subnet (DNS: privatelink zone).
    PRIVATE_ENDPOINT = "private-endpoint"
    # VNet-integrated source: restored into the isolated delegated subnet with its private DNS zone.
    DELEGATED_SUBNET = "delegated-subnet"


# The private DNS zone of Flexible Server private endpoints (group id postgresqlServer); Microsoft Learn,
# *Azure Private Endpoint private DNS zone values*: Microsoft.DBforPostgreSQL/flexibleServers ->
# privatelink.postgres.database.azure.com.
PRIVATE_LINK_ZONE = "privatelink.postgres.database.azure.com"
PRIVATE_LINK_GROUP = "postgresqlServer"


@dataclass(frozen=True)
class Isolation:
    """Where the restored server lives: the isolated subnet and private DNS zone, and how it is reached there."""

    subnet_id: str
    dns_zone_id: str
    mode: NetworkMode = NetworkMode.DELEGATED_SUBNET

    def to_json(self) -> dict[str, str]:
        return {"subnet_id": self.subnet_id, "dns_zone_id": self.dns_zone_id, "mode": str(self.mode)}


def endpoint_name(server_name: str) -> str:
    """The restored server's private endpoint (created and deleted by the run): ``{server}-pe``."""
    return f"{server_name}-pe"


def _zone_name(dns_zone_id: str) -> str:
    return dns_zone_id.rsplit("/", 1)[-1].lower()


def network_refusal(isolation: Isolation, source_delegated_subnet_id: str | None) -> str | None:
    """Why the isolated network cannot host a restore of this source, or None when it can."""
    zone = _zone_name(isolation.dns_zone_id)
    if isolation.mode is NetworkMode.PRIVATE_ENDPOINT:
        if zone != PRIVATE_LINK_ZONE:
            return (f"the source is a public-access server: Azure restores it only to public access, so the restored "
                    f"server is reached through a private endpoint, whose DNS zone must be {PRIVATE_LINK_ZONE} "
                    f"(CONTINUITY_PITR_DNS_ZONE_ID names {zone})")
        return None
    if zone == PRIVATE_LINK_ZONE:
        return (f"the source is integrated into a virtual network: Azure restores it only into a delegated subnet "
                f"with a *.postgres.database.azure.com private DNS zone other than {PRIVATE_LINK_ZONE} "
                "(CONTINUITY_PITR_DNS_ZONE_ID)")
    if source_delegated_subnet_id and source_delegated_subnet_id.lower() == isolation.subnet_id.lower():
        return ("CONTINUITY_PITR_SUBNET_ID is the source server's own subnet: the restored copy must live in an "
                "isolated subnet, not beside production")
    return None


def restore_network(isolation: Isolation, source_delegated_subnet_id: str | None) -> Isolation:
    """The isolation for this source: its network mode (read from ARM) decides how the restored server is reached.

    :raises SandboxNotIsolated: the configured network cannot host this source's restore (names why).
    """
    mode = NetworkMode.DELEGATED_SUBNET if source_delegated_subnet_id else NetworkMode.PRIVATE_ENDPOINT
    decided = Isolation(isolation.subnet_id, isolation.dns_zone_id, mode)
    reason = network_refusal(decided, source_delegated_subnet_id)
    if reason:
        raise SandboxNotIsolated(reason)
    return decided


def isolation_refusal(subnet_id: str, dns_zone_id: str) -> str | None:
    """Why a restored server could not be isolated with these settings, or None when it can."""
    if not subnet_id:
        return ("no isolated subnet for the restored server: set CONTINUITY_PITR_SUBNET_ID to a subnet with no "
                "route to production (for public-access sources it receives the restored server's private endpoint; "
                "for VNet-integrated sources it is delegated to Microsoft.DBforPostgreSQL/flexibleServers)")
    if not SUBNET_ID_RE.match(subnet_id):
        return (f"CONTINUITY_PITR_SUBNET_ID {subnet_id[:200]!r} is not a subnet resource id "
                "(/subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.Network/virtualNetworks/<vnet>/"
                "subnets/<subnet>)")
    if not dns_zone_id:
        return ("no private DNS zone for the restored server: set CONTINUITY_PITR_DNS_ZONE_ID to a "
                "<name>.postgres.database.azure.com private DNS zone linked to the isolated network")
    if not DNS_ZONE_ID_RE.match(dns_zone_id):
        return (f"CONTINUITY_PITR_DNS_ZONE_ID {dns_zone_id[:200]!r} is not a private DNS zone resource id ending in "
                ".postgres.database.azure.com")
    return None


def isolation_from(subnet_id: str, dns_zone_id: str) -> Isolation:
    """:raises SandboxNotIsolated: the settings do not isolate the restored server."""
    reason = isolation_refusal(subnet_id.strip(), dns_zone_id.strip())
    if reason:
        raise SandboxNotIsolated(reason)
    return Isolation(subnet_id.strip(), dns_zone_id.strip())


def target_server_name(tenant_id: str, at: datetime) -> str:
    """``pitr-{tenant}-{yyyymmddhhmm}`` (UTC), checked against Azure's server-name rules.

    :raises InvalidRequest: the tenant id cannot make a valid server name.
    """
    name = f"pitr-{tenant_id}-{at.astimezone(UTC):%Y%m%d%H%M}"
    if not SERVER_NAME_RE.match(name):
        raise InvalidRequest(f"tenant id {tenant_id[:60]!r} makes {name[:80]!r}, not a Flexible Server name "
                             "(3-63 lowercase letters, digits and hyphens)")
    return name


def restore_window(now: datetime, earliest_restore: datetime | None,
                   retention_days: int = DEFAULT_RETENTION_DAYS) -> tuple[datetime, datetime]:
    """The restorable window: Azure's earliest restore date (else now - retention) to now - RESTORE_LAG."""
    earliest = earliest_restore.astimezone(UTC) if earliest_restore else now - timedelta(days=retention_days)
    return earliest, now - RESTORE_LAG


def choose_restore_point(now: datetime, requested: datetime | None, earliest_restore: datetime | None,
                         retention_days: int = DEFAULT_RETENTION_DAYS) -> datetime:
    """The explicit ``requested`` time if Azure can restore it, else the newest restorable point.

    :raises InvalidRequest: ``requested`` is naive or outside the window (names the window).
    """
    if now.tzinfo is None:
        raise InvalidRequest("now must be timezone-aware")
    earliest, latest = restore_window(now.astimezone(UTC), earliest_restore, retention_days)
    if earliest >= latest:
        raise InvalidRequest(f"the source server has nothing restorable yet: its earliest restore point "
                             f"{earliest.isoformat()} is after {latest.isoformat()}")
    if requested is None:
        return latest.replace(microsecond=0)
    if requested.tzinfo is None:
        raise InvalidRequest("point_in_time must carry a timezone (e.g. 2026-03-01T02:00:00Z)")
    point = requested.astimezone(UTC)
    if point < earliest:
        raise InvalidRequest(f"point_in_time {point.isoformat()} is before the earliest restore point "
                             f"{earliest.isoformat()}; choose a time in [{earliest.isoformat()}, {latest.isoformat()}]")
    if point > latest:
        raise InvalidRequest(f"point_in_time {point.isoformat()} is later than Azure can restore "
                             f"({latest.isoformat()}, now - {int(RESTORE_LAG.total_seconds() // 60)} min)")
    return point


@dataclass(frozen=True)
class PitrPlan:
    """What begin_restore_server asks Azure for; JSON-small, kept in the orchestration history."""

    tenant: str
    source_resource_id: str
    target_name: str
    location: str
    point_in_time: datetime
    isolation: Isolation

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "source_resource_id": self.source_resource_id,
                "target_name": self.target_name, "location": self.location,
                "point_in_time": self.point_in_time.isoformat(), "isolation": self.isolation.to_json()}


def plan_restore(*, tenant_id: str, source_resource_id: str, location: str, started_at: datetime, now: datetime,
                 requested: datetime | None, earliest_restore: datetime | None, isolation: Isolation,
                 retention_days: int = DEFAULT_RETENTION_DAYS) -> PitrPlan:
    """The restore to ask for: point, target name (from the run's start, so the orchestrator knows it), network."""
    return PitrPlan(tenant_id, source_resource_id, target_server_name(tenant_id, started_at), location,
                    choose_restore_point(now, requested, earliest_restore, retention_days), isolation)


# ---- polling --------------------------------------------------------------------------------------

def next_poll(operation_state: str, elapsed_s: float, timeout_s: float, poll_seconds: float = DEFAULT_POLL_SECONDS,
              retry_after_s: float | None = None, error: str = "") -> tuple[Any, ...]:
    """What to do after one GET of the operation: ``("wait", seconds)``, ``("done",)``,
    ``("failed", reason)`` or ``("timeout", reason)``.

    The wait honours ARM's ``Retry-After`` when it asks for longer, never runs past the deadline, and is
    at least MIN_POLL_SECONDS. A status ARM may add later is treated as still running (until the deadline).
    """
    state = (operation_state or "").strip()
    if state.lower() == OperationState.SUCCEEDED.lower():
        return ("done",)
    if state.lower() in (OperationState.FAILED.lower(), OperationState.CANCELED.lower()):
        return ("failed", f"Azure reported the operation {state}" + (f": {error}" if error else ""))
    if elapsed_s >= timeout_s:
        return ("timeout", f"still {state or 'InProgress'} after {elapsed_s / 60:.0f} min "
                           f"(limit {timeout_s / 60:.0f} min, CONTINUITY_PITR_TIMEOUT_MINUTES)")
    wait = max(float(poll_seconds), float(retry_after_s or 0), MIN_POLL_SECONDS)
    return ("wait", float(max(MIN_POLL_SECONDS, min(wait, timeout_s - elapsed_s))))


# ---- checks and verdict ---------------------------------------------------------------------------


def manifest_bound_unavailable() -> list[CheckResult]:
    """The checks a PITR cannot run, reported unavailable with the reason (never as passes)."""
    return [CheckResult(c, CheckStatus.UNAVAILABLE, NO_MANIFEST) for c in MANIFEST_BOUND]


def restore_completed(server_name: str, state: str | None, seconds: float) -> CheckResult:
    """The restore step as a check: the new server exists and is Ready."""
    if (state or "").lower() == "ready":
        return CheckResult(CheckId.RESTORE_COMPLETED, CheckStatus.PASS,
                           f"Azure restored {server_name} in {seconds:.0f} s; server Ready",
                           duration_s=seconds)
    return CheckResult(CheckId.RESTORE_COMPLETED, CheckStatus.FAIL,
                       f"restored server {server_name} is {state or 'unknown'}, not Ready", duration_s=seconds)


@dataclass(frozen=True)
class PitrReport:
    tenant: str
    run_id: str
    server_name: str
    point_in_time: datetime
    started_at: datetime
    finished_at: datetime
    checks: tuple[CheckResult, ...]
    objectives: Objectives | None
    verdict: Verdict
    error: str = ""

    @property
    def outcome(self) -> str:
        if self.error:
            return "error"
        return "passed" if self.verdict.backup_valid else "failed"

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "run_id": self.run_id, "server_name": self.server_name,
                "point_in_time": self.point_in_time.isoformat(), "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat(), "outcome": self.outcome,
                "verdict": str(self.verdict.status), "reason": self.verdict.reason,
                "failed_checks": list(self.verdict.failed_checks), "checks": {c.id: str(c.status) for c in self.checks},
                "objectives": self.objectives.to_json() if self.objectives else None, "error": self.error}


def conclude_pitr(*, tenant: str, run_id: str, server_name: str, point_in_time: datetime, started_at: datetime,
                  finished_at: datetime, checks: Sequence[CheckResult], rto_minutes: int, rpo_minutes: int,
                  measured_s: float, restored_bytes: int, error: str = "") -> PitrReport:
    """The verdict. ``measured_s`` is Azure's restore plus the checks (at full size: a PITR restores the
    whole server, so nothing is scaled); RPO is the restore point's age when the run started."""
    if error:
        verdict = Verdict(rc.VerdictStatus.RECOVERABLE_OUTSIDE_OBJECTIVES, f"not validated: {error}", ())
        return PitrReport(tenant, run_id, server_name, point_in_time, started_at, finished_at, tuple(checks), None,
                          verdict, error)
    objectives = rc.evaluate_objectives(
        rto_minutes=rto_minutes, rpo_minutes=rpo_minutes, measured_s=measured_s,
        restored_bytes=restored_bytes, production_size_bytes=None, backup_created_at=point_in_time,
        run_at=started_at)
    return PitrReport(tenant, run_id, server_name, point_in_time, started_at, finished_at, tuple(checks), objectives,
                      rc.decide_verdict(checks, objectives))
