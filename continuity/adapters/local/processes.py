"""Processes: pid files and stopping a whole group (Azurite, the devhost), and :func:`spawn`, the one way an
adapter starts a subprocess so that it dies with its host."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


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


# ---- children that die with their host ---------------------------------------------------------

_PR_SET_PDEATHSIG = 1
# The supervisor every spawned command runs under, as its process-group leader: when its host dies the kernel
# sends it SIGTERM (parent-death signal), and it SIGKILLs its whole group: the command and everything the
# command forked (pg_basebackup's WAL streamer, pg_restore --jobs workers), which no parent-death signal
# reaches since it is cleared across fork. Otherwise it waits for the command and exits with its status.
# stdin goes through fd 3: a background job of a non-interactive shell gets /dev/null as its stdin.
SUPERVISOR = 'exec 3<&0; trap "kill -KILL 0" TERM; "$@" <&3 3<&- & exec 3<&-; wait "$!"'


def _die_with(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn``: SIGTERM when the thread that started the child dies (Linux ``prctl``).

    Runs in the child after ``setsid`` and after any uid/gid change (``Popen`` calls ``preexec_fn`` last),
    so a credential change cannot clear it. If the parent died between ``fork`` and ``prctl``, the signal
    would never come: the child then kills itself before ``exec``.
    """

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
                os._exit(127)  # never run a child that could outlive its host
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def spawn(args: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """Start a command that dies with its host, together with everything it forks.

    The command runs under :data:`SUPERVISOR` (``/bin/sh``), the leader of a new process group: a deadline
    kills the group with :func:`kill_group`, and when the host dies, even by SIGKILL, the kernel's
    parent-death signal makes the supervisor SIGKILL the group. Every long subprocess of an adapter
    (``pg_dump``, ``pg_restore``, ``pg_basebackup``, ``pg_ctl``, ``barman-cloud-*``) starts here. The
    "parent" is the thread that called this (Linux ``prctl`` semantics): call it from a thread that waits
    for the child, as every caller does. What the command daemonises into a session of its own (the
    ``postgres`` that ``pg_ctl start`` leaves running) is meant to outlive the step and is not covered.

    ``returncode`` is the command's; a command killed by signal N reports 128+N (the shell's convention).

    :param popen: any :class:`subprocess.Popen` keyword except ``preexec_fn`` and ``start_new_session``.
    """
    if "preexec_fn" in popen or "start_new_session" in popen:
        raise ValueError("spawn() sets preexec_fn and start_new_session itself")
    return subprocess.Popen(["/bin/sh", "-c", SUPERVISOR, "continuity-supervisor", *args],
                            preexec_fn=_die_with(os.getpid()),  # noqa: PLW1509 - prctl must run in the child
                            start_new_session=True, **popen)


def run(args: Sequence[str], *, timeout: float, input: Any = None,  # noqa: A002 - subprocess.run's name
        **popen: Any) -> subprocess.CompletedProcess[Any]:
    """:func:`subprocess.run` through :func:`spawn`: output captured, the whole group killed at ``timeout``.

    :raises subprocess.TimeoutExpired: the deadline passed (the group is killed first).
    """
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    with spawn(args, **popen) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            proc.communicate()
            raise
        except BaseException:
            kill_group(proc)
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL a child started by :func:`spawn` and everything in its process group; a no-op when gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _cmdline(pid: str) -> str | None:
    """A live (not zombie) process's command line; None when gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return None


def processes_naming(text: str) -> list[int]:
    """Live processes whose command line names ``text`` (a run's own folder); empty where /proc is missing."""
    own = str(os.getpid())
    with contextlib.suppress(FileNotFoundError):
        return [int(p.name) for p in Path("/proc").iterdir()
                if p.name.isdigit() and p.name != own and text in (_cmdline(p.name) or "")]
    return []


def kill_processes_naming(text: str, timeout: float = 10) -> list[int]:
    """SIGKILL what an earlier attempt left running in a run's folder (a forked ``pg_basebackup -X stream``
    WAL streamer outlives its leader by a moment: no parent-death signal crosses ``fork``), and wait
    until it is gone, so the folder can be deleted and reused safely. Returns the pids killed."""
    victims = processes_naming(text)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(_cmdline(str(pid)) is not None for pid in victims) and time.monotonic() < deadline:
        time.sleep(0.05)
    return victims
