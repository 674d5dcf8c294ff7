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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
from whyreset.core.tcpstate import Action, EndpointMachine, Input
from whyreset.core.zeek import ZeekRows, ZeekShortcut, community_id, summarise, zeek_uid
from whyreset.ids import Outcome, Side, TcpState
from whyreset.model import ACK, FIN, RST, SYN, Array, IcmpError, PacketTable, format_addr

IDLE_GAP_MIN_NS = 1_000_000_000
"""Silences shorter than this are never reported as idle gaps."""
IDLE_GAP_RTT_FACTOR = 10
"""...nor those shorter than this many handshake RTTs (when the RTT is known)."""
CHALLENGE_ACK_WINDOW_NS = 1_000_000_000
"""A challenge ACK must follow the unacceptable RST within this time."""
ACCEPTED = (RstAcceptability.EXACT, RstAcceptability.SYN_SENT_ACK_OK)
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
        return Event(
            kind=kind,
            side=Side.ORIG if self.fo_list[row] else Side.RESP,
            frame=self.frame_list[row],
            ts_ns=self.ts_list[row],
            rel_seq=self.rel_seq_list[row],
            rel_ack=self.rel_ack_list[row] if self.flags_list[row] & ACK else None,
            length=self.payload_list[row],
            detail=dict(detail) if detail else {},
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
    return Connection(
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
    fo, flags, rel_seq, payload = batch.fo_list, batch.flags_list, batch.rel_seq_list, batch.payload_list
    fed = [(row - start, fo[row], flags[row], rel_seq[row], payload[row]) for row in index.zeek_fed[conn]]
    plain_letters: list[tuple[int, int, str]] = []
    for key, upper in zip(keys, (True, False), strict=True):
        for rows, letter in ((index.zeek_plain_data_row, "D"), (index.zeek_plain_ack_row, "A")):
            if rows[key] >= 0:
                plain_letters.append((int(rows[key]) - start, 0, letter if upper else letter.lower()))
    shortcut = ZeekShortcut(
        fed=fed,
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
    """The control-row walk of one connection: both endpoint machines, resets and control events."""

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
        self.midstream = (
            int(index.first_syn_row[self.keys[True]]) < 0 and int(index.first_syn_row[self.keys[False]]) < 0
        )
        isn_orig, isn_resp = int(batch.analysis.isn_abs[2 * conn]), int(batch.analysis.isn_abs[2 * conn + 1])
        self.isn = {True: isn_orig if isn_orig >= 0 else None, False: isn_resp if isn_resp >= 0 else None}
        self.syn_options = {side: int(index.first_syn_row[self.keys[side]]) for side in (True, False)}
        self.machines = {
            True: EndpointMachine(self._initial(True)),
            False: EndpointMachine(self._initial(False)),
        }
        first = (batch.frame_list[start], batch.ts_list[start])
        self.timeline: dict[bool, list[StateChange]] = {
            side: [StateChange(self.machines[side].state, *first)] for side in (True, False)
        }
        self.events: list[Event] = []
        self.resets: list[ResetInfo] = []
        self.accepted_rst_row = -1
        self.fin_acked_row: dict[bool, int] = {True: -1, False: -1}
        self.reached_sync = {True: False, False: False}
        self.syn_ack_row = -1
        self.handshake_ack_row = -1
        self.both_ways_row = self._data_both_ways_row()

    def _initial(self, side: bool) -> TcpState:
        index = self.batch.index
        key, peer_key = self.keys[side], self.keys[not side]
        if side:
            return TcpState.CLOSED if index.first_pure_syn_row[key] >= 0 else TcpState.UNKNOWN
        if index.first_synack_row[key] >= 0:
            return TcpState.LISTEN
        first_own = int(index.first_row[key])
        if first_own >= 0 and index.first_pure_syn_row[peer_key] >= 0 and self.batch.flags[first_own] & RST:
            return TcpState.CLOSED  # answered the SYN with an RST: no socket, or a closed port
        return TcpState.UNKNOWN

    def _data_both_ways_row(self) -> int:
        if not self.midstream:
            return -1
        index = self.batch.index
        firsts = [int(index.first_data_row[self.keys[side]]) for side in (True, False)]
        return max(firsts) if min(firsts) >= 0 else -1

    # -- the walk
    # -------------------------------------------------------------------------------------------------

    def run(self) -> None:
        index = self.batch.index
        proofs: dict[int, list[str]] = {}
        for side in (True, False):
            for rows, kind in ((index.syn_proof_row, "syn"), (index.fin_proof_row, "fin")):
                row = int(rows[self.keys[side]])
                if row >= 0:
                    proofs.setdefault(row, []).append(kind)
        marks = set(index.control[self.conn])
        if self.both_ways_row >= 0:
            marks.add(self.both_ways_row)
        for row in sorted(marks):
            self._row(row, proofs.get(row, ()), row == self.both_ways_row)

    def _feed(self, side: bool, event: Input, row: int) -> Action:
        transition = self.machines[side].feed(event)
        if transition.after is not transition.before:
            self.timeline[side].append(
                StateChange(transition.after, self.batch.frame_list[row], self.batch.ts_list[row])
            )
        if transition.after in _SYNCHRONISED and transition.before in _OPENING:
            self.reached_sync[side] = True
        return transition.action

    def _row(self, row: int, proofs: Sequence[str], both_ways: bool) -> None:
        flags = self.batch.flags_list[row]
        side = self.batch.fo_list[row]
        peer = not side
        if both_ways:
            for endpoint in (True, False):
                if self.machines[endpoint].state is TcpState.UNKNOWN:
                    self._feed(endpoint, Input.DATA_BOTH_WAYS, row)
        if "syn" in proofs:
            if self.machines[side].state in (TcpState.SYN_SENT, TcpState.UNKNOWN):
                self._feed(side, Input.RECV_SYNACK, row)
            self._feed(side, Input.SEND_ACK_OF_SYN, row)
            self._feed(peer, Input.RECV_ACK_OF_SYN, row)
            if side and self.handshake_ack_row < 0:
                self.handshake_ack_row = row
                self._event(EventKind.HANDSHAKE_ACK, row)
        if "fin" in proofs:
            self._feed(side, Input.RECV_FIN, row)
            self._feed(peer, Input.FIN_ACKED, row)
            self.fin_acked_row[peer] = row
            self._event(EventKind.FIN_ACKED, row)
        if flags & SYN and not flags & RST:
            self._syn(row, side, flags)
        if flags & FIN and not flags & RST:
            self._feed(side, Input.SEND_FIN, row)
            self._event(EventKind.FIN, row)
        if flags & RST:
            self._rst(row, side, flags)

    def _syn(self, row: int, side: bool, flags: int) -> None:
        if not flags & ACK:
            kind = (
                EventKind.SYN_RETRANSMIT if self.machines[side].state is TcpState.SYN_SENT else EventKind.SYN
            )
            self._feed(side, Input.SEND_SYN, row)
            self._event(kind, row)
            return
        if self.machines[side].state in (TcpState.LISTEN, TcpState.UNKNOWN, TcpState.SYN_SENT):
            self._feed(side, Input.RECV_SYN, row)
        retransmit = self.syn_ack_row >= 0
        action = self._feed(side, Input.SEND_SYNACK, row)
        if self.syn_ack_row < 0:
            self.syn_ack_row = row
        self._event(
            EventKind.SYN_ACK_RETRANSMIT if retransmit else EventKind.SYN_ACK,
            row,
            {"handshake_ack_lost": True} if action is Action.HANDSHAKE_ACK_LOST else {},
        )

    def _rst(self, row: int, side: bool, flags: int) -> None:
        batch = self.batch
        peer = not side
        receiver_state = self.machines[peer].state
        sender_state = self.machines[side].state
        acceptability = self._acceptability(row, side, flags, receiver_state)
        accepted = acceptability in ACCEPTED or (
            acceptability is RstAcceptability.UNKNOWN and not self._keeps_sending(row, peer)
        )
        frame = int(batch.frame[row])
        table = batch.table
        self.resets.append(
            ResetInfo(
                sender=Side.ORIG if side else Side.RESP,
                frame=frame,
                ts_ns=int(batch.ts[row]),
                seq=int(table["seq"][row]),
                ack=int(table["ack"][row]) if flags & ACK else None,
                rel_seq=int(batch.rel_seq[row]) if self.isn[side] is not None else None,
                ttl=int(table["ttl"][row]),
                ip_id=int(table["ip_id"][row]),
                acceptability=acceptability,
                receiver_state=receiver_state,
                sender_state=sender_state,
                payload_text=printable_text(self.rst_payloads.get(frame)),
            )
        )
        self._event(EventKind.RST, row, {"acceptability": acceptability.value, "accepted": accepted})
        self._feed(side, Input.SEND_RST, row)
        if accepted and receiver_state not in (TcpState.CLOSED, TcpState.LISTEN):
            self._feed(peer, Input.RECV_RST_ACCEPTED, row)
            if self.accepted_rst_row < 0:
                self.accepted_rst_row = row
        elif acceptability is RstAcceptability.IN_WINDOW:
            self._challenge_ack(row, peer)

    def _acceptability(self, row: int, side: bool, flags: int, receiver_state: TcpState) -> RstAcceptability:
        batch = self.batch
        index = batch.index
        if receiver_state is TcpState.SYN_SENT:
            ok = bool(flags & ACK) and int(batch.rel_ack[row]) == 1
            return RstAcceptability.SYN_SENT_ACK_OK if ok else RstAcceptability.SYN_SENT_ACK_BAD
        peer = not side
        peer_last_row = int((index.last_row_orig if peer else index.last_row_resp)[row])
        if peer_last_row < self.start:
            return RstAcceptability.UNKNOWN
        candidates = []
        if int(index.first_row[self.keys[side]]) < row:
            candidates.append(int(batch.analysis.next_expected[row]))
        peer_ack = int((index.ack_max_orig if peer else index.ack_max_resp)[row])
        if peer_ack > np.iinfo(np.int64).min:
            candidates.append(peer_ack)
        if not candidates:
            return RstAcceptability.UNKNOWN
        rcv_nxt = max(candidates)
        seq = int(batch.rel_seq[row])
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

    def _keeps_sending(self, row: int, side: bool) -> bool:
        return int(self.batch.index.last_non_rst_row[self.keys[side]]) > row

    def _challenge_ack(self, row: int, receiver: bool) -> None:
        batch = self.batch
        later = np.flatnonzero(batch.fo[row + 1 : self.stop] == receiver)
        if not len(later):
            return
        reply = row + 1 + int(later[0])
        pure_ack = int(batch.flags[reply]) & (SYN | FIN | RST | ACK) == ACK and batch.payload[reply] == 0
        if pure_ack and int(batch.ts[reply]) - int(batch.ts[row]) <= CHALLENGE_ACK_WINDOW_NS:
            self._event(EventKind.CHALLENGE_ACK, reply, {"rst_frame": int(batch.frame[row])})

    def _event(self, kind: EventKind, row: int, detail: dict[str, object] | None = None) -> None:
        self.events.append(self.batch.event(kind, row, detail))

    # -- results
    # ----------------------------------------------------------------------------------------------------

    @property
    def established(self) -> bool:
        return (self.reached_sync[True] and self.reached_sync[False]) or self.both_ways_row >= 0

    def outcome(self) -> Outcome:
        index = self.batch.index
        if not self.established:
            syns = int(index.pure_syn_count[self.keys[True]])
            answered = int(index.first_row[self.keys[False]]) >= 0
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
        last_side = bool(batch.fo[self.stop - 1])
        other_last = int(
            (batch.index.last_row_resp if last_side else batch.index.last_row_orig)[self.stop - 1]
        )
        tail = slice(max(other_last + 1, self.start), self.stop)
        carries = (batch.payload[tail] > 0) | ((batch.flags[tail] & FIN) != 0)
        repeated = carries & (batch.rel_seq[tail] < batch.analysis.next_expected[tail])
        return int(repeated.sum()) >= 2


_SYNCHRONISED = (TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.CLOSE_WAIT)
_OPENING = (TcpState.SYN_SENT, TcpState.SYN_RECEIVED, TcpState.UNKNOWN)


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
    return DirectionStats(
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
