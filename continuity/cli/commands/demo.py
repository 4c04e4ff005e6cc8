"""``continuity demo seed``: Odoo-shaped demo tenants on the primary cluster and their filestore in storage."""

from __future__ import annotations

import argparse
from typing import Any

from continuity.cli.output import emit
from continuity.demo.dataset import MAX_SCALE, SCALE_FOR_1GB_DUMP
from continuity.kernel.errors import InvalidRequest


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="demo tenants with Odoo 17-shaped accounting data")
    verbs = demo.add_subparsers(dest="verb", required=True, metavar="VERB")
    seed = verbs.add_parser(
        "seed", help="create the first N tenants' databases with demo data (idempotent)",
        description="Seed the first N tenants of the registry. Scale 1 is about 2,000 moves, 8,400 journal "
                    "items, 200 partners and 20 invoice PDFs (~10,600 rows, ~0.6 MB of pg_dump -Fc); rows grow "
                    f"linearly with the scale, and scale {SCALE_FOR_1GB_DUMP} gives a dump of about 1 GB.")
    seed.add_argument("--tenants", type=int, default=3, metavar="N", help="how many tenants, registry order")
    seed.add_argument("--scale", type=int, default=1, metavar="S", help=f"1..{MAX_SCALE} (default 1)")
    seed.add_argument("--force", action="store_true",
                      help="drop and rebuild an already seeded demo database, e.g. at another scale "
                           "(never a non-demo one)")
    seed.add_argument("--json", action="store_true")
    seed.set_defaults(handler=cmd_seed)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def cmd_seed(args: argparse.Namespace) -> int:
    from continuity.adapters.postgres.demo_seed import seed_tenant
    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.cli.commands.backup import configured_registry
    registry = configured_registry()
    tenants = registry.list_tenants()
    if not 1 <= args.tenants <= len(tenants):
        raise InvalidRequest(f"--tenants must be between 1 and {len(tenants)} (the registry has {len(tenants)} "
                             "tenants)")
    from continuity.cli.progress import progress

    store = BlobStore()
    results = []
    with progress(args, "seed", total=args.tenants, unit="tenants") as bar:
        for tenant in tenants[: args.tenants]:
            bar.describe(f"seed {tenant.id} (scale {args.scale})")
            results.append(seed_tenant(registry, tenant, args.scale, force=args.force, store=store))
            bar.advance()
    lines = [f"{r.tenant:<16} {r.status:<15} scale {r.scale}  {sum(r.row_counts.values()):>9} rows  "
             f"{r.attachments} attachments ({_size(r.attachment_bytes)})  database {_size(r.database_bytes)}  "
             f"{r.seconds:.1f}s" for r in results]
    emit(args, {"tenants": [r.to_json() for r in results]}, "\n".join(lines))
    return 0
