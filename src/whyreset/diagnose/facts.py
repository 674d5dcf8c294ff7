"""Per-connection facts the rules reason with, computed once from the connection's own packets.

The core summarises a connection (states, events, `ResetInfo`); the rules also need a few packet-level facts
that a summary loses: the segment an RST answers, how long the connection was silent before it, which sequence
numbers each side had sent and acknowledged at that moment, and the TTL / IP ID each side used on its ordinary
packets. They are computed here from ``Connection.packets`` so every rule reads the same numbers.

Sequence numbers are made relative to each side's ISN (or to its first sequence number minus one when the SYN
was not captured) and unwrapped modulo 2**32 around that base, like Wireshark's relative sequence numbers.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress
from operator import not_, sub
from typing import NamedTuple, TypeVar, cast

from whyreset.core.connection import Connection, ResetInfo, RstAcceptability
from whyreset.core.slots import slot_builder
from whyreset.ids import Side, TcpState
from whyreset.model import ACK, FIN, RST, SYN, Array, PacketTable

SEQ_MOD = 1 << 32
HALF_SEQ = 1 << 31
INITIAL_TTLS = (32, 64, 128, 255)
"""Initial TTL / hop-limit values stacks use (Linux/macOS 64, Windows 128, network gear 255, old stacks
32)."""


class Seg(NamedTuple):
    """One captured segment of the connection, with sequence numbers relative to each side's base.

    A named tuple rather than a frozen dataclass: a diagnosis builds one per packet of every abnormal
    connection, and a tuple is built five times faster (the flag tests and the sequence end are stored, not
    recomputed, for the same reason: rules read them hundreds of times per connection)."""

    index: int  # type: ignore[assignment]  # the row, shadowing tuple.index() on purpose
    """Row in ``Connection.packets``."""
    frame: int
    ts_ns: int
    side: Side
    flags: int
    rel_seq: int
    """Sequence number relative to the sender's ISN."""
    rel_ack: int | None
    """Acknowledgment relative to the receiver's ISN, None without the ACK bit."""
    seq: int
    """Absolute sequence number."""
    ack: int
    """Absolute acknowledgment field (meaningful only with the ACK bit)."""
    length: int
    ttl: int
    ip_id: int
    window: int
    syn: bool
    fin: bool
    rst: bool
    has_ack: bool
    end_seq: int
    """Relative sequence number just past this segment (SYN and FIN count one)."""


def initial_ttl(ttl: int) -> int:
    """The initial TTL a packet most likely left its sender with (the smallest common initial value >=
    ttl)."""
    for initial in INITIAL_TTLS:
        if ttl <= initial:
            return initial
    return 255


def hops(ttl: int) -> int:
    """Routers crossed since the sender, assuming a common initial TTL."""
    return initial_ttl(ttl) - ttl


