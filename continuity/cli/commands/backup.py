"""``continuity backup TENANT|--all``: pg_dump to blob storage with a manifest written last."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from continuity.backups.rules import DEFAULT_DEADLINE_SECONDS, StoredBackup, check_tenant_id
from continuity.cli.output import emit
from continuity.cli.progress import progress
from continuity.kernel import settings
from continuity.kernel.errors import ContinuityError, InvalidRequest
from continuity.kernel.tenants import Registry


def register(sub: Any) -> None:
    backup = sub.add_parser("backup", help="back up a tenant's database (pg_dump -Fc + manifest) to blob storage")
    target = backup.add_mutually_exclusive_group(required=True)
    target.add_argument("tenant", nargs="?", metavar="TENANT", help="tenant id from the registry")
    target.add_argument("--all", action="store_true", help="every tenant in the registry, one after another")
    target.add_argument("--due", action="store_true",
                        help="what each tier's schedule says is due now (tenant dumps, base backups of archived "
                             "servers), with why; the backup timer's work, run here")
    backup.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE_SECONDS, metavar="SECONDS",
                        help=f"kill pg_dump and store nothing after this long (default {DEFAULT_DEADLINE_SECONDS})")
    backup.add_argument("--json", action="store_true")
    backup.set_defaults(handler=cmd_backup)


def configured_registry() -> Registry:
    """The tenant registry named by CONTINUITY_TENANTS_FILE (relative paths from the project root)."""
    return settings.configured_registry()


def render(stored: StoredBackup) -> str:
    return (f"{stored.tenant}: {stored.container}/{stored.dump}  {stored.size} bytes  sha256 {stored.sha256}  "
            f"({stored.posted_moves} posted moves, {stored.seconds:.1f}s; manifest {stored.manifest})")


def cmd_backup(args: argparse.Namespace) -> int:
    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.adapters.tools.backup_taker import take_backup
    if args.deadline <= 0:
        raise InvalidRequest(f"--deadline must be a positive number of seconds, got {args.deadline:g}")
    if args.due:
        return cmd_due(args)
    if not args.all:
        check_tenant_id(args.tenant)  # a hostile id is refused before the registry or anything else is read
    registry = configured_registry()
    store = BlobStore()
    if not args.all:
        with progress(args, f"backup {args.tenant} (pg_dump to storage)"):
            stored = take_backup(registry, args.tenant, store=store, deadline_seconds=args.deadline)
        emit(args, {"backups": [stored.to_json()], "errors": []}, render(stored))
        return 0
    done: list[StoredBackup] = []
    errors: list[dict[str, str]] = []
    tenants = registry.list_tenants()
    with progress(args, "backup", total=len(tenants), unit="tenants") as bar:
        for tenant in tenants:
            bar.describe(f"backup {tenant.id}")
            try:
                done.append(take_backup(registry, tenant.id, store=store, deadline_seconds=args.deadline))
            except ContinuityError as exc:
                errors.append({"tenant": tenant.id, "code": exc.code, "message": str(exc)})
                if not args.json:
                    print(f"continuity: {tenant.id}: {exc}", file=sys.stderr)
            bar.advance()
    emit(args, {"backups": [b.to_json() for b in done], "errors": errors}, "\n".join(render(b) for b in done))
    return 1 if errors else 0


def cmd_due(args: argparse.Namespace) -> int:
    """Take what is due now and print what and why; exit 1 when a backup failed or an archive was unreadable."""
    import uuid
    from datetime import UTC, datetime

    from continuity.backups.service import take_due

    now = datetime.now(UTC)
    with progress(args, "backups due (tier schedules)"):
        done = take_due(now, f"backup-due-{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}")
    lines = [("DUE      " if d["due"] else "not due  ") + d["reason"] for d in done["base_backups"] + done["dumps"]]
    for t in done["taken"]:
        what = t.get("backup_id") or t.get("base_backup")
        lines.append(f"taken    {t['kind']} {t['subject']}: {what}" if t["ok"] else
                     f"FAILED   {t['kind']} {t['subject']}: {t.get('error')}")
    for chain in done["chains"]:
        if chain["break"]:
            lines.append(f"BROKEN   recovery chain of {chain['server']}: {chain['break']['reason']}")
    lines += [f"ERROR    archive of {e['server']}: {e['message']}" for e in done["errors"]]
    if not done["taken"]:
        lines.append("nothing due")
    emit(args, done, "\n".join(lines))
    return 1 if done["errors"] or any(not t["ok"] for t in done["taken"]) else 0
