"""A caller scoped to acme-finance plays the attacker on every tenant route of the live devhost.

Every route authenticates its caller, checks the role the operation needs and the caller's tenant scope:
another tenant's data is 403, a listing shows only the caller's tenants, and nothing is started.
"""

from __future__ import annotations

from typing import Any

import pytest

from continuity.kernel.identity import Role
from tests.security.support import Caller, call, host_keys, make_caller, request

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

OWN, OTHER = "acme-finance", "globex"


@pytest.fixture(scope="module")
def reader(stack: Any) -> Caller:
    return make_caller(stack, "scoped-reader", [Role.READER], [OWN])


@pytest.fixture(scope="module")
def operator(stack: Any) -> Caller:
    return make_caller(stack, "scoped-operator", [Role.OPERATOR], [OWN])


@pytest.fixture(scope="module")
def approver(stack: Any) -> Caller:
    return make_caller(stack, "scoped-approver", [Role.APPROVER], [OWN])


@pytest.fixture(scope="module")
def function_key_only(stack: Any) -> Caller:
    return Caller("function key only", {"x-functions-key": host_keys(stack)["functionKey"]})


def _refused(answer: tuple[int, Any], status: int, words: str) -> bool:
    code, body = answer
    return code == status and words in body["error"]["message"]


def test_scoped_reader_reading_another_tenants_recoverability_is_refused_403(stack: Any, reader: Caller) -> None:
    assert _refused(call(stack, "GET", f"/api/tenants/{OTHER}/recoverability", reader), 403,
                    "scoped to other tenants")
    assert call(stack, "GET", f"/api/tenants/{OWN}/recoverability", reader)[0] == 200


def test_scoped_reader_reading_another_tenants_holds_is_refused_403(stack: Any, reader: Caller) -> None:
    assert _refused(call(stack, "GET", f"/api/tenants/{OTHER}/holds", reader), 403, "scoped to other tenants")
    assert call(stack, "GET", f"/api/tenants/{OWN}/holds", reader)[0] == 200


def test_scoped_reader_asking_for_an_unknown_tenant_learns_nothing(stack: Any, reader: Caller) -> None:
    # 403 like any tenant outside the scope, never the 404 that would confirm which tenants exist.
    assert call(stack, "GET", "/api/tenants/nobody-here/recoverability", reader)[0] == 403
    assert call(stack, "GET", "/api/tenants/nobody-here/holds", reader)[0] == 403


def test_scoped_approver_setting_a_hold_on_another_tenant_is_refused_403(stack: Any, approver: Caller) -> None:
    for path in (f"/api/tenants/{OTHER}/holds", f"/api/tenants/{OTHER}/holds/clear"):
        assert _refused(call(stack, "POST", path, approver, {"reason": "case 17"}), 403, "scoped to other tenants")


def test_scoped_reader_starting_a_validation_is_refused_403(stack: Any, reader: Caller) -> None:
    for tenant in (OWN, OTHER):
        assert _refused(call(stack, "POST", f"/api/tenants/{tenant}/validations", reader, {}), 403,
                        "needs the operator role")


def test_scoped_operator_starting_another_tenants_validation_is_refused_and_starts_nothing(
        stack: Any, operator: Caller) -> None:
    before = _instances(stack, f"validate-{OTHER}-")
    assert _refused(call(stack, "POST", f"/api/tenants/{OTHER}/validations", operator, {}), 403,
                    "scoped to other tenants")
    assert _instances(stack, f"validate-{OTHER}-") == before


def test_validation_with_only_a_function_key_is_refused_401(stack: Any, function_key_only: Caller) -> None:
    assert call(stack, "POST", f"/api/tenants/{OWN}/validations", function_key_only, {})[0] == 401
    assert call(stack, "GET", f"/api/tenants/{OWN}/recoverability", function_key_only)[0] == 401
    assert call(stack, "GET", "/api/retention/plan", function_key_only)[0] == 401
    assert call(stack, "GET", f"/api/tenants/{OWN}/holds", function_key_only)[0] == 401


def test_nightly_with_only_a_function_key_is_refused_401_and_starts_nothing(
        stack: Any, function_key_only: Caller) -> None:
    before = _instances(stack, "nightly-2001")
    status, answer = call(stack, "POST", "/api/validations/nightly", function_key_only, {"date": "20010101"})
    assert status == 401, answer
    assert _instances(stack, "nightly-2001") == before


def test_nightly_by_a_reader_or_a_scoped_operator_is_refused_403(stack: Any, reader: Caller,
                                                                  operator: Caller) -> None:
    before = _instances(stack, "nightly-2001")
    assert _refused(call(stack, "POST", "/api/validations/nightly", reader, {"date": "20010101"}), 403,
                    "needs the operator role")
    # The nightly run validates every tenant: a caller scoped to some of them may not start it.
    assert _refused(call(stack, "POST", "/api/validations/nightly", operator, {"date": "20010101"}), 403,
                    "scoped to")
    assert _instances(stack, "nightly-2001") == before


def test_scoped_reader_retention_plan_lists_only_its_own_tenants(stack: Any, reader: Caller) -> None:
    status, plan = call(stack, "GET", "/api/retention/plan", reader)
    assert status == 200, plan
    assert {a["tenant"] for a in plan["actions"]} <= {OWN}
    assert set(plan["holds"]["tenants"]) <= {OWN}
    assert all(b.startswith(f"{OWN}/") for b in plan["holds"]["backups"])


def test_scoped_reader_retention_plan_for_another_tenant_is_refused_403(stack: Any, reader: Caller) -> None:
    assert _refused(call(stack, "GET", f"/api/retention/plan?tenant={OTHER}", reader), 403,
                    "scoped to other tenants")
    assert call(stack, "GET", f"/api/retention/plan?tenant={OWN}", reader)[0] == 200


def _instances(stack: Any, prefix: str) -> list[str]:
    keys = host_keys(stack)
    status, rows = request(stack, "GET", f"/runtime/webhooks/durabletask/instances?instanceIdPrefix={prefix}",
                           {"x-functions-key": keys["masterKey"]})
    assert status == 200, rows
    return sorted(r["instanceId"] for r in rows)


def test_every_refusal_is_recorded_in_evidence_and_a_flood_records_once_a_minute(
        stack: Any, reader: Caller, function_key_only: Caller) -> None:
    import uuid

    from continuity.adapters.postgres.control_db import prepare
    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.adapters.storage.evidence_store import EvidenceStore

    evidence = EvidenceStore(prepare(), BlobStore())
    # A tenant name no other test asks for: the throttle is per route, caller and reason, so an earlier test's
    # identical refusal within the minute would be this one's record.
    probe = f"probe-{uuid.uuid4().hex[:12]}"
    for _ in range(3):
        assert call(stack, "GET", f"/api/tenants/{probe}/recoverability", reader)[0] == 403
    assert call(stack, "GET", f"/api/tenants/{probe}/recoverability", function_key_only)[0] == 401
    refusals = [r for r in evidence.records(subject=f"route/tenants/{probe}/recoverability")
                if r.action == "access.refused"]
    by_scope = [r for r in refusals if r.data["code"] == "forbidden"]
    anonymous = [r for r in refusals if r.data["principal_id"] == "anonymous"]
    assert by_scope and anonymous, [r.data for r in refusals]
    assert "scoped to other tenants" in by_scope[-1].data["reason"] and by_scope[-1].data["executed"] is False
    # Three identical refusals within the minute: at most two records (the minute may turn between them).
    assert len(by_scope) <= 2 and len(anonymous) == 1
