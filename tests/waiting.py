"""The one way tests wait: poll the real condition until a deadline, never sleep a fixed time to order events."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``predicate()`` until it returns something truthy and return that value.

    The deadline only bounds a hang: a condition that is met returns at once, however loaded the machine.
    ``predicate`` may raise ``AssertionError`` to fail early (a process it waits on died, say).

    :param what: the awaited condition in words, for the failure message.
    :raises AssertionError: naming ``what`` and the last value seen, when the deadline passes first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {timeout:g}s (last seen: {value!r:.2000})")
        time.sleep(interval)
