"""Triage: from a connection's shape, the few rules that can apply to it.

Every rule starts by checking the shape its cause needs (an RST that ended the connection, a SYN-ACK, a FIN, an
idle period...) and returns None otherwise. Evaluating all of them on every abnormal connection spends most of
the diagnosis on rules that were never going to match. `can_apply` restates, per cause, a *necessary* condition
of its rule's own early returns, read from facts the rules already share; the verdict runs only the rules whose
condition holds. A condition here may let through a rule that then declines (it only has to be cheap), but it
must never reject one that would have proposed its cause: every diagnosis made by tests/diagnose (scripted paths,
seeds, the lab corpus, random tables; conftest.py) and a generated capture of every bench template
(test_speed.py) is re-ranked with all the rules and must give the same candidates.

The conditions read a connection's `Shape`, a handful of flags computed once per connection; a capture holds few
distinct shapes, so the rules that can apply are worked out once per shape (`Triage`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, NamedTuple, TypeVar

from whyreset.diagnose.context import DiagnosisContext
from whyreset.diagnose.facts import Facts
from whyreset.diagnose.rules.timeout import PROBE_MIN_INTERVAL_NS
from whyreset.ids import CauseId, Side

T = TypeVar("T")

NO_RESET, FROM_ORIG, FROM_RESP = 0, 1, 2


class Shape(NamedTuple):
    """What the conditions read of a connection (plain ints and bools: shapes are dictionary keys)."""

    ending: int
    """Who sent the RST that ended the connection: `NO_RESET`, `FROM_ORIG` or `FROM_RESP`."""
    ending_ack: bool
    """That RST has the ACK bit."""
    established: bool
    orig_syn: bool
    orig_syns: int
    """SYNs from the originator, counted up to 2."""
    synacks: int
    """SYN-ACKs from the responder, counted up to 2."""
    resp_segs: bool
    resp_data: bool
    resp_fin: bool
    orig_fin: bool
    resets: bool
    orig_resets: bool
    rejected_reset: bool
    """Some RST was not accepted by its receiver."""
    replied_reset: bool
    """Some RST has the shape of a reply to the segment before it."""
    icmp: bool
    """The capture holds ICMP errors."""
    idle_probe: bool
    """A probe-shaped segment after a silence long enough for a keep-alive probe."""
    retransmitted: bool
    """One side sent the same payload byte or FIN twice."""


def shape_of(f: Facts, ctx: DiagnosisContext) -> Shape:
    reset = f.ending_reset
    orig, resp = f.orig, f.resp
    values = (
        NO_RESET if reset is None else FROM_ORIG if reset.seg.side is Side.ORIG else FROM_RESP,
        reset is not None and reset.seg.has_ack,
        f.conn.established,
        orig.syn is not None,
        min(orig.syns, 2),
        min(resp.syn_acks, 2),
        bool(resp.segs),
        bool(resp.data),
        resp.fin is not None,
        orig.fin is not None,
        bool(f.resets),
        bool(orig.resets),
        any(not r.accepted for r in f.resets),
        any(r.answers_trigger for r in f.resets),
        bool(ctx.icmp_by_flow),
        f.max_gap_ns >= PROBE_MIN_INTERVAL_NS and _probe_shaped(f),
        orig.resent or resp.resent,
    )
    shape: Shape = tuple.__new__(Shape, values)  # without NamedTuple's Python-level __new__
    return shape


def _probe_shaped(f: Facts) -> bool:
    """Some segment looks like a keep-alive probe: no SYN, FIN or RST, at most one byte, after a silence of a
    probe interval (the rule also checks its sequence number)."""
    segs = f.segs
    return any(
        seg.length <= 1
        and not (seg.syn or seg.fin or seg.rst)
        and seg.index
        and seg.ts_ns - segs[seg.index - 1].ts_ns >= PROBE_MIN_INTERVAL_NS
        for seg in segs
    )


Condition = Callable[[Shape], bool]


def _ended_by_reset_after_handshake(s: Shape) -> bool:
    return s.ending != NO_RESET and s.established


def _refused(s: Shape) -> bool:
    return s.ending == FROM_RESP and s.orig_syn and not s.synacks


def _icmp(s: Shape) -> bool:
    return s.icmp


def _syn_unanswered(s: Shape) -> bool:
    return s.orig_syn and not s.resp_segs and not s.established


def _backlog_overflow(s: Shape) -> bool:
    # The SYN-ACK retransmitted after the client's ACK (two SYN-ACKs at least), a bare reply reset from a
    # server that sent no data (tcp_abort_on_overflow), or several SYNs and nothing from the server.
    if s.synacks >= 2:
        return True
    if s.ending == FROM_RESP and not s.ending_ack and not s.resp_data:
        return True
    return not s.resp_segs and s.orig_syns >= 2


def _ended_by_reset(s: Shape) -> bool:
    return s.ending != NO_RESET


def _handshake_aborted(s: Shape) -> bool:
    # SYN-ACKs retransmitted without the final ACK, or the client resetting in answer to a SYN-ACK.
    return s.orig_syn and (s.synacks >= 2 or (s.synacks == 1 and s.orig_resets))


def _listener_closed(s: Shape) -> bool:
    return s.ending == FROM_RESP and s.established and not s.resp_data and not s.resp_fin


def _reset_after_fin(s: Shape) -> bool:
    return s.resets and (s.orig_fin or s.resp_fin)


def _reset_after_fin_or_idle_reply(s: Shape) -> bool:
    """keepalive_race also reads a reply reset from a server that sent no FIN (its FIN crossed the request)."""
    return _reset_after_fin(s) or (s.ending == FROM_RESP and s.established)


def _any_fin(s: Shape) -> bool:
    return s.orig_fin or s.resp_fin


def _any_reset(s: Shape) -> bool:
    return s.resets


def _rejected_reset(s: Shape) -> bool:
    return s.rejected_reset


def _replied_reset(s: Shape) -> bool:
    return s.replied_reset


def _idle_probe(s: Shape) -> bool:
    return s.idle_probe


def _retransmitted(s: Shape) -> bool:
    # A stall is the same unacknowledged byte sent at least twice by one side.
    return s.retransmitted


CONDITIONS: dict[CauseId, Condition] = {
    CauseId.REFUSED: _refused,
    CauseId.ICMP_UNREACHABLE: _icmp,
    CauseId.SYN_UNANSWERED: _syn_unanswered,
    CauseId.BACKLOG_OVERFLOW: _backlog_overflow,
    CauseId.HANDSHAKE_ABORTED: _handshake_aborted,
    CauseId.LISTENER_CLOSED: _listener_closed,
    CauseId.CLOSE_WITH_UNREAD_DATA: _ended_by_reset_after_handshake,
    CauseId.ABORTIVE_CLOSE: _ended_by_reset,  # an orphan's abort after its FIN needs no handshake seen
    CauseId.BENIGN_RESET: _ended_by_reset_after_handshake,
    CauseId.DATA_AFTER_CLOSE: _reset_after_fin,
    CauseId.KEEPALIVE_RACE: _reset_after_fin_or_idle_reply,
    CauseId.CLOSE_WAIT_LEAK: _any_fin,
    CauseId.PEER_LOST_STATE: _ended_by_reset,  # also a reply to the first segment of a capture begun mid-way
    CauseId.MIDDLEBOX_RESET: _any_reset,
    CauseId.INJECTED_RESET: _rejected_reset,
    CauseId.INVALID_SEGMENT: _replied_reset,
    CauseId.KEEPALIVE_TIMEOUT: _idle_probe,
    CauseId.RETRANSMISSION_TIMEOUT: _retransmitted,
    CauseId.IDLE_STATE_DROPPED: _retransmitted,
}
"""Cause -> necessary condition of its rule. A cause missing here is always evaluated."""

MAX_SHAPES = 4096
"""Shapes remembered per `Triage` (a capture holds a few dozen; the bound only guards memory)."""


class Triage(Generic[T]):
    """Items (catalogue entries, rules...) each tied to a cause, and which of them can apply to a connection."""

    def __init__(self, items: Iterable[T], cause: Callable[[T], CauseId]) -> None:
        self.pairs = tuple((item, CONDITIONS.get(cause(item))) for item in items)
        self._by_shape: dict[Shape, tuple[T, ...]] = {}

    def applicable(self, f: Facts, ctx: DiagnosisContext) -> tuple[T, ...]:
        """The items whose condition holds for this connection, in their order."""
        shape = shape_of(f, ctx)
        found = self._by_shape.get(shape)
        if found is None:
            if len(self._by_shape) >= MAX_SHAPES:
                self._by_shape.clear()
            found = self._by_shape[shape] = tuple(
                item for item, condition in self.pairs if condition is None or condition(shape)
            )
        return found


def can_apply(cause: CauseId, f: Facts, ctx: DiagnosisContext) -> bool:
    """Whether the rule of ``cause`` may propose it for this connection (False: it certainly would not)."""
    condition = CONDITIONS.get(cause)
    return condition is None or condition(shape_of(f, ctx))
