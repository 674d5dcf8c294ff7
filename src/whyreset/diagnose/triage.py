"""Triage: from a connection's shape, the few rules that can apply to it.

Every rule starts by checking the shape its cause needs (an RST that ended the connection, a SYN-ACK, a FIN, an
idle period...) and returns None otherwise. Evaluating all of them on every abnormal connection spends most of
the diagnosis on rules that were never going to match. `can_apply` restates, per cause, a *necessary* condition
of its rule's own early returns, read from facts the rules already share; the verdict runs only the rules whose
condition holds. A condition here may let through a rule that then declines (it only has to be cheap), but it
must never reject one that would have proposed its cause: every diagnosis made by tests/diagnose (scripted paths,
seeds, the lab corpus, random tables; conftest.py) and a generated capture of every bench template
(test_speed.py) is re-ranked with all the rules and must give the same candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from whyreset.diagnose.context import DiagnosisContext
from whyreset.diagnose.facts import Facts
from whyreset.diagnose.rules.timeout import PROBE_MIN_INTERVAL_NS
from whyreset.ids import CauseId, Side

Condition = Callable[[Facts, DiagnosisContext], bool]
T = TypeVar("T")


def _ended_by_reset_after_handshake(f: Facts, ctx: DiagnosisContext) -> bool:
    return f.ending_reset is not None and f.conn.established


def _refused(f: Facts, ctx: DiagnosisContext) -> bool:
    reset = f.ending_reset
    return reset is not None and reset.seg.side is Side.RESP and f.orig.syn is not None and not _has_synack(f)


def _has_synack(f: Facts) -> bool:
    return f.resp.syn is not None and any(s.syn and s.has_ack for s in f.resp.segs)


def _icmp(f: Facts, ctx: DiagnosisContext) -> bool:
    return bool(ctx.icmp_by_flow)


def _syn_unanswered(f: Facts, ctx: DiagnosisContext) -> bool:
    return f.orig.syn is not None and not f.resp.segs and not f.conn.established


def _synack_count(f: Facts) -> int:
    if f.resp.syn is None:
        return 0
    return sum(1 for s in f.resp.segs if s.syn and s.has_ack)


def _backlog_overflow(f: Facts, ctx: DiagnosisContext) -> bool:
    # The SYN-ACK retransmitted after the client's ACK (two SYN-ACKs at least), a bare reply reset from a
    # server that sent no data (tcp_abort_on_overflow), or several SYNs and nothing from the server.
    if _synack_count(f) >= 2:
        return True
    reset = f.ending_reset
    if reset is not None and reset.seg.side is Side.RESP and not reset.seg.has_ack and not f.resp.data:
        return True
    return not f.resp.segs and sum(1 for s in f.orig.segs if s.syn) >= 2


def _ended_by_reset(f: Facts, ctx: DiagnosisContext) -> bool:
    return f.ending_reset is not None


def _handshake_aborted(f: Facts, ctx: DiagnosisContext) -> bool:
    # SYN-ACKs retransmitted without the final ACK, or the client resetting in answer to a SYN-ACK.
    if f.orig.syn is None:
        return False
    synacks = _synack_count(f)
    return synacks >= 2 or (synacks == 1 and bool(f.orig.resets))


def _listener_closed(f: Facts, ctx: DiagnosisContext) -> bool:
    reset = f.ending_reset
    return (
        reset is not None
        and reset.seg.side is Side.RESP
        and f.conn.established
        and not f.resp.data
        and f.resp.fin is None
    )


def _reset_after_fin(f: Facts, ctx: DiagnosisContext) -> bool:
    return bool(f.resets) and (f.orig.fin is not None or f.resp.fin is not None)


def _reset_after_fin_or_idle_reply(f: Facts, ctx: DiagnosisContext) -> bool:
    """keepalive_race also reads a reply reset from a server that sent no FIN (its FIN crossed the request)."""
    reset = f.ending_reset
    return _reset_after_fin(f, ctx) or (reset is not None and reset.seg.side is Side.RESP and f.conn.established)


def _any_fin(f: Facts, ctx: DiagnosisContext) -> bool:
    return f.orig.fin is not None or f.resp.fin is not None


def _any_reset(f: Facts, ctx: DiagnosisContext) -> bool:
    return bool(f.resets)


def _rejected_reset(f: Facts, ctx: DiagnosisContext) -> bool:
    return any(not r.accepted for r in f.resets)


def _replied_reset(f: Facts, ctx: DiagnosisContext) -> bool:
    return any(r.answers_trigger for r in f.resets)


def _idle_probe(f: Facts, ctx: DiagnosisContext) -> bool:
    return f.max_gap_ns >= PROBE_MIN_INTERVAL_NS


def _retransmitted(f: Facts, ctx: DiagnosisContext) -> bool:
    # A stall is the same unacknowledged byte sent at least twice by one side.
    return f.orig.resent or f.resp.resent


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


def applicable(pairs: Sequence[tuple[T, Condition | None]], f: Facts, ctx: DiagnosisContext) -> list[T]:
    """The items (catalogue entries, rules...) whose condition holds for this connection; ``pairs`` is built
    once with `conditioned`."""
    return [item for item, condition in pairs if condition is None or condition(f, ctx)]


def conditioned(items: Iterable[T], cause: Callable[[T], CauseId]) -> tuple[tuple[T, Condition | None], ...]:
    """Each item with the condition of its cause (None: always evaluated)."""
    return tuple((item, CONDITIONS.get(cause(item))) for item in items)


def can_apply(cause: CauseId, f: Facts, ctx: DiagnosisContext) -> bool:
    """Whether the rule of ``cause`` may propose it for this connection (False: it certainly would not)."""
    condition = CONDITIONS.get(cause)
    return condition is None or condition(f, ctx)
