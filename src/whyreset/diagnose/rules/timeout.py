"""Rules for connections that died of silence: unanswered keep-alive probes, data retransmitted until the
sender gave up, and the silent middlebox that dropped an idle connection's state.

Kernel facts: a keep-alive probe is a segment at SND.UNA - 1 with no data (tcp_xmit_probe_skb); after
tcp_keepalive_probes unanswered probes the kernel sends RST+ACK (TCP_KEEPALIVE_TIMEOUT) and reports ETIMEDOUT.
Data is retransmitted with exponential backoff until tcp_retries2 (about 15 minutes) or TCP_USER_TIMEOUT
expires; then the socket is dropped *without* an RST and the application gets ETIMEDOUT.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from whyreset.diagnose.context import DiagnosisContext
from whyreset.diagnose.facts import Facts, Seg, SideFacts, memoized
from whyreset.diagnose.finding import EvidenceItem, fast_init
from whyreset.diagnose.rules.common import (
    NS_PER_S,
    Candidate,
    clamp,
    describe_rst,
    is_idle_gap,
    ms,
    seg_item,
    who,
)
from whyreset.diagnose.symptoms import AppView, Errno, Operation
from whyreset.diagnose.vantage import Vantage
from whyreset.ids import CauseId, Side

PROBE_MIN_INTERVAL_NS = NS_PER_S // 2
"""TCP_KEEPINTVL is at least one second; half of it tolerates timestamp jitter."""


def _probes(f: Facts, side: SideFacts) -> list[Seg]:
    probes: list[Seg] = []
    for seg in side.segs:
        if seg.syn or seg.fin or seg.rst or seg.length > 1:
            continue
        if seg.rel_seq != side.snd_nxt_before(seg.ts_ns, seg.index) - 1:
            continue
        if f.gap_before(seg) >= PROBE_MIN_INTERVAL_NS:
            probes.append(seg)
    return probes


def keepalive_timeout(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """Keep-alive probes went unanswered; the kernel gave up and reset."""
    for side in (f.orig, f.resp):
        found = _keepalive_timeout(f, ctx, side)
        if found is not None:
            return found
    return None


def _keepalive_timeout(f: Facts, ctx: DiagnosisContext, side: SideFacts) -> Candidate | None:
    probes = _probes(f, side)
    if not probes:
        return None
    first = probes[0]
    other = f.side(side.side.other)
    answers = [s for s in other.segs if s.index > first.index and not s.rst]
    if answers:
        return None  # the peer answered: a healthy keep-alive
    own_reset = next((r for r in f.resets if r.seg.side is side.side and r.seg.index > first.index), None)
    if len(probes) < 2 and own_reset is None:
        return None
    score = 0.85 if own_reset is not None else 0.6
    intervals = [b.ts_ns - a.ts_ns for a, b in itertools.pairwise(probes)]
    evidence: list[EvidenceItem] = [
        seg_item(
            f,
            first,
            f"{len(probes)} keep-alive probe(s) from {who(f, side.side)} (seq = SND.NXT - 1) after "
            f"{ms(f.gap_before(first))} of idle, intervals {', '.join(ms(i) for i in intervals) or '-'}",
        ),
        EvidenceItem(f"no answer from {who(f, other.side)} after the first probe"),
    ]
    if own_reset is not None:
        evidence.append(describe_rst(f, own_reset))
    summary = f"{who(f, side.side)}'s keep-alive probes went unanswered; its kernel gave up" + (
        " and reset the connection" if own_reset is not None else ""
    )
    views = {
        side.side: AppView(
            Errno.ETIMEDOUT,
            Operation.READ,
            "the kernel gave up after tcp_keepalive_probes: the blocked read (or next call) fails with ETIMEDOUT",
        ),
        other.side: AppView(None, None, "nothing: it was unreachable (crashed, powered off, cable or path gone)"),
    }
    return Candidate(
        CauseId.KEEPALIVE_TIMEOUT,
        score,
        side.side,
        summary,
        tuple(evidence),
        views,
        "whether the peer host was up at that time; a capture next to the peer shows if probes arrive",
    )


@fast_init
@dataclass(frozen=True, slots=True)
class Stall:
    """Data (or a FIN) one side kept retransmitting without ever being acknowledged."""

    sender: SideFacts
    transmissions: tuple[Seg, ...]
    """Every transmission of the first never-acknowledged byte, the original first."""
    unacked: int
    idle_before_ns: int
    """Silence on the connection before the original transmission."""
    peer_spoke_before: bool


def _stall(f: Facts, side: SideFacts) -> Stall | None:
    other = f.side(side.side.other)
    acked = max((s.rel_ack for s in other.segs if s.rel_ack is not None and not s.rst), default=None)
    carrying = [s for s in side.segs if not s.rst and not s.syn and (s.length > 0 or s.fin)]
    if not carrying:
        return None
    high = max(s.end_seq for s in carrying)
    floor = acked if acked is not None else (1 if side.isn_seen else carrying[0].rel_seq)
    if high <= floor:
        return None
    covering = tuple(s for s in carrying if s.rel_seq <= floor < s.end_seq)
    if len(covering) < 2:
        return None
    first = covering[0]
    ack_advance = [s for s in other.segs if s.index > first.index and s.rel_ack is not None and s.rel_ack > floor]
    if ack_advance:
        return None
    spoke_before = any(s.index < first.index and not s.syn for s in other.segs)
    return Stall(side, covering, high - floor, f.gap_before(first), spoke_before)


def _backoff_text(stall: Stall) -> str:
    times = [s.ts_ns for s in stall.transmissions]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    growing = all(b >= a * 1.4 for a, b in itertools.pairwise(gaps)) and len(gaps) >= 2
    shape = "doubling (exponential backoff)" if growing else "retransmitted"
    intervals = ", ".join(ms(g) for g in gaps)
    return f"{len(stall.transmissions) - 1} retransmission(s), intervals {intervals}: {shape}"


def _stall_candidate(f: Facts, ctx: DiagnosisContext, v: Vantage, stall: Stall, idle: bool) -> Candidate:
    sender = stall.sender.side
    first = stall.transmissions[0]
    evidence: list[EvidenceItem] = [
        seg_item(
            f,
            first,
            f"{stall.unacked} byte(s) from {who(f, sender)} never acknowledged; {_backoff_text(stall)}",
        ),
        EvidenceItem(f"{who(f, sender.other)} sent nothing that acknowledged them afterwards"),
    ]
    end_reset = next((r for r in f.resets if r.seg.index > first.index), None)
    if end_reset is not None:
        evidence.append(describe_rst(f, end_reset))
    icmp = ctx.icmp_for(f.conn)
    views = {
        sender: AppView(
            Errno.ETIMEDOUT,
            Operation.READ,
            "the kernel gave up (tcp_retries2 or TCP_USER_TIMEOUT): "
            "the pending call fails with ETIMEDOUT, often after many minutes",
        ),
        sender.other: AppView(None, None, "nothing: the data never reached it (or it was gone)"),
    }
    if idle:
        evidence.insert(
            0,
            seg_item(
                f,
                first,
                f"the connection had been idle {ms(stall.idle_before_ns)} before this "
                "data, and the peer had answered before the idle period",
            ),
        )
        summary = (
            f"after {ms(stall.idle_before_ns)} of idle nothing answered {who(f, sender)} any more: a "
            "stateful "
            "middlebox (NAT, firewall, load balancer) had silently dropped the idle connection"
        )
        score = 0.7 - (0.3 if icmp else 0.0)
        return Candidate(
            CauseId.IDLE_STATE_DROPPED,
            clamp(score),
            None,
            summary,
            tuple(evidence),
            views,
            "a capture on the far side of the middlebox shows the data never arriving; compare the "
            "idle time with the middlebox's session idle timeout",
        )
    summary = f"{who(f, sender)} retransmitted unacknowledged data until it gave up: the peer or the path was gone"
    score = 0.75 - (0.3 if icmp else 0.0)
    return Candidate(
        CauseId.RETRANSMISSION_TIMEOUT,
        clamp(score),
        sender,
        summary,
        tuple(evidence),
        views,
        "a capture next to the peer shows whether the data arrives; ICMP errors or the peer's uptime tell which",
    )


def _stalls(f: Facts) -> list[Stall]:
    return memoized(f, "stalls", _find_stalls, f)


def _find_stalls(f: Facts) -> list[Stall]:
    found = [s for s in (_stall(f, f.orig), _stall(f, f.resp)) if s is not None]
    return sorted(found, key=lambda s: s.transmissions[0].index)


def retransmission_timeout(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """Data never acknowledged, retransmitted with backoff, then silence or RST."""
    stalls = _stalls(f)
    if not stalls:
        return None
    candidate = _stall_candidate(f, ctx, v, stalls[0], idle=False)
    if is_idle_gap(f, stalls[0].idle_before_ns) and stalls[0].peer_spoke_before:
        return Candidate(
            candidate.cause,
            candidate.score - 0.2,
            candidate.actor,
            candidate.summary,
            candidate.evidence,
            candidate.views,
            candidate.how_to_tell,
        )
    return candidate


def idle_state_dropped(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """Long idle, then data retransmitted into the void: a middlebox forgot the connection without telling."""
    stalls = _stalls(f)
    if not stalls:
        return None
    stall = stalls[0]
    if not (is_idle_gap(f, stall.idle_before_ns) and stall.peer_spoke_before):
        return None
    return _stall_candidate(f, ctx, v, stall, idle=True)


def stalled_side(f: Facts) -> Side | None:
    stalls = _stalls(f)
    return stalls[0].sender.side if stalls else None
