"""The verdict: run every catalogue rule on a connection, rank the candidates, and write the finding.

``diagnose(connection, context) -> Finding | None``:

* None for connections that ended well or are still fine (clean, open, a half-close that the capture does not
  show to be a leak, a simultaneous close...);
* a Finding with the best-supported cause, its evidence and ranked alternatives when a rule's score reaches
  `MIN_PRIMARY`;
* otherwise a Finding with ``cause=None`` and an explicit ``undetermined_reason``: never a guess.
"""

from __future__ import annotations

from whyreset.core.connection import Connection
from whyreset.diagnose.catalogue import CATALOGUE, ENTRIES, CatalogueEntry
from whyreset.diagnose.context import DiagnosisContext, build_context
from whyreset.diagnose.facts import Facts, compute_facts
from whyreset.diagnose.finding import Alternative, EvidenceItem, Finding, Impact
from whyreset.diagnose.rules.common import (
    Candidate,
    describe_rst,
    describe_trigger,
    how_to_tell_sender,
    ms,
    who,
)
from whyreset.diagnose.symptoms import AppView, render_views
from whyreset.diagnose.triage import Triage
from whyreset.diagnose.vantage import Vantage, infer_vantage
from whyreset.ids import CauseId, Outcome, Side
from whyreset.model import endpoint_text

# Cost (bench-200k.pcap, 8.4k abnormal connections, ~90 us each, process time, no profiler; was ~110): facts ~24 us
# (~4 slicing and converting the nine columns read, then ~1.6 per packet: one `Seg` and each side's running
# facts in one pass), triage ~3 (once per connection shape), the rules ~38 (the forgery check ~5 and the abort
# shape ~5, shared through `Facts.memo`, are the largest), the finding ~18 (symptoms ~6, the primary's deferred
# evidence ~5). Rules that are usually alternatives defer their evidence (a function in `Candidate.evidence`):
# only the primary's is written. What is left is spread thin over many small Python functions; a further halving
# needs facts built for a whole batch of connections at once (the tracker's batch arrays), not per connection.
# (A comment, not in the docstring: docs/causes/README.md is generated from the docstring.)

MIN_PRIMARY = 0.35
"""Below this no cause is named: the finding is undetermined."""
MIN_ALTERNATIVE = 0.12
"""Candidates above this are listed as alternatives."""
GUESSED_ROLES_FACTOR = 0.85
"""Confidence penalty when the originator was not identified by its SYN (roles are a guess)."""
QUIET_OUTCOMES = frozenset({Outcome.CLEAN, Outcome.OPEN, Outcome.HALF_CLOSED})
"""Outcomes that are fine unless a rule finds something (no finding when none does)."""


def diagnose(conn: Connection, context: DiagnosisContext | None = None) -> Finding | None:
    """Diagnose one connection against the capture-wide context (built from the connection alone if
    absent)."""
    if context is None:
        context = build_context([conn])
    if conn.outcome is Outcome.CLEAN and not conn.resets:
        return None
    facts = compute_facts(conn)
    vantage = infer_vantage(facts)
    candidates = rank(facts, context, vantage)
    if conn.orig_inferred_by != "syn":
        candidates = [_discount(c, GUESSED_ROLES_FACTOR) for c in candidates]
    if not candidates or candidates[0].score < MIN_PRIMARY:
        if conn.outcome in QUIET_OUTCOMES and not conn.resets:
            return None
        return _undetermined(facts, vantage, candidates)
    return _finding(facts, vantage, candidates)


def rank(facts: Facts, context: DiagnosisContext, vantage: Vantage, *, triage: bool = True) -> list[Candidate]:
    """The candidate of every rule that can apply (`diagnose.triage`; ``triage=False`` runs them all), best
    first (one per cause)."""
    entries = TRIAGED_ENTRIES.applicable(facts, context) if triage else ENTRIES
    candidates = [c for entry in entries if (c := entry.rule(facts, context, vantage)) is not None]
    return sorted(candidates, key=lambda c: c.score, reverse=True)


def _cause_of(entry: CatalogueEntry) -> CauseId:
    return entry.cause


TRIAGED_ENTRIES = Triage(ENTRIES, _cause_of)
"""Every catalogue entry with its triage condition, in catalogue order."""


def _discount(candidate: Candidate, factor: float) -> Candidate:
    return Candidate(
        candidate.cause,
        candidate.score * factor,
        candidate.actor,
        candidate.summary,
        candidate.evidence,
        candidate.views,
        candidate.how_to_tell,
    )


def _finding(facts: Facts, vantage: Vantage, candidates: list[Candidate]) -> Finding:
    conn = facts.conn
    primary = candidates[0]
    confidence = primary.score
    alternatives = tuple(
        Alternative(
            c.cause,
            round(min(c.score, confidence - 0.01), 2),
            c.how_to_tell or CATALOGUE[c.cause].decisive_capture,
        )
        for c in candidates[1:]
        if c.score >= MIN_ALTERNATIVE and c.cause is not primary.cause
    )
    evidence = primary.evidence_items()
    if conn.orig_inferred_by != "syn":
        evidence = (
            *evidence,
            EvidenceItem(
                f"roles inferred by {conn.orig_inferred_by}: the handshake was not "
                "captured, so client/server may be swapped"
            ),
        )
    return Finding(
        uid=conn.uid,
        cause=primary.cause,
        confidence=round(confidence, 2),
        actor=primary.actor,
        summary=primary.summary,
        evidence=evidence,
        alternatives=alternatives,
        impact=impact(facts),
        symptoms=_symptoms(facts, primary.views),
        fix=CATALOGUE[primary.cause].fix,
        vantage=_vantage_text(facts, vantage),
    )


