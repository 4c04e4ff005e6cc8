"""Applies retention actions to blob storage and reports, per action, what the store said.

SET_TIER and DELETE go through the Blob Batch API (``ContainerClient.set_standard_blob_tier_blobs`` and
``delete_blobs``, at most 256 sub-requests per batch); SET_IMMUTABILITY and legal holds go blob by blob
(``BlobClient.set_immutability_policy`` / ``set_legal_hold``) because the batch API does not carry them.

Every outcome is something the store confirmed:

- a 404 on delete is success (the blob is already gone: resuming a half-applied plan is safe);
- a lock is reported APPLIED only when the store's answer carries the date (or hold) we asked for;
- a store that does not implement immutability or legal holds (Azurite answers 501 ``APINotImplemented``)
  gets ``NOT_ENFORCED`` ("not enforced by this store"), never a pretend lock;
- a refusal (409 ``BlobImmutableDueToPolicy``, ``BlobImmutableDueToLegalHold``, an unsupported tier, a
  missing blob) is ``REFUSED`` with the store's code; a transient failure is ``FAILED`` (retry); when the
  store becomes unreachable the rest is ``NOT_ATTEMPTED`` so the caller can record and resume.

Azurite 3.37 (checked): Blob Batch works for set-tier and delete; Cool, Cold and Archive are accepted
(200) and read back; immutability policies and legal holds answer 501 APINotImplemented.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient, ImmutabilityPolicy, StandardBlobTier

from continuity.adapters.storage.blob_store import BlobStore, unavailable
from continuity.catalog.manifest import DUMP_FILE, MANIFEST_FILE, backup_prefix
from continuity.kernel import settings
from continuity.kernel.errors import BackupNotFound
from continuity.kernel.tenants import StorageTier
from continuity.retention.planner import (
    ActionKind,
    Delete,
    Keep,
    RetentionAction,
    SetImmutability,
    SetTier,
    format_time,
)

logger = logging.getLogger(__name__)

BATCH_LIMIT = 256  # the Blob Batch API's maximum number of sub-requests
TIMEOUT_SECONDS = 60
NOT_ENFORCED = "not enforced by this store"

_SDK_TIER = {StorageTier.HOT: StandardBlobTier.HOT, StorageTier.COOL: StandardBlobTier.COOL,
             StorageTier.COLD: StandardBlobTier.COLD, StorageTier.ARCHIVE: StandardBlobTier.ARCHIVE}
# Answers meaning "this store has no such feature" rather than "no" or "try again".
_UNSUPPORTED_CODES = frozenset({"APINotImplemented", "FeatureNotSupported", "NotImplemented",
                                "ImmutableStorageWithVersioningNotEnabled", "VersionLevelWormNotEnabled"})
_CODE_IN_BODY = re.compile(rb"<Code>([A-Za-z0-9]+)</Code>")


class OutcomeStatus(StrEnum):
    APPLIED = "APPLIED"              # the store did it, or it already was so (404 on delete)
    NOTHING_TO_DO = "NOTHING_TO_DO"  # KEEP: storage is not touched
    NOT_ENFORCED = "NOT_ENFORCED"    # the store does not implement immutability / legal holds
    REFUSED = "REFUSED"              # the store said no; retrying will not help, a person must look
    FAILED = "FAILED"                # transient or unexplained failure; safe to retry
    NOT_ATTEMPTED = "NOT_ATTEMPTED"  # the run stopped before this action; resume from here


# When an action's blobs end differently, the action reports the most serious.
_SEVERITY = {OutcomeStatus.REFUSED: 5, OutcomeStatus.FAILED: 4, OutcomeStatus.NOT_ATTEMPTED: 3,
             OutcomeStatus.NOT_ENFORCED: 2, OutcomeStatus.APPLIED: 1, OutcomeStatus.NOTHING_TO_DO: 0}


@dataclass(frozen=True)
class BlobResult:
    """What the store answered for one blob."""

    name: str
    status: OutcomeStatus
    status_code: int | None = None
    error_code: str | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "status_code": self.status_code,
                "error_code": self.error_code, "message": self.message}


@dataclass(frozen=True)
class ActionOutcome:
    """One plan action after the store was asked: its status, a sentence, and per-blob answers."""

    action: RetentionAction
    status: OutcomeStatus
    detail: str
    blobs: tuple[BlobResult, ...] = ()

    @property
    def done(self) -> bool:
        """True when nothing is left to do for this action (applied, a KEEP, or not enforceable here)."""
        return self.status in (OutcomeStatus.APPLIED, OutcomeStatus.NOTHING_TO_DO, OutcomeStatus.NOT_ENFORCED)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action.to_dict(), "status": self.status.value, "detail": self.detail,
                "blobs": [b.to_dict() for b in self.blobs]}


@dataclass(frozen=True)
class HoldOutcome:
    """A legal hold set or cleared on a backup's blobs."""

    hold: bool
    status: OutcomeStatus
    detail: str
    blobs: tuple[BlobResult, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"hold": self.hold, "status": self.status.value, "detail": self.detail,
                "blobs": [b.to_dict() for b in self.blobs]}


