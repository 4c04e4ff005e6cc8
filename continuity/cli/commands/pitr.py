"""``continuity pitr``: the WAL archive of the servers we run (Barman's cloud clients, Blob storage).

    continuity pitr base-backup [SERVER]   a base backup into the archive (and the tenants' attachments kept)
    continuity pitr window [SERVER]        base backups and the recovery window, read from storage alone
    continuity pitr prove [SERVER]         the archive proof: restore + replay in the sandbox, checks, evidence
    continuity pitr retention [SERVER] [--dry-run] [--as-of TIME]
                                           delete base backups (and their WAL) no tier's window needs any more

SERVER defaults to every archived server of the registry. A tenant is rewound to a second with
``continuity recover TENANT --to TIME`` (approval-gated, like every recovery).
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime
from typing import Any

from continuity.cli.output import emit
from continuity.kernel import settings


def register(sub: Any) -> None:
    pitr = sub.add_parser("pitr", help="WAL archive, base backups and the archive proof (point-in-time recovery)")
    verbs = pitr.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, text, handler in (("base-backup", "take a base backup of the server into the archive", cmd_base),
                                ("window", "the server's base backups and recovery window", cmd_window),
                                ("prove", "restore + replay the archive in the sandbox and check every tenant",
                                 cmd_prove)):
        parser = verbs.add_parser(verb, help=text)
        parser.add_argument("server", nargs="?", default=None, metavar="SERVER")
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(handler=handler)
    retention = verbs.add_parser("retention", help="delete base backups and WAL the tiers no longer promise")
    retention.add_argument("server", nargs="?", default=None, metavar="SERVER")
    retention.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    retention.add_argument("--as-of", default=None, metavar="TIME", help="plan as of this ISO time (with a zone)")
    retention.add_argument("--json", action="store_true")
    retention.set_defaults(handler=cmd_retention)


def _servers(args: argparse.Namespace) -> list[str]:
    from continuity.pitr import service

    registry = settings.configured_registry()
    return [args.server] if args.server else service.archived_servers(registry)


def cmd_base(args: argparse.Namespace) -> int:
    from continuity.pitr import service

    registry = settings.configured_registry()
    taken = [service.take_base_backup(registry, s) for s in _servers(args)]
    emit(args, taken, "\n".join(f"{t['server']}: base backup {t['base_backup']} in {t['seconds']} s" for t in taken))
    return 0


def cmd_window(args: argparse.Namespace) -> int:
    from continuity.pitr import service

    registry = settings.configured_registry()
    windows = [service.window(registry, s) for s in _servers(args)]
    lines = []
    for w in windows:
        span = f"{w['earliest']} .. {w['latest']}" if w["restorable"] else "not restorable"
        gap = f"; MISSING SEGMENT {w['gap']}" if w["gap"] else ""
        lines.append(f"{w['server']}: {span} ({w['base_backups']} base backups, {w['segments']} segments, newest "
                     f"{w['newest_segment']}){gap}")
    emit(args, windows, "\n".join(lines))
    return 0 if all(w["restorable"] for w in windows) else 1


def cmd_prove(args: argparse.Namespace) -> int:
    from continuity.pitr import service

    registry = settings.configured_registry()
    stamp = datetime.now(UTC).strftime("%Y%m%dt%H%M%S")
    proofs = [service.prove_archive(registry, s, f"proof-{s}-{stamp}-{uuid.uuid4().hex[:6]}")
              for s in _servers(args)]
    lines = []
    for p in proofs:
        lines.append(f"{p['server']}: {'PROVEN' if p['ok'] else 'FAILED'} in {p['seconds']} s: {p['reason']}")
        for tenant, r in p.get("tenants", {}).items():
            lines.append(f"  {tenant}: {'ok' if not r['failed_checks'] else 'FAILED ' + ', '.join(r['failed_checks'])}"
                         f", {r['seconds']} s of RTO {r['rto_seconds']} s")
    emit(args, proofs, "\n".join(lines))
    return 0 if all(p["ok"] for p in proofs) else 1


def cmd_retention(args: argparse.Namespace) -> int:
    from continuity.pitr import service

    registry = settings.configured_registry()
    as_of = datetime.fromisoformat(args.as_of) if args.as_of else None
    results = [service.apply_archive_retention(registry, s, as_of, dry_run=args.dry_run, actor="cli")
               for s in _servers(args)]
    lines = []
    for r in results:
        verb = "would delete" if r["dry_run"] else "deleted"
        gone = [d["backup_id"] for d in r["plan"]["delete"]]
        lines.append(f"{r['server']}: {verb} {len(gone)} base backup(s) {', '.join(gone) or ''}; keeps "
                     f"{len(r['plan']['keep'])}, WAL from {r['plan']['wal_kept_from']}; promised from "
                     f"{r['plan']['promised_from']}")
    emit(args, results, "\n".join(lines))
    return 0
