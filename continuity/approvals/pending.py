"""Which approval-gated workflows await a decision, as a caller may see them (pure).

Each gated orchestration shows its open :class:`ApprovalRequest` as custom status ``approval`` (see
:mod:`orchestrations.approval_gate`). :func:`pending_approvals` reads the instances' statuses, keeps the
requests still pending at ``now`` and inside the caller's scope (the same rule as the decision routes: a
recovery's tenant, or a failover's scope, where ``platform`` is for unscoped callers only), and says what
the approver is shown: preflight findings, digest, requester, expiry, required acknowledgements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from continuity.approvals.rules import ApprovalRequest, ApprovalState, state_at
from continuity.kernel.identity import Principal, Role

# instance id prefix -> (kind, orchestration name, route collection of its approve/reject routes)
KINDS: dict[str, tuple[str, str, str]] = {
    "failover-": ("failover", "failover", "failovers"),
    "recovery-": ("recovery", "tenant_recovery", "recoveries"),
}


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    detail: str


@dataclass(frozen=True)
class PendingApproval:
    """One open request, with what the approver must see before deciding."""

    instance_id: str
    kind: str
    subject: str
    request: ApprovalRequest
    reason: str
    drill: bool
    findings: tuple[Finding, ...]
    collection: str  # "failovers" or "recoveries": the decision routes are /api/{collection}/{id}/approve|reject
    can_approve: bool  # the caller holds the approver role and is not the requester
    can_reject: bool  # approver role, or the requester withdrawing

    def decide_path(self, verdict: str) -> str:
        return f"/api/{self.collection}/{self.instance_id}/{verdict}"


def _findings(kind: str, custom: Mapping[str, Any]) -> tuple[Finding, ...]:
    if kind == "failover":
        raw = custom.get("preflight") or []
        return tuple(Finding(str(f.get("check", "")), str(f.get("status", "")), str(f.get("detail", "")))
                     for f in raw if isinstance(f, Mapping))
    raw_checks = custom.get("checks")
    checks: Mapping[str, Any] = raw_checks if isinstance(raw_checks, Mapping) else {}
    out = []
    for name, check in sorted(checks.items()):
        c = check if isinstance(check, Mapping) else {}
        out.append(Finding(str(name), str(c.get("status", "")), str(c.get("detail", ""))))
    return tuple(out)


def visible_to(principal: Principal, kind: str, subject: str) -> bool:
    """The scope rule of the decision routes: a failover of ``platform`` only for unscoped callers."""
    if kind == "failover" and subject == "platform":
        return principal.tenants is None
    return principal.sees(subject)


def pending_approvals(instances: Iterable[tuple[str, str | None, Any]], principal: Principal,
                      now: datetime) -> list[PendingApproval]:
    """Requests awaiting a decision at ``now`` that ``principal`` may see, soonest expiry first.

    :param instances: ``(instance id, orchestration name, custom status)`` of running instances; anything
        not an approval-gated workflow of the kind its id says, or not showing a pending request, is skipped.
    """
    found: list[PendingApproval] = []
    for instance_id, name, custom in instances:
        prefix = next((p for p in KINDS if instance_id.startswith(p)), None)
        if prefix is None or not isinstance(custom, Mapping) or not custom.get("approval"):
            continue
        kind, orchestration, collection = KINDS[prefix]
        if name not in (None, orchestration):
            continue
        try:
            request = ApprovalRequest.from_json(custom["approval"])
        except (KeyError, ValueError, TypeError):
            continue
        subject = instance_id.removeprefix(prefix)
        if request.kind != kind or request.subject != subject or state_at(request, now) is not ApprovalState.PENDING:
            continue
        if not visible_to(principal, kind, subject):
            continue
        raw_request = custom.get("request")
        asked: Mapping[str, Any] = raw_request if isinstance(raw_request, Mapping) else {}
        own = request.requested_by_person(principal)
        found.append(PendingApproval(
            instance_id=instance_id, kind=kind, subject=subject, request=request,
            reason=str(asked.get("reason", "")), drill=bool(asked.get("drill", False)),
            findings=_findings(kind, custom), collection=collection,
            can_approve=principal.has(Role.APPROVER) and not own,
            can_reject=own or principal.has(request.required_role)))
    return sorted(found, key=lambda p: (p.request.expires_at, p.instance_id))
