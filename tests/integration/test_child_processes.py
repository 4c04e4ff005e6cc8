"""Children an adapter starts die with their host: a real python parent starts a long ``pg_restore`` through
:func:`continuity.adapters.local.processes.spawn`, is killed with SIGKILL, and the child goes too. And the
run folders: an earlier attempt's files are removed, a stranger's folder is refused, the sweeper takes only
marked, stale ones."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from continuity.adapters.local.run_folders import (
    LeftoverNotOurs,
    create_marked,
    folder_name,
    open_run_folder,
    sweep_run_folders,
    write_marker,
)
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]

# The host: starts pg_restore reading a FIFO nobody writes to (it blocks for ever), reports its pid, waits.
PARENT = """
import sys
from continuity.adapters.local.processes import spawn
from continuity.adapters.tools import pgbin
user = int(sys.argv[2]) if len(sys.argv) > 2 else None
proc = spawn([pgbin.tool("pg_restore"), "--list", sys.argv[1]], **({"user": user} if user is not None else {}))
print(proc.pid, flush=True)
proc.wait()
"""


def stat_of(pid: str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...); None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def group(pgid: int) -> dict[int, str]:
    """Live (not zombie) members of process group ``pgid``: pid -> command line."""
    members: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        fields = stat_of(entry.name) if entry.name.isdigit() else None
        if fields is None or fields[0] in ("Z", "X") or int(fields[2]) != pgid:
            continue
        try:
            members[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return members


@pytest.fixture()
def fifo() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="continuity-fifo-"))
    os.chmod(folder, 0o755)  # the child may run as another user
    path = folder / "dump.fifo"
    os.mkfifo(path, 0o666)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


def other_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    return [str(pwd.getpwnam("nobody").pw_uid)]


@pytest.mark.parametrize("as_other_user", [False, True], ids=["same-user", "after-setuid"])
def test_pg_restore_child_dies_when_its_parent_is_sigkilled(fifo: Path, as_other_user: bool) -> None:
    extra = other_user() if as_other_user else []
    if as_other_user and not extra:
        pytest.skip("changing the child's user needs root")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(fifo), *extra], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    try:
        assert parent.stdout is not None
        leader = int(parent.stdout.readline())  # the child's process group: the command and what it forks
        wait_until(lambda: any("pg_restore --list" in c for c in group(leader).values()), timeout=10,
                   what="pg_restore blocked on the FIFO")
        # Its own process group: a killpg of the host's group would not reach it, only the parent-death signal.
        assert leader != os.getpgid(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        wait_until(lambda: group(leader) == {}, timeout=10, what=f"process group {leader} gone after the host's "
                   "SIGKILL", interval=0.05)
    finally:
        if parent.poll() is None:
            os.kill(parent.pid, signal.SIGKILL)
            parent.wait(timeout=10)


def test_run_folder_of_an_earlier_attempt_is_emptied_and_a_strangers_is_refused(tmp_path: Path) -> None:
    first = open_run_folder("run-1", "stage", root=tmp_path)
    (first.path / "db.dump").write_bytes(b"tenant data")
    again = open_run_folder("run-1", "stage", root=tmp_path)  # the redelivered step after a crash
    assert again.path == first.path and [p.name for p in again.path.iterdir()] == [".continuity-run.json"]
    again.remove()
    assert not again.path.exists()

    stranger = tmp_path / folder_name("run-2", "stage")
    stranger.mkdir()
    (stranger / "keep").write_text("not ours")
    with pytest.raises(LeftoverNotOurs, match="exists with no marker, not run 'run-2' step 'stage': left untouched"):
        open_run_folder("run-2", "stage", root=tmp_path)
    other = tmp_path / folder_name("run-3", "stage")
    create_marked(other, "someone-else", "stage")
    with pytest.raises(LeftoverNotOurs, match="the marker of run 'someone-else'"):
        open_run_folder("run-3", "stage", root=tmp_path)
    assert (stranger / "keep").read_text() == "not ours" and other.exists()


def test_sweeper_removes_only_marked_stale_run_folders(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    stale = create_marked(tmp_path / folder_name("old-run", "stage"), "old-run", "stage", now - timedelta(hours=7))
    fresh = create_marked(tmp_path / folder_name("new-run", "stage"), "new-run", "stage", now)
    unmarked = tmp_path / "someone-elses"
    unmarked.mkdir()
    old_unmarked = tmp_path / "old-but-unmarked"
    old_unmarked.mkdir()
    (old_unmarked / "x").write_text("x")
    write_marker(fresh, "new-run", "stage", now)
    os.utime(old_unmarked, (0, 0))
    assert sweep_run_folders(360, root=tmp_path, now=now) == [stale.name]
    assert fresh.exists() and unmarked.exists() and old_unmarked.exists()


def test_supervised_command_keeps_its_exit_status_output_and_stdin() -> None:
    from continuity.adapters.local import processes

    done = processes.run(["/bin/sh", "-c", 'read line; echo "got $line"; exit 3'], timeout=10, input="hello\n",
                         stdin=subprocess.PIPE, text=True)
    assert (done.returncode, done.stdout) == (3, "got hello\n")
    with pytest.raises(subprocess.TimeoutExpired):
        processes.run(["sleep", "30"], timeout=0.5)
