"""Turn an analysed batch into `Connection` objects.

Bulk numbers (`DirectionStats`) are aggregated for the whole batch with ``np.bincount``/``np.maximum.at``, and
`batchindex` locates every row the rebuild needs; the per-connection Python work then walks only the control
rows (SYN, FIN, RST, the ACKs that acknowledge a SYN or FIN, and the row where a mid-stream connection has
seen data both ways) through the two endpoint machines of `tcpstate`.

RST acceptability (RFC 5961 3.2, RFC 9293 3.10.7.4), judged against the receiver R of an RST sent by X:

* R in SYN_SENT: accepted when the RST has ACK and acknowledges R's SYN (ack = ISN + 1), else dropped.
* otherwise R's RCV.NXT is taken as the furthest of X's sequence end sent so far and R's own highest ACK; R's
  window is its last advertised window, shifted by R's window scale when both SYNs carried the option
  (RFC 7323). seq = RCV.NXT is exact (accepted), RCV.NXT < seq < RCV.NXT + window draws a challenge ACK (not
  accepted), anything else is dropped. Without SYNs the scale is unknown: only an exact match or a fit in the
  unscaled window can be judged.
* when R's receive state is unknown, the RST counts as accepted unless R keeps sending afterwards.

Outcomes (design/causes.md), first rule that matches: ``not_established`` (no handshake; but SYNs
retransmitted without any answer is ``timeout``), ``clean`` (both FINs acknowledged before any accepted RST),
``reset`` (an accepted RST), ``half_closed`` (one FIN acknowledged), ``timeout`` (the connection ends with
unanswered retransmissions by one side), ``open``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from whyreset.core.analysis import BatchAnalysis
from whyreset.core.batchindex import index_batch, rows_by_connection
from whyreset.core.connection import (
    Connection,
    DirectionStats,
    Event,
    EventKind,
    ResetInfo,
    RstAcceptability,
    StateChange,
)
from whyreset.core.demux import INFERRED_BY, Demux
from whyreset.core.seqmath import IntArray, group_ids
from whyreset.core.walk import Mark, RstFacts, WalkTemplate, walk
from whyreset.core.zeek import ZeekRows, ZeekShortcut, community_id, summarise, zeek_uid
from whyreset.ids import Outcome, Side, TcpState
from whyreset.model import ACK, FIN, RST, SYN, Array, IcmpError, PacketTable, format_addr

IDLE_GAP_MIN_NS = 1_000_000_000
"""Silences shorter than this are never reported as idle gaps."""
IDLE_GAP_RTT_FACTOR = 10
"""...nor those shorter than this many handshake RTTs (when the RTT is known)."""
CHALLENGE_ACK_WINDOW_NS = 1_000_000_000
"""A challenge ACK must follow the unacceptable RST within this time."""
IPV4_HEADER = 20
IPV6_HEADER = 40


@dataclass(frozen=True, slots=True)
class BatchStats:
    """Per direction group (2*conn + 0 for the originator, + 1 for the responder) aggregates, as lists."""

    packets: list[int]
    payload_bytes: list[int]
    frame_bytes: list[int]
    ip_bytes: list[int]
    data_end: list[int]
    max_ack: list[int]
    retransmissions: list[int]
    out_of_order: list[int]
    lost: list[int]
    dup_acks: list[int]
    zero_windows: list[int]
    keepalives: list[int]
    max_idle: list[int]
    truncated: list[int]


def batch_stats(analysis: BatchAnalysis) -> BatchStats:
    """Aggregate the per-row analysis per direction group, for the whole batch at once."""
    table = analysis.table
    n = len(table)
    groups = 2 * len(analysis.starts)
    key = group_ids(analysis.starts, n) * 2 + (~analysis.from_orig).astype(np.int64)
    flags = table["flags"].astype(np.int64)
    payload = table["payload_len"].astype(np.int64)

    def count(mask: Array) -> IntArray:
        return np.bincount(key, weights=mask.astype(np.float64), minlength=groups).astype(np.int64)

    def total(values: Array) -> IntArray:
        return np.bincount(key, weights=values.astype(np.float64), minlength=groups).astype(np.int64)

    def maximum(values: IntArray, mask: Array, empty: int) -> IntArray:
        out = np.full(groups, empty, np.int64)
        np.maximum.at(out, key[mask], values[mask])
        return out

    data = (payload > 0) & ((flags & RST) == 0)
    has_ack = (flags & ACK) != 0
    header = np.where(table["ip_version"] == 6, IPV6_HEADER, IPV4_HEADER) + _tcp_header_length(table)
    return BatchStats(
        packets=(np.bincount(key, minlength=groups).astype(np.int64)).tolist(),
        payload_bytes=(total(payload)).tolist(),
        frame_bytes=(total(table["frame_len"])).tolist(),
        ip_bytes=(total(header + payload)).tolist(),
        data_end=(maximum(analysis.rel_seq + payload, data, 1)).tolist(),
        max_ack=(maximum(analysis.rel_ack, has_ack, 0)).tolist(),
        retransmissions=(count(analysis.retransmission)).tolist(),
        out_of_order=(count(analysis.out_of_order)).tolist(),
        lost=(count(analysis.lost_segment)).tolist(),
        dup_acks=(count(analysis.dup_ack)).tolist(),
        zero_windows=(count(analysis.zero_window)).tolist(),
        keepalives=(count(analysis.keepalive)).tolist(),
        max_idle=(maximum(analysis.gap_before_ns, np.ones(n, bool), 0)).tolist(),
        truncated=(count(table["truncated"])).tolist(),
    )


def _tcp_header_length(table: PacketTable) -> IntArray:
    """TCP header length estimated from the options the table records (the table has no header-length column).

    Linux pads each option to 4 bytes as below; other stacks may differ by a few bytes per segment.
    """
    opts = (
        np.where(table["opt_mss"] > 0, 4, 0)
        + np.where(table["opt_wscale"] >= 0, 4, 0)
        + np.where(table["opt_has_ts"], 12, 0)
        + np.where(table["opt_sack_perm"] & ~table["opt_has_ts"], 4, 0)
        + np.where(table["sack_count"] > 0, 4 + 8 * table["sack_count"].astype(np.int64), 0)
    )
    return np.asarray(20 + opts, np.int64)


class Batch:
    """Everything computed once per batch that the per-connection rebuild reads."""

    def __init__(self, analysis: BatchAnalysis, demux: Demux) -> None:
        self.analysis = analysis
        self.demux = demux
        self.stats = batch_stats(analysis)
        self.index = index_batch(analysis)
        table = analysis.table
        self.table = table
        self.flags = table["flags"].astype(np.int64)
        self.payload = table["payload_len"].astype(np.int64)
        self.frame = table["frame"]
        self.ts = table["ts_ns"]
        self.fo = analysis.from_orig
        self.rel_seq = analysis.rel_seq
        self.rel_ack = analysis.rel_ack
        self.n = len(table)
        # Python lists of the columns read row by row: indexing a list is several times cheaper than a numpy
        # scalar.
        self.frame_list: list[int] = self.frame.tolist()
        self.ts_list: list[int] = self.ts.tolist()
        self.rel_seq_list: list[int] = self.rel_seq.tolist()
        self.rel_ack_list: list[int] = self.rel_ack.tolist()
        self.payload_list: list[int] = self.payload.tolist()
        self.flags_list: list[int] = self.flags.tolist()
        self.fo_list: list[bool] = self.fo.tolist()
        self._addresses: dict[tuple[int, int], str] = {}
        self.ttl_lists = _ttl_lists(table["ttl"], self.index.key, 2 * len(analysis.starts))
        self.rst_rows = rows_by_connection((self.flags & RST) != 0, self.index.conn, len(analysis.starts))
        gaps = analysis.gap_before_ns
        self.idle_rows = rows_by_connection(gaps >= IDLE_GAP_MIN_NS, self.index.conn, len(analysis.starts))

    def bounds(self, conn: int) -> tuple[int, int]:
        starts = self.analysis.starts
        stop = int(starts[conn + 1]) if conn + 1 < len(starts) else self.n
        return int(starts[conn]), stop

    def event(self, kind: EventKind, row: int, detail: dict[str, object] | None = None) -> Event:
        return _new_event(
            kind,
            Side.ORIG if self.fo_list[row] else Side.RESP,
            self.frame_list[row],
            self.ts_list[row],
            self.rel_seq_list[row],
            self.rel_ack_list[row] if self.flags_list[row] & ACK else None,
            self.payload_list[row],
            dict(detail) if detail else {},
        )

    def address(self, hi: int, lo: int) -> str:
        text = self._addresses.get((hi, lo))
        if text is None:
            text = self._addresses[(hi, lo)] = format_addr(hi, lo)
        return text

    def rows_of(self, start: int, stop: int) -> PacketTable:
        """The connection's rows, sliced from the batch only when someone reads them."""
        return _LazyRows(self.table.columns, start, stop)


