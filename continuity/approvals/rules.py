"""Four-eyes approval of dangerous work (regional failover, tenant recovery): one shared rule book.

A workflow opens an :class:`ApprovalRequest` when it has shown the approver what will happen
(preflight). Exactly one :class:`Decision` closes it, within the window, made by a second person who
holds the approver role. Everything else is refused, and :func:`approval_refusal` says why in one
sentence (Patroni-style: a reason, or None when the decision stands).

The same rules run twice: in the HTTP trigger (to answer the caller at once with a 4xx) and in the
orchestration with its replay-safe clock (the authority: two approvals racing each other, or one
arriving at the last second, are settled there). Pure: the caller passes ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from continuity.kernel.errors import ApprovalRefused, Conflict, ContinuityError
from continuity.kernel.identity import Principal, Role

MAX_COMMENT_CHARS = 2000
EVENT_NAME = "approval_decision"  # the external event name every approval-gated workflow waits for


class ApprovalState(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class Verdict(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class Acknowledgement(StrEnum):
    """Risks an approver must accept explicitly, by name, for the approval to count."""

    PRIMARY_UNREACHABLE = "primary_unreachable"
    REPLICATION_LAG = "replication_lag"
    NO_VALIDATED_BACKUP = "no_validated_backup"


@dataclass(frozen=True)
class Decision:
    """One person's verdict on a request. ``id`` is chosen by whoever received it (unique per decision)."""

    id: str
    verdict: Verdict
    by: Principal
    at: datetime
    comment: str = ""
    acknowledgements: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "verdict": str(self.verdict), "by": self.by.to_json(), "at": self.at.isoformat(),
                "comment": self.comment, "acknowledgements": sorted(self.acknowledgements)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Decision:
        return cls(id=str(raw["id"]), verdict=Verdict(raw["verdict"]), by=Principal.from_json(raw["by"]),
                   at=datetime.fromisoformat(raw["at"]), comment=str(raw.get("comment", "")),
                   acknowledgements=frozenset(str(a) for a in raw.get("acknowledgements", ())))


@dataclass(frozen=True)
class ApprovalRequest:
    """What awaits a decision: who asked, until when, and which risks the approver must acknowledge."""

    id: str
    kind: str
    subject: str
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    required_role: Role = Role.APPROVER
    required_acknowledgements: frozenset[str] = frozenset()
    state: ApprovalState = ApprovalState.PENDING
    decision: Decision | None = None
    refusals: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "subject": self.subject, "requested_by": self.requested_by,
            "requested_at": self.requested_at.isoformat(), "expires_at": self.expires_at.isoformat(),
            "required_role": str(self.required_role),
            "required_acknowledgements": sorted(self.required_acknowledgements),
            "state": str(self.state), "decision": self.decision.to_json() if self.decision else None,
            "refusals": list(self.refusals),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ApprovalRequest:
        return cls(
            id=str(raw["id"]), kind=str(raw["kind"]), subject=str(raw["subject"]),
            requested_by=str(raw["requested_by"]), requested_at=datetime.fromisoformat(raw["requested_at"]),
            expires_at=datetime.fromisoformat(raw["expires_at"]), required_role=Role(raw.get("required_role",
                                                                                              "approver")),
            required_acknowledgements=frozenset(raw.get("required_acknowledgements", ())),
            state=ApprovalState(raw.get("state", "PENDING")),
            decision=Decision.from_json(raw["decision"]) if raw.get("decision") else None,
            refusals=tuple(raw.get("refusals", ())),
        )


def open_request(*, request_id: str, kind: str, subject: str, requested_by: str, requested_at: datetime,
                 window_minutes: float, acknowledgements: Iterable[str] = ()) -> ApprovalRequest:
    """A pending request that expires ``window_minutes`` after it was made.

    :raises ContinuityError: a window that is not positive (a request that can never be approved).
    """
    if window_minutes <= 0:
        raise ContinuityError(f"approval window must be positive minutes, got {window_minutes}; "
                              "set CONTINUITY_APPROVAL_WINDOW_MINUTES")
    return ApprovalRequest(id=request_id, kind=kind, subject=subject, requested_by=requested_by,
                           requested_at=requested_at, expires_at=requested_at + timedelta(minutes=window_minutes),
                           required_acknowledgements=frozenset(acknowledgements))


