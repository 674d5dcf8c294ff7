"""The pipeline: read a capture, rebuild its connections, diagnose the ones that ended badly.

    capture ──► ingest.iter_capture (chunks) ──► core.tracker.ConnectionTracker ──► diagnose

Everything is done in one pass over the input. `AnalysisStream` is the bounded-memory form the CLI uses: it
yields (connection, finding) pairs as they are decided (clean connections as they end, abnormal ones once the
capture-wide context is complete, see its docstring). `analyze` returns an `Analysis` holding every
connection: the findings by uid, the reader's report, the ICMP errors, and `Analysis.records()`, the JSON
objects of docs/json-schema.md. `iter_connections` yields the tracker's connections without diagnosis.

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
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import IO, Any

import numpy as np

from whyreset.core.connection import Connection
from whyreset.diagnose.finding import Finding
from whyreset.errors import CaptureError, UnknownFormatError, UnsupportedLinkTypeError
from whyreset.forkmap import map_in_halves
from whyreset.ids import Outcome
from whyreset.model import Array, Capture, IcmpError, LazyRows, ReadReport, gather_plan
from whyreset.report.jsonout import JsonRecord, connection_record, is_abnormal

Source = str | os.PathLike[str] | IO[bytes]
TEXT_FORMAT = "tcpdump-text"
CHUNK_RECORDS = 32768
"""Records per chunk handed to the tracker: smaller chunks lower the peak memory of its vectorised passes and of
the reader's process (32,768 against 65,536: -43 MB on bench-1m, -63 MB on web-1m, time within the noise; at
16,384 the per-chunk costs start to show)."""
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
    context_class: Callable[[], Any]
    """``DiagnosisContext()``, with ``observe(connection)``, ``observe_many(connections)`` (the same, for a list at
    once) and ``add_icmp(errors)``: the capture-wide context, built as connections stream by."""

    def new_context(self) -> Any:
        return self.context_class()


_DIAGNOSER_MODULES = ("whyreset.diagnose", "whyreset.diagnose.verdict")


def load_diagnoser() -> tuple[Diagnoser | None, str | None]:
    """Find ``diagnose(connection, context)`` and its ``DiagnosisContext`` in the catalogue package.

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
        context_class = getattr(module, "DiagnosisContext", None)
        if callable(diagnose) and context_class is not None and _observes(context_class):
            return Diagnoser(diagnose=diagnose, context_class=context_class), None
    return None, None


