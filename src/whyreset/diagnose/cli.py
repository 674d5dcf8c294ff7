"""``whyreset explain`` and ``whyreset rules``: the catalogue on the terminal and as Markdown.

* ``whyreset explain CAUSE`` renders one catalogue entry;
* ``whyreset explain "<error line>"`` maps an error pasted from Java, Python, Go, Node.js, curl or nginx to
  the causes that produce it, and says which capture would decide between them;
* ``whyreset rules`` lists every entry; ``whyreset rules --markdown DIR`` writes docs/causes/*.md.

The main CLI (``whyreset.cli``) registers these two commands.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from whyreset.diagnose.catalogue import CATALOGUE, ENTRIES, CatalogueEntry
from whyreset.diagnose.render import explain_line, symptom_rows, write_markdown
from whyreset.ids import CauseId


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


@click.command()
@click.argument("subject", nargs=-1, required=True)
def explain(subject: tuple[str, ...]) -> None:
    """Explain a cause id (e.g. keepalive_race) or a pasted error message."""
    text = " ".join(subject).strip()
    console = _console()
    if text in {c.value for c in CauseId}:
        _print_entry(console, CATALOGUE[CauseId(text)])
        return
    found = explain_line(text)
    if not found.messages:
        console.print(f"No known cause id or error message in: {escape(text)}")
        console.print(f"Cause ids: {', '.join(c.value for c in CauseId)}")
        raise SystemExit(1)
    table = Table(title="Recognised as", show_lines=False)
    for column in ("runtime", "kernel error", "call", "known message"):
        table.add_column(column)
    shown = set()
    for message in found.messages:
        key = (message.runtime, message.errno, message.operation)
        if key in shown:
            continue
        shown.add(key)
        table.add_row(message.runtime, message.errno.value, message.operation.value, escape(message.text))
    console.print(table)
    console.print("\n[bold]Causes that produce it[/bold] (most likely first):")
    for cause in found.causes:
        entry = CATALOGUE[cause]
        console.print(f"  [bold]{cause.value}[/bold]: {escape(entry.title)}")
        console.print(f"      tell apart: {escape(entry.decisive_capture)}")
    console.print(f"\n[bold]Which capture decides:[/bold] {escape(found.decide)}")


@click.command()
@click.option(
    "--markdown",
    "markdown_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one Markdown page per cause (and README.md) into DIR.",
)
def rules(markdown_dir: Path | None) -> None:
    """List the cause catalogue (or write it as Markdown with --markdown DIR)."""
    console = _console()
    if markdown_dir is not None:
        written = write_markdown(markdown_dir)
        console.print(f"wrote {len(written)} files to {escape(str(markdown_dir))}")
        return
    table = Table(title="whyreset cause catalogue")
    for column in ("cause", "family", "title", "signature"):
        table.add_column(column, overflow="fold")
    for entry in ENTRIES:
        table.add_row(entry.cause.value, entry.family, escape(entry.title), escape(entry.signature))
    console.print(table)


def _print_entry(console: Console, entry: CatalogueEntry) -> None:
    console.print(f"[bold]{entry.cause.value}[/bold]: {escape(entry.title)}  [dim]({entry.family})[/dim]\n")
    sections = (
        ("What happens", entry.what_happens),
        ("Signature", entry.signature),
        ("Evidence shown", "\n".join(f"- {e}" for e in entry.evidence)),
        ("Kernel reasons", ", ".join(entry.kernel_reasons)),
    )
    for title, body in sections:
        console.print(f"[bold]{title}[/bold]\n{escape(body)}\n")
    table = Table(title="What each application sees")
    for column in ("party", "runtime", "message"):
        table.add_column(column, overflow="fold")
    for party, runtime, text in symptom_rows(entry):
        table.add_row(party, runtime, escape(text))
    console.print(table)
    console.print("\n[bold]Fix[/bold]")
    for i, fix in enumerate(entry.fix, 1):
        console.print(f"  {i}. {escape(fix)}")
    alikes = ", ".join(c.value for c in entry.look_alikes) or "-"
    console.print(f"\n[bold]Telling it apart[/bold] from {alikes}: {escape(entry.decisive_capture)}")
    if entry.wire_limit:
        console.print(f"[bold]What a capture cannot show[/bold]: {escape(entry.wire_limit)}")
