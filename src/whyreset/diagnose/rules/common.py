"""What every rule shares: the candidate a rule proposes, and the evidence helpers.

A rule is a small function ``(facts, context, vantage) -> Candidate | None``. It proposes one cause with a
score in 0..1 that grows with each independent piece of evidence the mechanism predicts, and shrinks with
evidence against it. The verdict (``diagnose.verdict``) ranks the candidates of every rule: the best becomes
the finding, the others its alternatives.

Two kinds of RST look alike in a capture but come from different kernel paths, and the difference is on the
wire:

* **reply resets** (Linux ``tcp_v4_send_reset``, RFC 9293 3.10.7.1): the answer to a segment that fits no
  socket or that a closed socket refuses. When the offending segment carries an ACK, the RST has *no* ACK bit
  and its sequence number is that ACK value; otherwise it has ACK set, seq 0 and ack = the segment's end.
  Causes: ``refused``, ``peer_lost_state``, ``data_after_close``, ``keepalive_race``, ``invalid_segment``,
  abort_on_overflow.
* **active resets** (``tcp_send_active_reset``): sent by a live socket on its own initiative, always RST+ACK
  with seq = SND.NXT and ack = RCV.NXT. Causes: ``close_with_unread_data``, ``abortive_close``,
  ``keepalive_timeout``, ``listener_closed``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, cast

from whyreset.core.slots import slot_builder
from whyreset.diagnose.context import DiagnosisContext
from whyreset.diagnose.facts import Facts, ResetFacts, Seg, SideFacts, hops, initial_ttl, memoized
from whyreset.diagnose.finding import EvidenceItem, fast_init
from whyreset.diagnose.symptoms import AppView, Errno, Operation, errno_for_reset
from whyreset.diagnose.vantage import Vantage
from whyreset.ids import CauseId, Side, TcpState
from whyreset.model import endpoint_text

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000

IDLE_MIN_NS = 100 * NS_PER_MS
"""Shortest silence called "idle" in absolute terms (keep-alive timeouts are usually seconds to minutes, but
test and tuned servers go well below a second); the RTT-relative and pace-relative conditions do the real
work."""
IDLE_RTT_FACTOR = 20
"""...and it must also be long compared with the connection's own round trip."""
NO_VIEWS: dict[Side, AppView] = {}
"""A candidate without application views (shared, never written)."""


class Candidate(NamedTuple):
    """One cause a rule proposes for a connection (a named tuple: every rule that matches makes one, and
    most end up as alternatives, of which only the score and `how_to_tell` are read)."""

    cause: CauseId
    score: float
    """0..1: how strongly the capture supports it."""
    actor: Side | None
    """The endpoint that acted; None for the path or when unknown."""
    summary: str
    """One line: who, what, why."""
    evidence: tuple[EvidenceItem, ...] | Callable[[], tuple[EvidenceItem, ...]]
    """The supporting facts, or a function that builds them: only the primary candidate's evidence is shown,
    so a rule that is usually an alternative may defer writing it (see `evidence_items`)."""
    views: dict[Side, AppView] = NO_VIEWS
    """What each application saw (never modified: it may be shared)."""
    how_to_tell: str = ""
    """What would confirm or refute it (used when it ends up an alternative)."""

    def evidence_items(self) -> tuple[EvidenceItem, ...]:
        return self.evidence() if callable(self.evidence) else self.evidence


Rule = Callable[[Facts, DiagnosisContext, Vantage], "Candidate | None"]


def clamp(score: float) -> float:
    return max(0.0, min(0.97, score))


def ms(ns: int | None) -> str:
    if ns is None:
        return "?"
    if ns >= 10 * NS_PER_S:
        return f"{ns / NS_PER_S:.0f} s"
    if ns >= NS_PER_S:
        return f"{ns / NS_PER_S:.2f} s"
    return f"{ns / NS_PER_MS:.3g} ms"


def side_name(side: Side) -> str:
    return "originator (client)" if side is Side.ORIG else "responder (server)"