def _observes(context_class: Any) -> bool:
    return callable(context_class) and all(
        callable(getattr(context_class, name, None)) for name in ("observe", "observe_many", "add_icmp")
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
    for batch in iter_connection_batches(source, state, progress=progress, chunk_records=chunk_records):
        yield from batch


def iter_connection_batches(
    source: Source,
    state: _ReadState | None = None,
    *,
    progress: ProgressCallback | None = None,
    chunk_records: int = CHUNK_RECORDS,
    prefetch: bool | None = None,
) -> Iterator[list[Connection]]:
    """`iter_connections`, one list per chunk the tracker was fed (the connections it finished then).

    ICMP errors read so far are in ``state.icmp_errors`` when a batch is yielded. ``prefetch`` reads the file
    in a second process while this one analyses (`whyreset.ingest.prefetch`): None decides by the input (a
    large regular file), True forces it for any file path, False never.
    """
    from whyreset.core.tracker import ConnectionTracker

    state = state if state is not None else _ReadState()
    name = source_name(source)
    state.report.source = name
    total = _total_bytes(source)
    tracker = ConnectionTracker()
    try:
        for chunk in _chunks(source, chunk_records, prefetch):
            state.report = chunk.report
            state.icmp_errors.extend(chunk.icmp_errors)
            finished = tracker.feed(chunk)
            if finished:
                yield finished
            if progress is not None:
                progress(chunk.report.bytes_read, total)
    except CaptureError as exc:
        state.failure = _capture_failure(exc, state.report)
    except OSError as exc:
        message = f"cannot read {name}: {exc.strerror or exc}"
        state.failure = InputFailure(type(exc).__name__, message, nothing_read=state.report.records == 0)
        state.report.error = state.report.error or message
    yield tracker.finish()
    if progress is not None and total is not None and state.failure is None:
        progress(total, total)


def _chunks(source: Source, chunk_records: int, prefetch: bool | None) -> Iterator[Capture]:
    from whyreset.ingest import iter_capture
    from whyreset.ingest.prefetch import iter_capture_prefetched, prefetch_worthwhile

    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if path != "-" and (prefetch_worthwhile(path) if prefetch is None else prefetch):
            return iter_capture_prefetched(path, chunk_records=chunk_records)
        return iter_capture(path, chunk_records=chunk_records)
    return iter_capture(source, chunk_records=chunk_records)


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
    """Analyse one capture: a path, ``-`` for standard input, or a binary file object.

    Every connection is held (the `Analysis` returns them all); `AnalysisStream` is the bounded-memory form.
    """
    stream = AnalysisStream(source, diagnose=diagnose, progress=progress, max_deferred=None)
    pairs = sorted(stream, key=lambda pair: pair[0].index)
    return Analysis(
        source=stream.name,
        connections=tuple(conn for conn, _ in pairs),
        findings={conn.uid: finding for conn, finding in pairs if finding is not None},
        report=stream.report,
        icmp_errors=tuple(stream.icmp_errors),
        diagnosed=stream.diagnosed,
        failure=stream.failure,
        warnings=tuple(stream.warnings),
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


def needs_complete_context(conn: Connection) -> bool:
    """Whether the diagnosis of ``conn`` may depend on the rest of the capture.

    Mirrors the first test of ``whyreset.diagnose.verdict.diagnose``: a clean close without any RST has no
    finding whatever the context says, so it can be diagnosed and written as soon as it ends. Every other
    connection (resets, timeouts, refusals, open or half-closed ones a rule may still flag) waits for the
    capture-wide context to be complete.
    """
    return conn.outcome is not Outcome.CLEAN or bool(conn.resets)


DEFAULT_MAX_DEFERRED = 50_000
"""Connections held back for the complete context, at most (see `AnalysisStream`). A deferred connection costs
~3 kB (its objects and compacted rows, ~6 packets on the benchmark's stress mix; its events and timelines are
made only when it is diagnosed): ~150 MB at this bound. A port scan or a flood of refused connections is what
reaches it."""


class AnalysisStream:
    """The analysis in one pass, as (connection, finding) pairs, with memory bounded by what must wait.

    The capture is read and tracked once. Each connection the tracker finishes is folded into the diagnosis
    context (per-host TTLs, listening ports, reset clusters, ICMP errors), then:

    * a connection whose diagnosis cannot depend on the rest of the capture (a clean close without RST, see
      `needs_complete_context`) is yielded at once, and forgotten by the caller;
    * any other one is **deferred**: kept with a compact copy of its own packet rows (not the tracker's whole
      chunk) until the end of the capture, when the context is complete; then each is diagnosed and yielded.

    Memory thus follows the connections open at a time plus the abnormal ones. ``max_deferred`` bounds the
    latter: beyond it the oldest deferred connection is diagnosed against the context gathered so far and
    yielded (`early_diagnoses` counts them; a warning says so). Rules that look at what happens later in the
    capture (a listener answering again, later refusals, a burst of resets still to come) then see less, so
    such a diagnosis can differ from the one the complete capture gives. ``max_deferred=None`` holds every
    connection without compacting it (what `analyze` does: it returns them all anyway).

    ``live=True`` yields every connection as soon as the tracker finishes it, diagnosed against the context
    so far (for a pipe from a running tcpdump), with the same caveat.

    ``parallel`` diagnoses the deferred connections on two cores (`whyreset.forkmap`: a forked child diagnoses
    the second half while this process yields the first). The pairs and their order are the same either way;
    the cost is memory:
    the child's copy-on-write pages grow to about the deferred connections' own size (bench-1m: ~+300 MB for
    ~42,000 connections, for ~1.5 s saved).

    Pairs come in the order they are decided: clean connections as they end, the deferred ones after the
    capture is read (``Connection.index`` gives the order of first packets). After the iteration: `report`,
    `failure`, `warnings`, `diagnosed`, `connections`, `abnormal`, `early_diagnoses`, `icmp_errors` and
    `status`.
    """

    def __init__(
        self,
        source: Source,
        *,
        diagnose: bool = True,
        progress: ProgressCallback | None = None,
        live: bool = False,
        max_deferred: int | None = DEFAULT_MAX_DEFERRED,
        parallel: bool = False,
    ):
        if max_deferred is not None and max_deferred < 0:
            raise ValueError("max_deferred must be >= 0 (or None: no limit)")
        self.source = source
        self.name = source_name(source)
        self._diagnose = diagnose
        self._progress = progress
        self._live_mode = live
        self._max_deferred = max_deferred
        self._parallel = parallel
        self.report = ReadReport(source=self.name)
        self.failure: InputFailure | None = None
        self.warnings: list[str] = []
        self.icmp_errors: list[IcmpError] = []
        self.diagnosed = False
        self.connections = 0
        self.abnormal = 0
        self.early_diagnoses = 0
        """Deferred connections diagnosed before the end of the capture because `max_deferred` was reached."""

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
        state = _ReadState()
        batches = iter_connection_batches(self.source, state, progress=self._progress)
        if diagnoser is None:
            pairs: Iterator[tuple[Connection, Finding | None]] = ((conn, None) for batch in batches for conn in batch)
        else:
            self.diagnosed = True
            pairs = self._diagnosed(diagnoser, batches, state)
        for connection, finding in pairs:
            self.connections += 1
            self.abnormal += is_abnormal(connection, finding)
            yield connection, finding
        _conclude(state, self.source)
        self.report, self.failure, self.icmp_errors = state.report, state.failure, state.icmp_errors

    def _diagnosed(
        self, diagnoser: Diagnoser, batches: Iterator[list[Connection]], state: _ReadState
    ) -> Iterator[tuple[Connection, Finding | None]]:
        context = diagnoser.new_context()
        diagnose = diagnoser.diagnose
        deferred: deque[Connection] = deque()
        limit = self._max_deferred
        icmp_folded = 0
        for batch in batches:
            if len(state.icmp_errors) > icmp_folded:
                context.add_icmp(state.icmp_errors[icmp_folded:])
                icmp_folded = len(state.icmp_errors)
            waiting: list[Connection] = []
            if not self._live_mode:  # nobody is diagnosed before the batch is over: fold it in at once
                context.observe_many(batch)
            for conn in batch:
                if self._live_mode:  # each one against the context up to itself
                    context.observe(conn)
                if self._live_mode or not needs_complete_context(conn):
                    yield conn, diagnose(conn, context)
                else:
                    waiting.append(conn)
            deferred.extend(compact_packets(waiting) if limit is not None else waiting)
            while limit is not None and len(deferred) > limit:
                self.early_diagnoses += 1
                oldest = deferred.popleft()
                yield oldest, diagnose(oldest, context)
        if self.early_diagnoses:
            self.warnings.append(
                f"{self.early_diagnoses} abnormal connection(s) were diagnosed before the end of the capture "
                f"(more than {limit} waiting): their diagnosis used the capture up to their end only"
            )
        if not self._parallel:
            while deferred:  # each one released once written: its events and timelines are made now
                oldest = deferred.popleft()
                yield oldest, diagnose(oldest, context)
            return
        held = list(deferred)
        deferred.clear()
        yield from map_in_halves(lambda conn: diagnose(conn, context), held)


# --- compact deferred connections ---------------------------------------------------------------------------


def compact_packets(connections: list[Connection]) -> list[Connection]:
    """Move these connections' packet rows into one table of their own (the same connections are returned).

    A connection's ``packets`` are views of the tracker's chunk, and the fields the core makes on first read
    (events, state timelines) read the chunk's arrays until then: holding one connection would hold the whole
    chunk (every other connection's rows too). The rows are copied, one connection after the other, and the
    core points those fields at the copy (`whyreset.core.build.detach_details`), so only these connections'
    rows are kept and the fields are still made only if read. The rows are equal, only their storage changes,
    so the fields are swapped in place (``object.__setattr__``, as frozen dataclasses do in
    ``__post_init__``): ``dataclasses.replace`` would cost more than the copy.
    """
    from whyreset.core.build import detach_details

    if not connections:
        return connections
    ranges = [conn.packets.row_range() for conn in connections]
    sizes = np.fromiter((stop - start for _, start, stop in ranges), np.int64, len(ranges))
    plan = gather_plan(ranges, np.cumsum(sizes) - sizes)  # one gather per column and chunk, not per connection
    columns: dict[str, Array] = {}
    for name, column in ranges[0][0].items():
        columns[name] = np.empty((int(sizes.sum()), *column.shape[1:]), column.dtype)
        for table, _, rows, places in plan:
            columns[name][places] = table[name][rows]
    from_orig = np.concatenate([conn.from_orig for conn in connections])
    detach_details(connections, columns, from_orig)
    start = 0
    for conn in connections:
        stop = start + len(conn.from_orig)
        object.__setattr__(conn, "packets", LazyRows(columns, start, stop))
        object.__setattr__(conn, "from_orig", from_orig[start:stop])
        start = stop
    return connections


def analyze_path(path: str | os.PathLike[str], *, diagnose: bool = True) -> Analysis:
    """`analyze` for a file on disk (the lab's entry point)."""
    return analyze(os.fspath(path), diagnose=diagnose)