class SideFacts(NamedTuple):
    """What one endpoint sent, as the capture shows it (a named tuple: built twice per abnormal connection, five
    times faster than a frozen dataclass, as immutable)."""

    side: Side
    segs: tuple[Seg, ...]
    """Every segment it sent, in capture order."""
    isn_seen: bool
    """Its SYN (or SYN-ACK) was captured, so relative sequence numbers are exact."""
    syn: Seg | None
    fin: Seg | None
    """Its first FIN."""
    data: tuple[Seg, ...]
    """Segments carrying payload (before its first RST)."""
    resets: tuple[Seg, ...]
    ttl_usual: int | None
    """Most frequent TTL over its non-RST segments."""
    ip_ids: tuple[int, ...]
    """IP IDs of its non-RST IPv4 segments, in order."""
    indices: tuple[int, ...] = ()
    """Row index of each of its segments (for bisection)."""
    snd_nxt_prefix: tuple[int, ...] = (0,)
    """Entry k: highest sequence end over its first k segments (RSTs excluded)."""
    ack_prefix: tuple[int | None, ...] = (None,)
    """Entry k: highest ACK over its first k segments (RSTs excluded)."""
    resent: bool = False
    """It sent some payload byte or its FIN more than once (a segment starting below what it had already
    sent): the precondition of every retransmission-based cause."""
    payload_end: int = 0
    """Highest relative sequence end of its payload, RSTs excluded (0 without payload)."""
    payload_start: int | None = None
    """Lowest relative sequence number of its payload, RSTs excluded."""
    payload_rows: tuple[int, int] | None = None
    """Rows of its first and last segments with payload, RSTs excluded (who spoke first, who spoke last)."""
    syns: int = 0
    """Segments with the SYN bit (retransmissions included)."""
    syn_acks: int = 0
    """Segments with both SYN and ACK bits (a responder's SYN-ACKs)."""

    @property
    def last_data(self) -> Seg | None:
        return self.data[-1] if self.data else None

    def snd_nxt_before(self, ts_ns: int, index: int) -> int:
        """Highest relative sequence end it had sent before the given packet (its SND.NXT as far as we saw).
        ``ts_ns`` is kept for callers that think in time; packets are in capture order already."""
        count = bisect_left(self.indices, index)
        return self.snd_nxt_prefix[count]

    def highest_ack_before(self, index: int) -> int | None:
        """Highest acknowledgment it sent before the given packet (the other side's bytes it had received)."""
        count = bisect_left(self.indices, index)
        return self.ack_prefix[count]


class ResetFacts(NamedTuple):
    """One RST, joined to its packet and to the segment it most likely answers (a named tuple, like `Seg`)."""

    info: ResetInfo
    seg: Seg
    accepted: bool
    """The receiver aborted the connection on it (exact, SYN_SENT with a good ACK, or the CLOSE_WAIT rcv_nxt-1
    case of Linux's tcp_reset_check)."""
    trigger: Seg | None
    """The last segment from the other side captured before the RST (what it may answer)."""
    reaction_ns: int | None
    """Time from the trigger to the RST at the capture point."""
    idle_before_ns: int
    """Silence on the connection before the trigger (or before the RST when there is no trigger)."""
    answers_trigger: bool
    """The RST has the shape of the RFC 793 reply to the trigger: no ACK bit and seq = the trigger's ACK, or
    ACK bit with seq 0 and ack = trigger's sequence end (Linux tcp_v4_send_reset)."""
    capture_gap: str | None = None
    """Why the capture must have missed segments of this connection before the RST (None when nothing says
    so): the RST's sequence number is beyond what its sender was seen sending, or it acknowledges data of the
    receiver that the capture never showed. Then the receiver's real RCV.NXT is unknown, and an RST that looks
    "in window but not exact" against the captured numbers may have been exact."""


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the rules read about one connection."""

    conn: Connection
    segs: tuple[Seg, ...]
    orig: SideFacts
    resp: SideFacts
    rtt_ns: int | None
    """Round-trip time: the handshake's, else the fastest data->ACK turnaround seen, else None."""
    syn_to_synack_ns: int | None
    synack_to_ack_ns: int | None
    resets: tuple[ResetFacts, ...]
    median_gap_ns: int
    """Median gap between consecutive packets of the connection (0 with fewer than three packets)."""
    ending_reset: ResetFacts | None = None
    """The first RST the receiver accepted: the one that ended the connection."""
    max_gap_ns: int = 0
    """Longest silence between two consecutive packets of the connection."""
    memo: dict[object, object] = field(default_factory=dict, compare=False, repr=False)
    """Derived facts several rules share (the forgery check of an RST, an abort's shape, a stalled
    transfer), computed by the first rule that asks (see `memoized`)."""

    def side(self, side: Side) -> SideFacts:
        return self.orig if side is Side.ORIG else self.resp

    @property
    def unaccepted_resets(self) -> tuple[ResetFacts, ...]:
        return tuple(r for r in self.resets if not r.accepted)

    def segs_after(self, index: int) -> tuple[Seg, ...]:
        return tuple(s for s in self.segs if s.index > index)

    def gap_before(self, seg: Seg) -> int:
        """Silence on the connection before ``seg`` (0 for the first packet)."""
        if seg.index == 0:
            return 0
        return seg.ts_ns - self.segs[seg.index - 1].ts_ns


