"""How the CLI shows an approval-gated workflow (failover, tenant recovery) and what its exit code says.

Both workflows answer ``GET`` with the same frame (``id``, ``state``, ``reason``, ``approval``, ``steps``,
``timings``, ``chain_head``); each command adds the lines only it has (preflight, data loss, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

TERMINAL = {"COMPLETED", "FAILED", "REJECTED", "EXPIRED", "REFUSED"}


def render_workflow(body: dict[str, Any], subject: str, details: Sequence[str], *, live_key: str,
                    timing: Callable[[Mapping[str, Any]], str]) -> str:
    """The status text: a headline, who requested what (``subject``) and why, the workflow's own ``details``
    lines, the open approval window, each step, the ``timing`` line of the body's timings (once they hold
    ``live_key``: the workflow got its service back) and the evidence chain head."""
    lines = [f"{body.get('id')}: {body.get('state')}" + (f" ({body['reason']})" if body.get("reason") else "")]
    request = body.get("request") or {}
    if request:
        lines.append(f"  requested by {request.get('requested_by')}: {subject}"
                     f"{' (drill)' if request.get('drill') else ''}: {request.get('reason')}")
    lines.extend(details)
    approval = body.get("approval") or {}
    if approval.get("expires_at") and approval.get("state") == "PENDING":
        lines.append(f"  approval window closes {approval['expires_at']}")
    for step in body.get("steps") or []:
        mark = "ok " if step["ok"] else "FAIL"
        lines.append(f"  {step['step']:<8} {mark} {step['seconds']:>7.3f}s  {step['detail']}")
    timings = body.get("timings") or {}
    if timings.get(live_key) is not None:
        lines.append(f"  {timing(timings)}")
    head = body.get("chain_head")
    if head:
        lines.append(f"  evidence chain head: seq {head['seq']} {head['hash'][:16]}…")
    return "\n".join(lines)


def exit_code(body: dict[str, Any]) -> int:
    """1 when the workflow failed or was refused, else 0 (a rejection or an expiry is a decision, not an error)."""
    return 1 if body.get("state") in ("FAILED", "REFUSED") else 0
