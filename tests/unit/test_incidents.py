from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from continuity.incidents.rules import (
    BackupFailedData,
    ExposureLevel,
    deadline_for,
    escalation,
    retry_delays,
    rpo_exposure,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_exposure_beyond_rpo_is_a_breach_naming_the_age() -> None:
    exposure = rpo_exposure("acme-finance", NOW - timedelta(minutes=20), NOW, rpo_minutes=15)
    assert exposure.level is ExposureLevel.BREACHED
    assert exposure.reason == "newest good backup of acme-finance is 20.0 min old, beyond its RPO of 15 min"


def test_exposure_past_half_the_rpo_is_at_risk() -> None:
    exposure = rpo_exposure("globex", NOW - timedelta(minutes=40), NOW, rpo_minutes=60)
    assert exposure.level is ExposureLevel.AT_RISK
    assert deadline_for(exposure) == NOW + timedelta(minutes=20)


def test_fresh_backup_is_within_rpo() -> None:
    exposure = rpo_exposure("globex", NOW - timedelta(minutes=5), NOW, rpo_minutes=60)
    assert exposure.level is ExposureLevel.WITHIN
    assert exposure.exposure_seconds == 300


def test_tenant_without_any_good_backup_is_breached() -> None:
    exposure = rpo_exposure("initech", None, NOW, rpo_minutes=1440)
    assert exposure.level is ExposureLevel.BREACHED
    assert exposure.exposure_seconds is None
    assert "no good backup at all" in exposure.reason


def test_retry_delays_are_bounded_and_back_off() -> None:
    assert retry_delays(4, 10) == [10, 20, 40, 80]
    assert retry_delays(3, 1000, max_delay_seconds=1500) == [1000, 1500, 1500]
    assert retry_delays(0, 10) == []
    with pytest.raises(ValueError):
        retry_delays(-1, 10)


def test_escalation_reports_what_the_tenant_is_left_with() -> None:
    breached = rpo_exposure("acme-finance", NOW - timedelta(hours=2), NOW, 15)
    at_risk = rpo_exposure("globex", NOW - timedelta(minutes=40), NOW, 60)
    assert escalation(breached, retries_succeeded=True) == "resolved"
    assert escalation(breached, retries_succeeded=False) == "breached"
    assert escalation(at_risk, retries_succeeded=False) == "at_risk"


@pytest.mark.parametrize("field,value", [
    ("tenant", "../etc"), ("tenant", "Acme"), ("job_id", "x y"), ("reason", ""), ("failed_at", "yesterday"),
])
def test_backup_failed_event_with_bad_field_is_refused(field: str, value: str) -> None:
    data = {"tenant": "acme-finance", "job_id": "job-1", "failed_at": NOW.isoformat(), "reason": "disk full"}
    data[field] = value
    with pytest.raises(ValidationError):
        BackupFailedData.model_validate(data)


def test_backup_failed_event_with_unknown_field_is_refused() -> None:
    with pytest.raises(ValidationError):
        BackupFailedData.model_validate({"tenant": "acme-finance", "job_id": "j", "failed_at": NOW.isoformat(),
                                         "reason": "r", "extra": 1})
