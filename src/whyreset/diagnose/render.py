"""Render catalogue entries and error-line matches: Markdown for docs/causes, plain data for the terminal.

Everything shown is generated from ``diagnose.catalogue`` and ``diagnose.symptoms``; nothing is written by
hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from whyreset.diagnose.catalogue import CATALOGUE, ENTRIES, CatalogueEntry
from whyreset.diagnose.symptoms import RUNTIMES, Errno, Operation, RuntimeMessage, match_error_line
from whyreset.ids import CauseId

LIKELIHOOD: tuple[CauseId, ...] = (
    CauseId.KEEPALIVE_RACE,
    CauseId.CLOSE_WITH_UNREAD_DATA,
    CauseId.PEER_LOST_STATE,
    CauseId.MIDDLEBOX_RESET,
    CauseId.DATA_AFTER_CLOSE,
    CauseId.ABORTIVE_CLOSE,
    CauseId.REFUSED,
    CauseId.SYN_UNANSWERED,
    CauseId.IDLE_STATE_DROPPED,
    CauseId.LISTENER_CLOSED,
    CauseId.BACKLOG_OVERFLOW,
    CauseId.RETRANSMISSION_TIMEOUT,
    CauseId.KEEPALIVE_TIMEOUT,
    CauseId.ICMP_UNREACHABLE,
    CauseId.CLOSE_WAIT_LEAK,
    CauseId.HANDSHAKE_ABORTED,
    CauseId.INVALID_SEGMENT,
    CauseId.BENIGN_RESET,
    CauseId.INJECTED_RESET,
)
"""How often each cause is behind a reported error in practice (keep-alive races and unread-data closes top
the issue trackers of HTTP clients and proxies): the order in which ``explain "<error line>"`` lists
candidates."""


def symptom_rows(entry: CatalogueEntry) -> list[tuple[str, str, str]]:
    """(party, runtime, what it sees) for every party of the entry and every runtime."""
    rows: list[tuple[str, str, str]] = []
    for role in entry.roles:
        for runtime in RUNTIMES:
            rows.append((role.name, runtime, role.view.render(runtime, client=role.is_client)))
    return rows


def entry_markdown(entry: CatalogueEntry) -> str:
    """One catalogue entry as a Markdown page."""
    lines = [
        f"# `{entry.cause.value}`: {entry.title}",
        "",
        f"*Family: {entry.family}. Seeds: {', '.join(entry.seeds) or '-'}. Generated from "
        "`whyreset.diagnose.catalogue` by `whyreset rules --markdown`; do not edit.*",
        "",
        "## What happens",
        "",
        entry.what_happens,
        "",
        "## Signature in a capture",
        "",
        entry.signature,
        "",
        "## Evidence a finding shows",
        "",
        *[f"- {item}" for item in entry.evidence],
        "",
        "## Kernel reasons (Linux)",
        "",
        *[f"- `{reason}`" if " " not in reason else f"- {reason}" for reason in entry.kernel_reasons],
        "",
        "## What each application sees",
        "",
    ]
    for role in entry.roles:
        lines += [f"**{role.name}**: {role.view.explanation}", "", "| runtime | message |", "|---|---|"]
        for runtime in RUNTIMES:
            text = role.view.render(runtime, client=role.is_client).replace("|", "\\|")
            lines.append(f"| {runtime} | `{text}` |" if role.view.errno else f"| {runtime} | {text} |")
        lines.append("")
    lines += [
        "## Fix",
        "",
        *[f"{i}. {fix}" for i, fix in enumerate(entry.fix, 1)],
        "",
        "## Telling it apart",
        "",
        f"Often confused with: "
        f"{', '.join(f'[`{c.value}`]({c.value}.md)' for c in entry.look_alikes) or '-'}. "
        f"What decides: {entry.decisive_capture}.",
        "",
        *([f"**What a capture cannot show.** {entry.wire_limit}", ""] if entry.wire_limit else []),
        "## Rule",
        "",
        f"`{entry.rule.__module__}.{entry.rule.__name__}`: {(entry.rule.__doc__ or '').strip()}",
        "",
    ]
    return "\n".join(lines)


def index_markdown() -> str:
    from whyreset.diagnose import context, vantage, verdict
    from whyreset.diagnose.rules import common

    lines = [
        "# The cause catalogue",
        "",
        "*Generated from `whyreset.diagnose.catalogue` by `whyreset rules --markdown`; do not edit.*",
        "",
        "| cause | family | title | kernel reasons |",
        "|---|---|---|---|",
    ]
    for entry in ENTRIES:
        reasons = ", ".join(entry.kernel_reasons)
        link = f"[`{entry.cause.value}`]({entry.cause.value}.md)"
        lines.append(f"| {link} | {entry.family} | {entry.title} | {reasons} |")
    lines += ["", "## How a finding is decided", ""]
    for module in (verdict, common, vantage, context):
        lines += [(module.__doc__ or "").strip(), ""]
    return "\n".join(lines)


def write_markdown(directory: Path) -> list[Path]:
    """Write one page per cause and an index (README.md); returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in ENTRIES:
        target = directory / f"{entry.cause.value}.md"
        target.write_text(entry_markdown(entry), encoding="utf-8")
        written.append(target)
    index = directory / "README.md"
    index.write_text(index_markdown(), encoding="utf-8")
    written.append(index)
    return written


