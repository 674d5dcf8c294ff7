"""A diagnosis is a claim: the cause, the evidence for it, how sure we are, and what else it could be."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from whyreset.ids import CauseId, Side


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    """One fact supporting (or weakening) a diagnosis, anchored on a packet when there is one."""

    text: str
    """The fact in one sentence, e.g. ``RST from resp 1.2.3.4 seq=1001 ack=2049 TTL 57 (its own packets:
    64)``."""
    frame: int | None = None
    """Capture record number the fact is about."""
    ts_ns: int | None = None
    """Its capture timestamp."""
    side: Side | None = None
    """Endpoint that sent that packet."""
    data: dict[str, Any] = field(default_factory=dict)
    """Machine-readable values behind the text (seq, ack, ttl, gap_ns...)."""


@dataclass(frozen=True, slots=True)
class Alternative:
    """A cause the capture cannot rule out, and what would tell it apart from the primary one."""

    cause: CauseId
    """The other candidate."""
    confidence: float
    """0..1, lower than the primary's."""
    how_to_tell: str
    """What observation would decide (e.g. ``a server-side capture would show whether the RST left the
    server``)."""


@dataclass(frozen=True, slots=True)
class Impact:
    """What was lost."""

    orig_unacked_bytes: int
    """Bytes the originator sent that were never acknowledged."""
    resp_unacked_bytes: int
    """Bytes the responder sent that were never acknowledged."""
    request_unanswered: bool
    """The last data from the side that spoke first got no data in reply before the end."""
    summary: str
    """One sentence for people."""


@dataclass(frozen=True, slots=True)
class Finding:
    """The diagnosis of one connection that ended badly (or an explicit ``undetermined``)."""

    uid: str
    """The connection's uid (joins conn.log)."""
    cause: CauseId | None
    """Primary cause; None means undetermined (see `undetermined_reason`)."""
    confidence: float
    """0..1."""
    actor: Side | None
    """Who did it: the endpoint that acted, or None when it was the path (middlebox) or unknown."""
    summary: str
    """One line: who, what, why."""
    evidence: tuple[EvidenceItem, ...]
    """The packets and measurements that support the claim."""
    alternatives: tuple[Alternative, ...]
    """Ranked other causes the capture cannot exclude."""
    impact: Impact
    """Bytes lost, unanswered request."""
    symptoms: dict[str, dict[str, str]]
    """runtime -> side (``orig``/``resp``) -> what that application saw."""
    fix: tuple[str, ...]
    """Concrete remedies, most useful first."""
    vantage: str
    """Where the capture was likely taken and how that limits the conclusion."""
    undetermined_reason: str | None = None
    """Why no cause could be named (only when `cause` is None)."""
