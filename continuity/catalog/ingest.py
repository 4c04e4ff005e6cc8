"""Catalog use cases: ingest one blob (what the BlobCreated activities call), reconcile, rebuild.

The rules are in :mod:`continuity.catalog.model`; this module carries them out through small interfaces
(:class:`CatalogRepository`, :class:`BackupStorage`, :class:`EvidenceLog`) that
``continuity.adapters.postgres.catalog_store`` and ``continuity.adapters.storage.evidence_store`` implement.

Idempotent under at-least-once delivery: every ingest runs under a per-backup lock and looks at
storage, not at the event, so duplicates, late and reordered events (manifest before dump, dump
before manifest) converge on one correct entry; the same manifest twice is a no-op; a different
manifest under a settled id is a conflict, recorded as a rejection with the entry untouched.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from continuity.catalog.manifest import DUMP_FILE, MANIFEST_FILE, Manifest, ManifestCopyUnusable, manifest_from_copy
from continuity.catalog.model import (
    EXPECTED_IN_STORAGE,
    SETTLED,
    BackupPath,
    BackupRejected,
    BackupStatus,
    BlobFacts,
    CatalogEntry,
    Duplicate,
    RejectionCode,
    backup_tags,
    classify_manifest,
    dump_mismatch,
    entry_from_manifest,
    manifest_mismatch,
    parse_backup_blob,
    parse_manifest,
    pending_entry,
    transition_refusal,
)
from continuity.evidence.chain import EvidenceRecord
from continuity.kernel.errors import BackupNotFound

logger = logging.getLogger(__name__)
S = BackupStatus


# ---- interfaces ----------------------------------------------------------------------------


class CatalogSession(Protocol):
    """One transaction on the catalog; writes commit together when the session ends without error."""

    def get_entry(self, tenant: str, backup_id: str) -> CatalogEntry | None: ...

    def upsert_entry(self, entry: CatalogEntry) -> None: ...

    def record_rejection(self, *, container: str, blob: str, etag: str, tenant: str | None, backup_id: str | None,
                         code: str, reason: str, event_id: str | None) -> bool: ...

    def event_processed(self, event_id: str) -> str | None: ...

    def mark_event_processed(self, event_id: str, outcome: str) -> None: ...


class CatalogRepository(Protocol):
    def locked(self, tenant: str, backup_id: str) -> AbstractContextManager[CatalogSession]:
        """A session holding the lock of one backup id: ingests of the same id never interleave."""
        ...

    def session(self) -> AbstractContextManager[CatalogSession]: ...

    def iter_entries(self, statuses: list[BackupStatus] | None = None) -> Iterator[CatalogEntry]: ...

    def insert_missing(self, entries: list[CatalogEntry]) -> int:
        """Insert entries not cataloged yet; never overwrite one. Returns how many were inserted."""
        ...

    def record_validation(self, *, tenant: str, backup_id: str, run_id: str, started_at: datetime,
                          finished_at: datetime, passed: bool, checks: Any, durations: dict[str, float],
                          summary: dict[str, Any], error: bool = False) -> CatalogEntry:
        """Record one validation attempt (idempotent per run id) and move the entry (UNVERIFIED on an error)."""
        ...


class BackupStorage(Protocol):
    container: str

    def facts(self, name: str) -> BlobFacts | None:
        """Properties of a blob, or None if it does not exist."""
        ...

    def read(self, name: str) -> bytes: ...

    def hash(self, name: str) -> tuple[int, str]:
        """(size, sha256 hex) of a blob, streamed."""
        ...

    def set_tags(self, name: str, tags: dict[str, str]) -> None: ...

    def list_all(self) -> Iterator[BlobFacts]:
        """Every blob of the container, with its tags."""
        ...


class EvidenceLog(Protocol):
    def append(self, *, actor: str, action: str, subject: str, data: dict[str, Any] | None = None,
               idempotency_key: str | None = None) -> EvidenceRecord: ...


# ---- outcomes ------------------------------------------------------------------------------


class IngestAction(StrEnum):
    CATALOGED = "cataloged"            # a new AVAILABLE entry (publish continuity.backup.cataloged)
    PENDING = "pending"                # one part seen; the other's event completes it
    DUPLICATE = "duplicate"            # the same manifest again: nothing changed
    DUPLICATE_EVENT = "duplicate_event"  # this event id was processed before
    UNCHANGED = "unchanged"            # nothing to do for this entry's state (e.g. deleted by retention)
    REJECTED = "rejected"              # refused (publish continuity.backup.rejected)
    CONFLICT = "conflict"              # a different manifest under a settled id (also publish rejected)


@dataclass(frozen=True)
class IngestOutcome:
    """What one ingest did, as a sentence the tests assert and the activity returns."""

    action: IngestAction
    blob: str
    message: str
    tenant: str | None = None
    backup_id: str | None = None
    status: BackupStatus | None = None
    rejection_code: RejectionCode | None = None
    evidence_seq: int | None = None

    @property
    def rejected(self) -> bool:
        return self.action in (IngestAction.REJECTED, IngestAction.CONFLICT)

    def to_json(self) -> dict[str, Any]:
        return {"action": str(self.action), "blob": self.blob, "message": self.message, "tenant": self.tenant,
                "backup_id": self.backup_id, "status": str(self.status) if self.status else None,
                "rejection_code": str(self.rejection_code) if self.rejection_code else None,
                "evidence_seq": self.evidence_seq}


@dataclass
class SweepReport:
    """What reconcile or rebuild did."""

    operation: str
    blobs_listed: int = 0
    backups_found: int = 0
    inserted: int = 0
    ingested: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    marked_missing: int = 0
    retagged: int = 0
    rejected: int = 0
    manifests_from_metadata: int = 0  # rebuild: manifests taken from the copy the listing carried
    manifests_read: int = 0           # rebuild: manifests read blob by blob (no copy, or a copy that failed)
    messages: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        if len(self.messages) < 200:
            self.messages.append(message)

    def to_json(self) -> dict[str, Any]:
        return {"operation": self.operation, "blobs_listed": self.blobs_listed, "backups_found": self.backups_found,
                "inserted": self.inserted, "ingested": dict(self.ingested), "marked_missing": self.marked_missing,
                "retagged": self.retagged, "rejected": self.rejected,
                "manifests_from_metadata": self.manifests_from_metadata, "manifests_read": self.manifests_read,
                "messages": self.messages}


# ---- the service ---------------------------------------------------------------------------


class CatalogService:
    """Ingest, reconcile and rebuild the catalog from the backups container."""

    def __init__(self, repo: CatalogRepository, storage: BackupStorage, evidence: EvidenceLog,
                 tenant_known: Callable[[str], bool], schema_check: Callable[[Any], str | None],
                 actor: str = "catalog") -> None:
        self.repo = repo
        self.storage = storage
        self.evidence = evidence
        self.tenant_known = tenant_known
        self.schema_check = schema_check
        self.actor = actor

    # ---- ingest ------------------------------------------------------------------------------
    def ingest_blob(self, blob: str, *, event_id: str | None = None, actor: str | None = None) -> IngestOutcome:
        """Catalog the backup ``blob`` belongs to, looking at storage as it is now.

        :param blob: a name inside the backups container (``{tenant}/{yyyy}/{mm}/{dd}/{id}/{file}``).
        :param event_id: the Event Grid event id, for dedupe of redelivered events.
        :returns: the outcome; refusals are outcomes (recorded, with evidence), not exceptions.
        """
        actor = actor or self.actor
        try:
            path = parse_backup_blob(blob, self.tenant_known)
        except BackupRejected as exc:
            return self._reject_layout(blob, exc, event_id, actor)
        with self.repo.locked(path.tenant, path.backup_id) as session:
            if event_id is not None:
                seen = session.event_processed(event_id)
                if seen is not None:
                    return IngestOutcome(IngestAction.DUPLICATE_EVENT, blob,
                                         f"event {event_id} was processed before ({seen}); nothing to do",
                                         path.tenant, path.backup_id)
            outcome = self._ingest_locked(session, path, event_id, actor)
            if event_id is not None:
                session.mark_event_processed(event_id, str(outcome.action))
        logger.info("catalog ingest: %s", outcome.message,
                    extra={"tenant": path.tenant, "backup_id": path.backup_id, "action": str(outcome.action)})
        return outcome

    def _ingest_locked(self, session: CatalogSession, path: BackupPath, event_id: str | None,
                       actor: str) -> IngestOutcome:
        blob = path.name
        existing = session.get_entry(path.tenant, path.backup_id)
        manifest_facts = self.storage.facts(path.sibling(MANIFEST_FILE))
        dump_facts = self.storage.facts(path.sibling(DUMP_FILE))
        if manifest_facts is None or dump_facts is None:
            return self._pending(session, path, existing, manifest_facts, dump_facts)

        manifest_bytes = self.storage.read(manifest_facts.name)
        manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
        duplicate = classify_manifest(existing, manifest_sha)
        if duplicate is Duplicate.MATCHING and existing is not None and existing.status is not S.MISSING:
            self._tag(path, existing.kind, existing.status)
            return IngestOutcome(IngestAction.DUPLICATE, blob,
                                 f"backup {path.tenant}/{path.backup_id} is already {existing.status} with this "
                                 "manifest; nothing changed", path.tenant, path.backup_id, existing.status)
        if duplicate is Duplicate.CONFLICTING and existing is not None:
            reason = (f"a different manifest (sha256 {manifest_sha[:12]}…) arrived under backup {path.backup_id}, "
                      f"which is {existing.status} with manifest {str(existing.manifest_sha256)[:12]}…; "
                      "the catalog entry is kept and the new manifest quarantined")
            return self._reject(session, path, manifest_facts, RejectionCode.CONFLICT, reason, event_id, actor,
                                entry_status=None, existing=existing)
        if existing is not None and existing.status is S.DELETED:
            return IngestOutcome(IngestAction.UNCHANGED, blob,
                                 f"backup {path.tenant}/{path.backup_id} was deleted by retention; blobs under its "
                                 "id are not cataloged again", path.tenant, path.backup_id, existing.status)

        try:
            manifest, raw = parse_manifest(manifest_bytes, self.schema_check)
            mismatch = manifest_mismatch(path, manifest)
            if mismatch:
                raise BackupRejected(RejectionCode.MANIFEST_MISMATCH, mismatch)
        except BackupRejected as exc:
            return self._reject(session, path, manifest_facts, exc.rejection_code, exc.reason, event_id, actor,
                                entry_status=S.REJECTED, existing=existing, manifest_sha=manifest_sha)
        size, sha = self.storage.hash(dump_facts.name)
        problem = dump_mismatch(manifest, size, sha)
        if problem:
            code, reason = problem
            return self._reject(session, path, dump_facts, code, reason, event_id, actor, entry_status=S.REJECTED,
                                existing=existing, manifest=(manifest, raw), manifest_sha=manifest_sha)
        return self._catalog(session, path, existing, manifest, raw, manifest_sha, dump_facts, actor)

    def _pending(self, session: CatalogSession, path: BackupPath, existing: CatalogEntry | None,
                 manifest_facts: BlobFacts | None, dump_facts: BlobFacts | None) -> IngestOutcome:
        blob = path.name
        if manifest_facts is None and dump_facts is None:
            return IngestOutcome(IngestAction.UNCHANGED, blob,
                                 f"no part of backup {path.tenant}/{path.backup_id} is in storage any more; "
                                 "reconcile marks cataloged ones missing", path.tenant, path.backup_id,
                                 existing.status if existing else None)
        if existing is not None and transition_refusal(existing.status, S.PENDING):
            return IngestOutcome(IngestAction.UNCHANGED, blob,
                                 f"backup {path.tenant}/{path.backup_id} is {existing.status}; a part missing now is "
                                 "reconcile's business", path.tenant, path.backup_id, existing.status)
        entry = pending_entry(path, self.storage.container, dump_facts, manifest_facts is not None, existing)
        session.upsert_entry(entry)
        present = manifest_facts or dump_facts
        assert present is not None
        self.storage.set_tags(present.name, backup_tags(path.tenant, path.backup_id, entry.kind, S.PENDING))
        return IngestOutcome(IngestAction.PENDING, blob,
                             f"backup {path.tenant}/{path.backup_id} is pending: {entry.status_reason}",
                             path.tenant, path.backup_id, S.PENDING)

    def _catalog(self, session: CatalogSession, path: BackupPath, existing: CatalogEntry | None, manifest: Manifest,
                 raw: dict[str, Any], manifest_sha: str, dump: BlobFacts, actor: str) -> IngestOutcome:
        entry = entry_from_manifest(path, self.storage.container, manifest, raw, manifest_sha, dump, S.AVAILABLE,
                                    "db.dump size and sha256 match the manifest", existing)
        record = self.evidence.append(
            actor=actor, action="catalog.ingested", subject=f"backup {path.tenant}/{path.backup_id}",
            data={"tenant": path.tenant, "backup_id": path.backup_id, "status": str(S.AVAILABLE),
                  "dump_sha256": entry.dump_sha256, "dump_size": entry.dump_size, "manifest_sha256": manifest_sha,
                  "created_at": entry.created_at},
            idempotency_key=f"catalog.ingested:{path.tenant}/{path.backup_id}:{manifest_sha}")
        session.upsert_entry(entry)
        self._tag(path, entry.kind, S.AVAILABLE)
        return IngestOutcome(IngestAction.CATALOGED, path.name,
                             f"backup {path.tenant}/{path.backup_id} cataloged as available "
                             f"({entry.dump_size} bytes, sha256 {str(entry.dump_sha256)[:12]}…)",
                             path.tenant, path.backup_id, S.AVAILABLE, evidence_seq=record.seq)

    def _reject(self, session: CatalogSession, path: BackupPath, facts: BlobFacts, code: RejectionCode, reason: str,
                event_id: str | None, actor: str, *, entry_status: BackupStatus | None,
                existing: CatalogEntry | None, manifest: tuple[Manifest, dict[str, Any]] | None = None,
                manifest_sha: str | None = None) -> IngestOutcome:
        """Record a refusal; with ``entry_status`` REJECTED also write the entry (a conflict leaves it alone)."""
        session.record_rejection(container=self.storage.container, blob=facts.name, etag=facts.etag,
                                 tenant=path.tenant, backup_id=path.backup_id, code=str(code), reason=reason,
                                 event_id=event_id)
        record = self.evidence.append(
            actor=actor, action="catalog.rejected", subject=f"backup {path.tenant}/{path.backup_id}",
            data={"tenant": path.tenant, "backup_id": path.backup_id, "blob": facts.name, "code": str(code),
                  "reason": reason},
            idempotency_key=f"catalog.rejected:{self.storage.container}/{facts.name}:{facts.etag}:{code}")
        status = existing.status if existing else None
        if entry_status is not None and not transition_refusal(status, entry_status):
            if manifest is not None and manifest_sha is not None:
                entry = entry_from_manifest(path, self.storage.container, manifest[0], manifest[1], manifest_sha,
                                            facts, entry_status, reason, existing)
            else:
                base = pending_entry(path, self.storage.container, self.storage.facts(path.sibling(DUMP_FILE)),
                                     True, existing)
                entry = replace(base, status=entry_status, status_reason=reason, manifest_sha256=manifest_sha)
            session.upsert_entry(entry)
            status = entry_status
            self._tag(path, entry.kind, entry_status)
        action = IngestAction.CONFLICT if code is RejectionCode.CONFLICT else IngestAction.REJECTED
        return IngestOutcome(action, path.name, f"backup {path.tenant}/{path.backup_id} rejected ({code}): {reason}",
                             path.tenant, path.backup_id, status, rejection_code=code, evidence_seq=record.seq)

    def _reject_layout(self, blob: str, exc: BackupRejected, event_id: str | None, actor: str) -> IngestOutcome:
        facts = self.storage.facts(blob) if exc.rejection_code is RejectionCode.UNKNOWN_TENANT else None
        etag = facts.etag if facts else ""
        with self.repo.session() as session:
            if event_id is not None and session.event_processed(event_id) is not None:
                return IngestOutcome(IngestAction.DUPLICATE_EVENT, blob, f"event {event_id} was processed before")
            # PostgreSQL text cannot hold NUL; an event may name anything.
            shown = blob[:1024].replace("\x00", "\\x00")
            session.record_rejection(container=self.storage.container, blob=shown, etag=etag, tenant=None,
                                     backup_id=None, code=str(exc.rejection_code), reason=exc.reason,
                                     event_id=event_id)
            record = self.evidence.append(
                actor=actor, action="catalog.rejected", subject=f"blob {self.storage.container}",
                data={"blob": shown, "code": str(exc.rejection_code), "reason": exc.reason},
                idempotency_key=("catalog.rejected:" + hashlib.sha256(
                    f"{self.storage.container}/{blob}:{etag}:{exc.rejection_code}".encode()).hexdigest()))
            if event_id is not None:
                session.mark_event_processed(event_id, str(IngestAction.REJECTED))
        logger.warning("catalog ingest rejected a blob: %s", exc.reason, extra={"code": str(exc.rejection_code)})
        return IngestOutcome(IngestAction.REJECTED, blob, f"blob rejected ({exc.rejection_code}): {exc.reason}",
                             rejection_code=exc.rejection_code, evidence_seq=record.seq)

    def _tag(self, path: BackupPath, kind: str, status: BackupStatus) -> None:
        tags = backup_tags(path.tenant, path.backup_id, kind, status)
        for file in (DUMP_FILE, MANIFEST_FILE):
            try:
                self.storage.set_tags(path.sibling(file), tags)
            except BackupNotFound:
                continue  # deleted meanwhile: reconcile marks it missing

    def record_validation(self, *, tenant: str, backup_id: str, run_id: str, started_at: datetime,
                          finished_at: datetime, passed: bool, checks: Any, durations: dict[str, float],
                          summary: dict[str, Any], error: bool = False) -> CatalogEntry:
        """Record a validation attempt in the catalog and carry the new status into the blobs' tags, so that
        storage alone (and a rebuild) knows the backup was validated."""
        entry = self.repo.record_validation(tenant=tenant, backup_id=backup_id, run_id=run_id, started_at=started_at,
                                            finished_at=finished_at, passed=passed, checks=checks,
                                            durations=durations, summary=summary, error=error)
        path = parse_backup_blob(entry.dump_blob, lambda _tenant: True)
        self._tag(path, entry.kind, entry.status)
        return entry

    # ---- storage sweeps ----------------------------------------------------------------------
    def _listed_backup_blob(self, facts: BlobFacts, report: SweepReport) -> BackupPath | None:
        """The backup a listed blob belongs to, counted; None (its rejection recorded once) when the layout
        has no place for it."""
        report.blobs_listed += 1
        try:
            return parse_backup_blob(facts.name, self.tenant_known)
        except BackupRejected as exc:
            with self.repo.session() as session:
                if session.record_rejection(container=self.storage.container, blob=facts.name[:1024],
                                            etag=facts.etag, tenant=None, backup_id=None,
                                            code=str(exc.rejection_code), reason=exc.reason, event_id=None):
                    report.rejected += 1
                    report.note(exc.reason)
            return None

    def _backups_in_storage(self, report: SweepReport) -> dict[tuple[str, str], dict[str, BlobFacts]]:
        """Blobs grouped by backup; layout violations are recorded as rejections."""
        found: dict[tuple[str, str], dict[str, BlobFacts]] = defaultdict(dict)
        for facts in self.storage.list_all():
            path = self._listed_backup_blob(facts, report)
            if path is not None:
                found[(path.tenant, path.backup_id)][path.file] = facts
        report.backups_found = len(found)
        return found

    def reconcile(self, actor: str | None = None) -> SweepReport:
        """Ingest what events missed, re-tag what drifted, and mark MISSING what is gone from storage."""
        actor = actor or self.actor
        report = SweepReport("reconcile")
        found = self._backups_in_storage(report)
        known: dict[tuple[str, str], CatalogEntry] = {
            (e.tenant, e.backup_id): e for e in self.repo.iter_entries()}
        for key, files in sorted(found.items()):
            entry = known.get(key)
            complete = DUMP_FILE in files and MANIFEST_FILE in files
            if entry is None or entry.status is S.PENDING or (entry.status is S.MISSING and complete):
                name = (files.get(MANIFEST_FILE) or files[next(iter(files))]).name
                outcome = self.ingest_blob(name, actor=actor)
                report.ingested[str(outcome.action)] += 1
                if outcome.action is not IngestAction.DUPLICATE:
                    report.note(outcome.message)
                continue
            if entry.status in SETTLED | {S.REJECTED}:
                want = backup_tags(entry.tenant, entry.backup_id, entry.kind, entry.status)
                for facts in files.values():
                    if dict(facts.tags) != want:
                        self.storage.set_tags(facts.name, want)
                        report.retagged += 1
        for key, entry in known.items():
            if entry.status not in EXPECTED_IN_STORAGE:
                continue
            files = found.get(key, {})
            gone = [f for f in (DUMP_FILE, MANIFEST_FILE) if f not in files]
            if entry.status is S.PENDING and len(gone) < 2:
                continue  # still waiting for its other part
            if not gone:
                continue
            self._mark_missing(entry, gone, actor, report)
        return report

    def _mark_missing(self, entry: CatalogEntry, gone: list[str], actor: str, report: SweepReport) -> None:
        with self.repo.locked(entry.tenant, entry.backup_id) as session:
            current = session.get_entry(entry.tenant, entry.backup_id)
            if current is None or transition_refusal(current.status, S.MISSING):
                return
            still_gone = [f for f in gone if self.storage.facts(entry.prefix + f) is None]
            if not still_gone:
                return  # re-uploaded while we looked
            reason = f"{' and '.join(still_gone)} no longer in storage (was {current.status})"
            self.evidence.append(
                actor=actor, action="catalog.missing", subject=f"backup {entry.tenant}/{entry.backup_id}",
                data={"tenant": entry.tenant, "backup_id": entry.backup_id, "was": str(current.status),
                      "gone": still_gone},
                idempotency_key=(f"catalog.missing:{entry.tenant}/{entry.backup_id}:"
                                 f"{current.updated_at.isoformat() if current.updated_at else ''}"))
            session.upsert_entry(replace(current, status=S.MISSING, status_reason=reason))
        report.marked_missing += 1
        report.note(f"backup {entry.tenant}/{entry.backup_id} marked missing: {reason}")

    def _stream_backups(self, report: SweepReport) -> Iterator[tuple[BackupPath | None, dict[str, BlobFacts]]]:
        """Blobs grouped by backup, each group as soon as the listing has passed it (layout violations are
        recorded as rejections on the way).

        A listing is in name order and a backup's blobs share its folder, so a group is complete once a name
        outside it arrives. A blob of a group already handed out (a listing out of name order) comes as a
        group of its own with path None: the caller ingests it one at a time, which is always correct.
        """
        current: tuple[str, str] | None = None
        group: dict[str, BlobFacts] = {}
        path: BackupPath | None = None
        done: set[tuple[str, str]] = set()
        for facts in self.storage.list_all():
            blob_path = self._listed_backup_blob(facts, report)
            if blob_path is None:
                continue
            key = (blob_path.tenant, blob_path.backup_id)
            if key != current:
                if current is not None:
                    done.add(current)
                    yield path, group
                current, group, path = key, {}, blob_path
                if key in done:
                    path = None
                else:
                    report.backups_found += 1
            group[blob_path.file] = facts
        if current is not None:
            yield path, group

    def rebuild(self, actor: str | None = None, *, verify_checksums: bool = False, workers: int = 8,
                batch: int = 1000) -> SweepReport:
        """Recreate catalog entries from the manifests and tags in storage alone.

        A backup whose tags carry a settled status (written after its checksum was verified) is rebuilt
        from its manifest and that status without re-reading the dump, unless ``verify_checksums``;
        anything else goes through :meth:`ingest_blob`. Existing entries are never overwritten.

        The manifest comes from the copy the backup job wrote into the manifest blob's metadata, which the
        listing returns (:func:`continuity.catalog.manifest.manifest_copy_metadata`): no GET per backup. It is
        held to every check the blob would be (sha256 recorded, schema, model, layout, dump size). A backup
        without a copy (older ones), or whose copy fails a check, has its manifest blob read instead, by
        ``workers`` threads while the listing goes on. Why the copy is as good as the blob: on version-level
        WORM storage metadata cannot be rewritten after the Put Blob that wrote both; elsewhere a forged copy
        gives an entry whose ``manifest_sha256`` is not the blob's, and every restore refuses it
        (``file_checksum`` holds storage's manifest to the catalog's). Entries are inserted ``batch`` at a time.
        """
        actor = actor or self.actor
        report = SweepReport("rebuild")
        settled = {str(s) for s in SETTLED - {S.DELETED}}

        def check(path: BackupPath, files: dict[str, BlobFacts], data: bytes, source: str) -> CatalogEntry | str:
            tag = files[MANIFEST_FILE].tags.get("status")
            try:
                manifest, raw = parse_manifest(data, self.schema_check)
            except BackupRejected as exc:
                return f"{path.prefix}: tagged {tag} but its {source} fails: {exc.reason}"
            problem = manifest_mismatch(path, manifest)
            if problem is None and files[DUMP_FILE].size != manifest.file(DUMP_FILE).size:
                problem = "db.dump size differs from the manifest"
            if problem:
                return f"{path.prefix}: tagged {tag} but its {source} fails: {problem}"
            status = BackupStatus(files[MANIFEST_FILE].tags["status"])
            return entry_from_manifest(path, self.storage.container, manifest, raw,
                                       hashlib.sha256(data).hexdigest(), files[DUMP_FILE], status,
                                       f"rebuilt from storage ({source} and tags; status {status})")

        def read(path: BackupPath, files: dict[str, BlobFacts]) -> CatalogEntry | str:
            try:
                data = self.storage.read(files[MANIFEST_FILE].name)
            except BackupNotFound:
                return f"{path.prefix}: manifest.json is gone since the listing"
            return check(path, files, data, "manifest.json")

        def from_copy(path: BackupPath, files: dict[str, BlobFacts]) -> CatalogEntry | None:
            """The entry the manifest copy in metadata gives, or None (then the blob is read)."""
            try:
                data = manifest_from_copy(files[MANIFEST_FILE].metadata)
            except ManifestCopyUnusable as exc:
                report.note(f"{path.prefix}: {exc}; reading manifest.json instead")
                return None
            if data is None:
                return None
            result = check(path, files, data, "manifest copy in metadata")
            if isinstance(result, str):
                report.note(result + "; reading manifest.json instead")
                return None
            return result

        pending: list[CatalogEntry] = []
        one_at_a_time: list[str] = []
        inflight: deque[tuple[str, Future[CatalogEntry | str]]] = deque()
        inserts: deque[Future[int]] = deque()

        def settle(name: str, result: CatalogEntry | str) -> None:
            nonlocal pending
            if isinstance(result, str):
                report.note(result + "; ingesting it from scratch")
                one_at_a_time.append(name)
                return
            pending.append(result)
            if len(pending) >= batch:
                # One batch is inserted while the next is checked; a failed insert stops the rebuild.
                while len(inserts) > 1:
                    report.inserted += inserts.popleft().result()
                inserts.append(writer.submit(self.repo.insert_missing, pending))
                pending = []

        with ThreadPoolExecutor(max_workers=workers) as pool, ThreadPoolExecutor(max_workers=1) as writer:
            for path, files in self._stream_backups(report):
                manifest = files.get(MANIFEST_FILE)
                dump = files.get(DUMP_FILE)
                tag = (manifest.tags.get("status") if manifest else None) or ""
                if not (path is not None and not verify_checksums and manifest is not None and dump is not None
                        and tag in settled and (dump.tags.get("status") or "") == tag):
                    one_at_a_time.append((manifest or dump or files[next(iter(files))]).name)
                    continue
                entry = from_copy(path, files)
                if entry is not None:
                    report.manifests_from_metadata += 1
                    settle(manifest.name, entry)
                else:
                    report.manifests_read += 1
                    inflight.append((manifest.name, pool.submit(read, path, files)))
                # Keep the listing ahead of the reads, but never more than a few batches in memory.
                while inflight and (inflight[0][1].done() or len(inflight) > 4 * batch):
                    name, future = inflight.popleft()
                    settle(name, future.result())
            while inflight:
                name, future = inflight.popleft()
                settle(name, future.result())
            while inserts:
                report.inserted += inserts.popleft().result()
        report.inserted += self.repo.insert_missing(pending)
        for name in one_at_a_time:
            outcome = self.ingest_blob(name, actor=actor)
            report.ingested[str(outcome.action)] += 1
            report.note(outcome.message)
        self.evidence.append(actor=actor, action="catalog.rebuilt", subject=f"container {self.storage.container}",
                             data={k: v for k, v in report.to_json().items() if k != "messages"})
        return report