def _unwrap(value: int, base: int) -> int:
    rel = (value - base) % SEQ_MOD
    return rel - SEQ_MOD if rel >= HALF_SEQ else rel


def _bases(conn: Connection, flags: list[int], seqs: list[int], from_orig: list[bool]) -> tuple[int, int]:
    """(originator's, responder's) number their relative sequence numbers count from (ISN, or first seq - 1).

    Tuples rather than dicts keyed by `Side` here and below: a StrEnum member hashes through a method lookup,
    ~5x slower than a str."""
    return _base(conn.orig.isn, True, flags, seqs, from_orig), _base(conn.resp.isn, False, flags, seqs, from_orig)


def _base(isn: int | None, own: bool, flags: list[int], seqs: list[int], from_orig: list[bool]) -> int:
    if isn is not None:
        return int(isn)
    rows = [i for i, o in enumerate(from_orig) if o is own]
    plain = [i for i in rows if not flags[i] & RST] or rows
    syn_rows = [i for i in plain if flags[i] & SYN]
    if syn_rows:
        return seqs[syn_rows[0]]
    if plain:
        return (seqs[plain[0]] - 1) % SEQ_MOD
    return 0


_new_tuple = tuple.__new__
"""Builds a named tuple (`Seg`, `SideFacts`) from its values in field order without NamedTuple's Python-level
``__new__`` (one call less per packet)."""

_FLAG_BITS = tuple(((f & SYN) != 0, (f & FIN) != 0, (f & RST) != 0, (f & ACK) != 0) for f in range(256))
"""(SYN, FIN, RST, ACK) per value of the flags' low byte (where those four bits are): one lookup per packet
instead of four tests."""

_COLUMNS = ("frame", "ts_ns", "flags", "seq", "ack", "payload_len", "ttl", "ip_id", "window")
"""The packet columns the facts read, in the order `_side` unpacks them."""


Row = tuple[int, int, int, int, int, int, int, int, int, int]
"""A packet's row number in the connection, then its values in `_COLUMNS` order."""


def _rows(conn: Connection) -> tuple[list[Row], list[Row], list[int], list[int], list[int], list[bool]]:
    """(the originator's rows, the responder's, timestamps, flags, sequence numbers, directions) as plain
    Python values: numpy scalars cost a call per field on these tiny tables."""
    columns, start, stop = row_range(conn.packets)
    values = [columns[name][start:stop].tolist() for name in _COLUMNS]
    from_orig: list[bool] = conn.from_orig.tolist()
    rows: list[Row] = list(zip(range(stop - start), *values, strict=True))
    orig_rows = list(compress(rows, from_orig))
    resp_rows = list(compress(rows, map(not_, from_orig)))
    return orig_rows, resp_rows, values[1], values[2], values[3], from_orig


def row_range(packets: PacketTable) -> tuple[dict[str, Array], int, int]:
    """The columns holding a connection's rows, and the rows' range in them.

    A connection's rows are a view of its tracker batch (`LazyRows`) whose first access slices every column;
    the diagnosis reads a few, so it slices only those (`PacketTable.row_range`)."""
    return packets.row_range()


