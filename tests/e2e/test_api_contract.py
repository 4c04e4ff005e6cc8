"""Schemathesis against the live devhost: every documented route, fuzzed from /api/openapi.json.

No input may produce a 5xx, and every documented response must match its schema. Each route is fuzzed as
three callers: an admin with the master key (reaching the code behind authentication), a reader scoped to one
tenant with a function key, and an anonymous caller with no key at all. The two callers without the rights
must be refused (401 without a key or without the master key; never a success where a role or a tenant scope is
missing), and a well-formed request of each kind is refused with exactly the documented status.
"""

from __future__ import annotations

import http.client
import json
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from continuity.adapters.local.local_stack import LocalStack
from continuity.kernel.identity import Role
from tests.waiting import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.devhost]


# Admin-only routes whose valid inputs destroy shared test data (retention as of a past date deletes other tests'
# backups). The admin does not fuzz them (tests/e2e/test_retention_e2e.py drives them); the callers without the
# master key do, since every one of their requests must be refused.
DESTRUCTIVE = {("POST", "/api/retention/apply-as-of")}
SCOPED_TENANT = "globex"
OTHER_TENANT = "acme-finance"
AUTH_HEADERS = ("x-functions-key", "x-continuity-key", "x-ms-client-principal")


@dataclass(frozen=True)
class Access:
    """What a documented operation asks of its caller, as README's HTTP table and the trigger code state it."""

    key: str  # "anonymous", "function" (any function key) or "master"
    role: Role | None = None  # the role a principal must hold; None: no principal needed
    scoped: bool = False  # the caller's tenant scope must cover the tenant the request names


ANONYMOUS, FUNCTION, MASTER = Access("anonymous"), Access("function"), Access("master")
ACCESS: dict[tuple[str, str], Access] = {
    ("GET", "/api/health"): ANONYMOUS,
    ("GET", "/api/openapi.json"): ANONYMOUS,
    ("POST", "/api/catalog/{operation}"): MASTER,
    ("POST", "/api/retention/apply-as-of"): MASTER,
    ("GET", "/api/tenants/{tenant}/backups"): Access("function", Role.READER, scoped=True),
    ("GET", "/api/tenants/{tenant}/backups/{backup_id}"): Access("function", Role.READER, scoped=True),
    # The nightly run validates every tenant: an operator whose scope is every tenant.
    ("POST", "/api/validations/nightly"): Access("function", Role.OPERATOR),
    ("POST", "/api/tenants/{tenant}/validations"): Access("function", Role.OPERATOR, scoped=True),
    ("GET", "/api/tenants/{tenant}/recoverability"): Access("function", Role.READER, scoped=True),
    # A scoped caller's plan lists only its tenants; tenant= outside the scope is refused.
    ("GET", "/api/retention/plan"): Access("function", Role.READER, scoped=True),
    ("POST", "/api/retention/apply"): Access("function", Role.OPERATOR),
    ("GET", "/api/retention/runs/{run_id}"): Access("function", Role.READER),
    ("GET", "/api/tenants/{tenant}/holds"): Access("function", Role.READER, scoped=True),
    ("POST", "/api/tenants/{tenant}/holds"): Access("function", Role.APPROVER, scoped=True),
    ("POST", "/api/tenants/{tenant}/holds/clear"): Access("function", Role.APPROVER, scoped=True),
    # A failover's scope is a tenant, or "platform", which only a caller whose scope is every tenant covers.
    ("POST", "/api/failovers"): Access("function", Role.OPERATOR, scoped=True),
    ("GET", "/api/failovers/{id}"): Access("function", Role.READER, scoped=True),
    # A requester may withdraw its own request, so reject needs a role only for someone else's request.
    ("POST", "/api/failovers/{id}/approve"): Access("function", Role.APPROVER, scoped=True),
    ("POST", "/api/failovers/{id}/reject"): Access("function", Role.APPROVER, scoped=True),
    ("POST", "/api/tenants/{tenant}/recoveries"): Access("function", Role.OPERATOR, scoped=True),
    ("GET", "/api/tenants/{tenant}/recoveries/current"): Access("function", Role.READER, scoped=True),
    ("GET", "/api/recoveries/{id}"): Access("function", Role.READER, scoped=True),
    ("POST", "/api/recoveries/{id}/approve"): Access("function", Role.APPROVER, scoped=True),
    ("POST", "/api/recoveries/{id}/reject"): Access("function", Role.APPROVER, scoped=True),
    # Pages (HTML): a reader; a scoped caller is served, and sees only its tenants' rows and requests.
    ("GET", "/api/dashboard"): Access("function", Role.READER),
    ("GET", "/api/approvals"): Access("function", Role.READER),
    ("GET", "/api/tenants/{tenant}/page"): Access("function", Role.READER, scoped=True),
    ("GET", "/api/evidence"): Access("function", Role.READER),
    # A bundle names a workflow instance, not a tenant: the scope is checked on the instance (404 outside it).
    ("GET", "/api/evidence/bundles/{instance}/{run}"): Access("function", Role.READER),
}