class _LazyRows(PacketTable):
    """A `PacketTable` of a slice of the batch's columns, made on first access (most callers never look)."""

    __slots__ = ("_cache", "_source", "_start", "_stop")

    def __init__(self, source: dict[str, Array], start: int, stop: int) -> None:
        self._source = source
        self._start = start
        self._stop = stop
        self._cache: dict[str, Array] | None = None

    @property
    def columns(self) -> dict[str, Array]:
        if self._cache is None:
            self._cache = {name: column[self._start : self._stop] for name, column in self._source.items()}
        return self._cache

    @columns.setter
    def columns(self, value: dict[str, Array]) -> None:
        self._cache = value

    def __len__(self) -> int:
        return self._stop - self._start


T = TypeVar("T")


def _slot_builder(cls: type[T]) -> Callable[..., T]:
    """A keyword constructor for a frozen slots dataclass that fills the slots through their descriptors.

    A frozen dataclass's ``__init__`` pays one ``object.__setattr__`` per field; the rebuild makes a dozen
    objects per connection, so this is the hot path. Every field must be given; the object is the same as
    the one ``cls(**fields)`` makes (equality, hashing and repr come from the class).
    """
    names: tuple[str, ...] = getattr(cls, "__slots__")  # noqa: B009 - dataclass(slots=True) classes
    setters = [(name, getattr(cls, name).__set__) for name in names]
    new = object.__new__

    def build(**values: Any) -> T:
        instance: T = new(cls)
        for name, setter in setters:
            setter(instance, values[name])
        return instance

    return build


