"""tcpdump's timestamp styles, read back into integer nanoseconds.

=========  ==============================  =================================================================
option     printed as                      read as
=========  ==============================  =================================================================
(default)  ``22:15:16.348064``             nanoseconds since 1970-01-01 00:00 + time of day; a day is added
                                           each time the clock goes back by more than 12 hours (midnight)
``-t``     nothing                         the line order: packet n (0-based) at n microseconds
``-tt``    ``1479370850.348064``           epoch seconds, exact
``-ttt``   `` 00:00:00.000012``            delta since the previous packet: running sum from 0
``-tttt``  ``2026-11-21 22:15:16.348064``  date and time, read as UTC (tcpdump prints local time)
``-ttttt`` `` 00:00:01.000012``            delta since the first packet, from 0
=========  ==============================  =================================================================

``-ttt`` and ``-ttttt`` print the same shape as the default; both start at ``00:00:00.000000``. The first
chunk of a read decides: a first stamp of exactly zero means one of them, and values that ever go down mean
``-ttt``. Fractions of 1 to 9 digits are accepted (``--nano`` prints 9).
"""

from __future__ import annotations

import calendar
import itertools
import re
from dataclasses import dataclass, field
from enum import Enum

NS_PER_S = 1_000_000_000
_DAY_NS = 86_400 * NS_PER_S
_HALF_DAY_NS = _DAY_NS // 2
LINE_ORDER_STEP_NS = 1_000

TIMESTAMP_PATTERN = (
    r"(?:(?P<date>\d{4}-\d{2}-\d{2}) (?P<dclock>\d{1,2}:\d{2}:\d{2}(?:\.\d{1,9})?)"
    r"|(?P<clock>\d{1,2}:\d{2}:\d{2}(?:\.\d{1,9})?)"
    r"|(?P<epoch>\d{1,12}\.\d{1,9}))"
)
_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


class TimeKind(Enum):
    """Which kind of stamp a packet line carried."""

    NONE = "none"
    CLOCK = "clock"
    DATE = "date"
    EPOCH = "epoch"


def clock_to_ns(text: str) -> int:
    """``HH:MM:SS[.frac]`` to nanoseconds since midnight."""
    if len(text) == 15 and text[8] == ".":  # the usual HH:MM:SS.uuuuuu, read by position
        whole_seconds = int(text[0:2]) * 3600 + int(text[3:5]) * 60 + int(text[6:8])
        return whole_seconds * NS_PER_S + int(text[9:15]) * 1000
    whole, _, frac = text.partition(".")
    hours, minutes, seconds = whole.split(":")
    ns = (int(hours) * 3600 + int(minutes) * 60 + int(seconds)) * NS_PER_S
    return ns + int(frac.ljust(9, "0")) if frac else ns


def epoch_to_ns(text: str) -> int:
    """``SECONDS.frac`` to nanoseconds."""
    whole, _, frac = text.partition(".")
    return int(whole) * NS_PER_S + int(frac.ljust(9, "0"))


def date_to_ns(date: str, clock: str) -> int:
    """``YYYY-MM-DD`` and ``HH:MM:SS.frac`` to nanoseconds since the epoch, as if UTC."""
    match = _DATE_RE.fullmatch(date)
    if match is None:
        raise ValueError(f"bad date {date!r}")
    year, month, day = (int(part) for part in match.groups())
    midnight = calendar.timegm((year, month, day, 0, 0, 0, 0, 0, 0))
    return midnight * NS_PER_S + clock_to_ns(clock)


class ClockStyle(Enum):
    WALL = "wall"
    DELTA = "delta"
    SINCE_FIRST = "since_first"


@dataclass(slots=True)
class TimeResolver:
    """Turns the per-packet (kind, value) pairs of a read into capture timestamps, chunk after chunk."""

    limits: list[str]
    clock_style: ClockStyle | None = None
    _day_offset: int = 0
    _last_clock: int | None = None
    _delta_sum: int = 0
    _noted: set[TimeKind] = field(default_factory=set)

    def resolve(self, kinds: list[TimeKind], values: list[int], frames: list[int]) -> list[int]:
        """Timestamps (ns) for one chunk of packets in capture order, given their 1-based frame numbers."""
        if self.clock_style is None:
            self.clock_style = self._decide_clock_style(kinds, values)
        out: list[int] = []
        for kind, value, frame in zip(kinds, values, frames, strict=True):
            self._note(kind)
            if kind is TimeKind.CLOCK:
                out.append(self._clock(value))
            elif kind is TimeKind.NONE:
                out.append((frame - 1) * LINE_ORDER_STEP_NS)
            else:
                out.append(value)
        return out

    def _clock(self, value: int) -> int:
        if self.clock_style is ClockStyle.DELTA:
            self._delta_sum += value
            return self._delta_sum
        if self.clock_style is ClockStyle.SINCE_FIRST:
            return value
        if self._last_clock is not None and value < self._last_clock - _HALF_DAY_NS:
            self._day_offset += _DAY_NS
        self._last_clock = value
        return self._day_offset + value

    @staticmethod
    def _decide_clock_style(kinds: list[TimeKind], values: list[int]) -> ClockStyle | None:
        clocks = [value for kind, value in zip(kinds, values, strict=True) if kind is TimeKind.CLOCK]
        if not clocks:
            return None
        if clocks[0] != 0:
            return ClockStyle.WALL
        if any(later < earlier for earlier, later in itertools.pairwise(clocks)):
            return ClockStyle.DELTA
        return ClockStyle.SINCE_FIRST

    def _note(self, kind: TimeKind) -> None:
        if kind in self._noted:
            return
        self._noted.add(kind)
        if kind is TimeKind.NONE:
            self.limits.append("no timestamps in the text (tcpdump -t): packet n is placed at n microseconds")
        elif kind is TimeKind.DATE:
            self.limits.append("timestamps are the capturing machine's local time, read as UTC")
        elif kind is TimeKind.CLOCK:
            if self.clock_style is ClockStyle.WALL:
                self.limits.append("timestamps carry no date: times of day counted from 1970-01-01")
            else:
                self.limits.append(
                    "timestamps are relative (tcpdump -ttt/-ttttt): absolute time unknown, first at 0"
                )
