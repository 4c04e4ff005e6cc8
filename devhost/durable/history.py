"""Durable Task Framework history events, in the JSON shape the extension hands to the Python SDK.

The extension serialises DTFx ``HistoryEvent`` objects with Newtonsoft defaults: PascalCase properties,
``EventType`` as the integer of ``DurableTask.Core.History.EventType``, ``EventId`` -1 except for the
events that schedule work (their id is the task's sequence number), ``Timestamp`` in ISO 8601 UTC.
``azure.durable_functions.models.history.HistoryEvent(**event)`` accepts exactly these.
"""

from __future__ import annotations

import datetime as dt
from enum import IntEnum
from typing import Any


class EventType(IntEnum):
    """``DurableTask.Core.History.EventType`` (same numbers as the SDK's ``HistoryEventType``)."""

    EXECUTION_STARTED = 0
    EXECUTION_COMPLETED = 1
    EXECUTION_FAILED = 2
    EXECUTION_TERMINATED = 3
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    SUB_ORCHESTRATION_INSTANCE_CREATED = 7
    SUB_ORCHESTRATION_INSTANCE_COMPLETED = 8
    SUB_ORCHESTRATION_INSTANCE_FAILED = 9
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13
    EVENT_SENT = 14
    EVENT_RAISED = 15
    CONTINUE_AS_NEW = 16


class OrchestrationStatus(IntEnum):
    """``DurableTask.Core.OrchestrationStatus``, used in ``ExecutionCompleted.OrchestrationStatus``."""

    RUNNING = 0
    COMPLETED = 1
    CONTINUED_AS_NEW = 2
    FAILED = 3
    CANCELED = 4
    TERMINATED = 5
    PENDING = 6


def utc_text(moment: dt.datetime) -> str:
    """ISO 8601 with microseconds and ``Z``: what .NET writes and ``dateutil`` parses to an aware UTC time."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(kind: EventType, at: dt.datetime, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    """One history event; ``IsPlayed`` is set when the event is handed to a replay."""
    return {"EventType": int(kind), "EventId": event_id, "IsPlayed": False, "Timestamp": utc_text(at), **fields}


def execution_started(at: dt.datetime, name: str, instance_id: str, execution_id: str, input_text: str | None,
                      parent: dict[str, Any] | None) -> dict[str, Any]:
    return event(EventType.EXECUTION_STARTED, at, Name=name, Version="", Input=input_text,
                 OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
                 ParentInstance=parent)


def orchestrator_started(at: dt.datetime) -> dict[str, Any]:
    return event(EventType.ORCHESTRATOR_STARTED, at)


def orchestrator_completed(at: dt.datetime) -> dict[str, Any]:
    return event(EventType.ORCHESTRATOR_COMPLETED, at)


def task_scheduled(at: dt.datetime, task_id: int, name: str, input_text: str | None) -> dict[str, Any]:
    return event(EventType.TASK_SCHEDULED, at, task_id, Name=name, Version="", Input=input_text)


def task_completed(at: dt.datetime, task_id: int, result_text: str | None) -> dict[str, Any]:
    return event(EventType.TASK_COMPLETED, at, TaskScheduledId=task_id, Result=result_text)


def task_failed(at: dt.datetime, task_id: int, reason: str, details: str) -> dict[str, Any]:
    return event(EventType.TASK_FAILED, at, TaskScheduledId=task_id, Reason=reason, Details=details)


def timer_created(at: dt.datetime, timer_id: int, fire_at: dt.datetime) -> dict[str, Any]:
    return event(EventType.TIMER_CREATED, at, timer_id, FireAt=utc_text(fire_at))


def timer_fired(at: dt.datetime, timer_id: int, fire_at: dt.datetime) -> dict[str, Any]:
    return event(EventType.TIMER_FIRED, at, TimerId=timer_id, FireAt=utc_text(fire_at))


def sub_orchestration_created(at: dt.datetime, task_id: int, name: str, instance_id: str,
                              input_text: str | None) -> dict[str, Any]:
    return event(EventType.SUB_ORCHESTRATION_INSTANCE_CREATED, at, task_id, Name=name, Version="",
                 InstanceId=instance_id, Input=input_text)


def sub_orchestration_completed(at: dt.datetime, task_id: int, result_text: str | None) -> dict[str, Any]:
    return event(EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED, at, TaskScheduledId=task_id, Result=result_text)


def sub_orchestration_failed(at: dt.datetime, task_id: int, reason: str, details: str) -> dict[str, Any]:
    return event(EventType.SUB_ORCHESTRATION_INSTANCE_FAILED, at, TaskScheduledId=task_id, Reason=reason,
                 Details=details)


def event_raised(at: dt.datetime, name: str, input_text: str | None) -> dict[str, Any]:
    return event(EventType.EVENT_RAISED, at, Name=name, Input=input_text)


def execution_completed(at: dt.datetime, status: OrchestrationStatus, result_text: str | None,
                        details: str | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"OrchestrationStatus": int(status), "Result": result_text}
    if details:
        fields["FailureDetails"] = {"ErrorMessage": result_text, "StackTrace": details}
    return event(EventType.EXECUTION_COMPLETED, at, **fields)


def execution_terminated(at: dt.datetime, reason: str | None) -> dict[str, Any]:
    return event(EventType.EXECUTION_TERMINATED, at, Input=reason)


def parse_utc(text: str) -> dt.datetime:
    """Parse the SDK's ``fireAt`` (``%Y-%m-%dT%H:%M:%S.%fZ``) or any ISO 8601 text to an aware UTC time."""
    cleaned = text.strip()
    if cleaned.endswith("Z"):
        cleaned = cleaned[:-1] + "+00:00"
    moment = dt.datetime.fromisoformat(cleaned)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)