_new_connection = _slot_builder(Connection)
_new_direction_stats = _slot_builder(DirectionStats)
_new_reset = _slot_builder(ResetInfo)
_EVENT_SETTERS = [getattr(Event, name).__set__ for name in getattr(Event, "__slots__")]  # noqa: B009
_STATE_SETTERS = [getattr(StateChange, name).__set__ for name in getattr(StateChange, "__slots__")]  # noqa: B009


def _new_event(
    kind: EventKind,
    side: Side,
    frame: int,
    ts_ns: int,
    rel_seq: int,
    rel_ack: int | None,
    length: int,
    detail: dict[str, Any],
) -> Event:
    """`Event(...)` filled through its slot descriptors (see `_slot_builder`); about ten per connection."""
    event: Event = object.__new__(Event)
    for setter, value in zip(
        _EVENT_SETTERS, (kind, side, frame, ts_ns, rel_seq, rel_ack, length, detail), strict=True
    ):
        setter(event, value)
    return event


def _new_state_change(state: TcpState, frame: int, ts_ns: int) -> StateChange:
    """`StateChange(...)` filled through its slot descriptors (see `_slot_builder`)."""
    change: StateChange = object.__new__(StateChange)
    set_state, set_frame, set_ts = _STATE_SETTERS
    set_state(change, state)
    set_frame(change, frame)
    set_ts(change, ts_ns)
    return change


def _ttl_lists(ttl: Array, key: IntArray, keys: int) -> list[tuple[int, ...]]:
    """Per direction key, the distinct TTLs, most frequent first."""
    combined = key * 256 + ttl.astype(np.int64)
    values, counts = np.unique(combined, return_counts=True)
    owner = values // 256
    order = np.lexsort((-counts, owner))
    result: list[list[int]] = [[] for _ in range(keys)]
    for k, value in zip(owner[order].tolist(), (values[order] % 256).tolist(), strict=True):
        result[k].append(value)
    return [tuple(v) for v in result]


