"""``continuity catalog list|ingest|reconcile|rebuild``: the per-tenant backup catalog."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from continuity.adapters.postgres.catalog_store import PgCatalogStore
from continuity.catalog.model import BackupStatus, CatalogEntry
from continuity.catalog.service import open_catalog
from continuity.cli.output import emit
from continuity.kernel.errors import InvalidRequest


def register(sub: Any) -> None:
    catalog = sub.add_parser("catalog", help="list, reconcile or rebuild the backup catalog")
    verbs = catalog.add_subparsers(dest="verb", required=True, metavar="VERB")

    ls = verbs.add_parser("list", help="backups newest first; --json prints {items: [...], next_cursor}")
    ls.add_argument("--tenant", help="only this tenant")
    ls.add_argument("--status", choices=[str(s) for s in BackupStatus])
    ls.add_argument("--since", type=_instant, help="created at or after (ISO 8601 with timezone)")
    ls.add_argument("--before", type=_instant, help="created before (ISO 8601 with timezone)")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--cursor", help="next_cursor of the previous page")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_list)

    ingest = verbs.add_parser("ingest", help="catalog one blob of the backups container (what BlobCreated does)")
    ingest.add_argument("blob", help="{tenant}/{yyyy}/{mm}/{dd}/{backup_id}/{db.dump|manifest.json}")
    ingest.add_argument("--json", action="store_true")
    ingest.set_defaults(handler=cmd_ingest)

    reconcile = verbs.add_parser("reconcile", help="ingest what events missed; mark missing what is gone")
    reconcile.add_argument("--json", action="store_true")
    reconcile.set_defaults(handler=cmd_reconcile)

    rebuild = verbs.add_parser("rebuild", help="recreate catalog entries from manifests and tags in storage alone")
    rebuild.add_argument("--verify-checksums", action="store_true",
                         help="re-read every dump instead of trusting the status tag written after verification")
    rebuild.add_argument("--json", action="store_true")
    rebuild.set_defaults(handler=cmd_rebuild)


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not ISO 8601 (e.g. 2025-01-01T00:00:00Z)") from exc
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no timezone; add Z or +00:00")
    return value


def render_entries(items: list[CatalogEntry]) -> str:
    if not items:
        return "no backups"
    lines = [f"{'tenant':<20} {'backup_id':<24} {'status':<17} {'created_at (UTC)':<20} {'size':>12}  sha256"]
    for e in items:
        lines.append(f"{e.tenant:<20} {e.backup_id:<24} {e.status!s:<17} {e.created_at:%Y-%m-%d %H:%M:%S}  "
                     f"{e.dump_size if e.dump_size is not None else '-':>12}  {(e.dump_sha256 or '-')[:12]}")
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    from continuity.adapters.postgres.control_db import prepare
    if args.limit < 1:
        raise InvalidRequest("--limit must be at least 1")
    items, cursor = PgCatalogStore(prepare()).list_backups(
        tenant=args.tenant, status=BackupStatus(args.status) if args.status else None, since=args.since,
        before=args.before, limit=args.limit, cursor=args.cursor)
    text = render_entries(items) + (f"\nmore: --cursor {cursor}" if cursor else "")
    emit(args, {"items": [e.to_json() for e in items], "next_cursor": cursor}, text)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    outcome = open_catalog(actor="cli").ingest_blob(args.blob)
    emit(args, outcome.to_json(), outcome.message)
    return 1 if outcome.rejected else 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    report = open_catalog(actor="cli").reconcile()
    emit(args, report.to_json(), _render_sweep(report.to_json()))
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from continuity.cli.progress import progress

    with progress(args, "catalog rebuild from storage"):
        report = open_catalog(actor="cli").rebuild(verify_checksums=args.verify_checksums)
    emit(args, report.to_json(), _render_sweep(report.to_json()))
    return 0


def _render_sweep(data: dict[str, Any]) -> str:
    ingested = ", ".join(f"{k} {v}" for k, v in sorted(data["ingested"].items())) or "none"
    lines = [f"{data['operation']}: {data['blobs_listed']} blobs, {data['backups_found']} backups in storage; "
             f"inserted {data['inserted']}, ingested ({ingested}), marked missing {data['marked_missing']}, "
             f"re-tagged {data['retagged']}, rejected {data['rejected']}"]
    if data["operation"] == "rebuild":
        lines.append(f"  manifests: {data['manifests_from_metadata']} from the copy in metadata, "
                     f"{data['manifests_read']} read blob by blob")
    lines += [f"  {m}" for m in data["messages"][:50]]
    return "\n".join(lines)
