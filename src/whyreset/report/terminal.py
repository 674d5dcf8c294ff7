"""The terminal summary of ``whyreset analyze``: counts, the abnormal connections with their RST and
diagnosis, and what the reader skipped.

Every string that comes from the capture (RST payload text, diagnosis text quoting it, bad text lines, file
names) is hostile until proven otherwise: it goes into rich `Text` objects (never parsed as markup) after
`safe_text` turned control characters, which could drive the terminal, into visible ``\\xNN`` escapes.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement, measure_renderables
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from whyreset.analysis import Analysis
from whyreset.core.connection import Connection, ResetInfo
from whyreset.diagnose.finding import Finding
from whyreset.ids import Side
from whyreset.model import ReadReport, endpoint_text
from whyreset.report.jsonout import ABNORMAL_OUTCOMES, is_abnormal, payload_secrets, redact_payload

DEFAULT_MAX_LISTED = 50
_BLOCKS_PER_PRINT = 256
"""Connection blocks rendered per `Console.print` call: its fixed cost shared, its buffer kept small."""


def safe_text(value: object, style: str = "") -> Text:
    """Capture-derived text as a rich Text: no markup interpretation, control characters shown as escapes."""
    return Text(printable(str(value)), style=style)


def printable(text: str) -> str:
    """Replace C0/C1 control characters (ESC sequences could drive the terminal) with ``\\xNN`` escapes."""
    if text.isprintable():  # nearly always: nothing to replace, without the character walk
        return text
    return "".join(char if char.isprintable() or char == " " else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def format_ts(ts_ns: int) -> str:
    """UTC wall-clock time with microseconds (captures come from anywhere; UTC avoids guessing time zones)."""
    moment = datetime.fromtimestamp(ts_ns / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def endpoint(connection: Connection, side: Side) -> str:
    return endpoint_text(*connection.address(side))


@dataclass(slots=True)
class Summary:
    """What the terminal summary shows about one input, gathered connection by connection.

    Counts cover every connection; only the connections to list are kept (the first ``max_listed`` abnormal
    ones by index, or all of them with ``list_all``), so summarising a huge capture keeps memory bounded.
    """

    list_all: bool = False
    max_listed: int = DEFAULT_MAX_LISTED
    total: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    causes: Counter[str] = field(default_factory=Counter)
    qualifying: int = 0
    """Connections that qualify for the list (abnormal ones, or all with ``list_all``)."""
    _kept: list[tuple[int, int, Connection, Finding | None]] = field(default_factory=list)
    """Max-heap on index (negated): the smallest indices seen so far."""

    def add(self, connection: Connection, finding: Finding | None) -> None:
        # Runs for every connection of the default output: enum members counted by their `_value_` (what
        # str() gives), `is_abnormal` inlined.
        self.total += 1
        outcome = connection.outcome
        self.outcomes[outcome._value_] += 1
        cause = None
        if finding is not None:
            cause = finding.cause
            self.causes[cause._value_ if cause is not None else "undetermined"] += 1
        if not (self.list_all or cause is not None or outcome in ABNORMAL_OUTCOMES):
            return
        self.qualifying += 1
        entry = (-connection.index, self.qualifying, connection, finding)
        if self.list_all or len(self._kept) < self.max_listed:
            heapq.heappush(self._kept, entry)
        elif self._kept and entry > self._kept[0]:
            heapq.heapreplace(self._kept, entry)

    def listed(self) -> list[tuple[Connection, Finding | None]]:
        """The kept connections, in index order."""
        return [(conn, finding) for _, _, conn, finding in sorted(self._kept, reverse=True)]


@dataclass(frozen=True, slots=True)
class InputHeader:
    """The facts about one input printed above its summary."""

    source: str
    report: ReadReport
    diagnosed: bool
    failure_message: str | None = None
    warnings: tuple[str, ...] = ()


def render_analysis(
    console: Console,
    analysis: Analysis,
    *,
    list_all: bool = False,
    max_listed: int = DEFAULT_MAX_LISTED,
    show_payload: bool = False,
) -> None:
    """Print one input's summary from a complete `Analysis`."""
    summary = Summary(list_all=list_all, max_listed=max_listed)
    for connection in analysis.connections:
        summary.add(connection, analysis.findings.get(connection.uid))
    failure = analysis.failure.message if analysis.failure is not None else None
    header = InputHeader(analysis.source, analysis.report, analysis.diagnosed, failure, analysis.warnings)
    render_summary(console, header, summary, show_payload=show_payload)