def build_connection(
    batch: Batch,
    conn: int,
    index: int,
    port_reuse: bool,
    icmp_errors: Sequence[IcmpError],
    rst_payloads: Mapping[int, bytes],
) -> Connection:
    """Rebuild connection number ``conn`` of the batch, to be published as ``Connection.index = index``."""
    start, stop = batch.bounds(conn)
    table = batch.table
    first_from_orig = batch.fo_list[start]
    src = batch.address(int(table["src_hi"][start]), int(table["src_lo"][start]))
    dst = batch.address(int(table["dst_hi"][start]), int(table["dst_lo"][start]))
    sport, dport = int(table["sport"][start]), int(table["dport"][start])
    orig_h, orig_p, resp_h, resp_p = (src, sport, dst, dport) if first_from_orig else (dst, dport, src, sport)
    walk = _Walk(batch, conn, start, stop, rst_payloads)
    walk.run()
    orig_stats = _direction_stats(batch, conn, True, walk)
    resp_stats = _direction_stats(batch, conn, False, walk)
    icmp_events = _icmp_events(icmp_errors, orig_h, orig_p, resp_h, resp_p)
    events = sorted(walk.events + _bulk_events(batch, conn, walk) + icmp_events, key=_event_order)
    zeek = summarise(_zeek_rows(batch, conn, start, stop, first_from_orig))
    cid = community_id(orig_h, resp_h, orig_p, resp_p)
    first_frame, last_frame = batch.frame_list[start], batch.frame_list[stop - 1]
    ts_first, ts_last = batch.ts_list[start], batch.ts_list[stop - 1]
    window = slice(start, stop)
    return _new_connection(
        index=index,
        uid=zeek_uid(cid, ts_first, first_frame),
        community_id=cid,
        ip_version=int(table["ip_version"][start]),
        orig_h=orig_h,
        orig_p=orig_p,
        resp_h=resp_h,
        resp_p=resp_p,
        orig_inferred_by=INFERRED_BY[int(batch.demux.inferred_by[conn])],
        ts_first_ns=ts_first,
        ts_last_ns=ts_last,
        first_frame=first_frame,
        last_frame=last_frame,
        orig=orig_stats,
        resp=resp_stats,
        orig_states=tuple(walk.timeline[True]),
        resp_states=tuple(walk.timeline[False]),
        outcome=walk.outcome(),
        conn_state=zeek.conn_state,
        history=zeek.history,
        resets=tuple(walk.resets),
        events=tuple(events),
        established=walk.established,
        midstream=walk.midstream,
        port_reuse=port_reuse,
        truncated_packets=int(batch.stats.truncated[2 * conn] + batch.stats.truncated[2 * conn + 1]),
        packets=batch.rows_of(start, stop),
        from_orig=batch.fo[window],
        zeek_orig_bytes=zeek.orig_bytes,
        zeek_resp_bytes=zeek.resp_bytes,
        missed_bytes=zeek.missed_bytes,
    )


def _zeek_rows(batch: Batch, conn: int, start: int, stop: int, first_from_orig: bool) -> ZeekRows:
    index = batch.index
    window = slice(start, stop)
    keys = (2 * conn, 2 * conn + 1)
    fed = index.zeek_fed[conn]
    lo, hi = index.zeek_fed.span(conn)

    def load_fed() -> list[tuple[int, bool, int, int, int]]:
        fo, flags, rel_seq, payload = batch.fo_list, batch.flags_list, batch.rel_seq_list, batch.payload_list
        return [(row - start, fo[row], flags[row], rel_seq[row], payload[row]) for row in fed]

    plain_letters: list[tuple[int, int, str]] = []
    for key, upper in zip(keys, (True, False), strict=True):
        for rows, letter in ((index.zeek_plain_data_row, "D"), (index.zeek_plain_ack_row, "A")):
            if rows[key] >= 0:
                plain_letters.append((int(rows[key]) - start, 0, letter if upper else letter.lower()))
    shortcut = ZeekShortcut(
        fed_rows=[row - start for row in fed],
        shape=index.zeek_shapes[lo:hi],
        load_fed=load_fed,
        plain_letters=plain_letters,
        bulk_candidates=bool(index.zeek_bulk_candidates[conn]),
        own_last=(int(index.zeek_own_last[keys[0]]), int(index.zeek_own_last[keys[1]])),
        peer_acked=(int(index.zeek_peer_acked[keys[0]]), int(index.zeek_peer_acked[keys[1]])),
    )
    analysis = batch.analysis
    return ZeekRows(
        flags=batch.flags[window],
        from_orig=batch.fo[window],
        rel_seq=batch.rel_seq[window],
        rel_ack=batch.rel_ack[window],
        payload=batch.payload[window],
        window=batch.table["window"][window],
        flipped=not first_from_orig,
        first_gap_row_orig=_local_row(analysis.first_gap_ack_row[keys[0]], start),
        first_gap_row_resp=_local_row(analysis.first_gap_ack_row[keys[1]], start),
        missed_bytes=int(analysis.holes_missed[keys[0]] + analysis.holes_missed[keys[1]]),
        shortcut=shortcut,
    )


