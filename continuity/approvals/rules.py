"""Four-eyes approval of dangerous work (regional failover, tenant recovery): one shared rule book.

A workflow opens an :class:`ApprovalRequest` when it has shown the approver what will happen
(preflight). Exactly one :class:`Decision` closes it, within the window, made by a second person who
holds the approver role. Everything else is refused, and :func:`approval_refusal` says why in one
sentence (Patroni-style: a reason, or None when the decision stands).

The same rules run twice: in the HTTP trigger (to answer the caller at once with a 4xx) and in the
orchestration with its replay-safe clock (the authority: two approvals racing each other, or one
arriving at the last second, are settled there). Pure: the caller passes ``now`` and the MAC key.

Only the approve/reject trigger makes decisions. It binds each one to the run it decides: the instance id,
the run id, the digest of the preflight the approver was shown (:func:`preflight_digest`), the verdict, the
principal's immutable id and the server's time, all under an HMAC-SHA256 (:func:`sign_decision`) with a key
from the secret store. The orchestration checks the MAC (:func:`mac_refusal`, in an activity: the key never
enters its history) and the binding (:func:`binding_refusal`); anything else is an attempted bypass.
Self-approval is judged by principal id, including the requester's linked identities, never by name.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from continuity.kernel.errors import ApprovalRefused, Conflict, ContinuityError
from continuity.kernel.identity import Principal, Role

MAX_COMMENT_CHARS = 2000
EVENT_NAME = "approval_decision"  # the external event name every approval-gated workflow waits for
DIGEST_PATTERN = r"^[0-9a-f]{64}$"
BYPASS = "attempted bypass"  # how every refusal of a decision the approve trigger did not make begins


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
    """One person's verdict on a request. ``id`` is chosen by whoever received it (unique per decision).

    ``instance_id``, ``run_id`` and ``digest`` bind it to one run of one workflow as the approver saw it;
    ``mac`` is the approve trigger's HMAC over all of it (:func:`sign_decision`). ``at`` is the server's time.
    """

    id: str
    verdict: Verdict
    by: Principal
    at: datetime
    comment: str = ""
    acknowledgements: frozenset[str] = frozenset()
    instance_id: str = ""
    run_id: str = ""
    digest: str = ""
    mac: str = ""

    def to_json(self) -> dict[str, Any]:
        """Everything the MAC covers (the MAC itself is not evidence: see :meth:`to_event`)."""
        return {"id": self.id, "verdict": str(self.verdict), "by": self.by.to_json(), "at": self.at.isoformat(),
                "comment": self.comment, "acknowledgements": sorted(self.acknowledgements),
                "instance_id": self.instance_id, "run_id": self.run_id, "digest": self.digest}

    def to_event(self) -> dict[str, Any]:
        """The external event's payload: the decision and its MAC."""
        return {**self.to_json(), "mac": self.mac}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Decision:
        return cls(id=str(raw["id"]), verdict=Verdict(raw["verdict"]), by=Principal.from_json(raw["by"]),
                   at=datetime.fromisoformat(raw["at"]), comment=str(raw.get("comment", "")),
                   acknowledgements=frozenset(str(a) for a in raw.get("acknowledgements", ())),
                   instance_id=str(raw.get("instance_id", "")), run_id=str(raw.get("run_id", "")),
                   digest=str(raw.get("digest", "")), mac=str(raw.get("mac", "")))


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode()