def render_summary(console: Console, header: InputHeader, summary: Summary, *, show_payload: bool = False) -> None:
    """Print one input's summary."""
    console.print(_title(header, summary.total))
    if header.failure_message is not None:
        console.print(safe_text(f"error: {header.failure_message}", "bold red"))
    for warning in header.warnings:
        console.print(safe_text(f"warning: {warning}", "yellow"))
    if summary.total:
        console.print(_count_tables(summary))
    listed = summary.listed()
    if listed:
        heading = "Connections" if summary.list_all else "Abnormal connections"
        console.print(Text(f"{heading} ({summary.qualifying})", style="bold"))
        for start in range(0, len(listed), _BLOCKS_PER_PRINT):
            console.print(_Blocks(listed[start : start + _BLOCKS_PER_PRINT], show_payload))
        if summary.qualifying > len(listed):
            more = summary.qualifying - len(listed)
            console.print(Text(f"... {more} more (use --all, or --json for every connection)"))
    skipped = skipped_lines(header.report)
    if skipped:
        console.print(Text("Not analysed", style="bold"))
        for line in skipped:
            console.print(Text("  ").append(safe_text(line)))


def _title(header: InputHeader, connections: int) -> Text:
    report = header.report
    title = Text()
    title.append(printable(header.source), style="bold")
    details = [
        report.format or "unknown format",
        plural(report.records, "record"),
        plural(report.tcp_segments, "TCP segment"),
        plural(connections, "connection"),
    ]
    if not header.diagnosed:
        details.append("no diagnosis")
    title.append(f"  ({', '.join(details)})")
    return title


def _count_tables(summary: Summary) -> RenderableType:
    outcome_table = Table(title="By outcome", title_justify="left", show_edge=False)
    outcome_table.add_column("outcome")
    outcome_table.add_column("connections", justify="right")
    for outcome, count in summary.outcomes.most_common():
        outcome_table.add_row(outcome, str(count))
    if not summary.causes:
        return outcome_table
    cause_table = Table(title="By cause", title_justify="left", show_edge=False)
    cause_table.add_column("cause")
    cause_table.add_column("connections", justify="right")
    for cause, count in summary.causes.most_common():
        cause_table.add_row(cause, str(count))
    grid = Table.grid(padding=(0, 4))
    grid.add_row(outcome_table, cause_table)
    return grid


Pieces = list[tuple[str, str]]
"""One line of a block: its first text, whose style is the whole line's base style, then the appended texts, each
with its own style ("" for none)."""
Line = tuple[str, Pieces]
"""(base style, pieces): what `Text(first, style=base).append(text, style)...` is made of."""


def _as_text(line: Line) -> Text:
    base, pieces = line
    text = Text(pieces[0][0], style=base)
    for piece, style in pieces[1:]:
        text.append(piece, style)
    return text


def connection_block(connection: Connection, finding: Finding | None, show_payload: bool) -> RenderableType:
    """The lines about one connection: who, how it ended, its first RST, the diagnosis (printed as `Text` lines,
    or as their plain characters on a console without styles: see `_Blocks`)."""
    return _Blocks(((connection, finding),), show_payload)


def _text_group(lines: list[Line]) -> Group:
    """A block's lines as rich `Text` objects (what a styled console renders)."""
    return Group(*[_as_text(line) for line in lines])


def _block_lines(connection: Connection, finding: Finding | None, show_payload: bool) -> list[Line]:
    outcome_style = "bold red" if is_abnormal(connection, finding) else "green"
    head: Pieces = [
        ("", ""),
        (f"{connection.uid} ", "bold cyan"),
        (f"{endpoint(connection, Side.ORIG)} -> {endpoint(connection, Side.RESP)}", ""),
        (f"  {connection.outcome}", outcome_style),
        (f"  conn_state={connection.conn_state} history={printable(connection.history)}", ""),
        (f"  frames {connection.first_frame}-{connection.last_frame}", ""),
    ]
    if connection.orig_inferred_by != "syn":
        head.append((f"  (roles guessed from {connection.orig_inferred_by})", "yellow"))
    if connection.midstream:
        head.append(("  (capture starts mid-connection)", "yellow"))
    final_states = f"orig {connection.final_state(Side.ORIG)}, resp {connection.final_state(Side.RESP)}"
    lines: list[Line] = [("", head), ("", [("  final states: ", ""), (final_states, "")])]
    resets = connection.resets
    if resets:
        lines.append(_reset_pieces(connection, resets[0], show_payload))
        if len(resets) > 1:
            lines.append(("", [(f"  ({len(resets) - 1} more RST segments)", "")]))
    if finding is not None:
        has_payload = not show_payload and any(reset.payload_text for reset in resets)
        lines.extend(_finding_pieces(finding, payload_secrets(connection) if has_payload else ()))
    return lines


def reset_line(connection: Connection, reset: ResetInfo, show_payload: bool) -> Text:
    """``RST from resp 10.0.0.2:80 frame 7 at ... seq=.. ack=.. TTL 64 (exact), receiver ESTABLISHED``."""
    return _as_text(_reset_pieces(connection, reset, show_payload))


def _reset_pieces(connection: Connection, reset: ResetInfo, show_payload: bool) -> Line:
    ack = "-" if reset.ack is None else str(reset.ack)
    sender = endpoint(connection, reset.sender)
    pieces: Pieces = [
        ("  RST ", ""),
        (f"from {reset.sender} {sender} frame {reset.frame} at {format_ts(reset.ts_ns)} ", ""),
        (f"seq={reset.seq} ack={ack} TTL {reset.ttl} ", ""),
        (f"acceptability {reset.acceptability}, ", ""),
        (f"sender {reset.sender_state}, receiver {reset.receiver_state}", ""),
    ]
    if reset.payload_text is not None:
        if show_payload:
            pieces.append(("  payload: ", ""))
            pieces.append((printable(repr(reset.payload_text)), "magenta"))
        else:
            pieces.append(("  (carries payload text: --show-payload to see it)", ""))
    return ("bold", pieces)