def _local_row(row: int, start: int) -> int:
    return int(row) - start if row >= 0 else -1


def _event_order(event: Event) -> tuple[int, int]:
    return (event.frame, _KIND_ORDER[event.kind])


_KIND_ORDER = {kind: number for number, kind in enumerate(EventKind)}
_KIND_ORDER[EventKind.IDLE_GAP] = -1  # the silence comes before what ended it


class _Walk:
    """One connection's control walk: its marks, the memoised template, the template stamped with rows."""

    def __init__(
        self, batch: Batch, conn: int, start: int, stop: int, rst_payloads: Mapping[int, bytes]
    ) -> None:
        self.batch = batch
        self.conn = conn
        self.start = start
        self.stop = stop
        self.rst_payloads = rst_payloads
        index = batch.index
        self.keys = {True: 2 * conn, False: 2 * conn + 1}
        self.midstream = index.first_syn_row[2 * conn] < 0 and index.first_syn_row[2 * conn + 1] < 0
        isn_orig, isn_resp = int(batch.analysis.isn_abs[2 * conn]), int(batch.analysis.isn_abs[2 * conn + 1])
        self.isn = {True: isn_orig if isn_orig >= 0 else None, False: isn_resp if isn_resp >= 0 else None}
        self.syn_options = {side: index.first_syn_row[self.keys[side]] for side in (True, False)}
        self.initial = {True: self._initial(True), False: self._initial(False)}
        self.both_ways_row = self._data_both_ways_row()
        self.timeline: dict[bool, list[StateChange]] = {True: [], False: []}
        self.events: list[Event] = []
        self.resets: list[ResetInfo] = []
        self.accepted_rst_row = -1
        self.fin_acked_row: dict[bool, int] = {True: -1, False: -1}
        self.reached_sync = {True: False, False: False}
        self.syn_ack_row = -1
        self.handshake_ack_row = -1

    def _initial(self, side: bool) -> TcpState:
        index = self.batch.index
        key, peer_key = self.keys[side], self.keys[not side]
        if side:
            return TcpState.CLOSED if index.first_pure_syn_row[key] >= 0 else TcpState.UNKNOWN
        if index.first_synack_row[key] >= 0:
            return TcpState.LISTEN
        first_own = index.first_row[key]
        if (
            first_own >= 0
            and index.first_pure_syn_row[peer_key] >= 0
            and self.batch.flags_list[first_own] & RST
        ):
            return TcpState.CLOSED  # answered the SYN with an RST: no socket, or a closed port
        return TcpState.UNKNOWN

    def _data_both_ways_row(self) -> int:
        if not self.midstream:
            return -1
        index = self.batch.index
        firsts = [index.first_data_row[self.keys[side]] for side in (True, False)]
        return max(firsts) if min(firsts) >= 0 else -1

    # -- marks, template, stamping --------------------------------------------------------------------

    def run(self) -> None:
        batch = self.batch
        index = batch.index
        syn_proofs = {index.syn_proof_row[self.keys[side]] for side in (True, False)}
        fin_proofs = {index.fin_proof_row[self.keys[side]] for side in (True, False)}
        rows = set(index.control[self.conn])
        if self.both_ways_row >= 0:
            rows.add(self.both_ways_row)
        self.rows = sorted(rows)
        self.replies: dict[int, int] = {}
        flags_list, fo_list = batch.flags_list, batch.fo_list
        marks = []
        for position, row in enumerate(self.rows):
            flags = flags_list[row] & (SYN | FIN | RST | ACK)
            side = fo_list[row]
            facts = self._rst_facts(position, row, side, flags) if flags & RST else None
            syn_reply = False
            if flags & (SYN | ACK | RST) == SYN:
                reply = self._reply_row(row, not side)
                if reply >= 0:
                    self.replies[position] = reply
                    syn_reply = True
            proofs = (row in syn_proofs, row in fin_proofs, row == self.both_ways_row)
            marks.append(Mark(side, flags, *proofs, facts, syn_reply))
        template = walk(self.initial[True], self.initial[False], tuple(marks))
        self._stamp(template)

    def _rst_facts(self, position: int, row: int, side: bool, flags: int) -> RstFacts:
        peer = not side
        reply = self._reply_row(row, peer)
        if reply >= 0:
            self.replies[position] = reply
        return RstFacts(
            RstAcceptability.SYN_SENT_ACK_OK
            if flags & ACK and self.batch.rel_ack_list[row] == 1
            else RstAcceptability.SYN_SENT_ACK_BAD,
            self._acceptability(row, side),
            self.batch.index.last_non_rst_row[self.keys[peer]] > row,
            reply >= 0,
        )

    def _stamp(self, template: WalkTemplate) -> None:
        batch = self.batch
        frame_list, ts_list = batch.frame_list, batch.ts_list
        rows = self.rows
        first = (frame_list[self.start], ts_list[self.start])
        for side in (True, False):
            line = [_new_state_change(self.initial[side], *first)]
            line += [
                _new_state_change(state, frame_list[rows[m]], ts_list[rows[m]])
                for state, m in template.timeline[side]
            ]
            self.timeline[side] = line
        for op in template.events:
            if op.on_reply:
                cause = "rst_frame" if batch.flags_list[rows[op.mark]] & RST else "syn_frame"
                detail: dict[str, object] = {cause: frame_list[rows[op.mark]]}
                self.events.append(batch.event(op.kind, self.replies[op.mark], detail))
            else:
                self.events.append(
                    batch.event(op.kind, rows[op.mark], dict(op.detail) if op.detail else None)
                )
        table = batch.table
        for reset in template.resets:
            row = rows[reset.mark]
            flags = batch.flags_list[row]
            side = batch.fo_list[row]
            frame = frame_list[row]
            self.resets.append(
                _new_reset(
                    sender=Side.ORIG if side else Side.RESP,
                    frame=frame,
                    ts_ns=ts_list[row],
                    seq=int(table["seq"][row]),
                    ack=int(table["ack"][row]) if flags & ACK else None,
                    rel_seq=batch.rel_seq_list[row] if self.isn[side] is not None else None,
                    ttl=int(table["ttl"][row]),
                    ip_id=int(table["ip_id"][row]),
                    acceptability=reset.acceptability,
                    receiver_state=reset.receiver_state,
                    sender_state=reset.sender_state,
                    payload_text=printable_text(self.rst_payloads.get(frame)),
                )
            )

        def row_of(mark: int) -> int:
            return rows[mark] if mark >= 0 else -1

        self.accepted_rst_row = row_of(template.accepted_rst_mark)
        self.fin_acked_row = {side: row_of(template.fin_acked_mark[side]) for side in (True, False)}
        self.reached_sync = dict(template.reached_sync)
        self.syn_ack_row = row_of(template.syn_ack_mark)
        self.handshake_ack_row = row_of(template.handshake_ack_mark)

    def _acceptability(self, row: int, side: bool) -> RstAcceptability:
        """RFC 5961 verdict for an RST from ``side`` whose receiver is not in SYN_SENT."""
        batch = self.batch
        index = batch.index
        peer = not side
        peer_last_row = int((index.last_row_orig if peer else index.last_row_resp)[row])
        if peer_last_row < self.start:
            return RstAcceptability.UNKNOWN
        candidates = []
        if index.first_row[self.keys[side]] < row:
            candidates.append(int(batch.analysis.next_expected[row]))
        peer_ack = int((index.ack_max_orig if peer else index.ack_max_resp)[row])
        if peer_ack > np.iinfo(np.int64).min:
            candidates.append(peer_ack)
        if not candidates:
            return RstAcceptability.UNKNOWN
        rcv_nxt = max(candidates)
        seq = batch.rel_seq_list[row]
        if seq == rcv_nxt:
            return RstAcceptability.EXACT
        raw_window = int(batch.table["window"][peer_last_row])
        scale = self._window_scale(peer)
        if scale is None:
            if rcv_nxt < seq < rcv_nxt + raw_window:
                return RstAcceptability.IN_WINDOW
            return RstAcceptability.UNKNOWN
        if rcv_nxt < seq < rcv_nxt + (raw_window << scale):
            return RstAcceptability.IN_WINDOW
        return RstAcceptability.OUT_OF_WINDOW

    def _window_scale(self, side: bool) -> int | None:
        """Shift applied to ``side``'s advertised windows: 0 unless both SYNs had wscale (RFC 7323)."""
        own, peer = self.syn_options[side], self.syn_options[not side]
        if own < 0 or peer < 0:
            return None
        wscale = self.batch.table["opt_wscale"]
        if int(wscale[own]) < 0 or int(wscale[peer]) < 0:
            return 0
        return min(int(wscale[own]), 14)

    def _reply_row(self, row: int, receiver: bool) -> int:
        """The receiver's next segment when it is a prompt pure ACK (a possible challenge ACK), else -1."""
        batch = self.batch
        fo_list = batch.fo_list
        for reply in range(row + 1, self.stop):
            if fo_list[reply] == receiver:
                pure_ack = (
                    batch.flags_list[reply] & (SYN | FIN | RST | ACK) == ACK and not batch.payload_list[reply]
                )
                prompt = batch.ts_list[reply] - batch.ts_list[row] <= CHALLENGE_ACK_WINDOW_NS
                return reply if pure_ack and prompt else -1
        return -1

    # -- results ---------------------------------------------------------------------------------------

    @property
    def established(self) -> bool:
        return (self.reached_sync[True] and self.reached_sync[False]) or self.both_ways_row >= 0

    def outcome(self) -> Outcome:
        index = self.batch.index
        if not self.established:
            syns = index.pure_syn_count[self.keys[True]]
            answered = index.first_row[self.keys[False]] >= 0
            return Outcome.TIMEOUT if syns > 1 and not answered else Outcome.NOT_ESTABLISHED
        both_fins_acked = self.fin_acked_row[True] >= 0 and self.fin_acked_row[False] >= 0
        if both_fins_acked and (
            self.accepted_rst_row < 0 or max(self.fin_acked_row.values()) < self.accepted_rst_row
        ):
            return Outcome.CLEAN
        if self.accepted_rst_row >= 0:
            return Outcome.RESET
        if self.fin_acked_row[True] >= 0 or self.fin_acked_row[False] >= 0:
            return Outcome.HALF_CLOSED
        if self._ends_in_unanswered_retransmissions():
            return Outcome.TIMEOUT
        return Outcome.OPEN

    def _ends_in_unanswered_retransmissions(self) -> bool:
        """The last packets are one side's retransmissions (two or more), never answered."""
        batch = self.batch
        last_side = batch.fo_list[self.stop - 1]
        other_last = int(
            (batch.index.last_row_resp if last_side else batch.index.last_row_orig)[self.stop - 1]
        )
        tail = slice(max(other_last + 1, self.start), self.stop)
        carries = (batch.payload[tail] > 0) | ((batch.flags[tail] & FIN) != 0)
        repeated = carries & (batch.rel_seq[tail] < batch.analysis.next_expected[tail])
        return int(repeated.sum()) >= 2


