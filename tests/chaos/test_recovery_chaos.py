"""Tenant recovery under SIGKILL: the devhost killed inside the staging restore and at a step boundary
(points picked by the seed, before or after the approval) ends COMPLETED with the same steps as an
uninterrupted recovery, the killed steps ran again, the tenant's ledger is the backup's, exactly one live
database, the pre-recovery database kept, no staging database, run folder or pg_restore/pg_dump left, and
the evidence chain verifies."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from continuity.cli.main import main
from tests.chaos.conftest import DB, TENANT, Chaos
from tests.chaos.support import PLAN, POINTS, context, leftovers
from tests.recovery_support import database_names, delete_posted_moves, ledger_fingerprint, manifest_of

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

ORDER = [p for p, _ in POINTS["recovery"]]
AFTER_APPROVAL = frozenset(ORDER[ORDER.index("recovery.checks") + 1:])


def step_of(point: str) -> str:
    return {"recovery.restored": "stage"}.get(point, point.removeprefix("recovery."))


def recover(chaos: Chaos, kills: tuple[str, ...]) -> dict[str, Any]:
    """Corrupt the tenant (posted moves deleted), request its recovery, approve it, kill at ``kills``."""
    host, why = chaos.host, context("recovery")
    delete_posted_moves(chaos.stack.dsn("primary", DB), 2)
    if kills:
        host.restart(kills[0])
    code, body = host.call("POST", f"/api/tenants/{TENANT}/recoveries", "olivia", {"reason": "posted moves deleted"})
    assert code == 202, (why, body)
    host.drive(body["id"], kills, AFTER_APPROVAL, why)
    done = host.wait_state(body["id"], "COMPLETED", "FAILED", "REFUSED", timeout=240)
    return {**done, "backup_id": body["backup_id"]}


def outcome(chaos: Chaos, done: dict[str, Any]) -> tuple[Any, ...]:
    """State, reason, steps; whether the live ledger is the backup's; the run's three databases as they stand;
    the live database's extensions and the assertion role's grants (what the checks added to the staged copy must
    not go live with it)."""
    manifest = manifest_of(chaos.blobs, TENANT, done["backup_id"])
    ledger = ledger_fingerprint(chaos.stack.dsn("primary", DB))[0] == manifest["ledger"]["fingerprint"]
    names = database_names(chaos.stack, "odoo_cx_acme%")
    run = done["databases"]
    with psycopg.connect(chaos.stack.dsn("primary", DB), autocommit=True) as conn:
        extensions = sorted(str(r[0]) for r in conn.execute("select extname from pg_extension"))
        # The checks' read-only assertion role must hold nothing in the database that went live.
        granted = conn.execute("select count(*) from information_schema.role_table_grants "
                               "where grantee = 'continuity_assertion_reader'").fetchone()
    return (done["state"], done["reason"], [(s["step"], s["ok"]) for s in done["steps"]], ledger,
            {role: run[role] in names for role in ("staged", "pre_recovery")}, names[DB]["allow_connections"],
            extensions, granted)


def test_recovery_killed_inside_the_staging_restore_and_at_a_step_boundary_ends_as_an_uninterrupted_one(
        chaos: Chaos, capsys: pytest.CaptureFixture[str]) -> None:
    why = context("recovery")
    uninterrupted = recover(chaos, ())
    expected = outcome(chaos, uninterrupted)
    killed = recover(chaos, PLAN["recovery"])

    assert expected == ("COMPLETED", None, [(s, True) for s in ("stage", "checks", "fence", "swap", "reopen",
                                                                  "verify", "backup")],
                        True, {"staged": False, "pre_recovery": True}, True, ["plpgsql"], (0,)), \
        (why, uninterrupted["reason"], expected)
    assert outcome(chaos, killed) == expected, (why, killed["reason"])
    attempts = {s["step"]: s["attempts"] for s in killed["steps"]}
    for point in PLAN["recovery"]:
        assert attempts[step_of(point)] >= 2, (why, f"step {step_of(point)} did not run again", attempts)
    assert leftovers(chaos.stack, chaos.tmpdir) == [], why
    capsys.readouterr()
    assert main(["evidence", "verify", "--json"]) == 0, (why, capsys.readouterr().out)