def who(f: Facts, side: Side) -> str:
    key = "who orig" if side is Side.ORIG else "who resp"  # a str key: a StrEnum member hashes ~5x slower
    name = f.memo.get(key)
    if name is None:
        host, port = f.conn.address(side)
        name = f.memo[key] = f"{side.value} {endpoint_text(host, port)}"
    return cast(str, name)


def seg_item(f: Facts, seg: Seg, text: str, **data: object) -> EvidenceItem:
    """An evidence item anchored on a segment."""
    return _new_evidence(text, seg.frame, seg.ts_ns, seg.side, data)


_new_evidence: Callable[[str, int | None, int | None, Side | None, dict[str, object]], EvidenceItem] = slot_builder(
    EvidenceItem
)
"""`EvidenceItem` from all its fields in order, without the frozen dataclass's ``__init__`` (three times
cheaper: the rules make a few per connection)."""


def describe_rst(f: Facts, reset: ResetFacts) -> EvidenceItem:
    """The RST as evidence: sender, numbers, TTL against the sender's own, acceptability (once per RST: every
    rule about it starts with this item)."""
    return memoized(f, ("describe_rst", reset.seg.index), _describe_rst, f, reset)


def _describe_rst(f: Facts, reset: ResetFacts) -> EvidenceItem:
    seg = reset.seg
    ack = f"ack={seg.rel_ack}" if seg.rel_ack is not None else "no ACK bit"
    usual = f.side(seg.side).ttl_usual
    ttl = f"TTL {seg.ttl}" + (f" (its other packets: {usual})" if usual is not None else "")
    payload = f", payload {reset.info.payload_text!r}" if reset.info.payload_text else ""
    text = (
        f"RST from {who(f, seg.side)} seq={seg.rel_seq} {ack} {ttl}, {reset.info.acceptability.value} for "
        "the "
        f"receiver in {reset.info.receiver_state.value}{payload}"
    )
    return seg_item(
        f,
        seg,
        text,
        seq=seg.rel_seq,
        ack=seg.rel_ack,
        ttl=seg.ttl,
        acceptability=reset.info.acceptability.value,
    )


def capture_gap_item(f: Facts, reset: ResetFacts) -> EvidenceItem | None:
    """When the capture missed segments before the RST: say so, and whether the RST still carries its sender's
    own marks (TTL, IP ID continuing the sender's sequence), which make the gap missing data rather than a
    sign of forgery."""
    if reset.capture_gap is None:
        return None
    seg = reset.seg
    sender = f.side(seg.side)
    marks = []
    if sender.ttl_usual is not None and seg.ttl == sender.ttl_usual:
        marks.append(f"TTL {seg.ttl} as on its other packets")
    ids = [i for i in sender.ip_ids if i != 0]
    if f.conn.ip_version == 4 and ids and seg.ip_id and 0 < (seg.ip_id - ids[-1]) % 65536 <= 4096:
        skipped = (seg.ip_id - ids[-1]) % 65536 - 1
        marks.append(f"IP ID {seg.ip_id} continues its sequence after {ids[-1]} ({skipped} packet(s) not captured)")
    own = (
        f"; {', '.join(marks)}: the RST is its sender's own, the gap is missing capture, not a forged reset"
        if marks
        else ""
    )
    text = (
        f"the capture missed segments before this RST ({reset.capture_gap}): the receiver's real window is "
        f"unknown and nothing from it follows, so the RST ended the connection{own}"
    )
    return seg_item(f, seg, text, capture_gap=reset.capture_gap)


def describe_trigger(f: Facts, reset: ResetFacts) -> EvidenceItem | None:
    """The segment the RST answers, as evidence (once per RST)."""
    return memoized(f, ("describe_trigger", reset.seg.index), _describe_trigger, f, reset)


def _describe_trigger(f: Facts, reset: ResetFacts) -> EvidenceItem | None:
    trig = reset.trigger
    if trig is None:
        return None
    kind = "data" if trig.length else ("FIN" if trig.fin else ("SYN-ACK" if trig.syn else "ACK"))
    shape = (
        "the RST has the shape of a reply to it (RFC 9293: seq = its ACK, no ACK bit)"
        if reset.answers_trigger
        else "the RST is not shaped as a reply to it"
    )
    text = (
        f"last segment before the RST: {kind} from {who(f, trig.side)} seq={trig.rel_seq} len={trig.length}, "
        f"{ms(reset.reaction_ns)} before the RST, after {ms(reset.idle_before_ns)} of silence; {shape}"
    )
    return seg_item(f, trig, text, reaction_ns=reset.reaction_ns, idle_ns=reset.idle_before_ns)