@dataclass(frozen=True)
class LockState:
    """A blob's immutability as the store reports it; ``enforced`` is None until the store answered a lock."""

    name: str
    immutable_until: datetime | None
    policy_mode: str | None
    legal_hold: bool
    tier: str | None
    enforced: bool | None


BlobNamesFor = Callable[[RetentionAction], Sequence[str]]


def backup_blob_names(action: RetentionAction) -> list[str]:
    """The blobs of the backup an action is about: manifest first (a backup without one is not a backup)."""
    prefix = backup_prefix(action.tenant, action.backup_id, action.created_at)
    return [prefix + MANIFEST_FILE, prefix + DUMP_FILE]


class _StoreUnreachable(Exception):
    """Internal: the store stopped answering; the run stops and the rest is NOT_ATTEMPTED."""


def _error_code(exc: HttpResponseError) -> str | None:
    code = getattr(exc, "error_code", None)
    if code:
        return str(getattr(code, "value", code))  # the SDK may give a StorageErrorCode enum
    response: Any = exc.response
    if response is None:
        return None
    header = response.headers.get("x-ms-error-code")
    if header:
        return str(header)
    try:
        found = _CODE_IN_BODY.search(response.body() or b"")
    except Exception:  # noqa: BLE001 - a body we cannot read just has no code
        return None
    return found.group(1).decode() if found else None


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0][:300] if (text or "").strip() else ""


