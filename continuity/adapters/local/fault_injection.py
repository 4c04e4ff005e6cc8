"""Fault injection for drills and crash tests: hold a workflow at a named point so a test can kill the host there.

``CONTINUITY_FAILOVER_STEP_PAUSE=fence:5,recovery.swap-mid:6`` sleeps 5 s at the point ``fence`` and 6 s at
``recovery.swap-mid``. Empty (the default) in every real deployment: then this is a no-op.
"""

from __future__ import annotations

import logging
import time

from continuity.kernel import settings

logger = logging.getLogger(__name__)


def pause_at(point: str) -> None:
    """Sleep as long as the setting asks at ``point``; return at once when it names no such point."""
    for part in settings.get("CONTINUITY_FAILOVER_STEP_PAUSE").split(","):
        name, _, seconds = part.partition(":")
        if name.strip() == point and seconds.strip():
            logger.warning("pausing for fault injection", extra={"point": point})
            time.sleep(float(seconds))