def _side(
    conn: Connection,
    side: Side,
    rows: list[Row],
    bases: tuple[int, int],
    segs: list[Seg | None],
) -> SideFacts:
    """One endpoint's segments (stored in ``segs`` at their rows) and its facts, in one pass over its rows."""
    own_base, peer_base = bases
    own_segs: list[Seg] = []
    indices: list[int] = []
    resets: list[Seg] = []
    data: list[Seg] = []
    ip_ids: list[int] = []
    ttl_counts: dict[int, int] = {}
    syn: Seg | None = None
    fin: Seg | None = None
    snd_nxt, highest_ack = 0, None
    # Entry k of the prefixes covers the first k segments (RSTs excluded): SND.NXT and the highest ACK so far.
    snd_prefix: list[int] = [0]
    ack_prefix: list[int | None] = [None]
    resent = False
    payload_end, payload_start, first_payload, last_payload = 0, None, None, 0
    syns = syn_acks = 0
    for i, frame, ts, flags, seq, ack, length, ttl, ip_id, window in rows:
        # _unwrap inlined: this loop runs for every packet of every abnormal connection.
        rel_seq = (seq - own_base) % SEQ_MOD
        if rel_seq >= HALF_SEQ:
            rel_seq -= SEQ_MOD
        is_syn, is_fin, is_rst, has_ack = _FLAG_BITS[flags & 0xFF]
        rel_ack: int | None = None
        if has_ack:
            rel_ack = (ack - peer_base) % SEQ_MOD
            if rel_ack >= HALF_SEQ:
                rel_ack -= SEQ_MOD
        end_seq = rel_seq + length + is_syn + is_fin
        values = (i, frame, ts, side, flags, rel_seq, rel_ack, seq, ack, length, ttl, ip_id, window, is_syn, is_fin,
                  is_rst, has_ack, end_seq)  # fmt: skip
        seg: Seg = _new_tuple(Seg, values)
        segs[i] = seg
        own_segs.append(seg)
        indices.append(i)
        if is_syn:
            if syn is None:
                syn = seg
            syns += 1
            syn_acks += has_ack
        if is_rst:
            resets.append(seg)
        else:
            if not resent and (length or is_fin) and not is_syn and rel_seq < snd_nxt:
                resent = True
            ttl_counts[ttl] = ttl_counts.get(ttl, 0) + 1
            ip_ids.append(ip_id)
            if fin is None and is_fin:
                fin = seg
            if length:
                if not resets:
                    data.append(seg)
                if rel_seq + length > payload_end:
                    payload_end = rel_seq + length
                if payload_start is None or rel_seq < payload_start:
                    payload_start = rel_seq
                if first_payload is None:
                    first_payload = i
                last_payload = i
            if end_seq > snd_nxt:
                snd_nxt = end_seq
            if rel_ack is not None and (highest_ack is None or rel_ack > highest_ack):
                highest_ack = rel_ack
        snd_prefix.append(snd_nxt)
        ack_prefix.append(highest_ack)
    facts = (
        side,
        tuple(own_segs),
        conn.stats(side).isn is not None,
        syn,
        fin,
        tuple(data),
        tuple(resets),
        max(ttl_counts, key=ttl_counts.__getitem__) if ttl_counts else None,
        tuple(ip_ids) if conn.ip_version == 4 else (),
        tuple(indices),
        tuple(snd_prefix),
        tuple(ack_prefix),
        resent,
        payload_end,
        payload_start,
        None if first_payload is None else (first_payload, last_payload),
        syns,
        syn_acks,
    )
    side_facts: SideFacts = _new_tuple(SideFacts, facts)
    return side_facts


def _handshake_times(orig: SideFacts, resp: SideFacts) -> tuple[int | None, int | None]:
    syn = orig.syn
    synack = next((s for s in resp.segs if s.syn and s.has_ack), None)
    if syn is None or synack is None:
        return None, None
    first_syn_ts = syn.ts_ns
    # Measure from the last SYN transmission before the SYN-ACK: the SYN-ACK answers the latest one it
    # received.
    for seg in orig.segs:
        if seg.syn and seg.ts_ns <= synack.ts_ns:
            first_syn_ts = seg.ts_ns
    ack = next((s for s in orig.segs if s.index > synack.index and not s.syn and s.has_ack and not s.rst), None)
    syn_to_synack = synack.ts_ns - first_syn_ts
    synack_to_ack = ack.ts_ns - synack.ts_ns if ack is not None else None
    return syn_to_synack, synack_to_ack


