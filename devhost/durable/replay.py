"""One orchestration episode, decided without I/O: new events in, history and work to schedule out.

How task ids line up with the SDK. The SDK numbers tasks itself while it replays: every activity, timer
and sub-orchestration gets the next sequence number when the generator yields it, and a ``*_with_retry``
task takes one more number for the retry timer after each failure and one more for each re-attempt
(``RetryAbleTask`` mirrors DTFx's retry interceptor, including the extra timer after the last attempt).
Completion events must name those numbers. This module keeps the same counter in ``EngineState``:
within an episode, events that make the SDK allocate a retry number are placed before every other new
event, so the SDK allocates, in order, first the retry numbers and then the numbers of the new actions it
reports; both orders are known here. Replays of older episodes allocate the same numbers again because
their history is fixed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from devhost.durable import history as h
from devhost.durable.history import EventType
from devhost.durable.invoke import OrchestratorOutcome

# azure.durable_functions.models.actions.ActionType
CALL_ACTIVITY = 0
CALL_ACTIVITY_WITH_RETRY = 1
CALL_SUB_ORCHESTRATOR = 2
CALL_SUB_ORCHESTRATOR_WITH_RETRY = 3
CONTINUE_AS_NEW = 4
CREATE_TIMER = 5
WAIT_FOR_EXTERNAL_EVENT = 6
CALL_ENTITY = 7
CALL_HTTP = 8
SIGNAL_ENTITY = 9
UNSUPPORTED_ACTIONS = {CALL_ENTITY: "call_entity", CALL_HTTP: "call_http", SIGNAL_ENTITY: "signal_entity"}

COMPLETION_TYPES = {EventType.TASK_COMPLETED, EventType.TASK_FAILED, EventType.TIMER_FIRED,
                    EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED, EventType.SUB_ORCHESTRATION_INSTANCE_FAILED}
FAILURE_TYPES = {EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_INSTANCE_FAILED}

# The extension hands the SDK these schema versions (OrchestrationTriggerAttributeBindingProvider); the SDK
# settles on its newest (V3). No long-timer settings are passed, as for the DTS and MSSQL backends.
UPPER_SCHEMA_VERSION = 1
UPPER_SCHEMA_VERSION_NEW = 3


@dataclass
class Message:
    """A message for an instance: a history event waiting to be delivered."""

    id: int
    event: dict[str, Any]


@dataclass
class InstanceView:
    instance_id: str
    name: str
    execution_id: str
    input_text: str | None
    parent_instance_id: str | None
    state: dict[str, Any]


@dataclass
class ActivityWork:
    task_id: int
    name: str
    input_text: str | None


@dataclass
class TimerWork:
    timer_id: int
    fire_at: dt.datetime


@dataclass
class SubOrchestrationWork:
    task_id: int
    name: str
    instance_id: str
    input_text: str | None


@dataclass
class Episode:
    """The decision of one episode; the store commits all of it in one transaction."""

    new_events: list[dict[str, Any]]
    state: dict[str, Any]
    runtime_status: str  # Running | Completed | Failed
    output_text: str | None = None
    custom_status_text: str | None = None
    failure_details: str | None = None
    continue_as_new_input: str | None = None
    continue_as_new: bool = False
    activities: list[ActivityWork] = field(default_factory=list)
    timers: list[TimerWork] = field(default_factory=list)
    cancelled_timers: list[int] = field(default_factory=list)
    sub_orchestrations: list[SubOrchestrationWork] = field(default_factory=list)
    delivered: int = 0


def new_state() -> dict[str, Any]:
    """Engine bookkeeping for one execution: the SDK's next sequence number, the actions seen so far,
    the tasks awaiting a completion event and the retry chains in flight."""
    return {"next_seq": 0, "actions": [], "open": {}, "chains": {}}


def completion_id(event: dict[str, Any]) -> int | None:
    kind = event["EventType"]
    if kind == EventType.TIMER_FIRED:
        return int(event["TimerId"])
    if kind in COMPLETION_TYPES:
        return int(event["TaskScheduledId"])
    return None


def flatten_actions(actions: list[Any]) -> list[dict[str, Any]]:
    """The atomic actions of an OrchestratorState in the order the SDK created their tasks."""
    flat: list[dict[str, Any]] = []

    def walk(item: Any) -> None:
        if isinstance(item, list):
            for child in item:
                walk(child)
        elif isinstance(item, dict):
            if "compoundActions" in item:
                walk(item["compoundActions"])
            else:
                flat.append(item)

    walk(actions)
    return flat


def action_signature(action: dict[str, Any]) -> str:
    name = action.get("functionName") or action.get("externalEventName") or ""
    return f"{action.get('actionType')}:{name}"


def retry_delay(chain: dict[str, Any]) -> dt.timedelta:
    """DTFx ``RetryOptions``: first interval times the backoff coefficient per earlier failure, capped."""
    failures = max(int(chain["attempt"]), 1)
    millis = float(chain["first_ms"]) * float(chain.get("backoff", 1.0)) ** (failures - 1)
    if chain.get("max_interval_ms"):
        millis = min(millis, float(chain["max_interval_ms"]))
    return dt.timedelta(milliseconds=millis)


def context_json(view: InstanceView, past: list[str], new_events: list[dict[str, Any]]) -> str:
    """The orchestration trigger's context as the extension serialises it (past events already played)."""
    new_texts = [json.dumps(e) for e in new_events]
    head = json.dumps({
        "input": view.input_text,
        "instanceId": view.instance_id,
        "isReplaying": bool(past),
        "parentInstanceId": view.parent_instance_id,
        "upperSchemaVersion": UPPER_SCHEMA_VERSION,
        "upperSchemaVersionNew": UPPER_SCHEMA_VERSION_NEW,
    })
    return '{"history": [' + ",".join([*past, *new_texts]) + "], " + head[1:]