class RetentionStore:
    """Applies retention actions to the backups container.

    :param container: the backups container client (Azure Storage or Azurite).
    :param immutability_mode: ``"Unlocked"`` (an administrator can still shorten or remove the policy)
        or ``"Locked"`` (irreversible: it can only be extended). Either way the blob cannot be deleted
        or overwritten before the date.
    :param batch_size: sub-requests per Blob Batch call, at most 256.
    :param batch_concurrency: Blob Batch calls in flight at once. 1 by default: on Azurite (one
        Node.js process that runs sub-requests one after another) more did not help in
        bench/bench_retention.py; against Azure, where each call waits on the network, raise it.
    """

    def __init__(self, container: ContainerClient, *, immutability_mode: Literal["Unlocked", "Locked"] = "Unlocked",
                 batch_size: int = BATCH_LIMIT, batch_concurrency: int = 1, timeout: int = TIMEOUT_SECONDS) -> None:
        if not 1 <= batch_size <= BATCH_LIMIT:
            raise ValueError(f"batch_size must be between 1 and {BATCH_LIMIT} (the Blob Batch limit)")
        if not 1 <= batch_concurrency <= 16:
            raise ValueError("batch_concurrency must be between 1 and 16")
        if immutability_mode not in ("Unlocked", "Locked"):
            raise ValueError("immutability_mode must be 'Unlocked' or 'Locked'")
        self.container = container
        self.immutability_mode = immutability_mode
        self.batch_size = batch_size
        self.batch_concurrency = batch_concurrency
        self.timeout = timeout
        # None until the store answers a lock request; False once it said it has no such feature.
        self.enforces_immutability: bool | None = None
        self._unsupported_answer = ""
        self.batches_sent = 0

    @classmethod
    def from_blob_store(cls, store: BlobStore, container: str | None = None, **kwargs: Any) -> RetentionStore:
        return cls(store.container(container or settings.get("CONTINUITY_BACKUP_CONTAINER")), **kwargs)

    # ---- plan actions ---------------------------------------------------------------------

    def apply(self, actions: Sequence[RetentionAction],
              blob_names_for: BlobNamesFor = backup_blob_names) -> list[ActionOutcome]:
        """Apply the actions; returns one outcome per action, in the order given.

        Locks go first (protection before anything else), then tiers, then deletes. If the store
        becomes unreachable, the batches in flight are FAILED and everything after them NOT_ATTEMPTED.
        """
        names = {i: list(blob_names_for(a)) for i, a in enumerate(actions) if not isinstance(a, Keep)}
        results: dict[int, list[BlobResult]] = {i: [] for i in names}
        stopped: str | None = None

        lock_indexes = [i for i, a in enumerate(actions) if isinstance(a, SetImmutability)]
        tier_subrequests = [(i, n) for i, a in enumerate(actions) if isinstance(a, SetTier) for n in names[i]]
        delete_subrequests = [(i, n) for i, a in enumerate(actions) if isinstance(a, Delete) for n in names[i]]

        for i in lock_indexes:
            action = actions[i]
            assert isinstance(action, SetImmutability)
            for name in names[i]:
                if stopped:
                    results[i].append(BlobResult(name, OutcomeStatus.NOT_ATTEMPTED, message=stopped))
                    continue
                try:
                    results[i].append(self._lock_blob(name, action.until))
                except _StoreUnreachable as exc:
                    stopped = str(exc)
                    results[i].append(BlobResult(name, OutcomeStatus.FAILED, message=stopped))

        for kind, subrequests in ((ActionKind.SET_TIER, tier_subrequests), (ActionKind.DELETE, delete_subrequests)):
            chunks = [subrequests[s:s + self.batch_size] for s in range(0, len(subrequests), self.batch_size)]
            # Up to batch_concurrency batches in flight; a wave finishes before the next starts, so a
            # store that stops answering leaves at most one wave FAILED and the rest NOT_ATTEMPTED.
            for w in range(0, len(chunks), self.batch_concurrency):
                wave = chunks[w:w + self.batch_concurrency]
                if stopped:
                    for chunk in wave:
                        for i, name in chunk:
                            results[i].append(BlobResult(name, OutcomeStatus.NOT_ATTEMPTED, message=stopped))
                    continue
                requests = [[(name, actions[i]) for i, name in chunk] for chunk in wave]
                self.batches_sent += len(wave)
                if len(wave) == 1:
                    answered = [self._try_batch(kind, requests[0])]
                else:
                    with ThreadPoolExecutor(len(wave), thread_name_prefix="retention-batch") as pool:
                        answered = list(pool.map(self._try_batch, [kind] * len(requests), requests))
                for chunk, (answers, unreachable) in zip(wave, answered, strict=True):
                    stopped = stopped or unreachable
                    for (i, _), answer in zip(chunk, answers, strict=True):
                        results[i].append(answer)

        outcomes = [self._outcome(a, results.get(i, [])) for i, a in enumerate(actions)]
        for outcome in outcomes:
            if outcome.status is not OutcomeStatus.NOTHING_TO_DO:
                logger.info("retention action %s", outcome.status.value, extra={
                    "tenant": outcome.action.tenant, "backup_id": outcome.action.backup_id,
                    "kind": outcome.action.kind.value, "detail": outcome.detail})
        return outcomes

    def _outcome(self, action: RetentionAction, blobs: list[BlobResult]) -> ActionOutcome:
        if isinstance(action, Keep):
            return ActionOutcome(action, OutcomeStatus.NOTHING_TO_DO, "kept: nothing to change in storage")
        if not blobs:
            return ActionOutcome(action, OutcomeStatus.FAILED,
                                 "no blob names were given for this backup; nothing was done")
        status = max((b.status for b in blobs), key=lambda s: _SEVERITY[s])
        worst = next(b for b in blobs if b.status is status)
        said = f"{worst.status_code} {worst.error_code}" if worst.status_code else worst.message
        if status is OutcomeStatus.APPLIED:
            if isinstance(action, Delete):
                gone = sum(1 for b in blobs if b.status_code == 404)
                detail = f"deleted {len(blobs) - gone} blob(s)" + (f", {gone} already gone" if gone else "")
            elif isinstance(action, SetTier):
                detail = f"tier {action.to.value} set on {len(blobs)} blob(s)"
            else:
                assert isinstance(action, SetImmutability)
                detail = (f"immutable until {format_time(action.until)} ({self.immutability_mode}) on "
                          f"{len(blobs)} blob(s), confirmed by the store")
        elif status is OutcomeStatus.NOT_ENFORCED:
            detail = f"{NOT_ENFORCED}: {worst.message}"
        elif status is OutcomeStatus.REFUSED:
            detail = f"store refused {action.kind.value} of {worst.name}: {said}; {worst.message}".rstrip("; ")
        elif status is OutcomeStatus.FAILED:
            detail = f"{action.kind.value} of {worst.name} failed: {said}; retry".replace(": ;", ":")
        else:
            detail = f"not attempted: {worst.message}"
        return ActionOutcome(action, status, detail, tuple(blobs))

    # ---- Blob Batch -----------------------------------------------------------------------

    def _try_batch(self, kind: ActionKind, items: list[tuple[str, RetentionAction]]) \
            -> tuple[list[BlobResult], str | None]:
        """The batch's per-blob answers, and why the store is unreachable if it is."""
        try:
            return self._send_batch(kind, items), None
        except _StoreUnreachable as exc:
            return [BlobResult(name, OutcomeStatus.FAILED, message=str(exc)) for name, _ in items], str(exc)

    def _send_batch(self, kind: ActionKind, items: list[tuple[str, RetentionAction]]) -> list[BlobResult]:
        try:
            if kind is ActionKind.SET_TIER:
                parts: Iterable[Any] = self.container.set_standard_blob_tier_blobs(
                    None, *({"name": name, "blob_tier": _SDK_TIER[action.to]}
                            for name, action in items if isinstance(action, SetTier)),
                    raise_on_any_failure=False, timeout=self.timeout)
            else:
                parts = self.container.delete_blobs(
                    *({"name": name, "delete_snapshots": "include"} for name, _ in items),
                    raise_on_any_failure=False, timeout=self.timeout)
            # Read every part now: the SDK parses the multipart answer lazily.
            answers = list(parts)
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise _StoreUnreachable(f"store unreachable during a {kind.value} batch: {_first_line(str(exc))}") \
                from exc
        except HttpResponseError as exc:
            # The whole batch was refused (auth, a malformed batch, an account without batch support):
            # every sub-request carries the store's answer.
            code = _error_code(exc)
            status = OutcomeStatus.FAILED if (exc.status_code or 500) >= 500 or exc.status_code in (408, 429) \
                else OutcomeStatus.REFUSED
            message = f"the batch was answered {exc.status_code} {code}: {_first_line(exc.message)}"
            return [BlobResult(name, status, exc.status_code, code, message) for name, _ in items]
        except AzureError as exc:
            raise _StoreUnreachable(f"store failed during a {kind.value} batch: {_first_line(str(exc))}") from exc
        except ValueError as exc:
            # azure-core could not read the answer as multipart/mixed: nothing is known about any blob.
            message = f"the batch answer could not be read: {_first_line(str(exc))}"
            return [BlobResult(name, OutcomeStatus.FAILED, None, None, message) for name, _ in items]
        if len(answers) != len(items):
            message = f"the batch answered {len(answers)} parts for {len(items)} sub-requests"
            return [BlobResult(name, OutcomeStatus.FAILED, None, None, message) for name, _ in items]
        return [self._classify(kind, name, part) for (name, _), part in zip(items, answers, strict=True)]

    @staticmethod
    def _classify(kind: ActionKind, name: str, part: Any) -> BlobResult:
        code = part.headers.get("x-ms-error-code")
        status_code = int(part.status_code)
        if 200 <= status_code < 300:
            return BlobResult(name, OutcomeStatus.APPLIED, status_code, None)
        if status_code == 404 and kind is ActionKind.DELETE:
            # Already gone: a resumed run, or someone else's cleanup. Success, like delete_<noun> in the SDK.
            return BlobResult(name, OutcomeStatus.APPLIED, status_code, code or "BlobNotFound", "already gone")
        reason = _first_line(getattr(part, "reason", "") or "")
        if status_code >= 500 or status_code in (408, 429):
            return BlobResult(name, OutcomeStatus.FAILED, status_code, code, reason)
        return BlobResult(name, OutcomeStatus.REFUSED, status_code, code, reason)

    # ---- immutability and legal holds -------------------------------------------------------

    def _lock_blob(self, name: str, until: datetime) -> BlobResult:
        if self.enforces_immutability is False:
            return BlobResult(name, OutcomeStatus.NOT_ENFORCED, message=self._unsupported_answer)
        until = until.astimezone(UTC)
        client = self.container.get_blob_client(name)
        try:
            headers = client.set_immutability_policy(
                ImmutabilityPolicy(expiry_time=until, policy_mode=self.immutability_mode), timeout=self.timeout)
        except HttpResponseError as exc:
            return self._lock_refusal(name, exc)
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise _StoreUnreachable(f"store unreachable while locking {name}: {_first_line(str(exc))}") from exc
        except AzureError as exc:
            return BlobResult(name, OutcomeStatus.FAILED, None, None, _first_line(str(exc)))
        confirmed = headers.get("immutability_policy_until_date")
        # Storage keeps the date to the second; the planner plans whole seconds.
        if not isinstance(confirmed, datetime) or confirmed.astimezone(UTC) < until.replace(microsecond=0):
            shown = format_time(confirmed) if isinstance(confirmed, datetime) else "no date"
            return BlobResult(name, OutcomeStatus.FAILED, 200, None,
                              f"the store answered 200 with {shown} instead of {format_time(until)}; "
                              "not reporting a lock it did not confirm")
        self.enforces_immutability = True
        return BlobResult(name, OutcomeStatus.APPLIED, 200, None,
                          f"until {format_time(confirmed)} ({headers.get('immutability_policy_mode') or '?'})")

    def _lock_refusal(self, name: str, exc: HttpResponseError) -> BlobResult:
        code = _error_code(exc)
        message = _first_line(exc.message)
        if exc.status_code == 501 or code in _UNSUPPORTED_CODES:
            # Azurite has no immutability policies or legal holds: report "not enforced", never pretend.
            self.enforces_immutability = False
            self._unsupported_answer = f"the store answered {exc.status_code} {code}"
            return BlobResult(name, OutcomeStatus.NOT_ENFORCED, exc.status_code, code, self._unsupported_answer)
        status = OutcomeStatus.FAILED if (exc.status_code or 500) >= 500 or exc.status_code in (408, 429) \
            else OutcomeStatus.REFUSED
        return BlobResult(name, status, exc.status_code, code, message)

    def set_legal_hold(self, blob_names: Sequence[str], hold: bool) -> HoldOutcome:
        """Set (``hold=True``) or clear a legal hold on each blob; APPLIED only when the store confirms it."""
        results: list[BlobResult] = []
        for name in blob_names:
            if self.enforces_immutability is False:
                results.append(BlobResult(name, OutcomeStatus.NOT_ENFORCED, message=self._unsupported_answer))
                continue
            try:
                headers = self.container.get_blob_client(name).set_legal_hold(hold, timeout=self.timeout)
            except HttpResponseError as exc:
                results.append(self._lock_refusal(name, exc))
                continue
            except AzureError as exc:
                results.append(BlobResult(name, OutcomeStatus.FAILED, None, None, _first_line(str(exc))))
                continue
            if headers.get("legal_hold") is not hold:
                results.append(BlobResult(name, OutcomeStatus.FAILED, 200, None,
                                          f"the store answered legal_hold={headers.get('legal_hold')!r}; "
                                          "not reporting a hold it did not confirm"))
                continue
            self.enforces_immutability = True
            results.append(BlobResult(name, OutcomeStatus.APPLIED, 200, None))
        verb = "legal hold set" if hold else "legal hold cleared"
        if not results:
            return HoldOutcome(hold, OutcomeStatus.APPLIED, f"{verb}: no blobs named", ())
        status = max((r.status for r in results), key=lambda s: _SEVERITY[s])
        worst = next(r for r in results if r.status is status)
        if status is OutcomeStatus.APPLIED:
            detail = f"{verb} on {len(results)} blob(s), confirmed by the store"
        elif status is OutcomeStatus.NOT_ENFORCED:
            detail = f"{NOT_ENFORCED}: {worst.message}"
        else:
            detail = f"{verb} failed on {worst.name}: {worst.status_code} {worst.error_code} {worst.message}".strip()
        return HoldOutcome(hold, status, detail, tuple(results))

    def read_locks(self, blob_names: Iterable[str]) -> Iterator[LockState]:
        """The store's view of each blob's tier, immutability policy and legal hold (for audits)."""
        for name in blob_names:
            try:
                props = self.container.get_blob_client(name).get_blob_properties(timeout=self.timeout)
            except ResourceNotFoundError as exc:
                raise BackupNotFound(f"blob {self.container.container_name}/{name} does not exist") from exc
            except AzureError as exc:
                raise unavailable(exc) from exc
            policy = props.immutability_policy
            yield LockState(name=name, immutable_until=policy.expiry_time if policy else None,
                            policy_mode=str(policy.policy_mode) if policy and policy.policy_mode else None,
                            legal_hold=bool(props.has_legal_hold), tier=str(props.blob_tier) if props.blob_tier
                            else None, enforced=self.enforces_immutability)