def _bulk_events(batch: Batch, conn: int, walk: _Walk) -> list[Event]:
    """Events at rows the batch index located (data, retransmissions, keep-alives, windows, gaps)."""
    index = batch.index
    events: list[Event] = []
    for side in (True, False):
        key = walk.keys[side]
        first, last = int(index.first_data_row[key]), int(index.last_data_row[key])
        if first >= 0:
            events.append(batch.event(EventKind.FIRST_DATA, first))
            events.append(batch.event(EventKind.LAST_DATA, last))
        after_fin = int(index.data_after_fin_row[key])
        if after_fin >= 0:
            events.append(batch.event(EventKind.DATA_AFTER_FIN, after_fin))
    events += [batch.event(EventKind.RETRANSMISSION, row) for row in index.retransmission_rows[conn]]
    events += [batch.event(EventKind.KEEPALIVE_PROBE, row) for row in index.keepalive_rows[conn]]
    events += [batch.event(EventKind.ZERO_WINDOW, row) for row in index.zero_window_rows[conn]]
    events += _idle_gaps(batch, conn, walk)
    return events


def _idle_gaps(batch: Batch, conn: int, walk: _Walk) -> list[Event]:
    rows = batch.idle_rows[conn]
    if not rows:
        return []
    rtt = _handshake_rtt(batch, walk)
    threshold = max(IDLE_GAP_MIN_NS, IDLE_GAP_RTT_FACTOR * rtt) if rtt is not None else IDLE_GAP_MIN_NS
    analysis = batch.analysis
    events = []
    for row in rows:
        gap = int(analysis.gap_before_ns[row])
        # A silence that ends with a retransmission is a retransmission timeout (reported as such), not
        # idleness.
        if gap >= threshold and not (analysis.retransmission[row] or analysis.out_of_order[row]):
            events.append(batch.event(EventKind.IDLE_GAP, row, {"gap_ns": gap, "rtt_ns": rtt}))
    return events


