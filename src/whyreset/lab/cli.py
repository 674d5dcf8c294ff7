"""``whyreset lab``: list the scenarios, run one and compare, record a corpus.

``run`` puts three witnesses side by side: what the kernel said (reset events with their reasons, TcpExt
counters), what each application saw (exceptions, errnos, EOFs, timeouts), and what the capture analysis
concludes (``whyreset.analysis.analyze_path``), with each connection's agreement with the truth marked.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from whyreset.errors import LabError, WhyresetError
from whyreset.lab.compare import ConnectionCheck, check_truth
from whyreset.lab.runner import LabRun, missing_needs, run_scenario
from whyreset.lab.scenario import Need, Scenario, Truth
from whyreset.lab.scenarios import all_scenarios

HIDDEN_CALLS = frozenset({"bind", "listen"})
"""Calls that always succeed in the lab and would only pad the table."""


PIPED_WIDTH = 160
"""Tables written to a pipe or file are not folded to 80 columns (scenario names and addresses stay whole)."""


def _console() -> Console:
    return Console(highlight=False, width=None if sys.stdout.isatty() else PIPED_WIDTH)


@click.group("lab")
def lab() -> None:
    """Reproduce each cause with real kernel sockets and check the analysis against the kernel's truth."""


@lab.command("list")
def list_command() -> None:
    """The scenarios: name, cause id, what they need, typical duration."""
    table = Table(title="lab scenarios")
    table.add_column("scenario", no_wrap=True)
    table.add_column("cause", no_wrap=True)
    table.add_column("needs")
    table.add_column("duration", no_wrap=True)
    table.add_column("what happens", overflow="fold")
    for scenario in all_scenarios():
        needs = " ".join(sorted(str(need) for need in scenario.needs if need is not Need.ROOT))
        runnable = "" if not missing_needs(scenario.needs) else " [dim](cannot run here)[/dim]"
        table.add_row(
            scenario.name + runnable,
            str(scenario.cause or "— (negative)"),
            needs,
            f"{scenario.duration_s:.1f} s",
            scenario.summary,
        )
    _console().print(table)


@lab.command("run")
@click.argument("scenario")
@click.option(
    "--keep", "keep", type=click.Path(file_okay=False, path_type=Path), help="Keep pcaps and truth here."
)
@click.option(
    "--seed", default=1, show_default=True, help="Seed of every varied choice (addresses, ports...)."
)
def run_command(scenario: str, keep: Path | None, seed: int) -> None:
    """Run SCENARIO and show the kernel, the applications and the capture analysis side by side."""
    try:
        run = run_scenario(scenario, seed=seed, keep_dir=keep)
    except LabError as exc:
        raise click.ClickException(str(exc)) from None
    console = _console()
    truth = run.truth
    console.print(
        f"[bold]{truth.scenario}[/bold]  cause={truth.cause or '— (negative)'}  seed={truth.seed}  "
        f"kernel={truth.kernel}  files in {run.directory}"
    )
    start = min((call.t_ns for call in truth.socket_calls), default=0)
    console.print(kernel_table(truth, start))
    console.print(apps_table(truth, start))
    console.print(analysis_table(run))
    for note in truth.notes:
        console.print(f"[dim]note:[/dim] {note}")


def _ms(t_ns: int, start_ns: int) -> str:
    return f"{(t_ns - start_ns) / 1e6:9.3f}"


def kernel_table(truth: Truth, start_ns: int) -> Table:
    """Reset events with their reasons, then the counters that moved."""
    table = Table(title="kernel (tracefs, /proc/net/netstat)")
    for column in ("ms", "host", "event", "socket → peer", "state", "reason"):
        table.add_column(column)
    for event in truth.kernel_resets:
        table.add_row(
            _ms(event.t_ns, start_ns),
            event.netns,
            event.event,
            f"{event.src} → {event.dst}",
            event.state or "",
            event.reason or "",
        )
    drops: dict[str, int] = {}
    for drop in truth.kernel_drops:
        drops[drop.reason] = drops.get(drop.reason, 0) + 1
    if drops:
        table.add_row("", "", "drops", ", ".join(f"{name}×{count}" for name, count in drops.items()), "", "")
    for host, counters in truth.counters.items():
        shown = {name: value for name, value in counters.items() if "Abort" in name or "Listen" in name}
        shown.update({name: counters[name] for name in ("OutRsts", "EstabResets") if name in counters})
        if shown:
            table.add_row("", host, "counters", " ".join(f"{k}+{v}" for k, v in shown.items()), "", "")
    return table


def apps_table(truth: Truth, start_ns: int) -> Table:
    """Each application's socket calls and what they returned."""
    table = Table(title="applications")
    for column in ("ms", "app", "call", "result", "errno", "bytes", "note"):
        table.add_column(column, overflow="fold")
    for call in truth.socket_calls:
        if call.call in HIDDEN_CALLS and call.result == "ok":
            continue
        style = "" if call.result in ("ok", "eof") else "bold red"
        table.add_row(
            _ms(call.t_ns, start_ns),
            call.app,
            call.call,
            f"[{style}]{call.result}[/{style}]" if style else call.result,
            call.errno or "",
            "" if call.nbytes is None else str(call.nbytes),
            call.note[:60],
        )
    return table


