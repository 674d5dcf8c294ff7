"""Physical lines of pasted tcpdump text, grouped into one logical record per packet.

A record starts at a *packet line*: after an optional line number (``1 ``, ``4. ``), a timestamp in any of
tcpdump's styles, or, for ``tcpdump -t``, a line that opens like tcpdump's network or link layer (``IP ...>``,
``IP6 (``, a MAC address). It continues with

- indented lines (the TCP line under ``-v``'s IP header, tcpdump 3.x's flag/option/``(DF)`` lines, payload
  decodes and hex dumps, which the field parser ignores), and
- lines that are not indented but follow a record that is visibly unfinished (unbalanced brackets, ``Flags [``
  without its ``length N``, a header without its ``src > dst``): the pieces of a line a terminal or a paste
  wrapped.

Blank lines and every other line (banners, ``N packets captured``, prompts, prose around a pasted dump) are
noise: counted, skipped, and they close the record in progress.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from whyreset.ingest.text.timestamps import TIMESTAMP_PATTERN

_NUMBER = r"(?:(?P<num>\d{1,9})[.:)]?\s+)?"
_MAC = r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}"
STAMPED_START_RE = re.compile(_NUMBER + TIMESTAMP_PATTERN + r"\s+(?P<rest>\S.*)$")
"""A packet line with a timestamp: the network/link part follows in ``rest``."""
UNSTAMPED_START_RE = re.compile(
    _NUMBER
    + r"(?P<rest>(?:(?:\S+ +(?:In|Out|B|M|P) +)?IP6? (?:\((?:tos|flowlabel|hlim)|\S+ > )"
    + r"|ARP, |"
    + _MAC
    + r" (?:\([^)]*\) )?> |(?:In|Out|B|M|P) +"
    + _MAC
    + r" ).*)$"
)
"""A packet line of ``tcpdump -t``: no timestamp, so it must open exactly like tcpdump's output."""

MAX_CONTINUATION_LINES = 8
"""Lines kept per record beyond the first; the rest (long payload decodes, hex dumps) are only counted."""
_FLAGS_WITHOUT_LENGTH_RE = re.compile(r"Flags \[[^\]]*\](?!.*\blength \d+)")


@dataclass(slots=True)
class Record:
    """The lines of one packet as printed, with where they came from."""

    line_no: int
    """1-based number of the record's first line in the input."""
    start: re.Match[str]
    """The packet-line match of the first line (timestamp groups and ``rest``)."""
    lines: list[str] = field(default_factory=list)
    """Continuation lines, stripped of their indentation."""
    wrapped: list[bool] = field(default_factory=list)
    """Per continuation line: True when it is the rest of a wrapped line rather than an indented one."""
    dropped_lines: int = 0
    """Continuation lines not kept (beyond `MAX_CONTINUATION_LINES`)."""

    def text(self, wrap_joiner: str = " ") -> str:
        """The record as one line: the rest of the first line and its continuations."""
        if not self.lines:
            return self.start["rest"]
        parts = [self.start["rest"]]
        for line, wrapped in zip(self.lines, self.wrapped, strict=True):
            parts.append(wrap_joiner if wrapped else " ")
            parts.append(line)
        return "".join(parts)

    def has_wraps(self) -> bool:
        return any(self.wrapped)

    def looks_unfinished(self) -> bool:
        """Whether the record so far is visibly cut (so that a following unindented line continues it)."""
        text = self.text()
        if text.count("(") > text.count(")") or text.count("[") > text.count("]"):
            return True
        if text.count("<") > text.count(">") - text.count(" > "):
            return True
        if text.rstrip().endswith((":", ",")):
            return True
        if " > " not in text:
            return True
        return _FLAGS_WITHOUT_LENGTH_RE.search(text) is not None


@dataclass(slots=True)
class LineCounts:
    """What the grouping skipped, and how many tcpdump runs the text shows."""

    skipped: int = 0
    runs: int = 0
    """Banners seen (``reading from file``, ``listening on``): each starts a tcpdump run with fresh state."""


_RUN_BANNER_RE = re.compile(r"(?:tcpdump: )?(?:reading from file |listening on )")


def match_packet_line(line: str) -> re.Match[str] | None:
    """The start match if ``line`` (stripped) opens a packet record."""
    return STAMPED_START_RE.match(line) or UNSTAMPED_START_RE.match(line)


def iter_records(lines: Iterable[bytes], counts: LineCounts) -> Iterator[Record]:
    """Group raw input lines (any line ending) into packet records; noise lines are counted in ``counts``."""
    current: Record | None = None
    for line_no, raw in enumerate(lines, 1):
        line = raw.decode("utf-8", "replace").rstrip("\r\n\x0c")
        if "\xa0" in line:
            line = line.replace("\xa0", " ")  # web pages paste no-break spaces
        stripped = line.strip()
        if not stripped:
            counts.skipped += 1
            continue
        indented = line[0] in " \t"
        # Under -v an ICMP error prints its quoted packet as an indented "IP (tos ...)" line: same record.
        start = STAMPED_START_RE.match(stripped)
        if start is None and (current is None or not indented):
            start = UNSTAMPED_START_RE.match(stripped)
        if start is not None:
            if current is not None:
                yield current
            current = Record(line_no, start)
            continue
        if current is not None:
            if indented or current.looks_unfinished():
                if len(current.lines) < MAX_CONTINUATION_LINES:
                    current.lines.append(stripped)
                    current.wrapped.append(not indented)
                else:
                    current.dropped_lines += 1
                continue
            yield current
            current = None
        counts.skipped += 1
        if _RUN_BANNER_RE.match(stripped):
            counts.runs += 1
    if current is not None:
        yield current
