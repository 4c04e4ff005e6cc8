"""Failover end to end: the devhost runs function_app.py against a dedicated throwaway stack (its replica
gets promoted), driven over HTTP with local users' keys; a writer commits numbered rows throughout."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from continuity.adapters.local.identity_store import IdentityStore
from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.failover_local import LocalFailover
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.evidence_store import EvidenceStore
from continuity.kernel.identity import Role
from tests.conftest import PORT_BASE
from tests.failover_support import Host, Writer, evidence_container, failover_stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

DEVHOST_PORT = PORT_BASE + 81  # +72..+79 serve the devhost tests


@pytest.fixture(scope="module")
def fstack(stack: LocalStack) -> Iterator[LocalStack]:
    with failover_stack(PORT_BASE, "failover-e2e", offset=44) as local:
        yield local


@pytest.fixture(scope="module")
def host(fstack: LocalStack, blob_store: BlobStore) -> Iterator[Host]:
    identities = IdentityStore(fstack.base)
    keys = {name: identities.add_user(name, roles, replace=True) for name, roles in (
        ("olivia", [Role.OPERATOR]), ("oscar", [Role.OPERATOR]), ("amir", [Role.APPROVER]), ("ada", [Role.ADMIN]))}
    devhost = Host(fstack, keys, DEVHOST_PORT)
    devhost.start()
    yield devhost
    devhost.stop()


@pytest.fixture()
def fresh(fstack: LocalStack, host: Host) -> LocalFailover:
    """Each executing test starts with a writable primary and a streaming replica."""
    local = LocalFailover(fstack)
    obs = local.observe_replica("neu-replica")
    if not obs.in_recovery or local.observe_primary("weu-primary").read_only:
        local.restore_original_roles()
    return local


def evidence(fstack: LocalStack, subject: str) -> list[dict[str, Any]]:
    store = EvidenceStore(fstack.dsn("control", "continuity"), BlobStore())
    return [r.to_json() for r in store.records(subject=subject)]


def events(fstack: LocalStack) -> list[str]:
    path = fstack.base / "devhost" / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line).get("event", {}).get("type", "") for line in path.read_text().splitlines() if line.strip()]


def run_approved_failover(host: Host, fstack: LocalStack) -> tuple[dict[str, Any], Writer]:
    writer = Writer(fstack.dsn("primary"))
    writer.start()
    code, body = host.request("olivia")
    assert code == 202, body
    pending = host.wait_state(body["id"], "AWAITING_APPROVAL")
    checks = {f["check"] for f in pending["preflight"]}
    assert {"replica_in_recovery", "replication_lag", "primary_reachable", "validated_backup",
            "recovery_credentials"} <= checks
    # Approve only once the writer has commits to lose: what the failover must not lose is then real.
    wait_until(lambda: len(writer.acked) >= 20, timeout=60, what="the writer committing on the primary")
    code, decided = host.decide("approve", body["id"], "amir")
    assert code == 202, decided
    return body, writer


# ---- the happy path ---------------------------------------------------------------------------


def test_approved_failover_promotes_replica_with_no_lost_commit_and_fences_old_primary(
        host: Host, fstack: LocalStack, fresh: LocalFailover) -> None:
    body, writer = run_approved_failover(host, fstack)
    done = host.wait_state(body["id"], "COMPLETED", "FAILED")
    writer.stop()
    assert done["state"] == "COMPLETED", done["reason"]
    assert [s["step"] for s in done["steps"]] == ["fence", "promote", "repoint", "verify"]
    assert writer.lost_on(fstack.dsn("replica")) == [], "a commit acknowledged before the fence is missing"
    assert writer.refused + writer.errors > 0, "the writer stopped before the fence: nothing was at stake"
    assert fresh.refuses_writes("primary")
    assert fresh.write_probe(fstack.dsn("replica"), "after")["ok"]
    timings = done["timings"]
    assert timings["approval_to_writable"] is not None and timings["fence"] is not None
    actions = [r["action"] for r in evidence(fstack, body["id"])]
    for action in ("failover.requested", "failover.preflight", "failover.approved", "failover.step.fence",
                   "failover.step.promote", "failover.step.repoint", "failover.step.verify", "failover.completed"):
        assert action in actions
    assert done["chain_head"]["seq"] >= len(actions)
    assert done["bundle"]["container"] == evidence_container(fstack)  # the dedicated stack's own chain
    bundle = BlobStore().download(done["bundle"]["container"], done["bundle"]["blob"])
    assert json.loads(bundle)["state"] == "COMPLETED"
    with psycopg.connect(fstack.dsn("control", "continuity"), autocommit=True) as conn:
        routes = conn.execute("select scope, writer_port, region from routing order by scope").fetchall()
    assert routes == [(t, fstack.port("replica"), "northeurope") for t in ("acme-finance", "globex", "initech")]
    published = events(fstack)
    for kind in ("requested", "approved", "completed"):
        assert f"continuity.failover.{kind}" in published
    assert "continuity.routing.changed" in published


def test_drill_promotes_a_sandbox_copy_and_leaves_live_clusters_untouched(
        host: Host, fstack: LocalStack, fresh: LocalFailover) -> None:
    code, body = host.request("olivia", scope="acme-finance", drill=True)
    assert code == 202, body
    host.wait_state(body["id"], "AWAITING_APPROVAL")
    assert host.decide("approve", body["id"], "amir")[0] == 202
    done = host.wait_state(body["id"], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["reason"]
    assert [s["step"] for s in done["steps"]] == ["copy", "promote", "verify"]
    assert fresh.observe_replica("neu-replica").in_recovery is True
    assert fresh.observe_primary("weu-primary").read_only is False
    assert not (fresh.drill_root() / done["run_id"]).exists(), "the drill copy was not dropped"


# ---- refusals: 4xx, recorded, nothing executed ------------------------------------------------


def refused_actions(fstack: LocalStack, subject: str) -> list[dict[str, Any]]:
    return [r for r in evidence(fstack, subject) if r["action"] == "failover.refused"]


def test_request_without_credentials_is_401(host: Host) -> None:
    code, body = host.call("POST", "/api/failovers", None, {"scope": "platform", "target_region": "northeurope",
                                                            "reason": "x"})
    assert code == 401 and body["error"]["code"] == "unauthorized"


def test_malformed_body_refused_and_recorded(host: Host, fstack: LocalStack) -> None:
    code, body = host.call("POST", "/api/failovers", "olivia", raw=b"{not json")
    assert code == 400 and "not valid JSON" in body["error"]["message"]
    code, body = host.call("POST", "/api/failovers", "olivia", {"scope": "platform", "target_region": "northeurope",
                                                                 "reason": "x", "extra": 1})
    assert code == 400 and "extra" in body["error"]["message"]
    assert any("not valid JSON" in r["data"]["reason"] for r in refused_actions(fstack, "failover"))


def test_unknown_scope_refused_and_recorded(host: Host, fstack: LocalStack) -> None:
    code, body = host.request("olivia", scope="nosuch-tenant")
    assert code == 404 and body["error"]["code"] == "unknown_tenant"
    assert refused_actions(fstack, "failover-nosuch-tenant")[-1]["data"]["executed"] is False


def test_unknown_region_refused_and_recorded(host: Host, fstack: LocalStack) -> None:
    code, body = host.request("olivia", region="eastus")
    assert code == 400 and "unknown target region 'eastus'" in body["error"]["message"]
    assert "eastus" in refused_actions(fstack, "failover-platform")[-1]["data"]["reason"]


def test_approver_without_operator_role_cannot_request(host: Host) -> None:
    code, body = host.request("amir")
    assert code == 403 and "needs the operator role" in body["error"]["message"]


def test_refusals_while_pending_self_approval_operator_missing_ack_running_then_second_decision(
        host: Host, fstack: LocalStack) -> None:
    code, body = host.request("ada", scope="globex")
    assert code == 202, body
    iid = body["id"]
    host.wait_state(iid, "AWAITING_APPROVAL")
    code, again = host.request("olivia", scope="globex")
    assert code == 409 and "already in progress" in again["error"]["message"]
    code, own = host.decide("approve", iid, "ada")
    assert code == 403 and "cannot approve it: a second person" in own["error"]["message"]
    code, operator = host.decide("approve", iid, "oscar")
    assert code == 403 and "needs the approver role (holds: operator)" in operator["error"]["message"]
    code, no_ack = host.decide("approve", iid, "amir", ack=[])
    assert code == 403 and "requires acknowledging no_validated_backup" in no_ack["error"]["message"]
    code, rejected = host.decide("reject", iid, "amir", comment="not during month-end close")
    # SUBMITTED: taken by the route, not yet by the orchestration within the route's wait (a loaded machine).
    assert code == 202 and rejected["state"] in ("REJECTED", "SUBMITTED"), rejected
    done = host.wait_state(iid, "REJECTED")
    code, second = host.decide("approve", iid, "ada")
    assert code == 409
    assert not any(s for s in done["steps"]), "a rejected failover executed a step"
    reasons = [r["data"]["reason"] for r in refused_actions(fstack, iid)]
    assert any("already in progress" in r for r in reasons)
    assert any("four-eyes" in r for r in reasons)
    assert any("holds: operator" in r for r in reasons)
    assert "continuity.failover.rejected" in events(fstack)


def test_expired_request_refuses_late_approval_and_executes_nothing(host: Host, fstack: LocalStack) -> None:
    code, body = host.request("olivia", scope="initech")
    assert code == 202, body
    iid = body["id"]
    host.wait_state(iid, "AWAITING_APPROVAL")
    done = host.wait_state(iid, "EXPIRED", timeout=90)
    assert done["steps"] == []
    code, late = host.decide("approve", iid, "amir")
    assert code == 409 and "expired" in late["error"]["message"]
    assert "failover.expired" in [r["action"] for r in evidence(fstack, iid)]
    assert "continuity.failover.expired" in events(fstack)


# ---- kill the host mid-step: resume, never two writable primaries ------------------------------


def _promoted(fstack: LocalStack) -> bool:
    """The replica answers and is out of recovery. Asked of the replica alone: the fenced old primary may be
    stopped by now, and a connection that fails means "not yet", not a failed test."""
    try:
        with psycopg.connect(fstack.dsn("replica"), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("select pg_is_in_recovery()").fetchone()
    except psycopg.OperationalError:
        return False
    return row is not None and row[0] is False


@pytest.mark.parametrize("step", ["fence", "promote"])
def test_host_killed_during_step_resumes_to_completion_without_lost_commits(
        host: Host, fstack: LocalStack, fresh: LocalFailover, step: str) -> None:
    host.stop()
    host.start(CONTINUITY_FAILOVER_STEP_PAUSE=f"{step}:6")
    try:
        body, writer = run_approved_failover(host, fstack)
        if step == "fence":
            done_its_work = lambda: fresh.observe_primary("weu-primary").read_only  # noqa: E731
        else:
            done_its_work = lambda: _promoted(fstack)  # noqa: E731
        wait_until(done_its_work, timeout=60, what=f"the {step} step doing its work", interval=0.05)
        host.kill()
        # While the host is dead: at most one writable primary.
        writable = [c for c in ("primary", "replica") if not fresh.refuses_writes(c)]
        assert len(writable) <= 1, writable
    finally:
        host.stop()
        host.start()
    done = host.wait_state(body["id"], "COMPLETED", "FAILED", timeout=120)
    writer.stop()
    assert done["state"] == "COMPLETED", done["reason"]
    assert writer.lost_on(fstack.dsn("replica")) == []
    assert fresh.refuses_writes("primary") and not fresh.refuses_writes("replica")


# ---- the CLI speaks the same HTTP ---------------------------------------------------------------


def test_cli_users_add_prints_key_once_and_failover_verbs_drive_the_api(
        host: Host, fstack: LocalStack, fresh: LocalFailover, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from continuity.cli.main import main

    for key, value in host.env.items():
        monkeypatch.setenv(key, value)
    assert main(["users", "add", "cli-operator", "--role", "operator", "--replace", "--json"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["key"].startswith("ck_") and added["key"] not in (fstack.base / "users.json").read_text()
    assert main(["failover", "request", "--scope", "acme-finance", "--region", "northeurope", "--reason", "cli",
                 "--user", "cli-operator", "--wait", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "AWAITING_APPROVAL" and shown["preflight"]
    assert main(["failover", "approve", shown["id"], "--user", "cli-operator", "--json"]) == 2
    assert "cannot approve it" in capsys.readouterr().err
    assert main(["failover", "reject", shown["id"], "--user", "cli-operator", "--comment", "withdrawn",
                 "--wait", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "REJECTED"
    assert main(["users", "remove", "cli-operator"]) == 0
