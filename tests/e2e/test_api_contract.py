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
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from continuity.adapters.local_stack import LocalStack

pytestmark = [pytest.mark.stack, pytest.mark.devhost]


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


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_every_route_answers_within_its_contract_and_never_with_a_5xx(case: Any, stack: LocalStack) -> None:
    keys = json.loads((stack.base / "devhost" / "keys.json").read_text())
    case.call_and_validate(base_url=_base_url(stack), headers={"x-functions-key": keys["masterKey"]},
                           checks=[not_a_server_error, response_schema_conformance], timeout=60)
