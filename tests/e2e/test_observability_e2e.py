"""Observability end to end: a validation on the devhost leaves spans with tenant ids in its console telemetry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from continuity.adapters.local.local_stack import LocalStack

pytestmark = [pytest.mark.stack, pytest.mark.devhost]


def _spans(stack: LocalStack) -> list[dict[str, Any]]:
    spans = []
    for line in (stack.base / "devhost" / "devhost.log").read_text(errors="replace").splitlines():
        if line.startswith("{") and '"trace_id"' in line:
            record = json.loads(line)
            if "name" in record and "attributes" in record:
                spans.append(record)
    return spans


def test_a_validation_on_the_devhost_emits_spans_with_tenant_and_run_ids(stack: LocalStack,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from continuity.adapters.postgres.demo_seed import seed_tenant
    from continuity.adapters.tools.backup_taker import take_backup
    from continuity.cli.main import main
    from continuity.kernel.settings import configured_registry

    registry = configured_registry()
    seed_tenant(registry, registry.get_tenant("initech"), 1)
    stored = take_backup(registry, "initech")
    assert main(["catalog", "reconcile"]) == 0
    assert main(["validate", "initech", "--backup", stored.backup_id, "--wait", "--json"]) == 0
    capsys.readouterr()
    run_id = f"validate-initech-{stored.backup_id}-1"  # the first attempt
    names = {s["name"] for s in _spans(stack) if s["attributes"].get("instance_id") == run_id}
    assert {"restore_into_sandbox", "run_restore_checks", "record_validation"} <= names
    for span in _spans(stack):
        if span["attributes"].get("instance_id") == run_id:
            assert span["attributes"]["tenant"] == "initech"
            assert span["attributes"]["backup_id"] == stored.backup_id
