"""The ``whyreset`` command line.

``whyreset analyze FILE... [-]`` prints a summary per input (or JSON lines with ``--json``, Zeek logs with
``--zeek DIR``) and exits with an `ExitStatus`: 0 ok, 1 abnormal connections found, 2 usage error, 3 a capture
was truncated or corrupt (its readable part was analysed), 4 an input could not be read at all.

Other command groups live with their owners and are registered here when importable: ``lab``
(whyreset.lab.cli), ``explain`` and ``rules`` (whyreset.diagnose.cli). A module that is not written yet is
skipped quietly; one that exists but fails to import is a bug: it is reported on stderr, and ``analyze`` keeps
working.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Protocol

import click

from whyreset import __version__

if TYPE_CHECKING:
    from rich.console import Console

    from whyreset.analysis import AnalysisStream, ExitStatus, ProgressCallback
    from whyreset.report.zeek import ZeekLogs

STDIN = "-"
PROGRESS_MIN_BYTES = 16 * 1024 * 1024
"""Files smaller than this are read too fast for a progress bar to help."""


SUBCOMMAND_MODULES = {"lab": "whyreset.lab.cli", "explain": "whyreset.diagnose.cli", "rules": "whyreset.diagnose.cli"}
"""Commands other packages provide -> the module that defines them (imported when the command is used)."""


class _LazyGroup(click.Group):
    """Imports the other packages' commands only when one is asked for: ``analyze`` need not pay for the lab's
    imports (~30 ms of start-up), and a broken module only breaks its own commands."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SUBCOMMAND_MODULES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in SUBCOMMAND_MODULES:
            _register_subcommands(self, modules=(SUBCOMMAND_MODULES[cmd_name],))
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="whyreset")
def main() -> None:
    """Why did my TCP connection reset?

    Rebuild every TCP connection of a capture and explain each abnormal ending, with the packets as evidence.
    """


@main.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE... | -")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line and connection (docs/json-schema.md).")
@click.option(
    "--zeek",
    "zeek_dir",
    metavar="DIR",
    type=click.Path(file_okay=False, writable=True),
    help="Write conn.log and whyreset.log (Zeek TSV) into DIR.",
)
@click.option("--zeek-json", is_flag=True, help="With --zeek: write the logs as JSON lines (Zeek's use_json).")
@click.option("--all", "list_all", is_flag=True, help="List every connection, not only the abnormal ones.")
@click.option("--show-payload", is_flag=True, help="Show payload text carried by RST segments (hidden by default).")
@click.option("--no-diagnose", is_flag=True, help="Rebuild connections only; no cause analysis.")
@click.option(
    "--max-deferred",
    type=click.IntRange(min=0),
    metavar="N",
    help="Abnormal connections held until the capture's end, when their diagnosis can use all of it "
    "(default 50000, 3-4 kB each); beyond N the oldest is diagnosed with the capture so far, and a "
    "warning says how many were.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1, max=2),
    default=1,
    show_default=True,
    help="2: diagnose the abnormal connections held to the capture's end on two cores (faster when there "
    "are thousands; their memory is copied while it runs).",
)
@click.option(
    "--live",
    is_flag=True,
    help="Print each connection as soon as it ends (for a pipe from a running tcpdump); its diagnosis uses "
    "what the capture has shown so far.",
)
@click.option("--max-listed", default=50, show_default=True, type=click.IntRange(min=0), help="Abnormal rows shown.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: on for large files when stderr is a terminal and not --json).",
)
def analyze(
    files: tuple[str, ...],
    as_json: bool,
    zeek_dir: str | None,
    zeek_json: bool,
    list_all: bool,
    show_payload: bool,
    no_diagnose: bool,
    max_deferred: int | None,
    jobs: int,
    live: bool,
    max_listed: int,
    progress: bool | None,
) -> None:
    """Analyse captures (pcap, pcapng, gzip'd, tcpdump text); "-" reads standard input.

    \b
    Exit status: 0 ok, 1 abnormal connections found, 2 usage error,
    3 truncated/corrupt capture (readable part analysed), 4 unreadable input.
    """
    from rich.console import Console

    from whyreset.analysis import most_severe
    from whyreset.report.zeek import ZeekLogs

    if zeek_json and zeek_dir is None:
        raise click.UsageError("--zeek-json needs --zeek DIR")
    if files.count(STDIN) > 1:
        raise click.UsageError("standard input (-) can be read only once")
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    options = _Options(list_all, max_listed, show_payload, not no_diagnose, max_deferred, live, jobs)
    statuses: list[ExitStatus] = []
    zeek = ZeekLogs(zeek_dir, use_json=zeek_json, show_payload=show_payload) if zeek_dir is not None else None
    try:
        for number, path in enumerate(files, 1):
            with (
                _progress_for(path, err, enabled=_want_progress(progress, path, as_json)) as on_progress,
                _cyclic_gc_paused(collect_after=number < len(files)),
            ):
                if as_json:
                    outcome = _stream_json(path, options, on_progress, zeek)
                else:
                    outcome = _summarise(path, options, on_progress, zeek, out)
            statuses.append(outcome.status)
            _tell_problems(err, path, outcome)
    finally:
        if zeek is not None:
            zeek.close()
    sys.exit(int(most_severe(statuses)))


