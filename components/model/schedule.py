"""When a tier should exist: pure schedule math, no Pulumi.

A daily window [start, end) in an IANA timezone may cross midnight. A tier
enters the desired state at its bring-up (start minus the bring-up lead), so
that its VMs are cloned, booted and joined by `start`, and leaves it at its
drain start (end minus the drain lead), so that its removal, and the drain that
precedes it, begin on time. Monitoring expects the tier from `start` only. All instants are
timezone-aware; daylight-saving changes are handled by building each window
edge as a local wall-clock time on its own date.

Standard library only: the drain program that runs inside a Ray container
embeds this module's source, so it must not import anything else.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional
from zoneinfo import ZoneInfo


def parse_instant(text: str) -> dt.datetime:
    """An ISO 8601 instant with its UTC offset; the one wording of a bad instant for every tool."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 instant like 2026-11-22T22:00:00+01:00") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset: add one, like 2026-11-22T22:00:00+01:00 (or Z for UTC)")
    return parsed


@dataclass(frozen=True)
class Occurrence:
    """One occurrence of a daily window, as aware instants."""

    start: dt.datetime
    end: dt.datetime
    drain_start: dt.datetime
    bring_up: dt.datetime


@dataclass(frozen=True)
class DailyWindow:
    start: dt.time
    end: dt.time
    timezone: str
    drain_lead: dt.timedelta
    bring_up_lead: dt.timedelta = dt.timedelta(0)

    def occurrence(self, local_date: dt.date) -> Occurrence:
        """The window that starts on `local_date` in the window's timezone."""
        zone = ZoneInfo(self.timezone)
        start = dt.datetime.combine(local_date, self.start, tzinfo=zone)
        end_date = local_date if self.end > self.start else local_date + dt.timedelta(days=1)
        end = dt.datetime.combine(end_date, self.end, tzinfo=zone)
        # Normalise through UTC so arithmetic across DST edges is in real time.
        start, end = start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)
        return Occurrence(start=start, end=end, drain_start=end - self.drain_lead, bring_up=start - self.bring_up_lead)

    def _candidates(self, at: dt.datetime) -> list[Occurrence]:
        local_date = at.astimezone(ZoneInfo(self.timezone)).date()
        return [self.occurrence(local_date + dt.timedelta(days=d)) for d in (-1, 0, 1)]

    def current(self, at: dt.datetime) -> Optional[Occurrence]:
        """The occurrence with start <= at < end, if any (drain lead included)."""
        for window in self._candidates(at):
            if window.start <= at < window.end:
                return window
        return None

    def serving(self, at: dt.datetime) -> bool:
        """True between the window start and the drain start: when monitoring expects the tier."""
        return any(window.start <= at < window.drain_start for window in self._candidates(at))

    def wants_live(self, at: dt.datetime) -> bool:
        """True between the bring-up (start minus its lead) and the drain start."""
        return any(window.bring_up <= at < window.drain_start for window in self._candidates(at))

    def next_transition(self, at: dt.datetime) -> dt.datetime:
        """The first instant after `at` at which `wants_live` changes."""
        edges = sorted(
            edge
            for window in self._candidates(at)
            for edge in (window.bring_up, window.drain_start)
            if edge > at
        )
        return edges[0]


def drain_deadline_seconds(
    window: Optional[DailyWindow], grace: dt.timedelta, now: dt.datetime
) -> int:
    """Seconds a drain starting `now` may take.

    A scheduled removal (now within the lead before a window end) may run until
    that window end, when the hardware goes down. Any other removal (a node
    dropped from config, a destroy, an override) gets the configured grace,
    but never past the end of the window it is in: the hardware goes down then.
    """
    grace_seconds = max(1, int(grace.total_seconds()))
    if window is not None:
        current = window.current(now)
        if current is not None:
            until_end = max(1, int((current.end - now).total_seconds()))
            return until_end if now >= current.drain_start else min(grace_seconds, until_end)
    return grace_seconds
