"""``continuity import odoo-backup TENANT FILE`` and ``continuity export odoo-backup TENANT FILE``: Odoo's own
backup format (the database manager's zip, or a plain dump.sql) in, and out again."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from continuity.cli.output import emit


def register(sub: Any) -> None:
    area = sub.add_parser("import", help="bring a backup made elsewhere in")
    kinds = area.add_subparsers(dest="kind", required=True, metavar="KIND")
    odoo = kinds.add_parser("odoo-backup", help="an Odoo database-manager zip (dump.sql + filestore/ + "
                                                "manifest.json) or a plain dump.sql, into the tenant's new database")
    odoo.add_argument("tenant", metavar="TENANT")
    odoo.add_argument("file", metavar="FILE", type=Path)
    odoo.add_argument("--no-validate", action="store_true", help="load only: no backup and validation after")
    odoo.add_argument("--json", action="store_true")
    odoo.set_defaults(handler=cmd_import_odoo)
    out = sub.add_parser("export", help="write a tenant's backup in another tool's format")
    out_kinds = out.add_subparsers(dest="kind", required=True, metavar="KIND")
    odoo_out = out_kinds.add_parser("odoo-backup", help="the zip Odoo's database manager restores (dump.sql, "
                                                        "manifest.json, filestore/), from a backup that restores")
    odoo_out.add_argument("tenant", metavar="TENANT")
    odoo_out.add_argument("file", metavar="FILE", type=Path)
    odoo_out.add_argument("--backup", metavar="ID", default=None, help="backup id (default: the newest)")
    odoo_out.add_argument("--json", action="store_true")
    odoo_out.set_defaults(handler=cmd_export_odoo)


def render(result: dict[str, Any]) -> str:
    lines = [f"{result['tenant']}: loaded {result['tables']} tables into {result['database']}, "
             f"{result['filestore_files']} filestore file(s), in {result['seconds']}s"]
    odoo = result.get("odoo_manifest") or {}
    if odoo:
        lines.append(f"  Odoo {odoo.get('version')} (PostgreSQL {odoo.get('pg_version')}, "
                     f"{odoo.get('modules')} modules)")
    for what, count in sorted((result.get("dropped_lines") or {}).items()):
        lines.append(f"  dropped {count} line(s): {what}")
    validation = result.get("validation")
    if validation:
        lines.append(f"  backup {result['backup_id']}: {validation['outcome']} — {validation['reason']}")
    return "\n".join(lines)


def cmd_import_odoo(args: argparse.Namespace) -> int:
    from continuity.cli.progress import progress
    from continuity.odoo_backup.service import import_odoo_backup

    with progress(args, f"import {args.tenant}") as bar:
        result = import_odoo_backup(args.tenant, args.file, validate=not args.no_validate,
                                    progress=bar.describe).to_json()
    emit(args, result, render(result))
    validation = result.get("validation")
    return 0 if validation is None or validation["outcome"] == "passed" else 1


def cmd_export_odoo(args: argparse.Namespace) -> int:
    from continuity.odoo_backup.service import export_odoo_backup

    result = export_odoo_backup(args.tenant, args.file, args.backup).to_json()
    emit(args, result, f"{result['tenant']} {result['backup_id']}: {result['path']} ({result['bytes']} bytes, Odoo "
                       f"{result['odoo_manifest']['version']}, {result['filestore_files']} filestore file(s), "
                       f"{result['missing_files']} missing)")
    return 0 if result["missing_files"] == 0 else 1