def _vantage_text(facts: Facts, vantage: Vantage) -> str:
    """Where the capture was taken, and what that proves about the ending RST's origin."""
    reset = facts.ending_reset
    if reset is None:
        return vantage.text
    return f"{vantage.text}; {how_to_tell_sender(vantage, reset.seg.side)}"


def _undetermined(facts: Facts, vantage: Vantage, candidates: list[Candidate]) -> Finding:
    conn = facts.conn
    evidence: list[EvidenceItem] = []
    reset = facts.ending_reset or (facts.resets[0] if facts.resets else None)
    if reset is not None:
        evidence.append(describe_rst(facts, reset))
        if (item := describe_trigger(facts, reset)) is not None:
            evidence.append(item)
    reason = _undetermined_reason(facts, candidates)
    alternatives = tuple(
        Alternative(c.cause, round(c.score, 2), c.how_to_tell or CATALOGUE[c.cause].decisive_capture)
        for c in candidates
        if c.score >= MIN_ALTERNATIVE
    )
    return Finding(
        uid=conn.uid,
        cause=None,
        confidence=0.0,
        actor=None,
        summary=f"undetermined: {reason}",
        evidence=tuple(evidence),
        alternatives=alternatives,
        impact=impact(facts),
        symptoms={},
        fix=(),
        vantage=vantage.text,
        undetermined_reason=reason,
    )


def _undetermined_reason(facts: Facts, candidates: list[Candidate]) -> str:
    conn = facts.conn
    reset = facts.ending_reset or (facts.resets[0] if facts.resets else None)
    parts: list[str] = []
    if reset is not None:
        parts.append(
            f"an RST from {who(facts, reset.seg.side)} (frame {reset.seg.frame}, "
            f"{reset.info.acceptability.value}) ended the connection"
        )
        if conn.midstream:
            parts.append("the capture starts mid-connection, so what each side had sent and received before is unknown")
        if reset.trigger is None:
            parts.append("no packet from the other side precedes it")
    elif conn.outcome is Outcome.NOT_ESTABLISHED:
        syns = sum(1 for s in facts.orig.segs if s.syn)
        parts.append(
            f"no complete handshake: {syns} SYN(s) and {len(facts.resp.segs)} packet(s) from the "
            "responder, too little to tell a dropped SYN from the end of the capture"
        )
    else:
        parts.append(f"the connection ended as {conn.outcome.value} without an RST the rules recognise")
    if candidates:
        best = candidates[0]
        parts.append(f"the best match, {best.cause.value}, has only {best.score:.2f} support (needs {MIN_PRIMARY})")
    else:
        parts.append("no cause's signature matches")
    return "; ".join(parts)


def impact(facts: Facts) -> Impact:
    """Bytes each side never got acknowledged, and whether the first speaker's last request went
    unanswered."""
    orig, resp = facts.orig, facts.resp
    # Per side (`SideFacts`): the highest payload end and the lowest payload start it sent, and the rows of its
    # first and last payload segments, RSTs excluded. The first speaker's last request went unanswered when
    # the last payload of the connection is its own.
    orig_rows, resp_rows = orig.payload_rows, resp.payload_rows
    unanswered = False
    if orig_rows is not None and resp_rows is not None:
        orig_first = orig_rows[0] < resp_rows[0]
        unanswered = orig_first == (orig_rows[1] > resp_rows[1])
    elif orig_rows is not None or resp_rows is not None:
        unanswered = True  # one side spoke, the other never answered
    orig_lost = _unacked(facts, Side.ORIG, orig.payload_end, orig.payload_start)
    resp_lost = _unacked(facts, Side.RESP, resp.payload_end, resp.payload_start)
    parts = []
    if orig_lost:
        parts.append(f"{orig_lost} byte(s) from the originator never acknowledged")
    if resp_lost:
        parts.append(f"{resp_lost} byte(s) from the responder never acknowledged")
    if unanswered:
        parts.append("the last request got no response")
    summary = "; ".join(parts) if parts else "nothing lost: every byte sent was acknowledged"
    return Impact(orig_lost, resp_lost, unanswered, summary)


def _unacked(facts: Facts, side: Side, sent: int, start: int | None) -> int:
    """Payload bytes ``side`` sent (up to ``sent``, from ``start``: its payload's highest end and lowest start,
    RSTs excluded) that the other side never acknowledged, counting ordinary ACKs and the ACK of the RST that
    ended the connection, but not the ACK fields of other resets (a forged RST acknowledges nothing)."""
    if sent == 0 or start is None:
        return 0
    acked = facts.side(side.other).ack_prefix[-1]  # the highest ACK of its non-RST segments
    ending = facts.ending_reset
    if ending is not None and ending.seg.side is side.other and ending.seg.rel_ack is not None:
        acked = ending.seg.rel_ack if acked is None else max(acked, ending.seg.rel_ack)
    if acked is None:
        acked = start
    return max(0, sent - max(acked, start))


NO_ERROR_SEEN = AppView(None, None, "no error visible from the capture")


def _symptoms(facts: Facts, views: dict[Side, AppView]) -> dict[str, dict[str, str]]:
    conn = facts.conn
    complete = {"orig": views.get(Side.ORIG, NO_ERROR_SEEN), "resp": views.get(Side.RESP, NO_ERROR_SEEN)}
    endpoints = {"orig": endpoint_text(conn.orig_h, conn.orig_p), "resp": endpoint_text(conn.resp_h, conn.resp_p)}
    return render_views(complete, client_side="orig", endpoints=endpoints)


def describe_gap(ns: int) -> str:
    return ms(ns)
