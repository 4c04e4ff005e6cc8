"""The devhost's Durable Functions engine: what the host shell starts beside its HTTP server.

Two dispatcher threads serve one task hub. The orchestration dispatcher takes every instance with due
messages, replays it through the SDK (``replay``) and commits the episode (``store``); the activity
dispatcher claims work items and runs them in a bounded pool, committing each result as a message.
Both also poll the database, so timers fire on time and work left by a killed devhost is picked up.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from devhost.durable import history as h
from devhost.durable.invoke import ActivityFailure, DurableFunctions, run_activity, run_orchestrator
from devhost.durable.management import ManagementApi, client_binding, status_payload
from devhost.durable.replay import Episode, EpisodeBuilder, InstanceView, Message, context_json
from devhost.durable.store import TaskHubStore, WorkItem, prepare_database

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
RETRY_AFTER_ERROR_SECONDS = 1.0
# After an episode, the same instance waits as long as that replay took (at most this long), so that
# results arriving meanwhile are batched into one replay and activities get the CPU half of the time.
MAX_EPISODE_SPACING_SECONDS = 0.5
# Work items claimed ahead of the pool (they queue in it; at most ``activity_workers`` run at once), so that
# one claim query feeds many activities. Claims die with the process and are released on the next start.
PREFETCH_PER_WORKER = 16


class DurableEngine:
    """Runs the orchestrators and activities of ``functions`` on a PostgreSQL task hub."""

    def __init__(self, functions: list[Any], dsn: str, base_url: str, task_hub: str = "ContinuityHub",
                 activity_workers: int = 4) -> None:
        if activity_workers < 1:
            raise ValueError("activity_workers must be at least 1")
        self.functions = DurableFunctions.from_functions(functions)
        self.dsn = dsn
        self.base_url = base_url.rstrip("/")
        self.task_hub = task_hub
        self.activity_workers = activity_workers
        self.store = TaskHubStore(dsn, task_hub, pool_size=activity_workers + 6)
        self.api = ManagementApi(self.store, self.base_url, task_hub, set(self.functions.orchestrators),
                                 self._wake_orchestrations)
        self._stopping = threading.Event()
        self._orchestration_signal = threading.Event()
        self._activity_signal = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._backoff: dict[str, float] = {}
        self._results: queue.Queue[tuple[WorkItem, dict[str, Any]]] = queue.Queue()
        self.episodes = 0

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Create the task hub if needed, take it over, and start dispatching (unfinished work resumes)."""
        prepare_database(self.dsn)
        self.store.acquire()
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(max_workers=self.activity_workers, thread_name_prefix="durable-activity")
        self._threads = [
            threading.Thread(target=self._orchestration_loop, name="durable-orchestrations", daemon=True),
            threading.Thread(target=self._activity_loop, name="durable-activities", daemon=True),
            threading.Thread(target=self._commit_loop, name="durable-results", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        logger.info("durable engine serving task hub %s", self.task_hub)

    def stop(self) -> None:
        self._stopping.set()
        self._orchestration_signal.set()
        self._activity_signal.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.store.release()

    # ---- interface for the host shell ------------------------------------------------------
    def client_binding_json(self) -> str:
        return json.dumps(client_binding(self.base_url, self.task_hub))

    def handle_management(self, method: str, path: str, query: Mapping[str, list[str] | str], body: bytes,
                          headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        return self.api.handle(method, path, query, body, headers)

    def running_instances(self) -> list[dict[str, Any]]:
        return [status_payload(row, show_input=False) for row in self.store.list_instances(["Pending", "Running"])]

    # ---- orchestrations --------------------------------------------------------------------
    def _wake_orchestrations(self) -> None:
        self._orchestration_signal.set()

    def _orchestration_loop(self) -> None:
        while not self._stopping.is_set():
            self._orchestration_signal.clear()
            try:
                worked = self._dispatch_orchestrations()
            except Exception:  # noqa: BLE001 - the dispatcher must survive a database hiccup; it retries
                logger.exception("orchestration dispatch failed; retrying")
                worked = False
            if worked:
                continue
            self._orchestration_signal.wait(self._idle_wait())

    def _idle_wait(self) -> float:
        waits = [POLL_SECONDS]
        deferred = [t for t in self._backoff.values() if t > time.monotonic()]
        if deferred:
            waits.append(min(deferred) - time.monotonic())
        try:
            due = self.store.next_due()
        except Exception:  # noqa: BLE001 - an unreachable database means: look again soon
            due = None
        if due is not None:
            until_due = (due - dt.datetime.now(dt.UTC)).total_seconds()
            if until_due > 0 or not deferred:
                waits.append(until_due)
        return max(0.0, min(waits))

    def _dispatch_orchestrations(self) -> bool:
        now = dt.datetime.now(dt.UTC)
        worked = False
        for instance_id in self.store.ready_instances(now):
            if self._stopping.is_set():
                break
            if self._backoff.get(instance_id, 0.0) > time.monotonic():
                continue
            started = time.monotonic()
            try:
                if self.store.run_episode(instance_id, dt.datetime.now(dt.UTC), self._decide):
                    worked = True
                spent = time.monotonic() - started
                self._backoff[instance_id] = time.monotonic() + min(spent, MAX_EPISODE_SPACING_SECONDS)
            except Exception:  # noqa: BLE001 - one broken instance must not stop the others; it is retried
                logger.exception("episode of %s failed; retrying in %.0fs", instance_id, RETRY_AFTER_ERROR_SECONDS)
                self._backoff[instance_id] = time.monotonic() + RETRY_AFTER_ERROR_SECONDS
        expired = [k for k, t in self._backoff.items() if t <= time.monotonic()]
        for key in expired:
            del self._backoff[key]
        if worked:
            self._activity_signal.set()
        return worked

    def _decide(self, view: InstanceView, past: list[str], messages: list[Message]) -> Episode | None:
        now = dt.datetime.now(dt.UTC)
        builder = EpisodeBuilder(view, now)
        builder.deliver(messages)
        if not builder.delivered:
            return None
        if not past and builder.delivered[0]["EventType"] != h.EventType.EXECUTION_STARTED:
            return None
        handle = self.functions.orchestrators.get(view.name)
        if handle is None:
            from devhost.durable.invoke import OrchestratorOutcome

            outcome = OrchestratorOutcome(state={}, error=f"no orchestrator function named {view.name!r} in this app")
        else:
            sdk_events = [h.orchestrator_started(now), *builder.delivered]
            outcome = run_orchestrator(handle, context_json(view, past, sdk_events))
        episode = builder.apply(outcome, set(self.functions.orchestrators))
        self.episodes += 1
        if episode.runtime_status in ("Completed", "Failed"):
            logger.info("orchestration %s (%s) %s", view.instance_id, view.name, episode.runtime_status.lower())
        return episode

    # ---- activities ------------------------------------------------------------------------
    def _activity_loop(self) -> None:
        target = self.activity_workers * PREFETCH_PER_WORKER
        while not self._stopping.is_set():
            self._activity_signal.clear()
            with self._in_flight_lock:
                in_flight = self._in_flight
            claimed: list[WorkItem] = []
            if in_flight <= target // 2:
                try:
                    claimed = self.store.claim_work(target - in_flight)
                except Exception:  # noqa: BLE001 - the dispatcher must survive a database hiccup; it retries
                    logger.exception("claiming activity work failed; retrying")
            for item in claimed:
                with self._in_flight_lock:
                    self._in_flight += 1
                assert self._pool is not None
                self._pool.submit(self._run_activity, item)
            self._activity_signal.wait(POLL_SECONDS)

    def _run_activity(self, item: WorkItem) -> None:
        try:
            function = self.functions.activities.get(item.name)
            now = dt.datetime.now(dt.UTC)
            if function is None:
                event = h.task_failed(now, item.task_id, f"The function '{item.name}' doesn't exist, is disabled, "
                                      "or is not an activity function.", "")
            else:
                try:
                    result = run_activity(function, item.name, item.input_text)
                    event = h.task_completed(dt.datetime.now(dt.UTC), item.task_id, result)
                except ActivityFailure as failure:
                    event = h.task_failed(dt.datetime.now(dt.UTC), item.task_id, failure.reason, failure.details)
            if self._stopping.is_set():
                return  # not committed: the next start runs it again (at-least-once)
            self._results.put((item, event))
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
            self._activity_signal.set()

    def _commit_loop(self) -> None:
        """Commit finished activities' results in batches: one transaction (one fsync) for many results."""
        while True:
            try:
                first = self._results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            batch = [first]
            while len(batch) < 500:
                try:
                    batch.append(self._results.get_nowait())
                except queue.Empty:
                    break
            try:
                self.store.complete_work(batch)
            except Exception:  # noqa: BLE001 - the work items stay claimed; the next start runs them again
                logger.exception("recording %d activity results failed", len(batch))
            self._orchestration_signal.set()