def _data_rtt(segs: tuple[Seg, ...]) -> int | None:
    """Fastest turnaround from a data segment to the first ACK covering it: an upper bound of the RTT seen
    from the capture point toward the receiver (used when the handshake was not captured)."""
    best: int | None = None
    for i, seg in enumerate(segs):
        if seg.length == 0 or seg.rst:
            continue
        for later in segs[i + 1 : i + 40]:
            if later.side is not seg.side and later.rel_ack is not None and later.rel_ack >= seg.end_seq:
                turnaround = later.ts_ns - seg.ts_ns
                best = turnaround if best is None else min(best, turnaround)
                break
    return best


ACCEPTED = frozenset({RstAcceptability.EXACT, RstAcceptability.SYN_SENT_ACK_OK})


def _capture_gap(conn: Connection, seg: Seg, receiver: SideFacts, sender: SideFacts) -> str | None:
    """Why the capture shows less than the endpoints exchanged before this RST, or None.

    Only an RST with the ACK bit carries the sender's own SND.NXT and RCV.NXT (tcp_send_active_reset, or a
    reply to a segment without ACK): a reply reset's seq copies the segment it answers, which may itself be
    bogus. Wireshark flags the same two symptoms ("previous segment not captured", "ACKed segment that wasn't
    captured")."""
    if not seg.has_ack or seg.rel_ack is None:
        return None
    sent = sender.snd_nxt_before(seg.ts_ns, seg.index)
    peer_sent = receiver.snd_nxt_before(seg.ts_ns, seg.index)
    reasons = []
    if sender.isn_seen and seg.rel_seq > sent:
        reasons.append(f"its seq {seg.rel_seq} is {seg.rel_seq - sent} beyond the {sent} its sender was seen sending")
    if receiver.isn_seen and seg.rel_ack > peer_sent:
        reasons.append(
            f"its ACK {seg.rel_ack} acknowledges {seg.rel_ack - peer_sent} byte(s) of the peer's that the capture "
            "never showed"
        )
    lost = conn.stats(sender.side).lost_segments + conn.stats(receiver.side).lost_segments
    if reasons and lost:
        reasons.append(f"the core counted {lost} lost segment(s)")
    return "; ".join(reasons) or None


def _accepted(
    info: ResetInfo, seg: Seg, receiver: SideFacts, sender: SideFacts, capture_gap: str | None = None
) -> bool:
    if info.acceptability in ACCEPTED:
        return True
    windowed = info.acceptability in (RstAcceptability.IN_WINDOW, RstAcceptability.OUT_OF_WINDOW)
    if capture_gap is not None and windowed and not any(s.index > seg.index and not s.rst for s in receiver.segs):
        # The window was judged against numbers the capture saw, and it missed segments: the receiver's real
        # RCV.NXT is unknown. An RST it rejected would draw a challenge ACK (RFC 5961) or more data; nothing
        # from it afterwards means the RST ended the connection.
        return True
    if info.acceptability in (RstAcceptability.IN_WINDOW, RstAcceptability.OUT_OF_WINDOW):
        # Linux tcp_reset_check(): in CLOSE_WAIT / LAST_ACK / CLOSING an RST at rcv_nxt - 1 (the sender's FIN
        # sequence number, i.e. seq = the ACK of data that crossed the FIN) is accepted too. The sender's FIN
        # went the same way before the RST, so the receiver had processed it: it was in one of those states
        # (whatever a capture-side estimate of its state says), unless it had closed first.
        fin = sender.fin
        if fin is None or fin.index > seg.index or seg.rel_seq != fin.rel_seq + fin.length:
            return False
        return info.receiver_state not in (TcpState.FIN_WAIT_2, TcpState.TIME_WAIT)
    if info.acceptability is RstAcceptability.UNKNOWN:
        # The receiver's window is unknown: accept when the RST sits where the receiver last acknowledged, or
        # when nothing from the receiver follows it (the connection ended there).
        rcv_nxt = receiver.highest_ack_before(seg.index)
        if rcv_nxt is not None and seg.rel_seq == rcv_nxt:
            return True
        return not any(s.index > seg.index and not s.rst for s in receiver.segs)
    return False


