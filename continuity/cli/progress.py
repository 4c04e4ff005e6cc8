"""Progress of long CLI work on a terminal (rich), and silence everywhere else.

The rule (:func:`shown`): a bar is drawn only when the command's output is for a person, i.e. stderr is a
terminal, ``--json`` is not set, ``TERM`` is not ``dumb`` and ``NO_COLOR``/``CONTINUITY_NO_PROGRESS`` do not
ask for quiet. Piped or under ``--json`` nothing extra is ever written: not to stdout (the results), not to
stderr (a log). The bar goes to stderr and is cleared when the work ends, so the result lines stay alone.

    with progress(args, "backup", total=len(tenants), unit="tenants") as bar:
        for tenant in tenants:
            bar.describe(f"backup {tenant.id}")
            ...
            bar.advance()
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Protocol


class Bar(Protocol):
    def advance(self, amount: float = 1) -> None: ...

    def describe(self, text: str) -> None: ...

    def total(self, total: float | None) -> None: ...


class Silent:
    """What a command gets when progress is not shown: every call does nothing."""

    def advance(self, amount: float = 1) -> None:
        return None

    def describe(self, text: str) -> None:
        return None

    def total(self, total: float | None) -> None:
        return None


class _Rich:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task, amount)

    def describe(self, text: str) -> None:
        self._progress.update(self._task, description=text)

    def total(self, total: float | None) -> None:
        self._progress.update(self._task, total=total)


def shown(args: argparse.Namespace | None, stream: IO[str] | None = None,
          environ: dict[str, str] | None = None) -> bool:
    """Whether progress is drawn: a terminal, no ``--json``, and no environment asking for quiet."""
    env = os.environ if environ is None else environ
    out = sys.stderr if stream is None else stream
    if getattr(args, "json", False):
        return False
    if env.get("TERM") == "dumb" or env.get("NO_COLOR") or env.get("CONTINUITY_NO_PROGRESS"):
        return False
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError):  # a closed or odd stream is not a terminal
        return False


@contextmanager
def progress(args: argparse.Namespace | None, description: str, *, total: float | None = None,
             unit: str = "items", stream: IO[str] | None = None) -> Iterator[Bar]:
    """A progress bar for the work inside the ``with`` (``total`` None: a spinner with elapsed time).

    :param unit: ``bytes`` shows sizes and transfer speed; anything else counts ``done/total unit``; both
        show the estimated time left once a total is known.
    """
    out = sys.stderr if stream is None else stream
    if not shown(args, out):
        yield Silent()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    counted: list[Any] = ([DownloadColumn(), TransferSpeedColumn()] if unit == "bytes"
                          else [MofNCompleteColumn(), TextColumn(unit)])
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), *counted, TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(file=out), transient=True) as bar:
        yield _Rich(bar, bar.add_task(description, total=total))
