"""Backup incidents: a backup job failed; how exposed is the tenant's RPO, and what do we do about it.

Pure decisions only. The incident orchestration records the failure, measures the exposure with
:func:`rpo_exposure`, retries an on-demand backup with bounded attempts and backoff
(:func:`retry_delays`), and escalates with :func:`escalation` when it cannot recover in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from continuity.kernel.tenants import TENANT_ID_PATTERN

BACKUP_FAILED_EVENT_TYPE = "Continuity.Backup.Failed"

# At-risk threshold: the tenant has used this share of its RPO budget with no good backup.
AT_RISK_SHARE = 0.5


class BackupFailedData(BaseModel):
    """``data`` of a ``Continuity.Backup.Failed`` event sent by a backup job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(pattern=TENANT_ID_PATTERN)
    job_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")
    failed_at: datetime
    reason: str = Field(min_length=1, max_length=2000)
    attempt: int = Field(1, ge=1, le=1000)


class ExposureLevel(StrEnum):
    WITHIN = "WITHIN"
    AT_RISK = "AT_RISK"
    BREACHED = "BREACHED"


@dataclass(frozen=True)
class RpoExposure:
    """How much data the tenant would lose if it had to be restored now."""

    tenant: str
    rpo_seconds: int
    newest_good_backup_at: datetime | None
    exposure_seconds: float | None  # None: the tenant has no good backup at all
    level: ExposureLevel
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "rpo_seconds": self.rpo_seconds,
            "newest_good_backup_at": self.newest_good_backup_at.isoformat() if self.newest_good_backup_at else None,
            "exposure_seconds": self.exposure_seconds,
            "level": str(self.level),
            "reason": self.reason,
        }


def rpo_exposure(tenant: str, newest_good_backup_at: datetime | None, now: datetime, rpo_minutes: int) -> RpoExposure:
    """Exposure = now − newest good backup, against the tier's RPO; no good backup at all is a breach."""
    rpo = rpo_minutes * 60
    if newest_good_backup_at is None:
        return RpoExposure(tenant, rpo, None, None, ExposureLevel.BREACHED,
                           f"{tenant} has no good backup at all; RPO of {rpo_minutes} min cannot be met")
    age = (now - newest_good_backup_at).total_seconds()
    if age > rpo:
        level = ExposureLevel.BREACHED
        reason = f"newest good backup of {tenant} is {_minutes(age)} old, beyond its RPO of {rpo_minutes} min"
    elif age >= rpo * AT_RISK_SHARE:
        level = ExposureLevel.AT_RISK
        reason = (f"newest good backup of {tenant} is {_minutes(age)} old, "
                  f"{age / rpo:.0%} of its RPO of {rpo_minutes} min")
    else:
        level = ExposureLevel.WITHIN
        reason = f"newest good backup of {tenant} is {_minutes(age)} old, within its RPO of {rpo_minutes} min"
    return RpoExposure(tenant, rpo, newest_good_backup_at, age, level, reason)


def retry_delays(max_attempts: int, first_delay_seconds: float, backoff: float = 2.0,
                 max_delay_seconds: float = 3600) -> list[float]:
    """Delays before each retry: bounded count, exponential backoff, capped."""
    if max_attempts < 0:
        raise ValueError("max_attempts must be >= 0")
    return [min(first_delay_seconds * backoff**i, max_delay_seconds) for i in range(max_attempts)]


def deadline_for(exposure: RpoExposure) -> datetime | None:
    """When the tenant breaches its RPO if nothing succeeds (None when already breached)."""
    if exposure.newest_good_backup_at is None or exposure.level is ExposureLevel.BREACHED:
        return None
    return exposure.newest_good_backup_at + timedelta(seconds=exposure.rpo_seconds)


def escalation(exposure_after: RpoExposure, retries_succeeded: bool) -> Literal["resolved", "at_risk", "breached"]:
    """The incident's end: resolved by a retry, or escalated with the exposure the tenant is left with."""
    if retries_succeeded:
        return "resolved"
    return "breached" if exposure_after.level is ExposureLevel.BREACHED else "at_risk"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"