@dataclass(frozen=True, slots=True)
class _Options:
    list_all: bool
    max_listed: int
    show_payload: bool
    diagnose: bool
    max_deferred: int | None
    """None: the analysis's default (`whyreset.analysis.DEFAULT_MAX_DEFERRED`)."""
    live: bool
    jobs: int


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What the CLI needs to know about one input once its output is written."""

    status: ExitStatus
    failure_message: str | None
    warnings: tuple[str, ...]


def _stream_json(path: str, options: _Options, on_progress: ProgressCallback | None, zeek: ZeekLogs | None) -> _Outcome:
    """JSON lines written as connections are decided: memory stays bounded on large files (see AnalysisStream)."""
    from whyreset.report.jsonout import connection_record, encode_json_line

    stream = _stream(path, options, on_progress)
    out = _binary_stdout()
    for connection, finding in stream:
        record = connection_record(connection, finding, source=stream.name, show_payload=options.show_payload)
        out.write(encode_json_line(record))
        if options.live:
            out.flush()  # someone is watching the pipe
        if zeek is not None:
            zeek.write(connection, finding)
    out.flush()
    failure = stream.failure.message if stream.failure is not None else None
    return _Outcome(stream.status, failure, tuple(stream.warnings))


class _ByteSink(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


def _binary_stdout() -> _ByteSink:
    """Standard output's byte layer (JSON lines are encoded once, to UTF-8 bytes), after its text layer."""
    sys.stdout.flush()
    buffer: IO[bytes] | None = getattr(sys.stdout, "buffer", None)
    return buffer if buffer is not None else _TextAsBytes(sys.stdout)


class _TextAsBytes:
    """A text stream that takes UTF-8 bytes (stdout replaced by an object without ``buffer``)."""

    def __init__(self, text: IO[str]) -> None:
        self.text = text

    def write(self, data: bytes, /) -> int:
        return self.text.write(data.decode())

    def flush(self) -> None:
        self.text.flush()


def _summarise(
    path: str,
    options: _Options,
    on_progress: ProgressCallback | None,
    zeek: ZeekLogs | None,
    out: Console,
) -> _Outcome:
    """The terminal summary: counts over every connection, the first abnormal ones in detail."""
    from whyreset.report.jsonout import is_abnormal
    from whyreset.report.terminal import InputHeader, Summary, connection_block, render_summary

    stream = _stream(path, options, on_progress)
    # Live: connections are printed as they end, and the summary that follows only counts them.
    summary = Summary(list_all=options.list_all, max_listed=0 if options.live else options.max_listed)
    printed = 0
    for connection, finding in stream:
        summary.add(connection, finding)
        wanted = options.list_all or (is_abnormal(connection, finding) and printed < options.max_listed)
        if options.live and wanted:
            out.print(connection_block(connection, finding, options.show_payload))
            printed += 1
        if zeek is not None:
            zeek.write(connection, finding)
    failure = stream.failure.message if stream.failure is not None else None
    header = InputHeader(stream.name, stream.report, stream.diagnosed, failure, tuple(stream.warnings))
    render_summary(out, header, summary, show_payload=options.show_payload)
    return _Outcome(stream.status, failure, tuple(stream.warnings))


def _stream(path: str, options: _Options, on_progress: ProgressCallback | None) -> AnalysisStream:
    from whyreset.analysis import DEFAULT_MAX_DEFERRED, AnalysisStream

    return AnalysisStream(
        path,
        diagnose=options.diagnose,
        progress=on_progress,
        live=options.live,
        max_deferred=options.max_deferred if options.max_deferred is not None else DEFAULT_MAX_DEFERRED,
        parallel=options.jobs > 1,
    )


def _tell_problems(err: Console, path: str, outcome: _Outcome) -> None:
    from whyreset.report.terminal import safe_text

    if outcome.failure_message is not None:
        # One line on stderr, whatever the output format: scripts reading stdout still get valid JSON.
        err.print(safe_text(f"whyreset: {path}: {outcome.failure_message}", "red"))
    for warning in outcome.warnings:
        err.print(safe_text(f"whyreset: warning: {warning}", "yellow"))


@contextmanager
def _cyclic_gc_paused(*, collect_after: bool = True) -> Iterator[None]:
    """Pause Python's cyclic garbage collector while one input is analysed, collect once after it (unless
    ``collect_after`` is False: after the last input the process exits, and a full pass costs ~20 ms).

    The pipeline allocates millions of small acyclic objects (freed by reference counting); the collector's
    repeated scans of everything alive cost ~15-20 % of the run on a large capture and reclaim nothing.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        if collect_after:
            gc.collect()


def _want_progress(requested: bool | None, path: str, as_json: bool) -> bool:
    if requested is not None:
        return requested and not as_json
    if as_json or path == STDIN or not sys.stderr.isatty():
        return False
    try:
        return os.path.getsize(path) >= PROGRESS_MIN_BYTES
    except OSError:
        return False


@contextmanager
def _progress_for(path: str, console: Console, *, enabled: bool) -> Iterator[ProgressCallback | None]:
    """A transient progress bar on stderr, by bytes read."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(os.path.basename(path), total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _register_subcommands(
    group: click.Group, *, warn: IO[str] | None = None, modules: tuple[str, ...] | None = None
) -> None:
    """Add the commands other packages provide (all, or those of ``modules``), without letting one broken module
    break the rest of the CLI: a module that fails to import gives a warning, not a traceback."""
    wanted = modules if modules is not None else tuple(dict.fromkeys(SUBCOMMAND_MODULES.values()))
    for module_name in wanted:
        command_names = [name for name, module in SUBCOMMAND_MODULES.items() if module == module_name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # not written yet
            _warn(warn, f"whyreset: warning: commands {', '.join(command_names)} unavailable: {exc!r}")
            continue
        except Exception as exc:  # a bug in that module: say so, keep the rest of the CLI usable
            _warn(warn, f"whyreset: warning: commands {', '.join(command_names)} unavailable: {exc!r}")
            continue
        for command_name in command_names:
            command = getattr(module, command_name, None)
            if isinstance(command, click.Command):
                group.add_command(command, command_name)


def _warn(stream: IO[str] | None, message: str) -> None:
    print(message, file=stream if stream is not None else sys.stderr)
