"""function_app's functions, indexed once per process (azure-functions refuses a second get_functions())."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def app_functions() -> tuple[Any, ...]:
    import function_app

    return tuple(function_app.app.get_functions())
