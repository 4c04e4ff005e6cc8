"""The backup timer: ``%CONTINUITY_BACKUP_SCHEDULE%`` starts ``scheduled_backups`` as ``backups-YYYYMMDDHHMM``
(one instance per slot: a second firing in the same minute starts nothing)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from continuity.kernel import settings
from triggers.common import start_once

logger = logging.getLogger(__name__)

bp = df.Blueprint()

# Backups taken at once by one tick (dumps and base backups).
PARALLELISM = 2


def backup_input() -> dict[str, Any]:
    """The orchestration's settings (it reads no environment): the backup incident's retries, reused when a
    recovery chain breaks."""
    return {"parallelism": PARALLELISM,
            "max_attempts": settings.get_int("CONTINUITY_INCIDENT_RETRY_ATTEMPTS"),
            "first_retry_seconds": settings.get_int("CONTINUITY_INCIDENT_FIRST_RETRY_SECONDS")}


@bp.timer_trigger(schedule="%CONTINUITY_BACKUP_SCHEDULE%", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def scheduled_backups_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    instance = f"backups-{datetime.now(UTC):%Y%m%d%H%M}"
    started = await start_once(client, "scheduled_backups", instance, backup_input())
    logger.info("scheduled backups %s", "started" if started else "already started for this slot",
                extra={"run_id": instance})