@dataclass(frozen=True)
class Caller:
    name: str
    headers: dict[str, str]
    master_key: bool
    roles: frozenset[Role]
    tenants: frozenset[str] | None  # None: every tenant


def _base_url(stack: LocalStack) -> str:
    return f"http://127.0.0.1:{stack.settings.devhost_port}"


def _fetch_document(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
            document: dict[str, Any] = json.loads(resp.read())
        return document
    except OSError:
        return None


@pytest.fixture(scope="session")
def api_document(stack: LocalStack) -> dict[str, Any]:
    url = f"{_base_url(stack)}/api/openapi.json"
    return wait_until(lambda: _fetch_document(url), timeout=30, what="the devhost serving /api/openapi.json",
                      interval=0.5)


@pytest.fixture(scope="session")
def api_schema(api_document: dict[str, Any]) -> Any:
    # Loaded from the fetched document, not from_url: schemathesis leaves the operation that serves the
    # schema it was loaded from out of get_all_operations(), and GET /api/openapi.json is documented too.
    return schemathesis.openapi.from_dict(api_document)


@pytest.fixture(scope="module")
def documented(api_document: dict[str, Any]) -> set[tuple[str, str]]:
    """Every operation of the OpenAPI document, read from the JSON itself (not through schemathesis)."""
    return {(method.upper(), path) for path, ops in api_document["paths"].items() for method in ops}


@pytest.fixture(scope="module")
def callers(stack: LocalStack) -> dict[str, Caller]:
    from continuity.adapters.local.identity_store import IdentityStore

    keys = json.loads((stack.base / "devhost" / "keys.json").read_text())
    identities = IdentityStore(stack.base)
    admin_key = identities.add_user("contract-tester", [Role.ADMIN], replace=True, save_key=False)
    reader_key = identities.add_user("contract-reader", [Role.READER], replace=True, save_key=False,
                                     tenants=[SCOPED_TENANT])
    return {
        "admin": Caller("admin", {"x-functions-key": keys["masterKey"], "X-Continuity-Key": admin_key}, True,
                        frozenset(Role), None),
        "scoped reader": Caller("scoped reader", {"x-functions-key": keys["functionKey"],
                                                  "X-Continuity-Key": reader_key}, False,
                                frozenset({Role.READER}), frozenset({SCOPED_TENANT})),
        "anonymous": Caller("anonymous", {}, False, frozenset(), frozenset()),
    }


def test_every_documented_operation_has_a_stated_access_rule(documented: set[tuple[str, str]]) -> None:
    assert set(ACCESS) == documented, "state in ACCESS what each new operation asks of its caller"


def _named_tenant(case: Any) -> str | None:
    """The tenant a request names: its {tenant} path parameter, or the tenant of a recovery-<tenant> id."""
    params = case.path_parameters or {}
    if "tenant" in params:
        return str(params["tenant"])
    query = case.query or {}
    if case.operation.path == "/api/retention/plan" and query.get("tenant"):
        return str(query["tenant"])
    if case.operation.path.startswith("/api/recoveries/") and "id" in params:
        return str(params["id"]).removeprefix("recovery-")
    if case.operation.path.startswith("/api/failovers/") and "id" in params:
        return str(params["id"]).removeprefix("failover-")  # "platform": outside every tenant scope
    return None


def _refusal(caller: Caller, access: Access, case: Any) -> set[int] | None:
    """The statuses the caller must be answered with for this request, or None when it may be served."""
    if access.key == "anonymous":
        return None
    if "x-functions-key" not in {k.lower() for k in caller.headers}:
        return {401}  # the host refuses a request without a key before the function runs
    if access.key == "master" and not caller.master_key:
        return {401}
    lacks_role = access.role is not None and access.role not in caller.roles and Role.ADMIN not in caller.roles
    tenant = _named_tenant(case)
    out_of_scope = (access.scoped and caller.tenants is not None and tenant is not None
                    and tenant not in caller.tenants)
    if lacks_role or out_of_scope:
        # Refused, never served: 403 for a well-formed request, or the 4xx of the input it checks first.
        return {400, 403, 404, 409, 413}
    return None


@pytest.mark.parametrize("caller_name", ["admin", "scoped reader", "anonymous"])
def test_every_route_answers_within_its_contract_and_never_with_a_5xx(
        api_schema: Any, stack: LocalStack, documented: set[tuple[str, str]], callers: dict[str, Caller],
        caller_name: str) -> None:
    # Operations are driven one by one with hypothesis (schemathesis' pytest plugin does not load under
    # pytest 9); every documented route must be exercised: answered at least once.
    caller = callers[caller_name]
    exercised: set[tuple[str, str]] = set()
    for result in api_schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if caller.master_key and key in DESTRUCTIVE:
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def answers_within_contract(case: Any) -> None:
            # Only the caller's own credentials: no key the generator may have filled in from the security scheme.
            case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in AUTH_HEADERS}
            response = case.call(base_url=_base_url(stack), headers=caller.headers, timeout=60)
            exercised.add((case.method.upper(), case.operation.path))
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
            expected = _refusal(caller, ACCESS[(case.method.upper(), case.operation.path)], case)
            if expected is not None:
                assert response.status_code in expected, (
                    f"{caller.name}: {case.method} {case.formatted_path} answered {response.status_code}, "
                    f"expected one of {sorted(expected)}: {response.text[:300]}")
            elif caller.headers:
                assert response.status_code != 401, f"{caller.name}'s keys were refused: {response.text[:300]}"

        answers_within_contract()
    expected_ops = documented - DESTRUCTIVE if caller.master_key else documented
    assert exercised == expected_ops