def is_active_shape(reset: ResetFacts) -> bool:
    """RST+ACK sent by a live socket (tcp_send_active_reset), as opposed to a reply reset."""
    return reset.seg.has_ack and not reset.answers_trigger


def idle_threshold(f: Facts) -> int:
    rtt = f.rtt_ns or 0
    return max(IDLE_MIN_NS, IDLE_RTT_FACTOR * rtt)


def is_idle_gap(f: Facts, gap_ns: int) -> bool:
    """A silence long in absolute terms, compared with the RTT, and compared with the connection's usual
    pace."""
    if gap_ns < idle_threshold(f):
        return False
    return f.median_gap_ns == 0 or gap_ns >= 5 * f.median_gap_ns


def unacked_at(sender: SideFacts, receiver: SideFacts, index: int) -> int:
    """Bytes ``sender`` had sent before packet ``index`` that ``receiver`` had not acknowledged by then."""
    # Payload only: an unacknowledged FIN is not lost data.
    highest: int | None = None  # one loop instead of max() over a generator: several rules ask, per connection
    for s in sender.segs:
        if s.index >= index:
            break  # a side's segments are in capture order
        if s.length and not s.rst:
            end = s.rel_seq + s.length
            if highest is None or end > highest:
                highest = end
    sent = 0 if highest is None else highest
    if sent == 0:
        return 0
    acked = receiver.highest_ack_before(index)
    if acked is None:
        acked = 1 if sender.isn_seen else 0
    return max(0, sent - acked)


def closing_reset(f: Facts) -> ResetFacts | None:
    """The RST that ended the connection; failing that, the first reply reset a closed endpoint sent after its
    FIN (the receiver may have ignored it, having moved RCV.NXT past the RST's seq, yet it shows what the
    closed side did)."""
    if f.ending_reset is not None:
        return f.ending_reset
    for reset in f.resets:
        fin = f.side(reset.seg.side).fin
        if fin is not None and fin.index < reset.seg.index and reset.answers_trigger:
            return reset
    return None


def victim_view_for_reset(reset: ResetFacts, receiver: SideFacts, *, after_sender_fin: bool = False) -> AppView:
    """The errno rule applied to the RST's receiver, with the call that most likely reported it.

    ``after_sender_fin``: the RST's sender had sent a FIN before it, so the receiver processed that FIN first
    (same direction, in order) and was in CLOSE_WAIT, whatever a capture-side estimate of its state says."""
    return _victim_view(reset.info.receiver_state, after_sender_fin)


@lru_cache(maxsize=64)
def _victim_view(state: TcpState, after_sender_fin: bool) -> AppView:
    """The view depends only on the receiver's state: one shared (immutable) value per state."""
    if after_sender_fin and state in (TcpState.ESTABLISHED, TcpState.UNKNOWN):
        state = TcpState.CLOSE_WAIT
    errno = errno_for_reset(state)
    if errno is Errno.ECONNREFUSED:
        return AppView(errno, Operation.CONNECT, "RST accepted in SYN_SENT: connect() fails with ECONNREFUSED")
    if errno is Errno.EPIPE:
        return AppView(
            Errno.EOF,
            Operation.READ,
            "it had received the FIN, so a read returns EOF (no response), and the RST accepted in "
            "CLOSE_WAIT "
            "makes its next write fail with EPIPE",
        )
    if state is TcpState.UNKNOWN:
        return AppView(errno, Operation.READ, "RST accepted: the next read or write fails with ECONNRESET")
    return AppView(
        errno,
        Operation.READ,
        f"RST accepted in {state.value}: the pending or next read fails with ECONNRESET; a write after that gets EPIPE",
    )


SILENT = AppView(None, None, "nothing: its application had already closed the socket (the kernel acted alone)")