def finding_lines(finding: Finding, secrets: Sequence[str] = ()) -> list[RenderableType]:
    """The diagnosis, with the RST payload text (``secrets``) scrubbed from its sentences unless asked for."""
    return [_as_text(line) for line in _finding_pieces(finding, secrets)]


def _finding_pieces(finding: Finding, secrets: Sequence[str]) -> list[Line]:
    def safe(value: str) -> tuple[str, str]:
        return (printable(redact_payload(value, secrets)), "")

    head: Pieces = [("  cause: ", "")]
    if finding.cause is None:
        head.append(("undetermined", "yellow"))
        if finding.undetermined_reason:
            head.extend(((" (", ""), safe(finding.undetermined_reason), (")", "")))
    else:
        head.append((str(finding.cause), "bold magenta"))
        head.append((f" (confidence {finding.confidence:.2f})", ""))
    lines: list[Line] = [("bold", head)]
    if finding.summary:
        lines.append(("", [("  ", ""), safe(finding.summary)]))
    for alternative in finding.alternatives:
        lines.append(
            ("", [(f"    or {alternative.cause} ({alternative.confidence:.2f}): ", ""), safe(alternative.how_to_tell)])
        )
    for item in finding.evidence[:5]:
        where = f" [frame {item.frame}]" if item.frame is not None else ""
        lines.append(("", [("    - ", ""), safe(item.text), (where, "")]))
    if finding.fix:
        lines.append(("", [("  fix: ", ""), safe(finding.fix[0])]))
    return lines


class _Blocks:
    """The blocks of one or several connections (several: printed at once).

    On a console that prints no styles (not a terminal: a pipe or a file, where ``--all`` lists thousands of
    connections) and does not wrap, a block's lines are handed to rich as one plain segment: the characters
    rich's own rendering of the `Text` lines would print (about 10x cheaper than that rendering). A block with
    a line rich would change (a control character it strips, trailing space it may cut) goes through rich.
    """

    def __init__(self, entries: Sequence[tuple[Connection, Finding | None]], show_payload: bool) -> None:
        self.entries = entries
        self.show_payload = show_payload

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        plain = (
            console.color_system is None
            and not console.record
            and options.no_wrap
            and options.overflow == "ignore"
            and options.justify in (None, "default")
        )
        for connection, finding in self.entries:
            lines = _block_lines(connection, finding, self.show_payload)
            text = _plain_text(lines) if plain else None
            if text is None:
                yield _text_group(lines)
            else:
                yield Segment(text)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        """As a `Group` of the blocks' `Text` lines measures (when a block is put in a table or a panel)."""
        lines = [line for conn, found in self.entries for line in _block_lines(conn, found, self.show_payload)]
        return measure_renderables(console, options, [_as_text(line) for line in lines])


def _plain_text(lines: list[Line]) -> str | None:
    """The lines as rich prints them without styles and wrapping, or None when rich would alter one: strip a
    control character (the capture's text is escaped by `printable`, but not every field goes through it), or
    cut trailing space (older rich versions did even without wrapping)."""
    texts = ["".join([piece for piece, _ in pieces]) for _, pieces in lines]
    for text in texts:
        if not text.isprintable() or text[-1:].isspace():
            return None
    return "\n".join(texts) + "\n"


def skipped_lines(report: ReadReport) -> list[str]:
    """What the reader could not analyse, one line each (empty when everything was TCP and decodable)."""
    lines: list[str] = []
    counters = (
        (report.non_ip, "records without IPv4/IPv6 (ARP, LLDP...)"),
        (report.non_tcp, "IP packets that are not TCP"),
        (report.fragments, "IP fragments (counted, not reassembled)"),
        (report.truncated, "TCP segments cut by the snapshot length (headers kept)"),
        (report.undecodable, "records too short or malformed to decode"),
        (report.skipped_lines, "noise lines skipped in text input"),
    )
    lines.extend(f"{count} {what}" for count, what in counters if count)
    for link_type, count in sorted(report.unsupported_link_types.items()):
        lines.append(f"{count} records with unsupported link type {link_type}")
    lines.extend(_bad_lines(report.bad_lines))
    lines.extend(f"limit: {limit}" for limit in report.limits)
    return lines


def _bad_lines(bad_lines: Sequence[tuple[int, str]], shown: int = 5) -> Iterable[str]:
    if not bad_lines:
        return []
    lines = [f"{len(bad_lines)} text lines that look like packets but could not be parsed:"]
    lines.extend(f"  line {number}: {reason}" for number, reason in bad_lines[:shown])
    if len(bad_lines) > shown:
        lines.append(f"  ... {len(bad_lines) - shown} more")
    return lines
