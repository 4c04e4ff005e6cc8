"""``continuity evidence verify|head``: check the evidence chain from storage, without trusting the database.

``evidence verify --storage-only`` is the auditor's check: it lists and reads the evidence container and
nothing else (no control database, no writes), so it runs with a read-only SAS (``--container-url``).
"""

from __future__ import annotations

import argparse
from typing import Any

from continuity.adapters.postgres.control_db import prepare
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.evidence_store import EvidenceReader, EvidenceStore
from continuity.cli.output import emit
from continuity.evidence.chain import ChainHead, EvidenceInvalid, parse_head
from continuity.kernel.errors import ConfigError


def register(sub: Any) -> None:
    evidence = sub.add_parser("evidence", help="verify the hash-chained evidence trail")
    verbs = evidence.add_subparsers(dest="verb", required=True, metavar="VERB")
    verify = verbs.add_parser(
        "verify", help="walk the chain and its checkpoints from storage, cross-check the index, checkpoint the head; "
                       "exit 1 naming the first broken record")
    verify.add_argument("--storage-only", action="store_true",
                        help="read only the evidence container (list + read): no control database, no writes; "
                             "works with a read-only SAS")
    verify.add_argument("--expect-head", metavar="SEQ:HASH", type=_head,
                        help="a head published earlier (an event's evidence_chain_head, a report): fail unless "
                             "the chain reaches it with the same hash")
    verify.add_argument("--container-url", metavar="URL",
                        help="with --storage-only: the evidence container as a URL with a SAS token "
                             "(https://ACCOUNT.blob.core.windows.net/evidence?sv=…&sp=rl&sig=…); default: the "
                             "configured storage account and CONTINUITY_EVIDENCE_CONTAINER")
    verify.add_argument("--json", action="store_true",
                        help="print {ok, mode, records_checked, storage_head, index_head, checkpoints_checked, "
                             "newest_checkpoint, expected_head, checkpointed, problem: {seq, kind, reason}, "
                             "container, store_enforces_immutability, immutability}")
    verify.set_defaults(handler=cmd_verify)
    head = verbs.add_parser("head", help="print the chain head (seq, hash) as the index knows it")
    head.add_argument("--json", action="store_true")
    head.set_defaults(handler=cmd_head)


def _head(text: str) -> ChainHead:
    try:
        return parse_head(text)
    except EvidenceInvalid as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def open_store() -> EvidenceStore:
    return EvidenceStore(prepare(), BlobStore())


def cmd_verify(args: argparse.Namespace) -> int:
    if args.container_url and not args.storage_only:
        raise ConfigError("--container-url reads storage only: add --storage-only")
    if args.storage_only:
        # Nothing here may touch the control database or write: the auditor's credentials can only list and read.
        reader = EvidenceReader.from_container_url(args.container_url) if args.container_url \
            else EvidenceReader(BlobStore())
        report = reader.verify(expect_head=args.expect_head)
    else:
        report = open_store().verify(expect_head=args.expect_head)
    emit(args, report.to_json(), report.render())
    return 0 if report.ok else 1


def cmd_head(args: argparse.Namespace) -> int:
    head = open_store().head()
    emit(args, head.to_json(), f"seq {head.seq} {head.hash}")
    return 0