def _request(stack: LocalStack, method: str, path: str, headers: dict[str, str],
             body: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.settings.devhost_port, timeout=60)
    try:
        conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                     headers={"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None
    finally:
        conn.close()


# Well-formed requests a reader scoped to globex must be refused, with the status and the reason it gets.
READER_REFUSALS = [
    ("POST", "/api/catalog/reconcile", None, 401, "needs the master key"),
    ("POST", "/api/retention/apply-as-of", {"as_of": "2026-01-01T00:00:00Z"}, 401, "needs the master key"),
    ("POST", "/api/failovers", {"scope": SCOPED_TENANT, "target_region": "northeurope", "reason": "contract"},
     403, "needs the operator role"),
    ("POST", "/api/retention/apply", {}, 403, "needs the operator role"),
    ("POST", f"/api/tenants/{SCOPED_TENANT}/recoveries", {"reason": "contract"}, 403, "needs the operator role"),
    ("POST", f"/api/tenants/{SCOPED_TENANT}/holds", {"reason": "contract"}, 403, "approver"),
    ("POST", f"/api/tenants/{SCOPED_TENANT}/holds/clear", {"reason": "contract"}, 403, "approver"),
    ("GET", f"/api/tenants/{OTHER_TENANT}/backups", None, 403, "scoped to other tenants"),
    ("GET", f"/api/tenants/{OTHER_TENANT}/backups/20260101T000000Z-abc123", None, 403, "scoped to other tenants"),
    ("GET", f"/api/tenants/{OTHER_TENANT}/recoveries/current", None, 403, "scoped to other tenants"),
    ("GET", f"/api/recoveries/recovery-{OTHER_TENANT}", None, 403, "scoped to other tenants"),
    ("POST", f"/api/recoveries/recovery-{OTHER_TENANT}/approve", {}, 403, "scoped to other tenants"),
    ("POST", f"/api/recoveries/recovery-{OTHER_TENANT}/reject", {}, 403, "scoped to other tenants"),
    ("POST", "/api/validations/nightly", {}, 403, "needs the operator role"),
    ("POST", f"/api/tenants/{SCOPED_TENANT}/validations", {}, 403, "needs the operator role"),
    ("GET", f"/api/tenants/{OTHER_TENANT}/recoverability", None, 403, "scoped to other tenants"),
    ("GET", f"/api/tenants/{OTHER_TENANT}/holds", None, 403, "scoped to other tenants"),
    ("GET", f"/api/retention/plan?tenant={OTHER_TENANT}", None, 403, "scoped to other tenants"),
    ("GET", "/api/retention/runs/retention-20260101", None, 403, "it touches every tenant"),
    ("GET", f"/api/failovers/failover-{OTHER_TENANT}", None, 403, "scoped to other tenants"),
    ("GET", "/api/failovers/failover-platform", None, 403, "it touches every tenant"),
    ("POST", f"/api/failovers/failover-{OTHER_TENANT}/approve", {}, 403, "scoped to other tenants"),
    ("POST", "/api/failovers/failover-platform/approve", {}, 403, "it touches every tenant"),
    # The kind is part of the rule: a failover route never decides a recovery, nor the other way round.
    ("POST", f"/api/failovers/recovery-{SCOPED_TENANT}/approve", {}, 403, "is not a failover"),
    ("POST", f"/api/recoveries/failover-{SCOPED_TENANT}/reject", {}, 403, "is not a recovery"),
]


@pytest.mark.parametrize("method, path, body, status, reason", READER_REFUSALS,
                         ids=[f"{m} {p}" for m, p, *_ in READER_REFUSALS])
def test_a_scoped_reader_is_refused_what_its_role_and_scope_do_not_cover(
        stack: LocalStack, callers: dict[str, Caller], method: str, path: str, body: Any, status: int,
        reason: str) -> None:
    got, answer = _request(stack, method, path, callers["scoped reader"].headers, body)
    assert (got, reason in answer["error"]["message"]) == (status, True), answer


def test_an_anonymous_caller_gets_401_from_every_operation_but_health_and_the_contract(
        stack: LocalStack, documented: set[tuple[str, str]]) -> None:
    fill = {"{tenant}": SCOPED_TENANT, "{backup_id}": "20260101T000000Z-abc123", "{id}": "failover-platform",
            "{operation}": "reconcile", "{run_id}": "retention-20260101"}
    answers: dict[tuple[str, str], int] = {}
    for method, template in sorted(documented):
        path = template
        for name, value in fill.items():
            path = path.replace(name, value)
        answers[(method, template)] = _request(stack, method, path, {}, {} if method == "POST" else None)[0]
    assert answers == {op: 200 if ACCESS[op].key == "anonymous" else 401 for op in documented}
