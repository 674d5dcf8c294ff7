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

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from whyreset.analysis import Analysis
from whyreset.core.connection import Connection, ResetInfo
from whyreset.diagnose.finding import Finding
from whyreset.ids import Side
from whyreset.model import ReadReport
from whyreset.report.jsonout import is_abnormal, payload_secrets, redact_payload

DEFAULT_MAX_LISTED = 50


def safe_text(value: object, style: str = "") -> Text:
    """Capture-derived text as a rich Text: no markup interpretation, control characters shown as escapes."""
    return Text(printable(str(value)), style=style)


def printable(text: str) -> str:
    """Replace C0/C1 control characters (ESC sequences could drive the terminal) with ``\\xNN`` escapes."""
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
    host, port = connection.address(side)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
        self.total += 1
        self.outcomes[str(connection.outcome)] += 1
        if finding is not None:
            self.causes[str(finding.cause) if finding.cause is not None else "undetermined"] += 1
        if not (self.list_all or is_abnormal(connection, finding)):
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
        for connection, finding in listed:
            console.print(connection_block(connection, finding, show_payload))
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


def connection_block(connection: Connection, finding: Finding | None, show_payload: bool) -> RenderableType:
    """The lines about one connection: who, how it ended, its first RST, the diagnosis."""
    lines: list[RenderableType] = []
    head = Text()
    head.append(f"{connection.uid} ", style="bold cyan")
    head.append(f"{endpoint(connection, Side.ORIG)} -> {endpoint(connection, Side.RESP)}")
    head.append(f"  {connection.outcome}", style="bold red" if is_abnormal(connection, finding) else "green")
    head.append(f"  conn_state={connection.conn_state} history={printable(connection.history)}")
    head.append(f"  frames {connection.first_frame}-{connection.last_frame}")
    if connection.orig_inferred_by != "syn":
        head.append(f"  (roles guessed from {connection.orig_inferred_by})", style="yellow")
    if connection.midstream:
        head.append("  (capture starts mid-connection)", style="yellow")
    lines.append(head)
    states = Text("  final states: ")
    states.append(f"orig {connection.final_state(Side.ORIG)}, resp {connection.final_state(Side.RESP)}")
    lines.append(states)
    if connection.first_reset is not None:
        lines.append(reset_line(connection, connection.first_reset, show_payload))
        if len(connection.resets) > 1:
            lines.append(Text(f"  ({len(connection.resets) - 1} more RST segments)"))
    if finding is not None:
        secrets = () if show_payload else payload_secrets(connection)
        lines.extend(finding_lines(finding, secrets))
    return Group(*lines)


def reset_line(connection: Connection, reset: ResetInfo, show_payload: bool) -> Text:
    """``RST from resp 10.0.0.2:80 frame 7 at ... seq=.. ack=.. TTL 64 (exact), receiver ESTABLISHED``."""
    ack = "-" if reset.ack is None else str(reset.ack)
    text = Text("  RST ", style="bold")
    sender = endpoint(connection, reset.sender)
    text.append(f"from {reset.sender} {sender} frame {reset.frame} at {format_ts(reset.ts_ns)} ")
    text.append(f"seq={reset.seq} ack={ack} TTL {reset.ttl} ")
    text.append(f"acceptability {reset.acceptability}, ")
    text.append(f"sender {reset.sender_state}, receiver {reset.receiver_state}")
    if reset.payload_text is not None:
        if show_payload:
            text.append("  payload: ")
            text.append(safe_text(repr(reset.payload_text), "magenta"))
        else:
            text.append("  (carries payload text: --show-payload to see it)")
    return text


def finding_lines(finding: Finding, secrets: Sequence[str] = ()) -> list[RenderableType]:
    """The diagnosis, with the RST payload text (``secrets``) scrubbed from its sentences unless asked for."""
    lines: list[RenderableType] = []

    def safe(value: str) -> Text:
        return safe_text(redact_payload(value, secrets))

    head = Text("  cause: ", style="bold")
    if finding.cause is None:
        head.append("undetermined", style="yellow")
        if finding.undetermined_reason:
            head.append(" (")
            head.append(safe(finding.undetermined_reason))
            head.append(")")
    else:
        head.append(str(finding.cause), style="bold magenta")
        head.append(f" (confidence {finding.confidence:.2f})")
    lines.append(head)
    if finding.summary:
        lines.append(Text("  ").append(safe(finding.summary)))
    for alternative in finding.alternatives:
        alt = Text(f"    or {alternative.cause} ({alternative.confidence:.2f}): ")
        alt.append(safe(alternative.how_to_tell))
        lines.append(alt)
    for item in finding.evidence[:5]:
        where = f" [frame {item.frame}]" if item.frame is not None else ""
        lines.append(Text("    - ").append(safe(item.text)).append(where))
    if finding.fix:
        lines.append(Text("  fix: ").append(safe(finding.fix[0])))
    return lines


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
