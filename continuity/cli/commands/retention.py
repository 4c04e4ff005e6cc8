"""``continuity retention plan|apply|audit``: immutable retention tiering.

``plan`` is a dry run read from the catalog, the registry and the holds (nothing changes); ``apply`` asks
the API (the devhost locally) to start today's run ``retention-YYYYMMDD`` as ``--user NAME``, or with
``--as-of`` the admin route (master key); ``audit`` reads every backup's tier, immutability policy and
legal hold from storage and lists deviations from the catalog and the plan (exit 1 when there are any).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from continuity.cli.output import emit

TERMINAL = {"Completed", "Failed", "Terminated", "Canceled"}


def register(sub: Any) -> None:
    retention = sub.add_parser("retention", help="plan, apply and audit backup retention (tiers, locks, deletes)")
    verbs = retention.add_subparsers(dest="verb", required=True, metavar="VERB")
    plan = verbs.add_parser("plan", help="dry run: what retention would keep, tier, lock and delete")
    plan.add_argument("--tenant", help="only this tenant")
    plan.add_argument("--as-of", type=_instant, help="plan as of this time (ISO 8601 with timezone; default now)")
    plan.add_argument("--all", action="store_true", help="list KEEP decisions too, not only changes")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(handler=cmd_plan)

    apply = verbs.add_parser("apply", help="start today's retention run through the API")
    apply.add_argument("--user", required=True, help="local identity to act as (operator or admin role)")
    apply.add_argument("--as-of", type=_instant, help="run as of this time (admin route: uses the master key)")
    apply.add_argument("--wait", action="store_true", help="wait until the run ends and show its summary")
    apply.add_argument("--endpoint", default=None, help="API base URL (default http://127.0.0.1:<devhost port>)")
    apply.add_argument("--json", action="store_true")
    apply.set_defaults(handler=cmd_apply)

    audit = verbs.add_parser("audit", help="compare storage with the catalog and the plan; exit 1 on deviations")
    audit.add_argument("--tenant", help="only this tenant")
    audit.add_argument("--as-of", type=_instant,
                       help="judge the plan at this time (default: the as_of of the last completed run)")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(handler=cmd_audit)


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not ISO 8601 (e.g. 2026-03-31T03:00:00Z)") from exc
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no timezone; add Z or +00:00")
    return value


def render_plan(doc: dict[str, Any], show_all: bool = False) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(doc["summary"].items()))
    scope = f"tenant {doc['tenant']}" if doc.get("tenant") else "all tenants"
    lines = [f"retention plan as of {doc['now']} for {scope} (dry run, nothing changed): {counts}"]
    shown = [a for a in doc["actions"] if show_all or a["kind"] != "KEEP"]
    for a in shown[:200]:
        extra = f" -> {a['to']}" if "to" in a else f" until {a['until']}" if "until" in a else ""
        lines.append(f"  {a['kind']:<16} {a['tenant']}/{a['backup_id']}{extra}: {a['reason']}")
    if len(shown) > 200:
        lines.append(f"  ... {len(shown) - 200} more (use --json)")
    holds = doc.get("holds") or {}
    if holds.get("tenants") or holds.get("backups"):
        lines.append(f"legal holds: tenants {', '.join(holds['tenants']) or '-'}; "
                     f"backups {', '.join(holds['backups']) or '-'}")
    lines.append(f"immutability: {doc['immutability']}")
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    from continuity.retention import service as retention_service

    doc = retention_service.plan_document(retention_service.open_ports(), args.as_of or datetime.now(UTC),
                                          args.tenant)
    emit(args, doc, render_plan(doc, args.all))
    return 0


def _master_key() -> str:
    from continuity.kernel import settings

    configured = settings.get("CONTINUITY_DEVHOST_MASTER_KEY")
    if configured:
        return configured
    from devhost.keys import keys_file

    path = keys_file()
    return str(json.loads(path.read_text()).get("masterKey", "")) if path.exists() else ""


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None, *, admin: bool = False) -> Any:
    from continuity.cli.commands.failover import call

    return call(args, method, path, body, function_key=_master_key() if admin else None)


def render_run(body: dict[str, Any]) -> str:
    run = body.get("run") or {}
    summary = run.get("summary") or {}
    lines = [f"{body['run_id']}: {body.get('runtime_status')} ({run.get('state', 'not started')}), as of "
             f"{run.get('as_of', '?')}, requested by {run.get('requested_by', '?')}"]
    for kind, statuses in sorted((summary.get("outcomes") or {}).items()):
        lines.append(f"  {kind:<16} " + ", ".join(f"{s} {n}" for s, n in sorted(statuses.items())))
    for item in summary.get("not_done") or []:
        lines.append(f"  not done: {item}")
    if summary.get("error"):
        lines.append(f"  error: {summary['error']}")
    if summary.get("store_enforces_immutability") is False:
        lines.append("  immutability: not enforced by this store (locks are recorded, storage does not enforce them)")
    return "\n".join(lines)


def _run_failed(body: dict[str, Any]) -> bool:
    run = body.get("run") or {}
    summary = run.get("summary") or {}
    return (body.get("runtime_status") != "Completed" or run.get("state") != "completed"
            or bool(summary.get("not_done_count")))


def cmd_apply(args: argparse.Namespace) -> int:
    if args.as_of is not None:
        started = _call(args, "POST", "/api/retention/apply-as-of", {"as_of": args.as_of.isoformat()}, admin=True)
    else:
        started = _call(args, "POST", "/api/retention/apply", {})
    if not args.wait:
        emit(args, started, f"{started['instance_id']} {'started' if started['created'] else 'already exists'} "
             f"({started.get('runtime_status')}); follow it with `continuity retention apply --wait` or "
             f"GET {started['status_url']}")
        return 0
    last = ""
    while True:
        body: dict[str, Any] = _call(args, "GET", started["status_url"])
        status = str(body.get("runtime_status"))
        if status != last and sys.stderr.isatty():
            print(f"{started['instance_id']}: {status}", file=sys.stderr)
            last = status
        if status in TERMINAL:
            break
        time.sleep(0.5)
    emit(args, body, render_run(body))
    return 1 if _run_failed(body) else 0


def render_audit(report: dict[str, Any]) -> str:
    tiers = ", ".join(f"{k} {v}" for k, v in report["tiers"].items()) or "none"
    lines = [f"retention audit as of {report['as_of']} (last run {report['last_run'] or 'none'}): "
             f"{report['backups_checked']} backup(s), {report['blobs_read']} blob(s) read from storage; tiers: {tiers}",
             f"immutability and legal holds: {report['immutability']['note']}"]
    if report["ok"]:
        lines.append("OK: storage matches the catalog and the plan")
    else:
        lines.append(f"{len(report['deviations'])} deviation(s):")
        lines += [f"  [{d['kind']}] {d['tenant']}/{d['backup_id']}: {d['detail']}" for d in report["deviations"][:200]]
    return "\n".join(lines)


def cmd_audit(args: argparse.Namespace) -> int:
    from continuity.retention import service as retention_service

    report = retention_service.audit(retention_service.open_ports(), args.as_of, args.tenant)
    emit(args, report, render_audit(report))
    return 0 if report["ok"] else 1
