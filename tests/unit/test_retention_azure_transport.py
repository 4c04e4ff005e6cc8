"""The retention applier's Azure-only paths at the HTTP transport level.

Azurite implements no immutability policies or legal holds, so those calls are tested here: a custom
azure-core transport answers with hand-written responses in Azure Storage's real shapes (headers,
error codes, the Blob Batch multipart/mixed body) and records what the SDK sent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
from azure.core.pipeline.transport import HttpRequest, HttpTransport, RequestsTransportResponse
from azure.storage.blob import ContainerClient
from requests.structures import CaseInsensitiveDict

from continuity.adapters.storage.retention_store import OutcomeStatus, RetentionStore
from continuity.kernel.tenants import StorageTier
from continuity.retention.planner import Delete, SetImmutability, SetTier

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
UNTIL = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
ACCOUNT_URL = "https://contosobackups.blob.core.windows.net"
BOUNDARY = "batchresponse_66925647-d0cb-4109-b6d3-28efe3e1e5ed"
REQUEST_ID = "778fdc83-801e-0000-62ff-0334671e284f"

Answer = tuple[int, str, dict[str, str], bytes]


class CannedTransport(HttpTransport):
    """Answers every request from ``respond`` and keeps the requests for the test to read."""

    def __init__(self, respond: Callable[[HttpRequest], Answer]) -> None:
        self.respond = respond
        self.requests: list[HttpRequest] = []

    def send(self, request: HttpRequest, **kwargs: Any) -> RequestsTransportResponse:
        self.requests.append(request)
        status, reason, headers, body = self.respond(request)
        raw = requests.Response()
        raw.status_code = status
        raw.reason = reason
        raw.headers = CaseInsensitiveDict({"x-ms-request-id": REQUEST_ID, "x-ms-version": "2025-11-05",
                                           "Date": format_datetime(NOW, usegmt=True), **headers})
        raw._content = body
        raw.url = request.url
        return RequestsTransportResponse(request, raw)

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __exit__(self, *args: object) -> None:
        pass


def error_xml(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<Error><Code>{code}</Code><Message>{message}\n'
            f"RequestId:{REQUEST_ID}\nTime:2026-11-20T03:00:00.0000000Z</Message></Error>").encode()


def batch_answer(parts: list[tuple[int, str, str | None]]) -> Answer:
    """A Blob Batch response: 202 with one application/http part per sub-request (Azure's shape)."""
    chunks = []
    for index, (status, reason, code) in enumerate(parts):
        lines = [f"--{BOUNDARY}", "Content-Type: application/http", f"Content-ID: {index}", "",
                 f"HTTP/1.1 {status} {reason}"]
        if code is None:
            lines += ["x-ms-delete-type-permanent: true", f"x-ms-request-id: {REQUEST_ID}",
                      "x-ms-version: 2025-11-05", "", ""]
        else:
            body = error_xml(code, reason).decode()
            lines += [f"x-ms-error-code: {code}", f"x-ms-request-id: {REQUEST_ID}", "x-ms-version: 2025-11-05",
                      f"Content-Length: {len(body)}", "Content-Type: application/xml", "", body]
        chunks.append("\r\n".join(lines))
    body = "\r\n".join(chunks) + f"\r\n--{BOUNDARY}--\r\n"
    return 202, "Accepted", {"Content-Type": f"multipart/mixed; boundary={BOUNDARY}"}, body.encode()


def store_with(respond: Callable[[HttpRequest], Answer], **kwargs: Any) -> tuple[RetentionStore, CannedTransport]:
    transport = CannedTransport(respond)
    container = ContainerClient(ACCOUNT_URL, "backups", transport=transport, retry_total=0)
    return RetentionStore(container, **kwargs), transport


def delete(backup_id: str) -> Delete:
    return Delete(tenant="acme-finance", backup_id=backup_id, created_at=NOW, reason="deleted: outside every keep rule")


def lock(backup_id: str = "b1") -> SetImmutability:
    return SetImmutability(tenant="acme-finance", backup_id=backup_id, created_at=NOW, until=UNTIL,
                           reason="immutable until 2026-11-27T03:00:00Z: 7-day immutability from creation")


def body_text(request: HttpRequest) -> str:
    return bytes(request.body or b"").decode()


LEGAL_HOLD = "This operation is not permitted as the blob is immutable due to one or more legal holds."
POLICY = "This operation is not permitted as the blob is immutable due to a policy."


# ---- Blob Batch ---------------------------------------------------------------------------------

def test_batch_delete_reports_the_subrequest_locked_by_legal_hold_and_applies_the_rest() -> None:
    store, transport = store_with(lambda r: batch_answer([
        (202, "Accepted", None), (202, "Accepted", None),
        (409, LEGAL_HOLD, "BlobImmutableDueToLegalHold"), (202, "Accepted", None)]))
    outcomes = store.apply([delete("b1"), delete("b2")])
    assert outcomes[0].status is OutcomeStatus.APPLIED
    assert outcomes[1].status is OutcomeStatus.REFUSED
    assert outcomes[1].detail == ("store refused DELETE of acme-finance/2026/11/20/b2/manifest.json: "
                                  f"409 BlobImmutableDueToLegalHold; {LEGAL_HOLD}")
    assert [b.error_code for b in outcomes[1].blobs] == ["BlobImmutableDueToLegalHold", None]
    assert not outcomes[1].done
    assert len(transport.requests) == 1


def test_batch_delete_of_a_blob_under_immutability_policy_is_refused_with_its_code() -> None:
    store, _ = store_with(lambda r: batch_answer([(409, POLICY, "BlobImmutableDueToPolicy"),
                                                  (409, POLICY, "BlobImmutableDueToPolicy")]))
    [outcome] = store.apply([delete("b1")])
    assert outcome.status is OutcomeStatus.REFUSED
    assert {(b.status_code, b.error_code) for b in outcome.blobs} == {(409, "BlobImmutableDueToPolicy")}


def test_batch_is_one_multipart_post_with_one_subrequest_per_blob() -> None:
    store, transport = store_with(lambda r: batch_answer([(202, "Accepted", None)] * 4))
    store.apply([delete("b1"), delete("b2")])
    [request] = transport.requests
    assert request.method == "POST"
    assert "restype=container" in request.url and "comp=batch" in request.url
    assert request.headers["Content-Type"].startswith("multipart/mixed; boundary=batch_")
    body = body_text(request)
    assert body.count("DELETE /backups/acme-finance/2026/11/20/") == 4
    assert "DELETE /backups/acme-finance/2026/11/20/b2/db.dump" in body
    assert body.count("x-ms-delete-snapshots: include") == 4


def test_batch_tier_request_carries_each_blobs_target_tier() -> None:
    store, transport = store_with(lambda r: batch_answer([(200, "OK", None)] * 4))
    outcomes = store.apply([
        SetTier(tenant="acme-finance", backup_id="b1", created_at=NOW, to=StorageTier.COLD, reason="tier cold"),
        SetTier(tenant="acme-finance", backup_id="b2", created_at=NOW, to=StorageTier.ARCHIVE, reason="tier archive")])
    assert [o.status for o in outcomes] == [OutcomeStatus.APPLIED] * 2
    body = body_text(transport.requests[0])
    assert body.count("x-ms-access-tier: Cold") == 2 and body.count("x-ms-access-tier: Archive") == 2
    assert body.count("&comp=tier") == 4


def test_batches_hold_at_most_256_subrequests() -> None:
    def respond(request: HttpRequest) -> Answer:
        return batch_answer([(200, "OK", None)] * body_text(request).count("&comp=tier"))

    store, transport = store_with(respond)
    actions = [SetTier(tenant="acme-finance", backup_id=f"b{i}", created_at=NOW, to=StorageTier.COOL,
                       reason="tier cool") for i in range(300)]
    outcomes = store.apply(actions)
    assert sorted(body_text(r).count("&comp=tier") for r in transport.requests) == [88, 256, 256]
    assert {o.status for o in outcomes} == {OutcomeStatus.APPLIED}


def test_whole_batch_refused_for_authorization_marks_every_subrequest_refused() -> None:
    store, _ = store_with(lambda r: (403, "This request is not authorized to perform this operation.",
                                     {"x-ms-error-code": "AuthorizationFailure", "Content-Type": "application/xml"},
                                     error_xml("AuthorizationFailure",
                                               "This request is not authorized to perform this operation.")))
    outcomes = store.apply([delete("b1"), delete("b2")])
    assert {o.status for o in outcomes} == {OutcomeStatus.REFUSED}
    assert {b.error_code for o in outcomes for b in o.blobs} == {"AuthorizationFailure"}
    assert "the batch was answered 403 AuthorizationFailure" in outcomes[0].detail


def test_whole_batch_answered_server_busy_is_failed_for_retry() -> None:
    store, _ = store_with(lambda r: (503, "The server is busy.",
                                     {"x-ms-error-code": "ServerBusy", "Content-Type": "application/xml"},
                                     error_xml("ServerBusy", "The server is busy.")))
    outcomes = store.apply([delete("b1")])
    assert outcomes[0].status is OutcomeStatus.FAILED
    assert outcomes[0].detail.endswith("retry")


def test_subrequest_answered_server_busy_is_failed_not_refused() -> None:
    store, _ = store_with(lambda r: batch_answer([(202, "Accepted", None), (503, "The server is busy.", "ServerBusy")]))
    [outcome] = store.apply([delete("b1")])
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.detail == "DELETE of acme-finance/2026/11/20/b1/db.dump failed: 503 ServerBusy; retry"


def test_batch_answering_fewer_parts_than_subrequests_fails_the_whole_batch() -> None:
    store, _ = store_with(lambda r: batch_answer([(202, "Accepted", None)]))
    [outcome] = store.apply([delete("b1")])
    assert outcome.status is OutcomeStatus.FAILED
    assert {b.message for b in outcome.blobs} == {"the batch answered 1 parts for 2 sub-requests"}


def test_batch_answer_that_is_not_multipart_fails_the_batch() -> None:
    store, _ = store_with(lambda r: (202, "Accepted", {"Content-Type": "text/plain"}, b"not a batch"))
    [outcome] = store.apply([delete("b1")])
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.blobs[0].message.startswith("the batch answer could not be read")


def test_action_without_blob_names_is_failed_not_reported_done() -> None:
    store, transport = store_with(lambda r: batch_answer([]))
    [outcome] = store.apply([delete("b1")], blob_names_for=lambda action: [])
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.detail == "no blob names were given for this backup; nothing was done"
    assert transport.requests == []


# ---- immutability policies and legal holds ------------------------------------------------------

def test_set_immutability_is_applied_when_the_store_confirms_the_date() -> None:
    store, transport = store_with(lambda r: (200, "OK", {
        "x-ms-immutability-policy-until-date": format_datetime(UNTIL, usegmt=True),
        "x-ms-immutability-policy-mode": "unlocked"}, b""))
    [outcome] = store.apply([lock()])
    assert outcome.status is OutcomeStatus.APPLIED
    assert outcome.detail == "immutable until 2026-11-27T03:00:00Z (Unlocked) on 2 blob(s), confirmed by the store"
    assert store.enforces_immutability is True
    first = transport.requests[0]
    assert first.method == "PUT" and "comp=immutabilityPolicies" in first.url
    assert first.url.startswith(f"{ACCOUNT_URL}/backups/acme-finance/2026/11/20/b1/manifest.json")
    assert first.headers["x-ms-immutability-policy-until-date"] == "Fri, 27 Nov 2026 03:00:00 GMT"
    assert first.headers["x-ms-immutability-policy-mode"] == "Unlocked"


def test_set_immutability_sends_locked_mode_when_configured() -> None:
    store, transport = store_with(lambda r: (200, "OK", {
        "x-ms-immutability-policy-until-date": format_datetime(UNTIL, usegmt=True),
        "x-ms-immutability-policy-mode": "locked"}, b""), immutability_mode="Locked")
    [outcome] = store.apply([lock()])
    assert outcome.status is OutcomeStatus.APPLIED
    assert transport.requests[0].headers["x-ms-immutability-policy-mode"] == "Locked"


def test_set_immutability_not_reported_when_the_store_confirms_an_earlier_date() -> None:
    earlier = UNTIL - timedelta(days=1)
    store, _ = store_with(lambda r: (200, "OK", {
        "x-ms-immutability-policy-until-date": format_datetime(earlier, usegmt=True),
        "x-ms-immutability-policy-mode": "unlocked"}, b""))
    [outcome] = store.apply([lock()])
    assert outcome.status is OutcomeStatus.FAILED
    assert "not reporting a lock it did not confirm" in outcome.blobs[0].message


def test_set_immutability_not_reported_when_the_store_answers_without_a_date() -> None:
    store, _ = store_with(lambda r: (200, "OK", {}, b""))
    [outcome] = store.apply([lock()])
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.blobs[0].message.startswith("the store answered 200 with no date")


def test_set_immutability_refused_when_the_identity_lacks_permission() -> None:
    message = "This request is not authorized to perform this operation using this permission."
    store, _ = store_with(lambda r: (403, message, {"x-ms-error-code": "AuthorizationPermissionMismatch",
                                                    "Content-Type": "application/xml"},
                                     error_xml("AuthorizationPermissionMismatch", message)))
    [outcome] = store.apply([lock()])
    assert outcome.status is OutcomeStatus.REFUSED
    assert {b.error_code for b in outcome.blobs} == {"AuthorizationPermissionMismatch"}
    assert store.enforces_immutability is None  # a refusal says nothing about the feature


def test_set_immutability_reported_not_enforced_when_the_store_lacks_the_feature() -> None:
    message = "Current API is not implemented yet."
    store, transport = store_with(lambda r: (501, message, {"x-ms-error-code": "APINotImplemented",
                                                            "Content-Type": "application/xml"},
                                             error_xml("APINotImplemented", message)))
    outcomes = store.apply([lock("b1"), lock("b2")])
    assert [o.status for o in outcomes] == [OutcomeStatus.NOT_ENFORCED] * 2
    assert outcomes[0].detail == "not enforced by this store: the store answered 501 APINotImplemented"
    assert len(transport.requests) == 1  # asked once; the rest is known


def test_legal_hold_applied_when_the_store_confirms_the_header() -> None:
    store, transport = store_with(lambda r: (200, "OK", {"x-ms-legal-hold": "true"}, b""))
    outcome = store.set_legal_hold(["acme-finance/2026/11/20/b1/manifest.json"], True)
    assert outcome.status is OutcomeStatus.APPLIED
    assert outcome.detail == "legal hold set on 1 blob(s), confirmed by the store"
    request = transport.requests[0]
    assert request.method == "PUT" and "comp=legalhold" in request.url
    assert request.headers["x-ms-legal-hold"] == "true"


def test_legal_hold_not_reported_when_the_store_answers_the_opposite() -> None:
    store, _ = store_with(lambda r: (200, "OK", {"x-ms-legal-hold": "false"}, b""))
    outcome = store.set_legal_hold(["acme-finance/2026/11/20/b1/manifest.json"], True)
    assert outcome.status is OutcomeStatus.FAILED
    assert "not reporting a hold it did not confirm" in outcome.detail


def test_read_locks_reports_the_stores_immutability_and_legal_hold_headers() -> None:
    store, _ = store_with(lambda r: (200, "OK", {
        "Content-Length": "5", "x-ms-blob-type": "BlockBlob", "x-ms-access-tier": "Cold",
        "Last-Modified": format_datetime(NOW, usegmt=True), "ETag": '"0x8DCAFE"',
        "x-ms-immutability-policy-until-date": format_datetime(UNTIL, usegmt=True),
        "x-ms-immutability-policy-mode": "locked", "x-ms-legal-hold": "true"}, b""))
    [state] = store.read_locks(["acme-finance/2026/11/20/b1/db.dump"])
    assert state.immutable_until == UNTIL
    assert state.policy_mode is not None and state.policy_mode.lower() == "locked"
    assert state.legal_hold is True
    assert state.tier == "Cold"


@pytest.mark.parametrize("mode", ["Mutable", "locked"])
def test_applier_refuses_an_unknown_immutability_mode(mode: str) -> None:
    with pytest.raises(ValueError, match="immutability_mode must be 'Unlocked' or 'Locked'"):
        RetentionStore(ContainerClient(ACCOUNT_URL, "backups"), immutability_mode=mode)  # type: ignore[arg-type]