@fast_init
@dataclass(frozen=True, slots=True)
class ForgeryCheck:
    """How much the capture says an RST was not made by the host whose address it carries."""

    score: float
    """0 (consistent with the host) .. 1 (certainly from elsewhere)."""
    items: tuple[EvidenceItem, ...]
    consistent: tuple[EvidenceItem, ...]
    """Evidence that the RST is consistent with its sender."""


def forgery(f: Facts, ctx: DiagnosisContext, v: Vantage, reset: ResetFacts) -> ForgeryCheck:
    """TTL, IP ID, timing and both-directions evidence that an RST came from a middlebox (once per RST: most
    rules weigh it)."""
    # ctx and v live as long as the diagnosis that holds these facts: their ids cannot be reused meanwhile.
    key = ("forgery", reset.seg.index, id(ctx), id(v))
    return memoized(f, key, _forgery, f, ctx, v, reset)


def _forgery(f: Facts, ctx: DiagnosisContext, v: Vantage, reset: ResetFacts) -> ForgeryCheck:
    seg = reset.seg
    sender = f.side(seg.side)
    items: list[EvidenceItem] = []
    consistent: list[EvidenceItem] = []
    score = 0.0
    profile = ctx.ttl_profile(f.conn.address(seg.side)[0])
    if sender.ttl_usual is not None:
        diff = abs(seg.ttl - sender.ttl_usual)
        same_class = initial_ttl(seg.ttl) == initial_ttl(sender.ttl_usual)
        if diff and profile.get(seg.ttl, 0) > 0:
            # The same address sends ordinary packets with this TTL on other connections: a different machine
            # now answers for it (VIP failover, anycast, route change), not a device forging resets.
            score += 0.1
            consistent.append(
                seg_item(
                    f,
                    seg,
                    f"RST TTL {seg.ttl} differs from this connection's {sender.ttl_usual} but matches the "
                    "same "
                    "address's packets on other connections: another machine answers for that address now "
                    "(failover, route change)",
                )
            )
        elif not same_class or diff >= 2:
            score += 0.55
            items.append(
                seg_item(
                    f,
                    seg,
                    f"RST TTL {seg.ttl} ({hops(seg.ttl)} hops from an initial "
                    f"{initial_ttl(seg.ttl)}) differs from the sender's own packets' TTL "
                    f"{sender.ttl_usual}: it was made {'elsewhere' if not same_class else 'closer'}"
                    " on the path",
                    rst_ttl=seg.ttl,
                    usual_ttl=sender.ttl_usual,
                )
            )
        elif diff == 1:
            score += 0.2
            items.append(seg_item(f, seg, f"RST TTL {seg.ttl} is one off the sender's usual {sender.ttl_usual}"))
        else:
            consistent.append(seg_item(f, seg, f"RST TTL {seg.ttl} equals the sender's own packets' TTL"))
    elif profile and seg.ttl not in profile:
        common = profile.most_common(1)[0][0]
        if abs(common - seg.ttl) >= 2 or initial_ttl(common) != initial_ttl(seg.ttl):
            score += 0.45
            items.append(
                seg_item(
                    f,
                    seg,
                    f"RST TTL {seg.ttl} never seen on this host's other packets in the capture (usually {common})",
                )
            )
    score += _payload_reason(f, reset, items)
    score += _seq_anomaly(f, reset, sender, items)
    score += _ip_id_anomaly(f, seg, sender, items)
    score += _too_fast(f, v, reset, items)
    score += _both_directions(f, reset, items)
    return ForgeryCheck(min(1.0, score), tuple(items), tuple(consistent))


def _payload_reason(f: Facts, reset: ResetFacts, items: list[EvidenceItem]) -> float:
    """Kernels' reset paths send RSTs without data; a readable reason in the payload (RFC 1122 4.2.2.12) is
    the
    mark of a firewall, proxy or IPS that writes its own resets."""
    text = reset.info.payload_text
    if not text or reset.seg.length == 0:
        return 0.0
    items.append(
        seg_item(
            f,
            reset.seg,
            f"the RST carries the text {text!r}: endpoint kernels send empty RSTs, a device "
            "that explains its resets (firewall, proxy, IPS) does this",
        )
    )
    return 0.3


