"""The devhost's durable engine: replay cost as history grows, and a 1,000-way fan-out end to end.

    .venv/bin/python bench/bench_devhost.py [--fan-out 1000] [--workers 4]

1. Replay: one orchestrator invocation through the SDK (``Orchestrator.create``'s handle, as the worker
   calls it) on histories of about 10, 100 and 1,000 events, against the peer: the same user generator
   driven directly with a stub context (the user code alone, no history to parse).
2. Fan-out: ``--fan-out`` no-op activities through the engine (PostgreSQL task hub, replays, activity
   pool of ``--workers``), against the peer: the same activity functions invoked the same way
   (``ActivityTriggerConverter`` in and out) in a thread pool of the same size, with no engine.
Uses the configured stack's ``control`` cluster (brought up if needed) and a scratch task hub it purges.
Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import azure.durable_functions as df

from continuity.kernel.errors import ServerUnavailable
from devhost.durable import history as h
from devhost.durable.engine import DurableEngine
from devhost.durable.invoke import DurableFunctions, run_activity, run_orchestrator
from devhost.durable.replay import InstanceView, context_json

bench_app = df.DFApp()


@bench_app.activity_trigger(input_name="value")
def bench_noop(value: Any) -> Any:
    return value


@bench_app.orchestration_trigger(context_name="context")
def bench_fan_out(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    count = int(context.get_input())
    results = yield context.task_all([context.call_activity(bench_noop, i) for i in range(count)])
    return len(results)


# get_functions() validates names once per app and refuses a second call: read them once.
FUNCTIONS = bench_app.get_functions()


def fan_out_history(tasks: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Past events of a fan-out of ``tasks`` with all but one result in, plus the episode bringing the last."""
    now = dt.datetime.now(dt.UTC)
    past = [h.orchestrator_started(now),
            h.execution_started(now, "bench_fan_out", "bench", "e1", json.dumps(tasks), None)]
    past += [h.task_scheduled(now, i, "bench_noop", json.dumps(i)) for i in range(tasks)]
    past += [h.orchestrator_completed(now), h.orchestrator_started(now)]
    past += [h.task_completed(now, i, json.dumps(i)) for i in range(tasks - 1)]
    past += [h.orchestrator_completed(now)]
    new = [h.orchestrator_started(now), h.task_completed(now, tasks - 1, json.dumps(tasks - 1))]
    return [json.dumps({**e, "IsPlayed": True}) for e in past], new


class StubTask:
    def __init__(self, value: Any) -> None:
        self.value = value


class StubContext:
    """Just enough of a context to drive the user generator without the SDK (the peer)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def get_input(self) -> Any:
        return self.count

    def call_activity(self, _function: Any, value: Any) -> StubTask:
        return StubTask(value)

    def task_all(self, tasks: list[StubTask]) -> StubTask:
        return StubTask([t.value for t in tasks])


def drive_directly(generator_function: Any, count: int) -> Any:
    generator = generator_function(StubContext(count))
    task = next(generator)
    try:
        generator.send(task.value)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the generator did not finish")


def best_of(repeats: int, action: Any) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def measure_replay() -> None:
    functions = DurableFunctions.from_functions(FUNCTIONS)
    handle = functions.orchestrators["bench_fan_out"]
    user_generator = handle.orchestrator_function  # type: ignore[attr-defined]
    print("replay of one episode through the SDK vs the user generator driven directly")
    print(f"{'events':>8} {'replay ms':>10} {'us/event':>9} {'direct ms':>10} {'ratio':>8}")
    for target in (10, 100, 1000):
        tasks = max(1, (target - 6) // 2)
        past, new = fan_out_history(tasks)
        view = InstanceView("bench", "bench_fan_out", "e1", json.dumps(tasks), None, {})
        events = len(past) + len(new)

        def replay(past: list[str] = past, new: list[dict[str, Any]] = new, view: InstanceView = view,
                   tasks: int = tasks) -> None:
            outcome = run_orchestrator(handle, context_json(view, past, new))
            assert outcome.state.get("output") == tasks, outcome

        replay_s = best_of(5, replay)
        direct_s = best_of(5, lambda tasks=tasks: drive_directly(user_generator, tasks))
        print(f"{events:>8} {replay_s * 1000:>10.2f} {replay_s / events * 1e6:>9.1f} {direct_s * 1000:>10.3f} "
              f"{replay_s / direct_s:>7.0f}x")


def control_dsn_ready() -> str:
    from continuity.adapters.local.local_stack import LocalStack
    from continuity.adapters.postgres.connection import control_dsn
    from devhost.durable.store import prepare_database

    dsn = control_dsn()
    try:
        prepare_database(dsn)
    except ServerUnavailable:
        LocalStack().up_clusters()
        prepare_database(dsn)
    return dsn


def measure_fan_out(count: int, workers: int) -> None:
    dsn = control_dsn_ready()
    hub = f"Bench{uuid.uuid4().hex[:8]}"
    engine = DurableEngine(FUNCTIONS, dsn, "http://127.0.0.1:9", task_hub=hub,
                           activity_workers=workers)
    engine.start()
    try:
        instance_id = f"bench-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        status, _, body = engine.handle_management("POST", f"/runtime/webhooks/durabletask/orchestrators/"
                                                   f"bench_fan_out/{instance_id}", {}, json.dumps(count).encode(), {})
        assert status == 202, body
        while True:
            row = engine.store.get(instance_id)
            if row is not None and row.status in ("Completed", "Failed"):
                break
            time.sleep(0.01)
        engine_s = time.perf_counter() - started
        assert row.status == "Completed" and json.loads(row.output_text or "0") == count, row
        episodes = engine.episodes
        history_events = len(engine.store.history(instance_id))
        engine.store.purge(instance_id)
    finally:
        engine.stop()

    activity = DurableFunctions.from_functions(FUNCTIONS).activities["bench_noop"]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda i: run_activity(activity, "bench_noop", json.dumps(i)), range(count)))
    direct_s = time.perf_counter() - started
    assert len(results) == count
    print(f"\n{count}-way fan-out of no-op activities, {workers} activity workers")
    print(f"  engine (PostgreSQL task hub, {episodes} episodes, {history_events} history events): "
          f"{engine_s:.2f} s, {engine_s / count * 1000:.2f} ms/activity")
    print(f"  peer (same activities invoked directly in a {workers}-thread pool): {direct_s * 1000:.1f} ms")
    print(f"  ratio engine/peer: {engine_s / direct_s:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fan-out", type=int, default=1000, help="activities in the fan-out (default 1000)")
    parser.add_argument("--workers", type=int, default=4, help="activity workers (default 4)")
    args = parser.parse_args()
    measure_replay()
    measure_fan_out(args.fan_out, args.workers)


if __name__ == "__main__":
    main()
