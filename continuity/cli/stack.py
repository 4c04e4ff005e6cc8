"""The whole local stack as `continuity local up|down|status` runs it: clusters, Azurite, then the devhost.

The adapter (:class:`continuity.adapters.local.local_stack.LocalStack`) brings up the counterparts of the
Azure services; starting the local Functions host is the CLI's job, so no adapter depends on the host.
"""

from __future__ import annotations

import logging

from continuity.adapters.local.local_stack import LocalStack, StackStatus
from continuity.kernel.errors import ContinuityError
from devhost import process

logger = logging.getLogger(__name__)


def status(stack: LocalStack, devhost_error: str = "") -> StackStatus:
    """Each part's health; ``devhost_error`` says why the devhost is down when the last start failed."""
    current = stack.status()
    current.devhost = process.status(stack.settings.devhost_port)
    if devhost_error and not current.devhost["healthy"]:
        current.devhost["detail"] = devhost_error
    return current


def up(stack: LocalStack) -> StackStatus:
    """Clusters, Azurite and containers, then the devhost last: its failure shows in the status instead of
    hiding the rest."""
    stack.up()
    error = ""
    try:
        process.start()
    except ContinuityError as exc:
        error = str(exc)
        logger.error("devhost did not start: %s", exc)
    return status(stack, error)


def down(stack: LocalStack) -> None:
    """The devhost first (it holds connections to the control cluster), then Azurite and the clusters."""
    process.stop()
    stack.down()


def remove(stack: LocalStack) -> None:
    """Stop everything and delete the stack's files."""
    down(stack)
    stack.delete_files()