def analyze_run(run: LabRun) -> tuple[list[ConnectionCheck], str | None]:
    """Checks of every truth connection against the analysis of the run's captures; (checks, why not) ."""
    try:
        from whyreset.analysis import analyze_path
    except ImportError as exc:
        return [], f"capture analysis not available: {exc}"
    checks: list[ConnectionCheck] = []
    for point, pcap in run.pcaps.items():
        try:
            analysis = analyze_path(pcap)
        except (WhyresetError, ImportError, NotImplementedError) as exc:
            return [], f"capture analysis failed: {exc}"
        found = check_truth(run.truth, analysis.connections, analysis.findings, point)
        checks = (
            found
            if not checks
            else [new if new.found else old for old, new in zip(checks, found, strict=True)]
        )
    return checks, None


def _senders(senders: tuple[str, ...]) -> str:
    return ",".join(senders) or "-"


def _mark(ok: bool) -> str:
    return "[green]✓[/green]" if ok else "[red]✗[/red]"


def analysis_table(run: LabRun) -> Table:
    checks, problem = analyze_run(run)
    table = Table(title="capture analysis vs truth" + (f" — {problem}" if problem else ""))
    for column in ("connection", "outcome (seen/truth)", "RST by", "final states", "cause", "agree"):
        table.add_column(column, overflow="fold")
    for check in checks:
        truth = check.truth
        if not check.found:
            table.add_row(f"{truth.orig} → {truth.resp}", "not in the analysis", "", "", "", _mark(False))
            continue
        states = check.final_states or {}
        table.add_row(
            f"{truth.orig} → {truth.resp}",
            f"{check.outcome} / {truth.outcome} {_mark(check.outcome_ok)}",
            f"{_senders(check.rst_senders)} / {_senders(truth.rst_senders)} {_mark(check.rst_ok)}",
            " ".join(f"{side}={state}" for side, state in states.items()) + f" {_mark(check.states_ok)}",
            f"{check.cause or '-'} / {truth.cause or '-'} {_mark(check.cause_ok)}",
            _mark(check.model_ok and check.cause_ok),
        )
    return table


@lab.command("record")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=1, show_default=True)
@click.option("--only", "pattern", default="*", show_default=True, help="Shell pattern of scenario names.")
def record_command(directory: Path, seed: int, pattern: str) -> None:
    """Record pcaps + <scenario>.truth.json for every scenario that runs here, and an index.json."""
    directory.mkdir(parents=True, exist_ok=True)
    console = _console()
    entries: list[dict[str, Any]] = []
    kernel = ""
    for scenario in select(pattern):
        entry = record_one(scenario, seed, directory)
        kernel = kernel or str(entry.get("kernel", ""))
        entries.append(entry)
        status = "[green]ok[/green]" if entry["ok"] else f"[yellow]skipped[/yellow]: {entry['error']}"
        console.print(f"{scenario.name}: {status}")
    write_index(directory, seed, kernel, pattern, entries)
    if not any(entry["ok"] for entry in entries):
        raise click.ClickException("no scenario could be recorded")


def write_index(directory: Path, seed: int, kernel: str, pattern: str, entries: list[dict[str, Any]]) -> None:
    """Write index.json; a partial re-record (``--only``) updates its entries in an index of the same seed."""
    path = directory / "index.json"
    merged: dict[str, dict[str, Any]] = {}
    command = record_command_line(directory, seed, pattern)
    if pattern != "*" and path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous.get("seed") == seed:
            merged = {entry["name"]: entry for entry in previous.get("scenarios", [])}
            command = previous.get("command", command)
    merged.update((entry["name"], entry) for entry in entries)
    index = {
        "seed": seed,
        "kernel": kernel,
        "command": command,
        "scenarios": [merged[name] for name in sorted(merged)],
    }
    path.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")


def record_command_line(directory: Path, seed: int, pattern: str) -> str:
    """The command that re-records this corpus (for its index and README)."""
    words = ["whyreset", "lab", "record", str(directory), "--seed", str(seed)]
    if pattern != "*":
        words += ["--only", pattern]
    return shlex.join(words)


def select(pattern: str) -> list[Scenario]:
    chosen = [scenario for scenario in all_scenarios() if fnmatch.fnmatchcase(scenario.name, pattern)]
    if not chosen:
        raise click.ClickException(f"no scenario matches {pattern!r}")
    return chosen


def record_one(scenario: Scenario, seed: int, directory: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": scenario.name, "cause": scenario.cause}
    try:
        run = run_scenario(scenario.name, seed=seed, keep_dir=directory)
    except LabError as exc:
        return {**entry, "ok": False, "error": str(exc)}
    entry.update(
        ok=True,
        kernel=run.truth.kernel,
        truth=run.truth_path.name,
        captures=run.truth.captures,
        kernel_reasons=sorted({event.reason for event in run.truth.kernel_resets if event.reason}),
    )
    return entry
