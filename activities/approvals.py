"""Activities of the approval gate shared by every approval-gated workflow (failover, tenant recovery)."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from continuity.approvals import service as approval_service

bp = df.Blueprint()


@bp.activity_trigger(input_name="inp")
def verify_decision(inp: dict[str, Any]) -> dict[str, Any]:
    """Whether a decision event was made by the approve/reject route for this run (the MAC key stays here)."""
    return approval_service.verify_decision(inp)
