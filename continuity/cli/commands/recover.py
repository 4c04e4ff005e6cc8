"""``continuity recover TENANT``: request, approve, reject and follow a tenant recovery over the same HTTP API.

    continuity recover acme-finance --reason "posted moves deleted" [--backup ID | --before TIME | --to TIME]
                                    [--drill] [--wait]
    continuity recover acme-finance --approve [--comment TEXT] [--wait]    (a second person, approver role)
    continuity recover acme-finance --reject  [--comment TEXT]
    continuity recover acme-finance --status  [--wait]

Speaks to ``--endpoint`` (default: the local devhost) as ``--user NAME``, like ``continuity failover``.
"""

from __future__ import annotations

import argparse
from typing import Any

from continuity.cli.commands.failover import call, wait_for_state
from continuity.cli.output import emit
from continuity.cli.workflow_status import TERMINAL, exit_code, render_workflow
from continuity.kernel.errors import InvalidRequest


def register(sub: Any) -> None:
    recover = sub.add_parser("recover", help="recover one tenant to a known-good backup (approval-gated)")
    recover.add_argument("tenant", metavar="TENANT")
    action = recover.add_mutually_exclusive_group()
    action.add_argument("--approve", action="store_const", const="approve", dest="verb",
                        help="approve the tenant's pending recovery")
    action.add_argument("--reject", action="store_const", const="reject", dest="verb",
                        help="reject (or, as its requester, withdraw) the pending recovery")
    action.add_argument("--status", action="store_const", const="status", dest="verb",
                        help="show the tenant's latest recovery")
    target = recover.add_mutually_exclusive_group()
    target.add_argument("--backup", default=None, metavar="ID", help="recover to this backup")
    target.add_argument("--before", default=None, metavar="TIME",
                        help="recover to the newest validated backup before this ISO time (with a zone)")
    target.add_argument("--to", default=None, metavar="TIME",
                        help="recover to this exact second (ISO, with a zone), rewound from the server's WAL archive")
    recover.add_argument("--reason", default=None, help="why (required to request)")
    recover.add_argument("--drill", action="store_true", help="stage, check and approve, then drop: live untouched")
    recover.add_argument("--comment", default="", help="comment of an approval or rejection")
    recover.add_argument("--wait", action="store_true",
                         help="wait: for the approval wait after a request, for the end after a decision")
    recover.add_argument("--endpoint", default=None, help="API base URL (default http://127.0.0.1:<devhost port>)")
    recover.add_argument("--user", required=True, help="local identity to act as (its key is in the keyring)")
    recover.add_argument("--json", action="store_true")
    recover.set_defaults(handler=cmd_recover, verb="request")


def _wait(args: argparse.Namespace, until: set[str], timeout: float = 3600) -> dict[str, Any]:
    return wait_for_state(args, f"/api/tenants/{args.tenant}/recoveries/current", until, timeout)


def render(body: dict[str, Any]) -> str:
    request = body.get("request") or {}
    lines: list[str] = []
    names = body.get("databases") or {}
    if names:
        lines.append(f"  live {names.get('live')}, staged {names.get('staged')}, kept as {names.get('pre_recovery')}")
    loss = body.get("data_loss") or {}
    if loss.get("summary"):
        lines.append(f"  data loss: {loss['summary']}")
    return render_workflow(body, f"back to {request.get('backup_id')} ({request.get('choice')})", lines,
                           live_key="approval_to_live",
                           timing=lambda t: f"approval -> live again {t['approval_to_live']:.3f}s, tenant unavailable "
                                            f"{t.get('tenant_unavailable')}s, total {t.get('total')}s")


def cmd_recover(args: argparse.Namespace) -> int:
    instance = f"recovery-{args.tenant}"
    if args.verb == "request":
        if not args.reason:
            raise InvalidRequest("--reason is required to request a recovery")
        body: dict[str, Any] = {"reason": args.reason, "drill": args.drill}
        if args.backup:
            body["backup_id"] = args.backup
        if args.before:
            body["before"] = args.before
        if args.to:
            body["to"] = args.to
        accepted = call(args, "POST", f"/api/tenants/{args.tenant}/recoveries", body)
        shown = _wait(args, TERMINAL | {"AWAITING_APPROVAL"}) if args.wait else accepted
        emit(args, shown, render(shown) if args.wait else
             f"{accepted['id']} requested (back to {accepted.get('backup_id')}); follow it with "
             f"`continuity recover {args.tenant} --status --user {args.user}`")
        return exit_code(shown)
    if args.verb in ("approve", "reject"):
        answer = call(args, "POST", f"/api/recoveries/{instance}/{args.verb}",
                      {"comment": args.comment, "acknowledge": []})
        shown = _wait(args, TERMINAL) if args.wait else answer
        emit(args, shown, render(shown) if args.wait else f"{instance}: {args.verb} accepted ({answer.get('state')})")
        return exit_code(shown)
    shown = _wait(args, TERMINAL) if args.wait else call(args, "GET", f"/api/tenants/{args.tenant}/recoveries/current")
    emit(args, shown, render(shown))
    return exit_code(shown)
