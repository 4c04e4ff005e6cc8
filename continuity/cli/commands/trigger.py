"""``continuity trigger timer NAME``: fire a timer function of the running devhost now.

It uses the devhost's admin API (``POST /admin/functions/NAME`` with the master key), the same
call that runs a non-HTTP function on demand in Azure.
"""

from __future__ import annotations

import argparse
from typing import Any

from continuity.cli.output import emit
from continuity.kernel.errors import ContinuityError, InvalidRequest


class TriggerRefused(ContinuityError):
    code = "trigger_refused"


def register(sub: Any) -> None:
    trigger = sub.add_parser("trigger", help="run a timer function of the devhost now")
    kinds = trigger.add_subparsers(dest="kind", required=True, metavar="KIND")
    timer = kinds.add_parser("timer", help="fire timer function NAME once, now (not past due)")
    timer.add_argument("name", metavar="NAME")
    timer.add_argument("--endpoint", default=None, help="devhost URL (default http://127.0.0.1:<devhost port>)")
    timer.add_argument("--json", action="store_true")
    timer.set_defaults(handler=cmd_trigger_timer)


def cmd_trigger_timer(args: argparse.Namespace) -> int:
    from devhost.process import admin_request

    code, info = admin_request("GET", f"/admin/functions/{args.name}", endpoint_url=args.endpoint)
    if code == 404:
        raise InvalidRequest(f"the devhost has no function named {args.name!r}; "
                             f"`continuity local status` lists its functions")
    if code != 200 or not isinstance(info, dict):
        raise TriggerRefused(f"the devhost answered {code} for function {args.name!r}: {_message(info)}")
    if info.get("trigger") != "timerTrigger":
        raise InvalidRequest(f"{args.name!r} is a {info.get('trigger')} function, not a timer; "
                             f"`continuity trigger timer` fires timers only")
    code, answer = admin_request("POST", f"/admin/functions/{info['name']}", body={"input": None},
                                 endpoint_url=args.endpoint)
    if code != 202:
        raise TriggerRefused(f"the devhost refused to fire {args.name!r} ({code}): {_message(answer)}")
    emit(args, {"function": info["name"], "accepted": True, "schedule": info.get("schedule")},
         f"timer {info['name']} fired (schedule {info.get('schedule')}); its output goes to the devhost log")
    return 0


def _message(payload: Any) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return str(payload["error"].get("message", ""))
    return str(payload)[:200]
