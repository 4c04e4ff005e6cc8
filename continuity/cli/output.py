"""How commands print: JSON under ``--json``, human text otherwise."""

from __future__ import annotations

import argparse
import json
from typing import Any


def emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    """Print ``payload`` as JSON under ``--json``, else the human text."""
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(text)

