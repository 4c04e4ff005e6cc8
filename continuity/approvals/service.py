"""Approval plumbing shared by every approval-gated workflow (failover, tenant recovery).

Authenticates a caller from request headers, turns an HTTP decision into a :class:`Decision`,
and records refusals and decisions in the evidence chain. The rules themselves are pure
(:mod:`continuity.approvals.rules`); this module only wires them to the identity store and evidence.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from continuity.approvals.rules import (
    ApprovalRequest,
    Decision,
    Verdict,
    binding_refusal,
    mac_refusal,
    sign_decision,
)
from continuity.kernel.errors import ContinuityError
from continuity.kernel.identity import Principal, authenticate

logger = logging.getLogger(__name__)


def authenticate_headers(headers: Mapping[str, str]) -> Principal:
    """The caller of an HTTP request (platform principal or local API key), with its linked identities.

    Local users are read in both modes: with platform authentication they declare which platform identities
    are the same person (their keys only work where CONTINUITY_LOCAL_USERS_WITH_PLATFORM_AUTH allows).

    :raises Unauthorized: no usable credential.
    """
    from continuity.adapters.local.identity_store import (
        IdentityStore,
        keys_allowed_with_platform_auth,
        platform_auth_enabled,
    )

    return authenticate(headers, IdentityStore().list_users(), platform_auth_enabled(),
                        allow_keys=keys_allowed_with_platform_auth())


def new_decision(verdict: Verdict, by: Principal, comment: str, acknowledgements: list[str],
                 now: datetime | None = None, *, request: ApprovalRequest | None = None) -> Decision:
    """A decision at the server's time, bound to ``request``'s instance, run and preflight digest (unsigned)."""
    return Decision(id=str(uuid.uuid4()), verdict=verdict, by=by, at=now or datetime.now(UTC),
                    comment=comment, acknowledgements=frozenset(acknowledgements),
                    instance_id=request.id if request else "", run_id=request.run_id if request else "",
                    digest=request.digest if request else "")


def _decision_key() -> bytes:
    from continuity.adapters.azure.secret_store import decision_key

    return decision_key()


def sign(decision: Decision) -> Decision:
    """The decision with its MAC, keyed from the secret store (Key Vault in Azure, a 0600 file locally)."""
    return sign_decision(_decision_key(), decision)


def verify_decision(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The orchestration's check of a decision event: ``{"refusal": None}`` when the approve trigger made it for
    this run, else ``{"refusal": "attempted bypass: ..."}``.

    ``payload`` is ``{"decision": event payload, "request": ApprovalRequest JSON}``. The key stays in this
    activity: the orchestration's history holds only the verdict of the check.
    """
    try:
        decision = Decision.from_json(payload["decision"])
        request = ApprovalRequest.from_json(payload["request"])
    except (ValueError, KeyError, TypeError) as exc:
        return {"refusal": f"attempted bypass: a malformed decision ({type(exc).__name__}); nothing was decided"}
    refusal = mac_refusal(_decision_key(), decision) or binding_refusal(request, decision)
    if refusal is not None:
        logger.warning("decision refused", extra={"run_id": request.run_id, "instance_id": request.id,
                                                  "decision_id": decision.id[:80], "reason": refusal})
    return {"refusal": refusal}


def _evidence() -> Any:
    from continuity.adapters.postgres.control_db import prepare
    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.adapters.storage.evidence_store import EvidenceStore

    blobs = BlobStore()
    store = EvidenceStore(prepare(), blobs)
    blobs.ensure_containers([store.container])
    return store


def record(*, actor: str, action: str, subject: str, data: Mapping[str, Any],
           idempotency_key: str | None = None) -> dict[str, Any]:
    """Append one evidence record; returns the new chain head as JSON."""
    record_ = _evidence().append(actor=actor, action=action, subject=subject, data=dict(data),
                                 idempotency_key=idempotency_key)
    return {"seq": record_.seq, "hash": record_.hash}


def chain_head() -> dict[str, Any]:
    head = _evidence().head()
    return {"seq": head.seq, "hash": head.hash}


def record_refusal(kind: str, subject: str, actor: str, reason: str, code: str,
                   data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Evidence that a request or decision was refused (and that nothing was executed)."""
    return record(actor=actor or "anonymous", action=f"{kind}.refused", subject=subject,
                  data={"reason": reason, "code": code, "executed": False, **dict(data or {})})


def record_decision_refusal(request: ApprovalRequest, decision: Decision, error: ContinuityError) -> dict[str, Any]:
    return record_refusal(request.kind, request.id, decision.by.name, str(error), error.code,
                          {"decision": decision.to_json(), "principal_id": decision.by.id,
                           "request_state": str(request.state)})


def record_decision(request: ApprovalRequest, decision: Decision) -> dict[str, Any]:
    """Evidence, written by the approve/reject route before the event is raised, that this principal made this
    decision on this run and digest at this server time (``{kind}.decided``; the MAC is not evidence)."""
    return record(actor=decision.by.name, action=f"{request.kind}.decided", subject=request.id,
                  data={"decision": decision.to_json(), "principal_id": decision.by.id, "run_id": request.run_id,
                        "digest": request.digest}, idempotency_key=f"decided:{decision.id}")
