"""Legal hold rules (pure): who may set or clear a hold, on what, and what the planner then respects."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from continuity.kernel.errors import BackupNotFound, Conflict, Forbidden, InvalidRequest, UnknownTenant
from continuity.kernel.identity import Principal, Role
from continuity.kernel.tenants import Registry, load_registry
from continuity.retention.holds import (
    MAX_REASON_CHARS,
    HoldNotFound,
    LegalHold,
    check_clear,
    check_set,
    clear_refusal,
    held_reason,
    hold_refusal,
    new_hold,
    planning_holds,
)
from continuity.retention.planner import Holds, RetentionCandidate, plan_retention, policies_from_registry

ROOT = Path(__file__).resolve().parents[2]
AT = datetime(2026, 3, 31, 3, 0, tzinfo=UTC)
BACKUP = "20260301T010000Z-abc123"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(ROOT / "config" / "tenants.yaml")


def who(*roles: Role, name: str = "amir") -> Principal:
    return Principal(name=name, roles=frozenset(roles), source="api-key")


APPROVER = who(Role.APPROVER)


def test_an_approver_may_hold_a_known_tenant_with_a_reason(registry: Registry) -> None:
    assert hold_refusal(registry, "globex", None, "case 2026-17: tax audit", APPROVER, None) is None


def test_an_admin_may_hold_a_cataloged_backup(registry: Registry) -> None:
    assert hold_refusal(registry, "globex", BACKUP, "litigation", who(Role.ADMIN), "validated") is None


def test_hold_refused_for_an_operator_without_the_approver_role(registry: Registry) -> None:
    with pytest.raises(Forbidden, match="olivia may not set legal holds: it needs the approver or admin role "
                                        r"\(holds: operator\)"):
        check_set(registry, "globex", None, "audit", who(Role.OPERATOR, name="olivia"), None)


def test_hold_on_an_unknown_tenant_is_refused_naming_the_known_ones(registry: Registry) -> None:
    with pytest.raises(UnknownTenant, match="unknown tenant nobody; known tenants: acme-finance, globex, initech"):
        check_set(registry, "nobody", None, "audit", APPROVER, None)


def test_hold_on_a_malformed_tenant_id_is_refused_without_echoing_it_raw(registry: Registry) -> None:
    refusal = hold_refusal(registry, "../etc", None, "audit", APPROVER, None)
    assert refusal is not None and refusal.startswith("unknown tenant '../etc'")


def test_hold_on_a_backup_the_catalog_lacks_is_refused(registry: Registry) -> None:
    with pytest.raises(BackupNotFound, match=f"tenant globex has no backup '{BACKUP}' in the catalog"):
        check_set(registry, "globex", BACKUP, "audit", APPROVER, None)


def test_hold_on_a_backup_retention_already_deleted_is_refused(registry: Registry) -> None:
    with pytest.raises(Conflict, match="already deleted by retention"):
        check_set(registry, "globex", BACKUP, "audit", APPROVER, "deleted")


@pytest.mark.parametrize("reason", ["", "   ", "x" * (MAX_REASON_CHARS + 1)])
def test_hold_without_a_usable_reason_is_refused(registry: Registry, reason: str) -> None:
    with pytest.raises(InvalidRequest, match="reason"):
        check_set(registry, "globex", None, reason, APPROVER, None)


def test_clear_refused_when_no_hold_is_active(registry: Registry) -> None:
    with pytest.raises(HoldNotFound, match="there is no active legal hold on backup globex/"):
        check_clear(registry, "globex", BACKUP, "released", APPROVER, None)


def test_clear_of_a_registry_declared_tenant_hold_is_refused(registry: Registry) -> None:
    held = registry.model_copy(update={"tenants": tuple(
        t.model_copy(update={"legal_hold": True}) if t.id == "initech" else t for t in registry.tenants)})
    refusal = clear_refusal(held, "initech", None, "released", APPROVER, None)
    assert refusal == ("the legal hold on tenant initech is declared in the tenant registry (legal_hold: true); "
                       "clear it there, through version control")
    with pytest.raises(Conflict):
        check_clear(held, "initech", None, "released", APPROVER, None)


def test_clear_needs_the_approver_role_and_a_reason(registry: Registry) -> None:
    active = new_hold("globex", None, "audit", APPROVER, AT)
    with pytest.raises(Forbidden, match="may not clear legal holds"):
        check_clear(registry, "globex", None, "done", who(Role.OPERATOR), active)
    with pytest.raises(InvalidRequest, match="needs a reason"):
        check_clear(registry, "globex", None, " ", APPROVER, active)
    check_clear(registry, "globex", None, "case closed", APPROVER, active)


def test_new_hold_keeps_actor_time_and_trimmed_reason() -> None:
    hold = new_hold("globex", BACKUP, "  case 17  ", APPROVER, AT)
    assert hold.to_json() == {"tenant": "globex", "backup_id": BACKUP, "scope": "backup", "reason": "case 17",
                              "set_by": "amir", "set_at": "2026-03-31T03:00:00Z", "active": True,
                              "cleared_by": None, "cleared_at": None, "clear_reason": None}
    assert hold.subject == f"hold/globex/{BACKUP}"


def test_planning_holds_join_registry_flags_and_active_recorded_holds_only(registry: Registry) -> None:
    held = registry.model_copy(update={"tenants": tuple(
        t.model_copy(update={"legal_hold": True}) if t.id == "initech" else t for t in registry.tenants)})
    recorded = [new_hold("globex", BACKUP, "case", APPROVER, AT), new_hold("acme-finance", None, "case", APPROVER, AT),
                LegalHold("globex", None, "old", "amir", AT, cleared_by="amir", cleared_at=AT, clear_reason="done")]
    holds = planning_holds(held, recorded)
    assert holds == Holds.of({"initech", "acme-finance"}, {("globex", BACKUP)})
    assert held_reason(holds, "globex", BACKUP) == f"legal hold on backup globex/{BACKUP}"
    assert held_reason(holds, "globex", "other") is None
    assert held_reason(holds, "acme-finance", "any") == "legal hold on tenant acme-finance"


def test_a_held_backup_outside_every_keep_rule_is_kept_by_the_planner(registry: Registry) -> None:
    old = datetime(2025, 1, 1, 1, 0, tzinfo=UTC)
    # Twelve January days: the daily slots go to the newest, week 2025-W01 keeps only Jan 5.
    backups = [RetentionCandidate("initech", f"202501{d:02d}T010000Z-aaaaaa", old.replace(day=d), "AVAILABLE")
               for d in range(1, 13)] + [RetentionCandidate("initech", "20260330T010000Z-bbbbbb",
                                                           datetime(2026, 3, 30, 1, tzinfo=UTC), "VALIDATED")]
    policies = policies_from_registry(registry)
    free = plan_retention(backups, policies, Holds(), AT)
    assert {a.backup_id for a in free.actions if a.kind == "DELETE"} >= {"20250102T010000Z-aaaaaa"}
    holds = planning_holds(registry, [new_hold("initech", "20250102T010000Z-aaaaaa", "case", APPROVER, AT)])
    held = plan_retention(backups, policies, holds, AT)
    decision = held.for_backup("initech", "20250102T010000Z-aaaaaa")[0]
    assert decision.kind == "KEEP" and "legal hold on backup 20250102T010000Z-aaaaaa" in decision.reason
