"""Progress of long CLI work: drawn on a terminal only, never when piped or under --json (real subprocesses).

The CLI runs in a child process whose stderr is a pseudo-terminal (``pty.openpty``) or a pipe; what the child
writes there is read back and asserted. Nothing of the CLI is replaced.
"""

from __future__ import annotations

import argparse
import io
import os
import pty
import subprocess
import sys

from continuity.cli.progress import Silent, progress, shown

CHILD = """
import argparse, sys
from continuity.cli.progress import progress
args = argparse.Namespace(json={json})
with progress(args, "seed", total=3, unit="tenants") as bar:
    for _ in range(3):
        bar.describe("seed tenant")
        bar.advance()
print("result line")
"""


def _run(json_flag: bool, *, terminal: bool) -> tuple[str, str]:
    """Run the child; returns (stdout, what reached stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "CONTINUITY_NO_PROGRESS")}
    env["TERM"] = "xterm-256color"
    code = CHILD.format(json=json_flag)
    if not terminal:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                              check=True)
        return done.stdout, done.stderr
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=follower, env=env,
                                text=True)
        os.close(follower)
        out, _ = proc.communicate(timeout=60)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed its end: all of it was read
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.returncode == 0
        return out, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(leader)


def test_a_terminal_gets_a_progress_bar_on_stderr_and_clean_results_on_stdout() -> None:
    out, err = _run(False, terminal=True)
    assert out == "result line\n"
    assert "seed tenant" in err and "tenants" in err


def test_piped_output_gets_no_progress_at_all() -> None:
    out, err = _run(False, terminal=False)
    assert (out, err) == ("result line\n", "")


def test_json_on_a_terminal_gets_no_progress_at_all() -> None:
    out, err = _run(True, terminal=True)
    assert (out, err) == ("result line\n", "")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_rule_names_each_reason_for_silence() -> None:
    plain = argparse.Namespace(json=False)
    assert shown(plain, _Tty(), {"TERM": "xterm"}) is True
    assert shown(argparse.Namespace(json=True), _Tty(), {"TERM": "xterm"}) is False
    assert shown(plain, io.StringIO(), {"TERM": "xterm"}) is False  # not a terminal
    assert shown(plain, _Tty(), {"TERM": "dumb"}) is False
    assert shown(plain, _Tty(), {"TERM": "xterm", "CONTINUITY_NO_PROGRESS": "1"}) is False
    with progress(argparse.Namespace(json=True), "x") as bar:
        assert isinstance(bar, Silent)
