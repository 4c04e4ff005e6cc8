"""``continuity evidence verify|head``: check the evidence chain from storage, without trusting the database."""

from __future__ import annotations

import argparse
from typing import Any

from continuity.adapters.postgres.control_db import prepare
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.evidence_store import EvidenceStore
from continuity.cli.output import emit


def register(sub: Any) -> None:
    evidence = sub.add_parser("evidence", help="verify the hash-chained evidence trail")
    verbs = evidence.add_subparsers(dest="verb", required=True, metavar="VERB")
    verify = verbs.add_parser(
        "verify", help="walk the chain from storage, cross-check the index; exit 1 naming the first broken record")
    verify.add_argument("--json", action="store_true",
                        help="print {ok, records_checked, storage_head, index_head, problem: {seq, kind, reason}, "
                             "container, store_enforces_immutability, immutability}")
    verify.set_defaults(handler=cmd_verify)
    head = verbs.add_parser("head", help="print the chain head (seq, hash) as the index knows it")
    head.add_argument("--json", action="store_true")
    head.set_defaults(handler=cmd_head)


def open_store() -> EvidenceStore:
    return EvidenceStore(prepare(), BlobStore())


def cmd_verify(args: argparse.Namespace) -> int:
    report = open_store().verify()
    emit(args, report.to_json(), report.render())
    return 0 if report.ok else 1


def cmd_head(args: argparse.Namespace) -> int:
    head = open_store().head()
    emit(args, head.to_json(), f"seq {head.seq} {head.hash}")
    return 0
