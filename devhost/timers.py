"""Timer triggers: NCRONTAB (six fields, seconds first) or TimeSpan schedules, fired on time.

As in Azure: a schedule may be a ``%SETTING%`` reference resolved from app settings; the schedule
status (Last, Next, LastUpdated) is kept between runs (here in ``<devhost dir>/timers.json``), so an
occurrence missed while the host was down fires at start-up with ``IsPastDue`` true; ``runOnStartup``
fires once when the host starts; one timer never overlaps itself.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from croniter import croniter

from continuity.kernel.errors import ConfigError, ContinuityError

if TYPE_CHECKING:
    from devhost.host import Host
    from devhost.index import IndexedFunction

logger = logging.getLogger(__name__)

SETTING_REF = re.compile(r"^%([^%]+)%$")
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def app_settings() -> dict[str, str]:
    """App settings: the environment (local.settings.json is loaded into it), else the documented local default,
    the value local.settings.example.json gives every setting."""
    from continuity.kernel.settings import DEFAULTS

    return {**DEFAULTS, **os.environ}


@dataclass(frozen=True)
class Schedule:
    """A resolved schedule: an NCRONTAB expression or a fixed interval (TimeSpan ``hh:mm:ss``)."""

    expression: str
    interval: dt.timedelta | None = None

    @classmethod
    def resolve(cls, raw: str, environ: dict[str, str] | None = None) -> Schedule:
        """Resolve ``%SETTING%`` and validate; raises :class:`ConfigError` naming the expression."""
        if environ is None:
            environ = app_settings()
        expression = raw.strip()
        ref = SETTING_REF.match(expression)
        if ref:
            name = ref.group(1)
            if not environ.get(name):
                raise ConfigError(f"timer schedule {raw!r}: app setting {name} is not set; set it to an "
                                  f"NCRONTAB expression such as '0 0 2 * * *'")
            expression = environ[name].strip()
        span = _TIMESPAN.match(expression)
        if span:
            days, hours, minutes, seconds = (int(g or 0) for g in span.groups())
            interval = dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
            if interval <= dt.timedelta(0):
                raise ConfigError(f"timer schedule {raw!r}: a TimeSpan interval must be positive")
            return cls(expression=expression, interval=interval)
        if len(expression.split()) != 6 or not croniter.is_valid(expression, second_at_beginning=True):
            raise ConfigError(f"timer schedule {raw!r} (resolved {expression!r}) is not a six-field NCRONTAB "
                              f"expression '{{second}} {{minute}} {{hour}} {{day}} {{month}} {{day-of-week}}'")
        return cls(expression=expression)

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        if self.interval is not None:
            return moment + self.interval
        itr = croniter(self.expression, moment.astimezone(dt.UTC), second_at_beginning=True)
        result: dt.datetime = itr.get_next(dt.datetime)
        return result


class TimerService:
    """One scheduler thread per timer function, so a slow timer never delays another."""

    def __init__(self, host: Host, functions: list[IndexedFunction], status_file: Path) -> None:
        self.host = host
        self.status_file = status_file
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[str, threading.Lock] = {}
        self._threads: list[threading.Thread] = []
        self.schedules: dict[str, Schedule] = {}
        self.next_due: dict[str, dt.datetime] = {}
        self.functions = {f.name: f for f in functions if not f.unservable}
        for f in list(self.functions.values()):
            try:
                self.schedules[f.name] = Schedule.resolve(f.schedule or "")
            except ConfigError as exc:
                # The host disables just this function and says why; the others keep running.
                f.unservable = str(exc)
                del self.functions[f.name]
                logger.error("timer %s is not scheduled: %s", f.name, exc)
            else:
                self._running[f.name] = threading.Lock()

    # ---- persisted schedule status ----------------------------------------------------------
    def _read_status(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_status(self, name: str, entry: dict[str, str]) -> None:
        with self._lock:
            data = self._read_status()
            data[name] = entry
            tmp = self.status_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2))
            os.replace(tmp, self.status_file)

    # ---- firing -----------------------------------------------------------------------------
    def _fire(self, function: IndexedFunction, *, past_due: bool, scheduled: dt.datetime | None) -> None:
        schedule = self.schedules[function.name]
        with self._running[function.name]:
            now = dt.datetime.now(dt.UTC)
            previous = self._read_status().get(function.name, {})
            following = schedule.next_after(now)
            status = {"Last": _iso(scheduled or now), "Next": _iso(following), "LastUpdated": _iso(now)}
            logger.info("timer %s fires (past due: %s)", function.name, past_due)
            try:
                self.host.invoke_timer(function, past_due=past_due, status={
                    "Last": previous.get("Last", _iso(now)), "Next": _iso(following), "LastUpdated": _iso(now)})
            except ContinuityError as exc:
                logger.error("timer %s: %s", function.name, exc)
            self._write_status(function.name, {**status, "Schedule": schedule.expression})

    def fire_now(self, function: IndexedFunction) -> None:
        """Run a timer once now (the admin API), without moving its schedule."""
        if function.name not in self.functions:
            raise ContinuityError(f"timer {function.name!r} is not scheduled: {function.unservable}")
        self.host.run_in_background(f"timer-{function.name}-now",
                                    lambda: self._fire(function, past_due=False, scheduled=None))

    def _loop(self, function: IndexedFunction) -> None:
        schedule = self.schedules[function.name]
        stored = self._read_status().get(function.name, {})
        now = dt.datetime.now(dt.UTC)
        missed = False
        if stored.get("Schedule") == schedule.expression and stored.get("Next"):
            try:
                missed = dt.datetime.fromisoformat(stored["Next"].replace("Z", "+00:00")) < now
            except ValueError:
                missed = False
        if missed:
            self._fire(function, past_due=True, scheduled=None)
        elif function.run_on_startup:
            self._fire(function, past_due=False, scheduled=None)
        while not self._stop.is_set():
            due = schedule.next_after(dt.datetime.now(dt.UTC))
            self.next_due[function.name] = due
            if not stored:
                self._write_status(function.name, {"Last": "", "Next": _iso(due), "LastUpdated": _iso(now),
                                                   "Schedule": schedule.expression})
                stored = {"Next": _iso(due)}
            wait = (due - dt.datetime.now(dt.UTC)).total_seconds()
            if self._stop.wait(max(wait, 0)):
                return
            late = (dt.datetime.now(dt.UTC) - due).total_seconds()
            # Late beyond the next occurrence means the machine was suspended or overloaded.
            self._fire(function, past_due=dt.datetime.now(dt.UTC) >= schedule.next_after(due) or late > 60,
                       scheduled=due)

    def start(self) -> None:
        for function in self.functions.values():
            thread = threading.Thread(target=self._loop, args=(function,), name=f"timer-{function.name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": name, "schedule": s.expression,
                 "next": _iso(self.next_due[name]) if name in self.next_due else None}
                for name, s in self.schedules.items()]
