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

from continuity.approvals.rules import ApprovalRequest, Decision, Verdict
from continuity.kernel.errors import ContinuityError
from continuity.kernel.identity import Principal, authenticate

logger = logging.getLogger(__name__)


def authenticate_headers(headers: Mapping[str, str]) -> Principal:
    """The caller of an HTTP request (platform principal or local API key).

    :raises Unauthorized: no usable credential.
    """
    from continuity.adapters.local.identity_store import IdentityStore, platform_auth_enabled

    platform = platform_auth_enabled()
    users = [] if platform and any(k.lower() == "x-ms-client-principal" for k in headers) \
        else IdentityStore().list_users()
    return authenticate(headers, users, platform)


def new_decision(verdict: Verdict, by: Principal, comment: str, acknowledgements: list[str],
                 now: datetime | None = None) -> Decision:
    return Decision(id=str(uuid.uuid4()), verdict=verdict, by=by, at=now or datetime.now(UTC),
                    comment=comment, acknowledgements=frozenset(acknowledgements))


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
                          {"decision": decision.to_json(), "request_state": str(request.state)})
