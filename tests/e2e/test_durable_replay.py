"""Episode decisions against the real SDK, with no database: task ids must match the SDK's own numbering.

An in-memory driver plays the store's part: it runs scheduled activities at once, fires timers at once,
and delivers the resulting messages in random batches and orders. Any id the engine assigns that the SDK
does not expect shows up as the SDK's "Potential duplicate Task completion" warning (made an error here)
or as an orchestration that never finishes.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
import warnings
from typing import Any

import pytest

from devhost.durable import history as h
from devhost.durable.invoke import ActivityFailure, DurableFunctions, run_activity, run_orchestrator
from devhost.durable.replay import Episode, EpisodeBuilder, InstanceView, Message, context_json
from tests.e2e import conformance_app

FUNCTIONS = DurableFunctions.from_functions(conformance_app.app.get_functions())


def drive(name: str, input_value: Any, rng: random.Random, max_episodes: int = 200) -> tuple[Episode, list[dict]]:
    now = dt.datetime.now(dt.UTC)
    view = InstanceView(f"mem-{uuid.uuid4().hex[:6]}", name, "e1", json.dumps(input_value), None, {})
    past: list[str] = []
    pool = [h.execution_started(now, name, view.instance_id, "e1", view.input_text, None)]
    next_id = 0
    for _ in range(max_episodes):
        rng.shuffle(pool)
        take = rng.randint(1, len(pool))
        batch, pool = pool[:take], pool[take:]
        builder = EpisodeBuilder(view, now)
        builder.deliver([Message(next_id + i, e) for i, e in enumerate(batch)])
        next_id += len(batch)
        with warnings.catch_warnings():
            # The SDK warns when a completion names a task it does not know: make that an error.
            warnings.filterwarnings("error", message="Potential duplicate Task completion")
            outcome = run_orchestrator(FUNCTIONS.orchestrators[name],
                                       context_json(view, past, [h.orchestrator_started(now), *builder.delivered]))
        episode = builder.apply(outcome, set(FUNCTIONS.orchestrators))
        past += [json.dumps({**e, "IsPlayed": True}) for e in episode.new_events]
        view.state = episode.state
        if episode.runtime_status != "Running":
            return episode, [json.loads(p) for p in past]
        for work in episode.activities:
            try:
                pool.append(h.task_completed(now, work.task_id,
                                             run_activity(FUNCTIONS.activities[work.name], work.name, work.input_text)))
            except ActivityFailure as failure:
                pool.append(h.task_failed(now, work.task_id, failure.reason, failure.details))
        pool += [h.timer_fired(now, t.timer_id, t.fire_at) for t in episode.timers]
        now += dt.timedelta(seconds=1)
    raise AssertionError(f"{name} did not finish in {max_episodes} episodes (pending {pool})")


@pytest.mark.parametrize("seed", range(10))
def test_concurrent_retries_get_the_task_ids_the_sdk_expects_in_any_delivery_order(seed: int) -> None:
    key = uuid.uuid4().hex
    episode, events = drive("retry_pair", key, random.Random(seed))
    assert episode.runtime_status == "Completed", episode.output_text
    assert json.loads(episode.output_text or "null") == [
        "succeeded on attempt 2", 42, "succeeded on attempt 3", "succeeded on attempt 4", 100,
        "succeeded on attempt 4"]
    failed = [e for e in events if e["EventType"] == h.EventType.TASK_FAILED]
    assert len(failed) == 3 + 1 + 2 + 3


@pytest.mark.parametrize("seed", range(4))
def test_fan_out_completes_whatever_order_the_results_arrive_in(seed: int) -> None:
    episode, _ = drive("fan_out", 30, random.Random(seed))
    assert json.loads(episode.output_text or "null") == {"count": 30, "sum": sum(2 * i for i in range(30))}


def test_orchestrator_that_changes_its_actions_on_replay_is_failed_as_non_deterministic() -> None:
    now = dt.datetime.now(dt.UTC)
    view = InstanceView("nd", "chaining", "e1", None, None, {})
    builder = EpisodeBuilder(view, now)
    builder.deliver([Message(1, h.execution_started(now, "chaining", "nd", "e1", None, None))])
    outcome = run_orchestrator(FUNCTIONS.orchestrators["chaining"],
                               context_json(view, [], [h.orchestrator_started(now), *builder.delivered]))
    first = builder.apply(outcome, set(FUNCTIONS.orchestrators))
    # Pretend the history recorded a different activity at position 0: the replay no longer matches it.
    first.state["actions"][0][0] = "0:some_other_activity"
    past = [json.dumps({**e, "IsPlayed": True}) for e in first.new_events]
    view.state = first.state
    second = EpisodeBuilder(view, now)
    second.deliver([Message(2, h.task_completed(now, 0, json.dumps("Hello Tokyo")))])
    outcome = run_orchestrator(FUNCTIONS.orchestrators["chaining"],
                               context_json(view, past, [h.orchestrator_started(now), *second.delivered]))
    episode = second.apply(outcome, set(FUNCTIONS.orchestrators))
    assert episode.runtime_status == "Failed"
    assert "Non-deterministic orchestrator 'chaining'" in (episode.output_text or "")


def test_calling_an_unknown_sub_orchestrator_fails_the_orchestration_with_its_name() -> None:
    now = dt.datetime.now(dt.UTC)
    view = InstanceView("p", "parent", "e1", None, None, {})
    builder = EpisodeBuilder(view, now)
    builder.deliver([Message(1, h.execution_started(now, "parent", "p", "e1", None, None))])
    outcome = run_orchestrator(FUNCTIONS.orchestrators["parent"],
                               context_json(view, [], [h.orchestrator_started(now), *builder.delivered]))
    episode = builder.apply(outcome, {"parent"})  # as if 'child' were not an orchestrator of the app
    assert episode.runtime_status == "Failed"
    assert "sub-orchestrator 'child'" in (episode.output_text or "")