class EpisodeBuilder:
    """Decides one episode: which messages to deliver, then what the SDK's answer schedules."""

    def __init__(self, view: InstanceView, now: dt.datetime) -> None:
        self.view = view
        self.now = now
        self.state = json.loads(json.dumps(view.state)) if view.state else new_state()
        self.delivered: list[dict[str, Any]] = []
        self.scheduling: list[dict[str, Any]] = []
        self.episode = Episode(new_events=[], state=self.state, runtime_status="Running")

    def _alloc(self) -> int:
        task_id = int(self.state["next_seq"])
        self.state["next_seq"] = task_id + 1
        return task_id

    # ---- delivering messages ---------------------------------------------------------------
    def _allocates_retry_number(self, event: dict[str, Any]) -> bool:
        task_id = completion_id(event)
        info = self.state["open"].get(str(task_id)) if task_id is not None else None
        if not info or not info.get("chain"):
            return False
        if event["EventType"] in FAILURE_TYPES:
            return True
        chain = self.state["chains"][info["chain"]]
        return info["kind"] == "retry_timer" and int(chain["attempt"]) < int(chain["max"])

    def deliver(self, messages: list[Message]) -> None:
        """Choose and order the events of this episode; drop duplicates and completions nobody awaits."""
        def rank(message: Message) -> tuple[int, int]:
            kind = message.event["EventType"]
            if kind == EventType.EXECUTION_STARTED:
                return (0, message.id)
            if kind in COMPLETION_TYPES and self._allocates_retry_number(message.event):
                return (1, message.id)
            return (2, message.id)

        for message in sorted(messages, key=rank):
            event = message.event
            kind = event["EventType"]
            task_id = completion_id(event)
            if task_id is not None:
                info = self.state["open"].pop(str(task_id), None)
                if info is None:
                    continue  # a duplicate, a cancelled timer, or a stale completion: the SDK awaits nothing
                self.delivered.append(event)
                if info.get("chain"):
                    self._advance_chain(info, event)
            elif kind in (EventType.EXECUTION_STARTED, EventType.EVENT_RAISED):
                self.delivered.append(event)

    def _advance_chain(self, info: dict[str, Any], event: dict[str, Any]) -> None:
        key = info["chain"]
        chain = self.state["chains"][key]
        if info["kind"] == "retry_timer":
            if int(chain["attempt"]) < int(chain["max"]):
                chain["attempt"] = int(chain["attempt"]) + 1
                self._schedule_attempt(chain, key, self._alloc())
            else:
                del self.state["chains"][key]
        elif event["EventType"] in FAILURE_TYPES:
            timer_id = self._alloc()
            fire_at = self.now + retry_delay(chain)
            self.state["open"][str(timer_id)] = {"kind": "retry_timer", "chain": key}
            self.episode.timers.append(TimerWork(timer_id, fire_at))
            self.scheduling.append(h.timer_created(self.now, timer_id, fire_at))
        else:
            del self.state["chains"][key]

    def _schedule_attempt(self, chain: dict[str, Any], key: str, task_id: int) -> None:
        if chain["kind"] == "activity":
            self._schedule_activity(task_id, chain["name"], chain["input"], key)
        else:
            instance_id = chain.get("instance_id") or f"{self.view.instance_id}:{task_id}"
            self._schedule_sub_orchestration(task_id, chain["name"], instance_id, chain["input"], key)

    def _schedule_activity(self, task_id: int, name: str, input_text: str | None, chain: str | None) -> None:
        self.state["open"][str(task_id)] = {"kind": "activity", "chain": chain}
        self.episode.activities.append(ActivityWork(task_id, name, input_text))
        self.scheduling.append(h.task_scheduled(self.now, task_id, name, input_text))

    def _schedule_sub_orchestration(self, task_id: int, name: str, instance_id: str, input_text: str | None,
                                    chain: str | None) -> None:
        self.state["open"][str(task_id)] = {"kind": "suborchestration", "chain": chain}
        self.episode.sub_orchestrations.append(SubOrchestrationWork(task_id, name, instance_id, input_text))
        self.scheduling.append(h.sub_orchestration_created(self.now, task_id, name, instance_id, input_text))

    # ---- applying the SDK's answer -----------------------------------------------------------
    def _fail(self, message: str, details: str | None = None) -> None:
        self.episode.runtime_status = "Failed"
        self.episode.output_text = json.dumps(message)
        self.episode.failure_details = details

    def apply(self, outcome: OrchestratorOutcome, orchestrators: set[str]) -> Episode:
        state_json = outcome.state
        custom = state_json.get("customStatus")
        self.episode.custom_status_text = json.dumps(custom) if custom is not None else None
        if outcome.error is not None:
            self._fail(f"Orchestrator function '{self.view.name}' failed: {outcome.error}", outcome.details)
            return self._finish()
        seen: list[list[Any]] = self.state["actions"]
        continue_as_new: dict[str, Any] | None = None
        for index, action in enumerate(flatten_actions(state_json.get("actions") or [])):
            signature = action_signature(action)
            kind = int(action.get("actionType", -1))
            if index < len(seen):
                if seen[index][0] != signature:
                    self._fail(f"Non-deterministic orchestrator '{self.view.name}': action {index} was "
                               f"{seen[index][0]!r} in the history but the replay produced {signature!r}; "
                               "orchestrators must not depend on time, randomness, settings or I/O")
                    return self._finish()
                task_id = seen[index][1]
                if kind == CREATE_TIMER and action.get("isCanceled") and self.state["open"].pop(str(task_id), None):
                    self.episode.cancelled_timers.append(int(task_id))
                if kind == CONTINUE_AS_NEW:
                    continue_as_new = action
                continue
            if kind in UNSUPPORTED_ACTIONS:
                self._fail(f"Orchestrator function '{self.view.name}' used {UNSUPPORTED_ACTIONS[kind]}, which "
                           "the devhost's durable engine does not support")
                return self._finish()
            if kind == WAIT_FOR_EXTERNAL_EVENT:
                seen.append([signature, None])
                continue
            if kind == CONTINUE_AS_NEW:
                seen.append([signature, self._alloc()])
                continue_as_new = action
                continue
            task_id = self._alloc()
            seen.append([signature, task_id])
            self._schedule_new(action, kind, task_id, orchestrators)
            if self.episode.runtime_status == "Failed":
                return self._finish()
        if state_json.get("isDone"):
            if continue_as_new is not None:
                self.episode.continue_as_new = True
                self.episode.continue_as_new_input = continue_as_new.get("input")
            else:
                self.episode.runtime_status = "Completed"
                self.episode.output_text = json.dumps(state_json.get("output"))
        return self._finish()

    def _schedule_new(self, action: dict[str, Any], kind: int, task_id: int, orchestrators: set[str]) -> None:
        name = action.get("functionName", "")
        input_text = action.get("input")
        if kind == CREATE_TIMER:
            fire_at = h.parse_utc(action["fireAt"])
            if not action.get("isCanceled"):
                self.state["open"][str(task_id)] = {"kind": "timer", "chain": None}
                self.episode.timers.append(TimerWork(task_id, fire_at))
            self.scheduling.append(h.timer_created(self.now, task_id, fire_at))
            return
        chain: str | None = None
        if kind in (CALL_ACTIVITY_WITH_RETRY, CALL_SUB_ORCHESTRATOR_WITH_RETRY):
            options = action.get("retryOptions") or {}
            chain = str(task_id)
            self.state["chains"][chain] = {
                "kind": "activity" if kind == CALL_ACTIVITY_WITH_RETRY else "suborchestration",
                "name": name, "input": input_text, "instance_id": action.get("instanceId"), "attempt": 1,
                "first_ms": int(options.get("firstRetryIntervalInMilliseconds", 1000)),
                "max": int(options.get("maxNumberOfAttempts", 1)),
                "backoff": float(options.get("backoffCoefficient", 1.0)),
                "max_interval_ms": options.get("maxRetryIntervalInMilliseconds"),
            }
        if kind in (CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY):
            self._schedule_activity(task_id, name, input_text, chain)
        elif kind in (CALL_SUB_ORCHESTRATOR, CALL_SUB_ORCHESTRATOR_WITH_RETRY):
            if name not in orchestrators:
                self._fail(f"Orchestrator function '{self.view.name}' called sub-orchestrator '{name}', which is not "
                           "an orchestrator function of this app")
                return
            instance_id = action.get("instanceId") or f"{self.view.instance_id}:{task_id}"
            self._schedule_sub_orchestration(task_id, name, instance_id, input_text, chain)

    def _finish(self) -> Episode:
        events = [h.orchestrator_started(self.now), *self.delivered]
        done = self.episode.runtime_status in ("Completed", "Failed")
        if not done:
            events.extend(self.scheduling)
        else:
            self.episode.activities.clear()
            self.episode.timers.clear()
            self.episode.sub_orchestrations.clear()
        events.append(h.orchestrator_completed(self.now))
        if self.episode.runtime_status == "Completed":
            events.append(h.execution_completed(self.now, h.OrchestrationStatus.COMPLETED, self.episode.output_text))
        elif self.episode.runtime_status == "Failed":
            events.append(h.execution_completed(self.now, h.OrchestrationStatus.FAILED, self.episode.output_text,
                                                self.episode.failure_details))
        elif self.episode.continue_as_new:
            events.append(h.event(EventType.CONTINUE_AS_NEW, self.now, Result=self.episode.continue_as_new_input))
        self.episode.new_events = events
        self.episode.delivered = len(self.delivered)
        return self.episode
