"""Background processes of the local stack (Azurite, the devhost): pid files and stopping a whole group."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def live_pid(pidfile: Path) -> int | None:
    """The pid the file names (its first word) when that process is alive, else None."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def _alive_or_zombie(pid: int) -> bool:
    """Reaps ``pid`` when it is our exited child, so a zombie does not count as alive."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def stop_group(pid: int, timeout: float = 10) -> None:
    """Stop a process started in its own session and everything it started: TERM, then KILL after ``timeout``."""
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive_or_zombie(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    # Reap it when we are its parent, so no zombie is left either.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
