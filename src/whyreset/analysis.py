"""The pipeline: read a capture, rebuild its connections, diagnose the ones that ended badly.

    capture ──► ingest.iter_capture (chunks) ──► core.tracker.ConnectionTracker ──► diagnose

`analyze` returns an `Analysis`: the connections, the findings by uid, the reader's report and the ICMP
errors, and `Analysis.records()`, the JSON objects of docs/json-schema.md. `iter_connections` is the streaming
form: it yields connections as the tracker finishes them, so a caller that writes them out as they come keeps
memory bounded.

A capture that is cut short or corrupt is not an exception here: the readers yield every readable record
first, then raise a `CaptureError`; the pipeline analyses what was read and records the one-line error in
``report.error`` (`ExitStatus.PARTIAL_INPUT`). Only an input with nothing readable at all gives
`ExitStatus.NO_INPUT`.

The diagnosis is optional at import time: when ``whyreset.diagnose`` provides no diagnoser (yet), connections
are reported with their outcome and ``cause`` null. A diagnoser that exists but fails to import is a bug: it
is reported in `Analysis.warnings` (and on stderr by the CLI), never silently ignored.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import IO, Any

from whyreset.core.connection import Connection
from whyreset.diagnose.finding import Finding
from whyreset.errors import CaptureError, UnknownFormatError, UnsupportedLinkTypeError
from whyreset.model import IcmpError, ReadReport
from whyreset.report.jsonout import JsonRecord, connection_record, is_abnormal

Source = str | os.PathLike[str] | IO[bytes]
TEXT_FORMAT = "tcpdump-text"
CHUNK_RECORDS = 65536
"""Records per chunk handed to the tracker: smaller chunks lower the peak memory of its vectorised passes."""
ProgressCallback = Callable[[int, int | None], None]
"""Called as reading advances with (bytes read so far, total bytes or None when unknown, e.g. stdin)."""


class ExitStatus(IntEnum):
    """Exit statuses of ``whyreset analyze`` (the most severe over all inputs wins: NO_INPUT > PARTIAL_INPUT >
    FINDINGS > OK; USAGE is click's own status for a bad command line)."""

    OK = 0
    """Every input read completely, no abnormal connection."""
    FINDINGS = 1
    """Abnormal connections found (reset, timeout, not established, or a diagnosed cause)."""
    USAGE = 2
    """Bad command line (click's usage error)."""
    PARTIAL_INPUT = 3
    """A capture was truncated or corrupt: the analysis of its readable part was printed."""
    NO_INPUT = 4
    """An input could not be read at all (missing, unreadable, not a capture)."""


_SEVERITY = (ExitStatus.OK, ExitStatus.FINDINGS, ExitStatus.PARTIAL_INPUT, ExitStatus.NO_INPUT)


def most_severe(statuses: Iterable[ExitStatus]) -> ExitStatus:
    """The status that wins when several inputs are analysed in one run."""
    return max(statuses, key=lambda status: _SEVERITY.index(status), default=ExitStatus.OK)


@dataclass(frozen=True, slots=True)
class InputFailure:
    """Why reading an input stopped early (or never started)."""

    kind: str
    """Exception class name (``TruncatedCaptureError``, ``FileNotFoundError``...)."""
    message: str
    """The one-line message for people."""
    nothing_read: bool
    """True when no record could be used at all (the input is unreadable, not merely cut short)."""


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything whyreset found in one input."""

    source: str
    """Path, or ``-`` for standard input."""
    connections: tuple[Connection, ...]
    """Every TCP connection, in order of first packet (``Connection.index``)."""
    findings: dict[str, Finding]
    """Diagnoses by connection uid (connections that ended well have none)."""
    report: ReadReport
    """What the reader saw besides TCP segments: counts, skips, limits, the error that stopped it."""
    icmp_errors: tuple[IcmpError, ...]
    """ICMP/ICMPv6 errors quoting TCP segments."""
    diagnosed: bool
    """Whether a diagnoser ran (False when disabled or not available)."""
    failure: InputFailure | None = None
    """Set when reading stopped early; ``report.error`` carries the same message."""
    warnings: tuple[str, ...] = ()
    """Problems of whyreset itself worth telling (e.g. the diagnosis module failed to load)."""

    def finding(self, uid: str) -> Finding | None:
        return self.findings.get(uid)

    @property
    def abnormal(self) -> tuple[Connection, ...]:
        """Connections that ended badly (see `whyreset.report.jsonout.is_abnormal`)."""
        return tuple(conn for conn in self.connections if is_abnormal(conn, self.findings.get(conn.uid)))

    @property
    def status(self) -> ExitStatus:
        """This input's exit status."""
        if self.failure is not None:
            return ExitStatus.NO_INPUT if self.failure.nothing_read else ExitStatus.PARTIAL_INPUT
        return ExitStatus.FINDINGS if self.abnormal else ExitStatus.OK

    def records(self, *, show_payload: bool = False) -> list[JsonRecord]:
        """The JSON objects (schema v1, docs/json-schema.md), one per connection, in connection order."""
        return list(self.iter_records(show_payload=show_payload))

    def iter_records(self, *, show_payload: bool = False) -> Iterator[JsonRecord]:
        """`records`, one at a time (a writer that streams them never holds them all)."""
        for conn in self.connections:
            finding = self.findings.get(conn.uid)
            yield connection_record(conn, finding, source=self.source, show_payload=show_payload)


# --- diagnosis adapter --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Diagnoser:
    """The catalogue's entry points, as found in ``whyreset.diagnose``."""

    diagnose: Callable[[Connection, Any], Finding | None]
    """``diagnose(connection, context) -> Finding | None``."""
    build_context: Callable[[list[Connection], list[IcmpError]], Any] | None
    """``build_context(connections, icmp_errors)``: the capture-wide context in one call."""
    context_class: Callable[[], Any] | None
    """``DiagnosisContext()`` with ``observe(connection)`` and ``add_icmp(errors)``: the same, built as
    connections stream by (what the memory-bounded two-pass analysis needs)."""

    @property
    def can_stream(self) -> bool:
        return self.context_class is not None

    def new_context(self) -> Any:
        assert self.context_class is not None
        return self.context_class()

    def run(self, connections: list[Connection], icmp_errors: list[IcmpError]) -> dict[str, Finding]:
        """Diagnose every connection of a capture (findings by uid)."""
        # The context is capture-wide (per-host TTL profiles, listening ports, reset clusters): build it
        # from every connection first, then diagnose each one against it.
        if self.build_context is not None:
            context = self.build_context(connections, icmp_errors)
        else:
            context = self.new_context()
            for conn in connections:
                context.observe(conn)
            context.add_icmp(icmp_errors)
        findings: dict[str, Finding] = {}
        for conn in connections:
            finding = self.diagnose(conn, context)
            if finding is not None:
                findings[conn.uid] = finding
        return findings


_DIAGNOSER_MODULES = ("whyreset.diagnose", "whyreset.diagnose.verdict")


def load_diagnoser() -> tuple[Diagnoser | None, str | None]:
    """Find ``diagnose(connection, context)`` and its context builder in the catalogue package.

    Returns (diagnoser, warning). A module that does not exist yet is not an error (the cause stays null); a
    module that exists but raises while importing is a bug and comes back as a warning.
    """
    for module_name in _DIAGNOSER_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # the module itself is absent: not written yet
            return None, f"diagnosis disabled: importing {module_name} failed: {exc!r}"
        except Exception as exc:  # a real bug in the catalogue: tell it, keep analysing
            return None, f"diagnosis disabled: importing {module_name} failed: {exc!r}"
        diagnose = getattr(module, "diagnose", None)
        if callable(diagnose):
            build_context = getattr(module, "build_context", None)
            context_class = getattr(module, "DiagnosisContext", None)
            return Diagnoser(
                diagnose=diagnose,
                build_context=build_context if callable(build_context) else None,
                context_class=context_class if _observes(context_class) else None,
            ), None
    return None, None


def _observes(context_class: Any) -> bool:
    return callable(context_class) and all(
        callable(getattr(context_class, name, None)) for name in ("observe", "add_icmp")
    )


# --- the pipeline -------------------------------------------------------------------------------------------


def source_name(source: Source) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return str(getattr(source, "name", "<stream>"))


def _total_bytes(source: Source) -> int | None:
    if isinstance(source, str | os.PathLike) and os.fspath(source) != "-":
        try:
            return os.stat(source).st_size
        except OSError:
            return None
    return None


@dataclass(slots=True)
class _ReadState:
    """What `iter_connections` learnt while streaming, for the caller to pick up at the end."""

    report: ReadReport = field(default_factory=ReadReport)
    icmp_errors: list[IcmpError] = field(default_factory=list)
    failure: InputFailure | None = None


def iter_connections(
    source: Source,
    state: _ReadState | None = None,
    *,
    progress: ProgressCallback | None = None,
    chunk_records: int = CHUNK_RECORDS,
) -> Iterator[Connection]:
    """Yield connections as the tracker finishes them (not in index order), then the rest at end of input.

    Reading errors never escape: they end the stream and are recorded in ``state`` (and
    ``state.report.error``).
    """
    from whyreset.core.tracker import ConnectionTracker
    from whyreset.ingest import iter_capture

    state = state if state is not None else _ReadState()
    name = source_name(source)
    state.report.source = name
    total = _total_bytes(source)
    tracker = ConnectionTracker()
    ingest_source: Any = os.fspath(source) if isinstance(source, os.PathLike) else source
    try:
        for chunk in iter_capture(ingest_source, chunk_records=chunk_records):
            state.report = chunk.report
            state.icmp_errors.extend(chunk.icmp_errors)
            yield from tracker.feed(chunk)
            if progress is not None:
                progress(chunk.report.bytes_read, total)
    except CaptureError as exc:
        state.failure = _capture_failure(exc, state.report)
    except OSError as exc:
        message = f"cannot read {name}: {exc.strerror or exc}"
        state.failure = InputFailure(type(exc).__name__, message, nothing_read=state.report.records == 0)
        state.report.error = state.report.error or message
    yield from tracker.finish()
    if progress is not None and total is not None and state.failure is None:
        progress(total, total)


def _capture_failure(exc: CaptureError, report: ReadReport) -> InputFailure:
    message = exc.describe()
    if report.error is None:
        report.error = message
        report.error_offset = exc.offset
        report.error_record = exc.record
    unusable = isinstance(exc, UnknownFormatError | UnsupportedLinkTypeError)
    nothing_read = unusable or (report.records == 0 and report.tcp_segments == 0)
    return InputFailure(type(exc).__name__, message, nothing_read=nothing_read)


def analyze(
    source: Source,
    *,
    diagnose: bool = True,
    progress: ProgressCallback | None = None,
) -> Analysis:
    """Analyse one capture: a path, ``-`` for standard input, or a binary file object."""
    state = _ReadState()
    connections = sorted(iter_connections(source, state, progress=progress), key=lambda conn: conn.index)
    findings: dict[str, Finding] = {}
    warnings: list[str] = []
    diagnosed = False
    if diagnose:
        diagnoser, warning = load_diagnoser()
        if warning is not None:
            warnings.append(warning)
        if diagnoser is not None:
            findings = diagnoser.run(connections, state.icmp_errors)
            diagnosed = True
    _conclude(state, source)
    return Analysis(
        source=source_name(source),
        connections=tuple(connections),
        findings=findings,
        report=state.report,
        icmp_errors=tuple(state.icmp_errors),
        diagnosed=diagnosed,
        failure=state.failure,
        warnings=tuple(warnings),
    )


def _conclude(state: _ReadState, source: Source) -> None:
    """Last checks on a finished read."""
    if not state.report.source:
        state.report.source = source_name(source)
    report = state.report
    if state.failure is None and report.format.startswith(TEXT_FORMAT) and report.records == 0:
        # The text reader accepts anything that is not binary; with not a single packet line, the input was
        # most likely not tcpdump output at all: say so rather than report an empty capture.
        message = "no tcpdump packet line found in the text input"
        state.failure = InputFailure("NoPacketsFound", message, nothing_read=True)
        report.error = message


class AnalysisStream:
    """`analyze` with bounded memory: iterate it for (connection, finding) pairs as connections end.

    For a capture file and a diagnoser that can build its context incrementally, the file is read **twice**:
    the first pass folds every connection into the capture-wide context and forgets it, the second diagnoses
    each connection against the complete context as the tracker finishes it, and forgets it once yielded. So
    memory follows the connections open at a time, not the capture, at the price of reading and tracking
    twice.
    Standard input, file objects, diagnosers without an incremental context, and ``allow_two_passes=False``
    are analysed in one pass and held in memory (as `analyze` does), then yielded in index order.

    ``live=True`` reads once and yields each connection as soon as the tracker finishes it, diagnosed against
    the context gathered *so far* (for a pipe from a running tcpdump): rules that look at what happened later
    in the capture (a listener answering again, later refusals, a burst of resets still to come) see less, so
    a diagnosis can differ from the one the complete capture gives.

    Pairs come in the order connections end (``Connection.index`` gives the order of first packets). After
    the iteration: `report`, `failure`, `warnings`, `diagnosed`, `connections`, `abnormal` and `status`.
    """

    def __init__(
        self,
        source: Source,
        *,
        diagnose: bool = True,
        progress: ProgressCallback | None = None,
        allow_two_passes: bool = True,
        live: bool = False,
    ):
        self.source = source
        self._allow_two_passes = allow_two_passes
        self._live_mode = live
        self.name = source_name(source)
        self._diagnose = diagnose
        self._progress = progress
        self.report = ReadReport(source=self.name)
        self.failure: InputFailure | None = None
        self.warnings: list[str] = []
        self.diagnosed = False
        self.connections = 0
        self.abnormal = 0
        self.two_pass = False

    @property
    def status(self) -> ExitStatus:
        if self.failure is not None:
            return ExitStatus.NO_INPUT if self.failure.nothing_read else ExitStatus.PARTIAL_INPUT
        return ExitStatus.FINDINGS if self.abnormal else ExitStatus.OK

    def __iter__(self) -> Iterator[tuple[Connection, Finding | None]]:
        diagnoser: Diagnoser | None = None
        if self._diagnose:
            diagnoser, warning = load_diagnoser()
            if warning is not None:
                self.warnings.append(warning)
        rereadable = isinstance(self.source, str | os.PathLike) and os.path.isfile(self.source)
        streamable = diagnoser is not None and diagnoser.can_stream
        if diagnoser is not None and streamable and self._live_mode:
            pairs = self._live(diagnoser)
        elif diagnoser is not None and streamable and rereadable and self._allow_two_passes:
            self.two_pass = True
            pairs = self._two_passes(diagnoser)
        elif diagnoser is None:
            pairs = self._one_pass_undiagnosed()
        else:
            pairs = self._in_memory()
        for connection, finding in pairs:
            self.connections += 1
            self.abnormal += is_abnormal(connection, finding)
            yield connection, finding

    def _two_passes(self, diagnoser: Diagnoser) -> Iterator[tuple[Connection, Finding | None]]:
        context = diagnoser.new_context()
        first = _ReadState()
        for conn in iter_connections(self.source, first, progress=self._scaled_progress(0)):
            context.observe(conn)
        context.add_icmp(first.icmp_errors)
        self.diagnosed = True
        state = _ReadState()
        for conn in iter_connections(self.source, state, progress=self._scaled_progress(1)):
            yield conn, diagnoser.diagnose(conn, context)
        self._finish(state)

    def _live(self, diagnoser: Diagnoser) -> Iterator[tuple[Connection, Finding | None]]:
        context = diagnoser.new_context()
        self.diagnosed = True
        state = _ReadState()
        icmp_folded = 0
        for conn in iter_connections(self.source, state, progress=self._progress):
            if len(state.icmp_errors) > icmp_folded:
                context.add_icmp(state.icmp_errors[icmp_folded:])
                icmp_folded = len(state.icmp_errors)
            context.observe(conn)
            yield conn, diagnoser.diagnose(conn, context)
        self._finish(state)

    def _one_pass_undiagnosed(self) -> Iterator[tuple[Connection, Finding | None]]:
        state = _ReadState()
        for conn in iter_connections(self.source, state, progress=self._progress):
            yield conn, None
        self._finish(state)

    def _in_memory(self) -> Iterator[tuple[Connection, Finding | None]]:
        analysis = analyze(self.source, diagnose=self._diagnose, progress=self._progress)
        self.report, self.failure, self.diagnosed = analysis.report, analysis.failure, analysis.diagnosed
        self.warnings.extend(warning for warning in analysis.warnings if warning not in self.warnings)
        for conn in analysis.connections:
            yield conn, analysis.findings.get(conn.uid)

    def _finish(self, state: _ReadState) -> None:
        _conclude(state, self.source)
        self.report, self.failure = state.report, state.failure

    def _scaled_progress(self, half: int) -> ProgressCallback | None:
        """Each pass reads the whole file: show them as the two halves of one bar."""
        progress = self._progress
        if progress is None:
            return None

        def report(done: int, total: int | None) -> None:
            if total is None:
                progress(done, None)
            else:
                progress(half * total + done, 2 * total)

        return report


def analyze_path(path: str | os.PathLike[str], *, diagnose: bool = True) -> Analysis:
    """`analyze` for a file on disk (the lab's entry point)."""
    return analyze(os.fspath(path), diagnose=diagnose)