def _handshake_rtt(batch: Batch, walk: _Walk) -> int | None:
    """SYN to handshake ACK: the round trip seen from the capture point; None without a full handshake."""
    syn = int(batch.index.first_pure_syn_row[walk.keys[True]])
    if syn < 0 or walk.handshake_ack_row < 0 or walk.syn_ack_row < 0:
        return None
    return int(batch.ts[walk.handshake_ack_row]) - int(batch.ts[syn])


def _direction_stats(batch: Batch, conn: int, side: bool, walk: _Walk) -> DirectionStats:
    stats = batch.stats
    group = 2 * conn + (0 if side else 1)
    peer_group = group ^ 1
    data_bytes = max(0, int(stats.data_end[group]) - 1)
    bytes_acked = max(0, min(data_bytes, int(stats.max_ack[peer_group]) - 1))
    syn_row = walk.syn_options[side]
    table = batch.table
    first_fin = int(batch.index.first_fin_row[group])
    rsts = [row for row in batch.rst_rows[conn] if bool(batch.fo[row]) == side]
    wscale = int(table["opt_wscale"][syn_row]) if syn_row >= 0 else -1
    mss = int(table["opt_mss"][syn_row]) if syn_row >= 0 else 0
    return _new_direction_stats(
        packets=int(stats.packets[group]),
        payload_bytes=int(stats.payload_bytes[group]),
        frame_bytes=int(stats.frame_bytes[group]),
        ip_bytes=int(stats.ip_bytes[group]),
        isn=walk.isn[side],
        data_bytes=data_bytes,
        bytes_acked=bytes_acked,
        unacked_bytes=data_bytes - bytes_acked,
        retransmissions=int(stats.retransmissions[group]),
        out_of_order=int(stats.out_of_order[group]),
        lost_segments=int(stats.lost[group]),
        dup_acks=int(stats.dup_acks[group]),
        zero_windows=int(stats.zero_windows[group]),
        keepalive_probes=int(stats.keepalives[group]),
        max_idle_ns=int(stats.max_idle[group]),
        wscale=wscale if wscale >= 0 else None,
        mss=mss if mss > 0 else None,
        ttls=batch.ttl_lists[group],
        fin_frame=int(batch.frame[first_fin]) if first_fin >= 0 else None,
        rst_frames=tuple(int(batch.frame[row]) for row in rsts),
    )


