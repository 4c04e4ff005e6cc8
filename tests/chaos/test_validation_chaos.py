"""Nightly restore validation under SIGKILL: the devhost killed inside the restore step and at a step boundary
(points picked by the seed) ends with the same per-tenant outcome and check statuses as an uninterrupted
nightly, one catalog row and one evidence record for the attempt (catalog = evidence for every attempt of the
tenant), no scratch database, run folder or pg_restore left, and the evidence chain verifies."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from continuity.adapters.tools.backup_taker import take_backup
from continuity.cli.main import main
from tests.chaos.conftest import TENANT, Chaos
from tests.chaos.support import PLAN, catalog_evidence_disagreements, context, leftovers

pytestmark = [pytest.mark.stack, pytest.mark.devhost]


def nightly(chaos: Chaos, date: str, kills: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    """A fresh backup of the tenant (the nightly validates a newest backup not judged before), then the
    nightly run of ``date``, killed at ``kills``; returns its output and the backup id."""
    host, why = chaos.host, context("validation")
    backup_id = take_backup(chaos.registry, TENANT, store=chaos.blobs).backup_id
    if kills:
        host.restart(kills[0])
    code, body = host.call("POST", "/api/validations/nightly", "olivia", {"date": date})
    assert code == 202, (why, body)
    host.drive(body["instance_id"], kills, None, why)
    return host.wait_output(body["instance_id"], why), backup_id


def outcome(chaos: Chaos, output: dict[str, Any], backup_id: str) -> dict[str, Any]:
    """The nightly's counts and its one result, and the catalog's rows for the backup (attempt, outcome, checks)."""
    with psycopg.connect(chaos.stack.dsn("control", "continuity"), autocommit=True) as conn:
        rows = conn.execute("select run_id, outcome, checks from catalog.validations where tenant = %s and "
                            "backup_id = %s order by id", (TENANT, backup_id)).fetchall()
    (result,) = output["results"]
    return {"counts": {k: output[k] for k in ("tenants", "passed", "failed", "errors", "skipped")},
            "result": {k: result[k] for k in ("tenant", "outcome", "verdict", "failed_checks", "within_objectives")},
            "catalog": [(str(run_id).removesuffix("-1").endswith(backup_id), outcome_,
                         {c["id"]: c["status"] for c in checks}) for run_id, outcome_, checks in rows]}


def failures(chaos: Chaos, backup_id: str) -> list[str]:
    """The failed checks of the backup's validations, with their details."""
    with psycopg.connect(chaos.stack.dsn("control", "continuity"), autocommit=True) as conn:
        rows = conn.execute("select checks from catalog.validations where tenant = %s and backup_id = %s",
                            (TENANT, backup_id)).fetchall()
    return [f"{c['id']}: {c.get('detail')}" for (checks,) in rows for c in checks if c["status"] == "fail"]


def test_nightly_killed_inside_the_restore_and_at_a_step_boundary_ends_as_an_uninterrupted_nightly(
        chaos: Chaos, capsys: pytest.CaptureFixture[str]) -> None:
    why = context("validation")
    output, backup_id = nightly(chaos, "20990101", ())
    uninterrupted = outcome(chaos, output, backup_id)
    killed_output, backup_id = nightly(chaos, "20990102", PLAN["validation"])
    killed = outcome(chaos, killed_output, backup_id)

    assert uninterrupted["result"]["outcome"] == "passed", (why, failures(chaos, backup_id))
    assert killed == uninterrupted, why
    # One attempt, one row: the killed steps ran again inside the same run, not as a new attempt.
    assert len(killed["catalog"]) == 1 and killed["catalog"][0][0], (why, killed["catalog"])
    assert catalog_evidence_disagreements(chaos.stack, TENANT) == [], why
    assert leftovers(chaos.stack, chaos.tmpdir) == [], why
    capsys.readouterr()
    assert main(["evidence", "verify", "--json"]) == 0, (why, capsys.readouterr().out)