def preflight_digest(shown: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON of what the approver is shown (request, preflight findings, run)."""
    return hashlib.sha256(_canonical(dict(shown))).hexdigest()


def decision_mac(key: bytes, decision: Decision) -> str:
    """HMAC-SHA256 with ``key`` over the decision's canonical JSON: instance id, run id, request digest,
    verdict, principal (immutable id, roles, scope, linked ids), server time, comment and acknowledgements."""
    return hmac.new(key, _canonical(decision.to_json()), hashlib.sha256).hexdigest()


def sign_decision(key: bytes, decision: Decision) -> Decision:
    """The decision carrying its MAC (only the approve trigger holds ``key``)."""
    if len(key) < 32:
        raise ContinuityError("the decision MAC key is shorter than 32 bytes; regenerate it in the secret store")
    return replace(decision, mac=decision_mac(key, decision))


def mac_refusal(key: bytes, decision: Decision) -> str | None:
    """Why ``decision`` was not made by the approve trigger (no MAC, or one that does not verify), or None."""
    if not decision.mac:
        return (f"{BYPASS}: a decision without a MAC (a raw event, not the approve/reject route); "
                "nothing was decided")
    if not hmac.compare_digest(decision_mac(key, decision), decision.mac):
        return (f"{BYPASS}: the decision's MAC does not verify (forged or altered after the approve/reject "
                "route made it); nothing was decided")
    return None


@dataclass(frozen=True)
class ApprovalRequest:
    """What awaits a decision: who asked, until when, and which risks the approver must acknowledge.

    ``run_id`` and ``digest`` (of the preflight the approver is shown) are what a decision must be bound to;
    ``requester_ids`` are the requester's principal ids (its own and its linked identities).
    """

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
    run_id: str = ""
    digest: str = ""
    requester_ids: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "subject": self.subject, "requested_by": self.requested_by,
            "requester_ids": sorted(self.requester_ids), "run_id": self.run_id, "digest": self.digest,
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
            refusals=tuple(raw.get("refusals", ())), run_id=str(raw.get("run_id", "")),
            digest=str(raw.get("digest", "")),
            requester_ids=frozenset(str(i) for i in raw.get("requester_ids", ())),
        )

    def requested_by_person(self, principal: Principal) -> bool:
        """Whether ``principal`` (or one of its linked identities) is the requester: judged by immutable ids;
        a request that recorded no ids (made before ids existed) falls back to the name."""
        if self.requester_ids:
            return principal.same_person(self.requester_ids)
        return principal.name == self.requested_by


def open_request(*, request_id: str, kind: str, subject: str, requested_by: str, requested_at: datetime,
                 window_minutes: float, acknowledgements: Iterable[str] = (), run_id: str = "",
                 requester_ids: Iterable[str] = (), shown: Mapping[str, Any] | None = None) -> ApprovalRequest:
    """A pending request that expires ``window_minutes`` after it was made.

    ``shown`` is what the approver sees before deciding (request, preflight findings); the request's digest
    covers it together with the instance, the run, the request time and the required acknowledgements, so a
    decision for this digest is a decision on exactly this run as shown.

    :raises ContinuityError: a window that is not positive (a request that can never be approved).
    """
    if window_minutes <= 0:
        raise ContinuityError(f"approval window must be positive minutes, got {window_minutes}; "
                              "set CONTINUITY_APPROVAL_WINDOW_MINUTES")
    acks = frozenset(acknowledgements)
    digest = preflight_digest({"instance_id": request_id, "kind": kind, "subject": subject, "run_id": run_id,
                               "requested_by": requested_by, "requested_at": requested_at.isoformat(),
                               "required_acknowledgements": sorted(acks), "shown": dict(shown or {})})
    return ApprovalRequest(id=request_id, kind=kind, subject=subject, requested_by=requested_by,
                           requested_at=requested_at, expires_at=requested_at + timedelta(minutes=window_minutes),
                           required_acknowledgements=acks, run_id=run_id, digest=digest,
                           requester_ids=frozenset(requester_ids))


def binding_refusal(request: ApprovalRequest, decision: Decision) -> str | None:
    """Why ``decision`` (its MAC already verified) was not made for this run of ``request``, or None.

    Refused as attempted bypasses: a decision for another instance, for another run of the same instance (ids
    such as ``failover-{scope}`` are reused), on a preflight digest other than the one this request shows,
    or with a time before the request was made or at or after its expiry.
    """
    if decision.instance_id != request.id:
        return (f"{BYPASS}: the decision was made for {decision.instance_id[:80]!r}, not {request.id}; "
                "nothing was decided")
    if decision.run_id != request.run_id:
        return (f"{BYPASS}: the decision was made for run {decision.run_id[:40]!r} of {request.id}, not this run "
                f"{request.run_id!r} (replayed from an earlier run); nothing was decided")
    if decision.digest != request.digest:
        return (f"{BYPASS}: the decision is on preflight digest {decision.digest[:16]!r}..., not this request's "
                f"{request.digest[:16]!r}...; nothing was decided")
    if decision.at < request.requested_at:
        return (f"{BYPASS}: the decision is dated {decision.at.isoformat()}, before {request.id} was requested at "
                f"{request.requested_at.isoformat()}; nothing was decided")
    if decision.at >= request.expires_at:
        return (f"{BYPASS}: the decision is dated {decision.at.isoformat()}, after {request.id} expired at "
                f"{request.expires_at.isoformat()}; nothing was decided")
    return None


def remember_refusal(request: ApprovalRequest, decision_id: str, by: str, verdict: str, now: datetime,
                     reason: str) -> ApprovalRequest:
    """The request, still open, remembering a refused decision (the last 20) so its sender can learn why."""
    entry = {"decision_id": decision_id[:80], "by": by[:120], "verdict": verdict[:20], "at": now.isoformat(),
             "reason": reason}
    return replace(request, refusals=(*request.refusals, entry)[-20:])


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
    own = request.requested_by_person(decision.by)
    if decision.verdict is Verdict.REJECT:
        # The requester may withdraw their own request; anyone else needs the approver role to reject.
        if own or decision.by.has(request.required_role):
            return None
        return ApprovalRefused, (f"{who} may not reject {request.id}: it needs the {request.required_role} role "
                                 f"or to be the requester")
    if own:
        alias = "" if decision.by.name == request.requested_by else \
            f" (as {decision.by.id}, an identity linked to the requester {request.requested_by})"
        return ApprovalRefused, (f"{who} requested {request.id}{alias} and cannot approve it: a second person with "
                                 f"the {request.required_role} role must (four-eyes rule)")
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
        return remember_refusal(request, decision.id, decision.by.name, str(decision.verdict), now, reason)
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
