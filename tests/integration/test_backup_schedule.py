"""Backups on each tier's schedule against the session stack: ``continuity backup --due`` takes exactly what is
due (a tenant never dumped, the server's base backup when its archive has none in the slot) and nothing on a
second run; and a WAL segment deleted from the archive raises the "recovery chain broken" incident when the
backup timer's orchestration runs (replayed through the real Durable SDK, every activity real): the break is
recorded once, ``continuity.recovery_chain.broken`` is published for the server's tenant, the repair takes a
new base backup and the incident resolves.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.evidence_store import EvidenceStore
from continuity.cli import main as cli
from continuity.kernel import settings
from devhost.durable import history as h
from devhost.durable.invoke import ActivityFailure, DurableFunctions, run_activity, run_orchestrator
from devhost.durable.replay import EpisodeBuilder, InstanceView, Message, context_json
from tests.app_functions import app_functions
from tests.recovery_support import seed

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
DUE, FRESH = "sch-due", "sch-fresh"
SERVER = "weu-primary"
FUNCTIONS = DurableFunctions.from_functions(list(app_functions()))


@pytest.fixture(scope="module")
def scheduled(stack: LocalStack, blob_store: BlobStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two seeded tenants on the archived primary, on a tier with weekly dumps and base backups every 35 days
    (slots that long: a run and the next one of a test fall in the same slot)."""
    shipped = yaml.safe_load((ROOT / "config" / "tenants.yaml").read_text())
    tier = {**shipped["tiers"]["gold"], "schedule": {"base_backup_hours": 840, "dump_minutes": 10080}}
    tenants = [{"id": tid, "name": tid, "tier": "weekly", "server": SERVER, "database": db,
                "primary_region": "westeurope", "secondary_region": "northeurope"}
               for tid, db in ((DUE, "odoo_sch_due"), (FRESH, "odoo_sch_fresh"))]
    path = tmp_path_factory.mktemp("schedule") / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tiers": {"weekly": tier}, "servers": shipped["servers"], "tenants": tenants}))
    seed(stack, blob_store, DUE, "odoo_sch_due", moves=10, attachments=1)
    seed(stack, blob_store, FRESH, "odoo_sch_fresh", moves=10, attachments=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONTINUITY_TENANTS_FILE", str(path))
        yield path


def _taken(out: dict[str, Any]) -> set[tuple[str, str]]:
    return {(t["kind"], t["subject"]) for t in out["taken"] if t["ok"]}


def test_backup_due_takes_exactly_what_is_due_and_nothing_twice(
        scheduled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from continuity.backups import service

    fresh = service.take_dump(FRESH, "test-fresh")  # dumped in this slot: not due
    assert fresh["ok"], fresh
    before = service.survey(dt.datetime.now(dt.UTC))
    assert before["errors"] == []
    assert before["due"]["dumps"] == [DUE]
    expected = {("dump", DUE)} | {("base-backup", s) for s in before["due"]["base_backups"]}

    assert cli.main(["backup", "--due", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert _taken(first) == expected and len(first["taken"]) == len(expected)
    # Its age in whole minutes depends on how long the surveys took (a loaded runner): the slot decides.
    fresh_reason = next(d for d in first["dumps"] if d["subject"] == FRESH)["reason"]
    assert fresh_reason.startswith(f"{FRESH}: dump not due: newest is ") and ", taken in this slot" in fresh_reason

    assert cli.main(["backup", "--due"]) == 0
    second = capsys.readouterr().out
    assert "nothing due" in second and "DUE " not in second
    assert f"not due  {DUE}: dump not due" in second
    assert f"not due  {SERVER}: base backup not due" in second


def test_rpo_of_a_tenant_on_the_archived_server_is_measured_from_the_archive(scheduled: Path) -> None:
    from continuity.validation import wiring

    standing = wiring.recoverability(DUE)
    assert standing["rpo_exposure"]["source"] == "archive", standing
    assert standing["rpo_exposure"]["newest_archived_wal"] is not None
    [row] = [r for r in wiring.estate({DUE}) if r.tenant == DUE]
    assert row.newest_backup_id == standing["newest_backup"]["backup_id"]


# ---- the recovery chain ---------------------------------------------------------------------------------


class Drive:
    """Replays an orchestration episode by episode through the devhost's engine: activities run for real,
    timers fire at once (virtual time), sub-orchestrations are driven the same way."""

    def __init__(self) -> None:
        self.activities: list[tuple[str, dict[str, Any]]] = []
        self.instances: dict[str, Any] = {}

    def run(self, name: str, instance_id: str, given: Any, now: dt.datetime, max_episodes: int = 200) -> Any:
        view = InstanceView(instance_id, name, "e1", json.dumps(given), None, {})
        past: list[str] = []
        pool = [h.execution_started(now, name, instance_id, "e1", view.input_text, None)]
        next_id = 0
        for _ in range(max_episodes):
            builder = EpisodeBuilder(view, now)
            builder.deliver([Message(next_id + i, e) for i, e in enumerate(pool)])
            next_id += len(pool)
            pool = []
            outcome = run_orchestrator(FUNCTIONS.orchestrators[name],
                                       context_json(view, past, [h.orchestrator_started(now), *builder.delivered]))
            episode = builder.apply(outcome, set(FUNCTIONS.orchestrators))
            past += [json.dumps({**e, "IsPlayed": True}) for e in episode.new_events]
            view.state = episode.state
            if episode.runtime_status != "Running":
                assert episode.runtime_status == "Completed", episode.failure_details
                result = json.loads(episode.output_text) if episode.output_text else None
                self.instances[instance_id] = result
                return result
            for work in episode.activities:
                self.activities.append((work.name, json.loads(work.input_text or "null")))
                try:
                    pool.append(h.task_completed(now, work.task_id, run_activity(
                        FUNCTIONS.activities[work.name], work.name, work.input_text)))
                except ActivityFailure as failure:
                    pool.append(h.task_failed(now, work.task_id, failure.reason, failure.details))
            for sub in episode.sub_orchestrations:
                result = self.run(sub.name, sub.instance_id, json.loads(sub.input_text or "null"), now)
                pool.append(h.sub_orchestration_completed(now, sub.task_id, json.dumps(result)))
            for timer in episode.timers:
                pool.append(h.timer_fired(timer.fire_at, timer.timer_id, timer.fire_at))
            now = max([now + dt.timedelta(seconds=1), *(t.fire_at for t in episode.timers)])
        raise AssertionError(f"{name} did not finish in {max_episodes} episodes")


def _published(local: LocalStack) -> list[dict[str, Any]]:
    path = local.base / "devhost" / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line).get("event", {}) for line in path.read_text().splitlines() if line.strip()]


def test_a_deleted_wal_segment_raises_the_recovery_chain_incident_once(
        scheduled: Path, stack: LocalStack, blob_store: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from continuity.pitr import service as pitr
    from devhost import process
    from devhost.keys import load_keys

    # The activities run in this process, not in the devhost: they publish to the session devhost's topic.
    assert process.ping(settings.get_int("CONTINUITY_DEVHOST_PORT")), "the session's devhost is not running"
    topic = process.endpoint() + "/eventgrid/topics/continuity/api/events"
    monkeypatch.setenv("CONTINUITY_EVENTGRID_TOPIC_ENDPOINT", topic)
    monkeypatch.setenv("CONTINUITY_EVENTGRID_TOPIC_KEY", load_keys().topic_key)
    registry = settings.configured_registry()
    pitr.take_base_backup(registry, SERVER)
    for _ in range(3):  # a few segments after the base backup, in the archive
        pitr.force_archive(registry, SERVER)
    barman = stack.barman()
    name = stack.archive_name()
    newest_base = max(barman.base_backups(name), key=lambda b: b.end_time)
    segments = sorted(s.name for s in barman.segments(name, blob_store))
    victim = next(s for s in segments if s[8:] > newest_base.end_wal[8:] and s != segments[-1])
    wal = settings.get("CONTINUITY_WAL_CONTAINER")
    doomed = {n: blob_store.download(wal, n) for n in blob_store.list_names(wal, prefix=f"{name}/wals/")
              if n.rsplit("/", 1)[-1].split(".", 1)[0] == victim}
    assert doomed, f"segment {victim} is not in the archive"
    for blob in doomed:
        blob_store.container(wal).delete_blob(blob)
    try:
        drive = Drive()
        now = dt.datetime.now(dt.UTC)
        given = {"parallelism": 2, "max_attempts": 2, "first_retry_seconds": 30}
        summary = drive.run("scheduled_backups", f"backups-test-{uuid.uuid4().hex[:8]}", given, now)
        key = f"{SERVER}-missing-segment-{victim}"
        [chain] = [c for c in summary["chains"] if c["server"] == SERVER]
        assert chain["break"]["cause"] == "missing-segment" and chain["break"]["segment"] == victim
        assert summary["incidents"] == [{"instance_id": f"chain-{key}", "outcome": "resolved"}]
        incident = drive.instances[f"chain-{key}"]
        assert incident["outcome"] == "resolved" and incident["segment"] == victim
        assert incident["attempts"][0]["ok"] and incident["attempts"][0]["base_backup"]
        assert set(incident["tenants"]) == {DUE, FRESH}

        events = [e for e in _published(stack) if e.get("type") == "continuity.recovery_chain.broken"
                  and e.get("data", {}).get("incident") == key]
        assert {e["data"]["tenant"] for e in events} == {DUE, FRESH}
        assert all(e["data"]["segment"] == victim and e["data"]["server"] == SERVER for e in events)

        store = EvidenceStore(stack.dsn("control", "continuity"), BlobStore())
        actions = [r.action for r in store.records(subject=f"servers/{SERVER}/recovery-chain")
                   if r.data.get("key") == key or r.data.get("incident") == key]
        assert actions == ["incident.recovery_chain_broken", "incident.recovery_chain_resolved"]

        # The next tick sees the same break (the older base backup still spans the gap) but raises nothing.
        again = Drive()
        later = again.run("scheduled_backups", f"backups-test-{uuid.uuid4().hex[:8]}", given,
                          now + dt.timedelta(minutes=5))
        assert later["incidents"] == []
        assert [i for i in again.instances if i.startswith("chain-")] == []
    finally:
        for blob, data in doomed.items():  # the session's archive whole again for whoever reads it next
            blob_store.upload(wal, blob, data, overwrite=True)


def test_each_tick_reports_the_replicas_lag_as_the_event_the_alert_counts(
        scheduled: Path, caplog: pytest.LogCaptureFixture) -> None:
    from continuity.backups.service import survey
    from continuity.kernel.events import CUSTOM_EVENT_ATTRIBUTE

    with caplog.at_level("INFO", logger="continuity.failover.service"):
        out = survey(dt.datetime.now(dt.UTC))
    (replica,) = out["replication"]
    assert replica["server"] == "neu-replica" and replica["primary"] == SERVER and replica["reachable"]
    assert replica["lag_bytes"] >= 0
    (event,) = [r for r in caplog.records if getattr(r, CUSTOM_EVENT_ATTRIBUTE, None) == "replication.lag"]
    measured = json.loads(getattr(event, "microsoft.custom_measurements"))
    assert measured["lag_bytes"] == replica["lag_bytes"]  # customMeasurements.lag_seconds/bytes in App Insights