@dataclass(frozen=True, slots=True)
class LineExplanation:
    """What a pasted error line says and which causes produce it."""

    messages: tuple[RuntimeMessage, ...]
    """Known messages it matches, most specific first."""
    errors: tuple[tuple[Errno, Operation], ...]
    """The kernel errors behind them, in order."""
    causes: tuple[CauseId, ...]
    """Causes whose parties see one of those errors, most likely first."""
    decide: str
    """Which capture would separate the candidate causes."""


def explain_line(line: str) -> LineExplanation:
    """Map an error message from any known runtime to the causes that produce it."""
    messages = tuple(match_error_line(line))
    errors: list[tuple[Errno, Operation]] = []
    for message in messages:
        key = (message.errno, message.operation)
        if key not in errors:
            errors.append(key)
    errnos = {errno for errno, _ in errors}
    causes: list[CauseId] = []
    for errno, operation in errors:
        for entry in ENTRIES:
            if (errno, operation) in entry.produces and entry.cause not in causes:
                causes.append(entry.cause)
    for entry in ENTRIES:  # same errno from another call (a reset seen on write instead of read...)
        if entry.cause not in causes and any(e in errnos for e, _ in entry.produces):
            causes.append(entry.cause)
    exact = [c for c in LIKELIHOOD if c in causes[: len(causes)] and _exact(c, errors)]
    rest = [c for c in LIKELIHOOD if c in causes and c not in exact]
    return LineExplanation(messages, tuple(errors), tuple(exact + rest), _decider(errnos))


def _exact(cause: CauseId, errors: list[tuple[Errno, Operation]]) -> bool:
    return any(pair in CATALOGUE[cause].produces for pair in errors)


def _decider(errnos: set[Errno]) -> str:
    if Errno.ECONNRESET in errnos or Errno.EPIPE in errnos:
        return (
            "capture on the side that got the error and, ideally, on the peer: the RST's sender, its TTL "
            "against "
            "the sender's own packets, what preceded it (a FIN, idle time, unread data) and whether a "
            "capture next "
            "to the peer shows the RST leaving it. `whyreset analyze` on that capture names the cause."
        )
    if Errno.ECONNREFUSED in errnos:
        return "capture the SYN and its answer next to the client, and on the server to tell host from firewall"
    if Errno.ETIMEDOUT in errnos:
        return "capture next to both ends: where the SYNs, data or keep-alive probes stop being answered"
    if Errno.EOF in errnos:
        return "capture the FIN: the idle time before it and whether the request crossed it"
    return "capture the connection on the client side with `tcpdump -w`, then run `whyreset analyze`"


def cause_ids() -> list[str]:
    return [cause.value for cause in CATALOGUE]
