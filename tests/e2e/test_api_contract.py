"""Schemathesis against the live devhost: every documented route, fuzzed from /api/openapi.json.

No input may produce a 5xx, and every documented response must match its schema. Routes run with the
master key, so the fuzzing reaches the code behind authentication.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from continuity.adapters.local.local_stack import LocalStack

pytestmark = [pytest.mark.stack, pytest.mark.devhost]


# Admin-only routes whose valid inputs destroy shared test data (retention as of a past date deletes other tests'
# backups). They are exercised by their own tests (tests/e2e/test_retention_e2e.py), not fuzzed here.
DESTRUCTIVE = {("POST", "/api/admin/retention/apply")}


def _base_url(stack: LocalStack) -> str:
    return f"http://127.0.0.1:{stack.settings.devhost_port}"


@pytest.fixture(scope="session")
def api_schema(stack: LocalStack) -> Any:
    url = f"{_base_url(stack)}/api/openapi.json"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
                resp.read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    return schemathesis.openapi.from_url(url)


def test_every_route_answers_within_its_contract_and_never_with_a_5xx(api_schema: Any, stack: LocalStack) -> None:
    # Operations are driven one by one with hypothesis (schemathesis' pytest plugin does not load under
    # pytest 9); every documented route must be exercised.
    from continuity.adapters.local.identity_store import IdentityStore
    from continuity.kernel.identity import Role

    keys = json.loads((stack.base / "devhost" / "keys.json").read_text())
    user_key = IdentityStore(stack.base).add_user("contract-tester", [Role.ADMIN], replace=True, save_key=False)
    headers = {"x-functions-key": keys["masterKey"], "X-Continuity-Key": user_key}
    exercised = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in DESTRUCTIVE:
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def answers_within_contract(case: Any) -> None:
            case.call_and_validate(base_url=_base_url(stack), headers=headers,
                                   checks=[not_a_server_error, response_schema_conformance], timeout=60)

        answers_within_contract()
        exercised.append(f"{operation.method.upper()} {operation.path}")
    assert len(exercised) >= 10, exercised