def _refusal(request: ApprovalRequest, decision: Decision, now: datetime) -> tuple[type[ContinuityError], str] | None:
    who = decision.by.name
    if request.state is not ApprovalState.PENDING:
        if request.decision is not None:
            prior = request.decision
            return Conflict, (f"{request.id} was already {request.state.lower()} by {prior.by.name} at "
                              f"{prior.at.isoformat()}: one decision only")
        return Conflict, (f"{request.id} expired at {request.expires_at.isoformat()} without a decision; "
                          f"submit a new {request.kind} request")
    if now >= request.expires_at:
        return Conflict, (f"the approval window of {request.id} closed at {request.expires_at.isoformat()}; "
                          f"submit a new {request.kind} request")
    if len(decision.comment) > MAX_COMMENT_CHARS:
        return ApprovalRefused, f"the comment is longer than {MAX_COMMENT_CHARS} characters"
    if decision.verdict is Verdict.REJECT:
        # The requester may withdraw their own request; anyone else needs the approver role to reject.
        if who == request.requested_by or decision.by.has(request.required_role):
            return None
        return ApprovalRefused, (f"{who} may not reject {request.id}: it needs the {request.required_role} role "
                                 f"or to be the requester")
    if who == request.requested_by:
        return ApprovalRefused, (f"{who} requested {request.id} and cannot approve it: a second person with the "
                                 f"{request.required_role} role must (four-eyes rule)")
    if not decision.by.has(request.required_role):
        held = ", ".join(sorted(str(r) for r in decision.by.roles)) or "none"
        return ApprovalRefused, f"{who} may not approve {request.id}: it needs the {request.required_role} role " \
                                f"(holds: {held})"
    missing = sorted(request.required_acknowledgements - decision.acknowledgements)
    if missing:
        return ApprovalRefused, (f"approving {request.id} requires acknowledging {', '.join(missing)} "
                                 f"(see the preflight findings); resend the approval with acknowledge={missing}")
    return None


def approval_refusal(request: ApprovalRequest, decision: Decision, now: datetime) -> str | None:
    """Why ``decision`` cannot close ``request`` at ``now``, or None if it stands.

    Refused: a request already decided or expired (one decision only), a decision at or after the
    expiry, an approval by the requester (four-eyes), an approval by someone without the required
    role, an approval that does not acknowledge every required risk, an over-long comment.
    """
    found = _refusal(request, decision, now)
    return found[1] if found else None


def refusal_error(request: ApprovalRequest, decision: Decision, now: datetime) -> ContinuityError | None:
    """The same verdict as :func:`approval_refusal`, as the error a trigger maps to its 4xx.

    Conflict (409) when the request is no longer open; ApprovalRefused (403) when this caller may not decide.
    """
    found = _refusal(request, decision, now)
    return found[0](found[1]) if found else None


def decide(request: ApprovalRequest, decision: Decision, now: datetime) -> ApprovalRequest:
    """The request after ``decision``: closed if it stands, else open with the refusal remembered.

    Refusals are kept (the last 20) so whoever sent a refused decision can learn the reason.
    """
    reason = approval_refusal(request, decision, now)
    if reason is not None:
        entry = {"decision_id": decision.id, "by": decision.by.name, "verdict": str(decision.verdict),
                 "at": now.isoformat(), "reason": reason}
        return replace(request, refusals=(*request.refusals, entry)[-20:])
    state = ApprovalState.APPROVED if decision.verdict is Verdict.APPROVE else ApprovalState.REJECTED
    return replace(request, state=state, decision=decision)


def expire(request: ApprovalRequest) -> ApprovalRequest:
    """The request closed by its window running out (no-op if it was already decided)."""
    if request.state is not ApprovalState.PENDING:
        return request
    return replace(request, state=ApprovalState.EXPIRED)


def state_at(request: ApprovalRequest, now: datetime) -> ApprovalState:
    """The state a reader should see at ``now``: a pending request past its window is expired."""
    if request.state is ApprovalState.PENDING and now >= request.expires_at:
        return ApprovalState.EXPIRED
    return request.state


def seconds_left(request: ApprovalRequest, now: datetime) -> float:
    return max(0.0, (request.expires_at - now).total_seconds())
