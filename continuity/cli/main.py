"""The ``continuity`` command: local stack, demo data, backups, catalog, validation, failover, evidence.

Every command that prints results takes ``--json`` and exits non-zero on failure. Each area of
commands lives in its own module under :mod:`continuity.cli.commands` and registers its subcommands.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from continuity.cli.commands import (
    backup,
    catalog,
    demo,
    evidence,
    failover,
    hold,
    local,
    odoo_backup,
    pitr,
    recover,
    retention,
    trigger,
    users,
    validate,
)
from continuity.kernel import settings
from continuity.kernel.errors import ContinuityError

AREAS = (local, demo, backup, catalog, evidence, trigger, validate, users, failover, retention, hold, recover,
         odoo_backup, pitr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="continuity", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in AREAS:
        area.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    settings.load_local_settings()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ContinuityError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": {"code": exc.code, "message": str(exc)}}))
        print(f"continuity: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("continuity: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