def _seq_anomaly(f: Facts, reset: ResetFacts, sender: SideFacts, items: list[EvidenceItem]) -> float:
    """An active RST from the endpoint's own kernel carries seq = its SND.NXT (tcp_acceptable_seq); one below
    what
    the endpoint had already sent was not made by that kernel."""
    seg = reset.seg
    if reset.answers_trigger or not seg.has_ack or not sender.isn_seen:
        return 0.0
    sent = sender.snd_nxt_before(seg.ts_ns, seg.index)
    if sent > 0 and seg.rel_seq < sent - 1:
        items.append(
            seg_item(
                f,
                seg,
                f"RST seq {seg.rel_seq} is below the {sent} its sender had already sent: its own "
                "kernel would have used SND.NXT",
            )
        )
        return 0.15
    return 0.0


def _ip_id_anomaly(f: Facts, seg: Seg, sender: SideFacts, items: list[EvidenceItem]) -> float:
    if f.conn.ip_version != 4 or seg.ip_id == 0:
        return 0.0
    ids = [i for i in sender.ip_ids if i != 0]
    if len(ids) < 3:
        return 0.0
    steps = [(b - a) % 65536 for a, b in itertools.pairwise(ids)]
    if max(steps) > 64:
        return 0.0  # not a per-connection counter: IP IDs carry no information
    expected = ids[-1]
    distance = min((seg.ip_id - expected) % 65536, (expected - seg.ip_id) % 65536)
    if distance > 1024:
        items.append(
            seg_item(f, seg, f"RST IP ID {seg.ip_id} is far from the sender's IP ID sequence (last {expected})")
        )
        return 0.15
    return 0.0


def _too_fast(f: Facts, v: Vantage, reset: ResetFacts, items: list[EvidenceItem]) -> float:
    """An RST that reaches a capture next to its receiver sooner after the segment it reacts to than a round
    trip to its sender allows did not come from the sender."""
    rtt = f.rtt_ns
    if rtt is None or rtt < NS_PER_MS or v.near is not reset.seg.side.other:
        return 0.0
    reference = _reacts_to(f, reset)
    if reference is None:
        return 0.0
    reaction = reset.seg.ts_ns - reference.ts_ns
    if reaction < rtt // 3:
        items.append(
            seg_item(
                f,
                reset.seg,
                f"the RST arrived {ms(reaction)} after the segment it reacts to, faster than "
                f"the {ms(rtt)} round trip to the sender",
            )
        )
        return 0.45
    return 0.0


def _reacts_to(f: Facts, reset: ResetFacts) -> Seg | None:
    """The segment the RST's sender must have received before sending it: the one a reply reset answers, or
    the latest one an RST+ACK acknowledges."""
    if reset.answers_trigger:
        return reset.trigger
    ack = reset.seg.rel_ack
    if ack is None:
        return None
    covered = [
        s
        for s in f.side(reset.seg.side.other).segs
        if s.index < reset.seg.index and not s.rst and (s.length or s.syn or s.fin) and s.end_seq == ack
    ]
    return covered[-1] if covered else None


def _both_directions(f: Facts, reset: ResetFacts, items: list[EvidenceItem]) -> float:
    if len(f.resets) < 2:
        return 0.0  # most connections: a single RST, which cannot go both ways
    other = [r for r in f.resets if r.seg.side is not reset.seg.side]
    close = [r for r in other if abs(r.seg.ts_ns - reset.seg.ts_ns) <= NS_PER_S]
    if not close:
        return 0.0
    sender_fin = f.side(reset.seg.side).fin
    other_fin = f.side(reset.seg.side.other).fin
    if sender_fin is not None or other_fin is not None:
        return 0.0
    items.append(
        seg_item(
            f,
            close[0].seg,
            "RSTs toward both endpoints within a second, neither after a FIN: a "
            "device in the middle tearing the session down both ways",
        )
    )
    return 0.35


def how_to_tell_sender(v: Vantage, sender: Side) -> str:
    if v.can_see_sender(sender):
        return "this capture is next to the RST's sender, so the RST did leave that host"
    where = "server" if sender is Side.RESP else "client"
    return f"a {where}-side capture would show whether the RST left the {where}"