def _reset_facts(
    conn: Connection, segs: tuple[Seg, ...], orig: SideFacts, resp: SideFacts
) -> tuple[ResetFacts, ...]:
    by_frame = {s.frame: s for s in (*orig.resets, *resp.resets)}
    out: list[ResetFacts] = []
    for info in conn.resets:
        seg = by_frame.get(info.frame)
        if seg is None:
            continue
        receiver, sender = (resp, orig) if info.sender is Side.ORIG else (orig, resp)
        gap = _capture_gap(conn, seg, receiver, sender) if info.acceptability not in ACCEPTED else None
        trigger = next((s for s in reversed(segs[: seg.index]) if s.side is not seg.side), None)
        reaction = seg.ts_ns - trigger.ts_ns if trigger is not None else None
        anchor = trigger if trigger is not None else seg
        idle = anchor.ts_ns - segs[anchor.index - 1].ts_ns if anchor.index > 0 else 0
        answers = False
        if trigger is not None:
            if not seg.has_ack and trigger.has_ack:
                answers = seg.seq == trigger.ack
            elif seg.has_ack and not trigger.has_ack:
                answers = seg.ack == (trigger.seq + trigger.length + int(trigger.syn) + int(trigger.fin)) % SEQ_MOD
        accepted = _accepted(info, seg, receiver, sender, gap)
        out.append(_new_tuple(ResetFacts, (info, seg, accepted, trigger, reaction, idle, answers, gap)))
    return tuple(out)


def _gaps(ts: list[int]) -> tuple[int, int]:
    """(median, longest) gap between consecutive packets (timestamps ``ts``); the median as statistics.median
    gives it (0 with fewer than two gaps)."""
    gaps = sorted(map(sub, ts[1:], ts[:-1]))
    count = len(gaps)
    longest = gaps[-1] if gaps else 0
    if count < 2:
        return 0, longest
    middle = count // 2
    if count % 2:
        return gaps[middle], longest
    return int((gaps[middle - 1] + gaps[middle]) / 2), longest


def compute_facts(conn: Connection) -> Facts:
    """Derive the rules' facts from a connection (pure, no I/O)."""
    orig_rows, resp_rows, ts, flags, seqs, from_orig = _rows(conn)
    orig_base, resp_base = _bases(conn, flags, seqs, from_orig)
    slots: list[Seg | None] = [None] * len(ts)
    orig = _side(conn, Side.ORIG, orig_rows, (orig_base, resp_base), slots)
    resp = _side(conn, Side.RESP, resp_rows, (resp_base, orig_base), slots)
    segs = cast(tuple[Seg, ...], tuple(slots))  # every row belongs to one side
    syn_to_synack, synack_to_ack = _handshake_times(orig, resp)
    rtt: int | None = None
    if syn_to_synack is not None and synack_to_ack is not None:
        rtt = syn_to_synack + synack_to_ack
    if rtt is None:
        rtt = _data_rtt(segs)
    resets = _reset_facts(conn, segs, orig, resp)
    median, longest = _gaps(ts)
    ending = next((r for r in resets if r.accepted), None)
    return _new_facts(conn, segs, orig, resp, rtt, syn_to_synack, synack_to_ack, resets, median, ending, longest, {})


_new_facts: Callable[..., Facts] = slot_builder(Facts)
"""`Facts` from all its fields in order (memo last), without the frozen dataclass's ``__init__``."""


T = TypeVar("T")


def memoized(facts: Facts, key: object, compute: Callable[..., T], *args: object) -> T:
    """``compute(*args)`` once per connection: rules share derived facts through ``facts.memo`` (the arguments
    are passed along rather than closed over: no function object is made per call)."""
    memo = facts.memo
    value = memo.get(key, _MISSING)
    if value is _MISSING:
        value = memo[key] = compute(*args)
    return cast(T, value)


_MISSING = object()
"""Not in the memo (None is a value: a connection without an abort shape)."""
