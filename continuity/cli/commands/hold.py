"""``continuity hold set|clear|list TENANT [--backup ID] --reason ...``: legal holds over the API.

The actor is ``--user NAME`` (a local identity with the approver or admin role); the reason and the actor
go to the evidence chain. A hold on an unknown tenant or backup is refused and nothing changes.
"""

from __future__ import annotations

import argparse
from typing import Any

from continuity.cli.output import emit


def register(sub: Any) -> None:
    hold = sub.add_parser("hold", help="set, clear and list legal holds on tenants or backups")
    verbs = hold.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, text in (("set", "put a tenant (or one --backup) under legal hold"),
                       ("clear", "lift a legal hold set through the API")):
        parser = verbs.add_parser(verb, help=text)
        parser.add_argument("tenant", metavar="TENANT")
        parser.add_argument("--backup", default=None, metavar="ID", help="one backup instead of the whole tenant")
        parser.add_argument("--reason", required=True, help="why (case or ticket); recorded in the evidence chain")
        _common(parser)
        parser.set_defaults(handler=cmd_set if verb == "set" else cmd_clear)
    listing = verbs.add_parser("list", help="a tenant's active holds and their history")
    listing.add_argument("tenant", metavar="TENANT")
    _common(listing)
    listing.set_defaults(handler=cmd_list)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="local identity to act as (approver or admin role)")
    parser.add_argument("--endpoint", default=None, help="API base URL (default http://127.0.0.1:<devhost port>)")
    parser.add_argument("--json", action="store_true")


def _body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"reason": args.reason}
    if args.backup:
        body["backup_id"] = args.backup
    return body


def _what(args: argparse.Namespace) -> str:
    return f"backup {args.tenant}/{args.backup}" if args.backup else f"tenant {args.tenant}"


def cmd_set(args: argparse.Namespace) -> int:
    from continuity.cli.commands.failover import call
    result = call(args, "POST", f"/api/tenants/{args.tenant}/holds", _body(args))
    storage = result.get("storage") or {}
    state = "legal hold set on" if result["created"] else "already under legal hold:"
    emit(args, result, f"{state} {_what(args)} (by {result['hold']['set_by']}: {result['hold']['reason']})"
         + (f"\nstorage: {storage.get('detail')}" if storage else ""))
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    from continuity.cli.commands.failover import call
    result = call(args, "POST", f"/api/tenants/{args.tenant}/holds/clear", _body(args))
    emit(args, result, f"legal hold cleared on {_what(args)}\nstorage: {result['storage']['detail']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from continuity.cli.commands.failover import call
    result = call(args, "GET", f"/api/tenants/{args.tenant}/holds")
    lines = [f"tenant {args.tenant}: registry legal_hold {'yes' if result['registry_hold'] else 'no'}"]
    for h in result["active"]:
        lines.append(f"  ACTIVE  {h['scope']:<6} {h['backup_id'] or '*':<24} since {h['set_at']} by {h['set_by']}: "
                     f"{h['reason']}")
    for h in result["history"]:
        lines.append(f"  cleared {h['scope']:<6} {h['backup_id'] or '*':<24} {h['set_at']} - {h['cleared_at']} "
                     f"by {h['cleared_by']}: {h['clear_reason']}")
    emit(args, result, "\n".join(lines))
    return 0