def _icmp_events(
    errors: Sequence[IcmpError], orig_h: str, orig_p: int, resp_h: str, resp_p: int
) -> list[Event]:
    events = []
    for error in errors:
        quoted = (error.quoted_src, error.quoted_sport, error.quoted_dst, error.quoted_dport)
        if quoted == (orig_h, orig_p, resp_h, resp_p):
            victim = Side.ORIG
        elif quoted == (resp_h, resp_p, orig_h, orig_p):
            victim = Side.RESP
        else:
            continue
        events.append(
            Event(
                kind=EventKind.ICMP_ERROR,
                side=victim.other,
                frame=error.frame,
                ts_ns=error.ts_ns,
                rel_seq=0,
                rel_ack=None,
                length=0,
                detail={
                    "icmp_type": error.icmp_type,
                    "icmp_code": error.icmp_code,
                    "reporter": error.reporter,
                    "ttl": error.ttl,
                    "quoted_sender": victim.value,
                    "quoted_seq": error.quoted_seq,
                },
            )
        )
    return events


def printable_text(payload: bytes | None) -> str | None:
    """The printable ASCII of an RST payload (RFC 1122 4.2.2.12 diagnostic text), None when there is none."""
    if not payload:
        return None
    text = "".join(ch for ch in payload.decode("latin-1") if ch.isprintable() and ord(ch) < 127).strip()
    return text or None
