"""``python -m bench``: run every ``bench/bench_*.py`` module's ``main()`` with its defaults, one after another.

A module that fails is reported and the others still run; the exit status says whether all of them passed.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path


def main() -> int:
    names = sorted(p.stem for p in Path(__file__).resolve().parent.glob("bench_*.py"))
    failed: list[str] = []
    for name in names:
        print(f"== {name} ==", flush=True)
        started = time.monotonic()
        saved_argv = sys.argv
        sys.argv = [f"bench/{name}.py"]  # each module parses its own defaults
        try:
            importlib.import_module(f"bench.{name}").main()
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            failed.append(name)
        finally:
            sys.argv = saved_argv
        print(f"== {name}: {time.monotonic() - started:.1f}s ==\n", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
