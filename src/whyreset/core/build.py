"""Turn an analysed batch into `Connection` objects.

Bulk numbers (`DirectionStats`) are aggregated for the whole batch with ``np.bincount``/``np.maximum.at``; the
per-connection Python work walks only the control rows (SYN, FIN, RST, the ACKs that acknowledge a SYN or FIN,
and
the row where a mid-stream connection has seen data both ways) through the two endpoint machines of
`tcpstate`.

RST acceptability (RFC 5961 3.2, RFC 9293 3.10.7.4), judged against the receiver R of an RST sent by X:

* R in SYN_SENT: accepted when the RST has ACK and acknowledges R's SYN (ack = ISN + 1), else dropped.
* otherwise R's RCV.NXT is taken as the furthest of X's sequence end sent so far and R's own highest ACK; R's
  window is
  its last advertised window, shifted by R's window scale when both SYNs carried the option (RFC 7323). seq
  = RCV.NXT
  is exact (accepted), RCV.NXT < seq < RCV.NXT + window draws a challenge ACK (not accepted), anything else is
  dropped. Without SYNs the scale is unknown: only an exact match or a fit in the unscaled window can be
  judged.
* when R's receive state is unknown, the RST counts as accepted unless R keeps sending afterwards.

Outcomes (design/causes.md), first rule that matches:
``not_established`` (no handshake; but SYNs retransmitted without any answer is ``timeout``), ``clean`` (both
FINs
acknowledged before any accepted RST), ``reset`` (an accepted RST), ``half_closed`` (one FIN acknowledged),
``timeout`` (the connection ends with unanswered retransmissions by one side), ``open``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from whyreset.core.analysis import BatchAnalysis
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
from whyreset.core.zeek import ZeekRows, community_id, summarise, zeek_uid
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
    """Per direction group (2*conn + 0 for the originator, + 1 for the responder) aggregates."""

    packets: IntArray
    payload_bytes: IntArray
    frame_bytes: IntArray
    ip_bytes: IntArray
    data_end: IntArray
    max_ack: IntArray
    retransmissions: IntArray
    out_of_order: IntArray
    lost: IntArray
    dup_acks: IntArray
    zero_windows: IntArray
    keepalives: IntArray
    max_idle: IntArray
    truncated: IntArray


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
        packets=np.bincount(key, minlength=groups).astype(np.int64),
        payload_bytes=total(payload),
        frame_bytes=total(table["frame_len"]),
        ip_bytes=total(header + payload),
        data_end=maximum(analysis.rel_seq + payload, data, 1),
        max_ack=maximum(analysis.rel_ack, has_ack, 0),
        retransmissions=count(analysis.retransmission),
        out_of_order=count(analysis.out_of_order),
        lost=count(analysis.lost_segment),
        dup_acks=count(analysis.dup_ack),
        zero_windows=count(analysis.zero_window),
        keepalives=count(analysis.keepalive),
        max_idle=maximum(analysis.gap_before_ns, np.ones(n, bool), 0),
        truncated=count(table["truncated"]),
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


class _Rows:
    """One connection's slice of the batch, with the columns the walk needs as Python lists."""

    def __init__(self, analysis: BatchAnalysis, start: int, stop: int) -> None:
        table = analysis.table
        window = slice(start, stop)
        self.start = start
        self.n = stop - start
        self.flags_arr = table["flags"][window].astype(np.int64)
        self.from_orig_arr = analysis.from_orig[window]
        self.rel_seq_arr = analysis.rel_seq[window]
        self.rel_ack_arr = analysis.rel_ack[window]
        self.payload_arr = table["payload_len"][window].astype(np.int64)
        self.window_arr = table["window"][window]
        self.seg_end_arr = analysis.seg_end[window]
        self.next_expected_arr = analysis.next_expected[window]
        self.frame_arr = table["frame"][window]
        self.ts_arr = table["ts_ns"][window]
        self.table = table.take(window)


def build_connection(
    analysis: BatchAnalysis,
    demux: Demux,
    stats: BatchStats,
    conn: int,
    index: int,
    port_reuse: bool,
    icmp_errors: Sequence[IcmpError],
    rst_payloads: Mapping[int, bytes],
) -> Connection:
    """Rebuild connection number ``conn`` of the batch, to be published as ``Connection.index = index``."""
    starts = analysis.starts
    start = int(starts[conn])
    stop = int(starts[conn + 1]) if conn + 1 < len(starts) else len(analysis.table)
    rows = _Rows(analysis, start, stop)
    table = rows.table
    first_from_orig = bool(rows.from_orig_arr[0])
    src = format_addr(table["src_hi"][0], table["src_lo"][0])
    dst = format_addr(table["dst_hi"][0], table["dst_lo"][0])
    sport, dport = int(table["sport"][0]), int(table["dport"][0])
    orig_h, orig_p, resp_h, resp_p = (src, sport, dst, dport) if first_from_orig else (dst, dport, src, sport)
    walk = _Walk(rows, analysis, conn, rst_payloads)
    walk.run()
    orig_stats = _direction_stats(stats, rows, analysis, conn, True, walk)
    resp_stats = _direction_stats(stats, rows, analysis, conn, False, walk)
    icmp_events = _icmp_events(icmp_errors, orig_h, orig_p, resp_h, resp_p)
    events = sorted(walk.events + _bulk_events(rows, analysis, walk) + icmp_events, key=_event_order)
    zeek = summarise(
        ZeekRows(
            flags=rows.flags_arr,
            from_orig=rows.from_orig_arr,
            rel_seq=rows.rel_seq_arr,
            rel_ack=rows.rel_ack_arr,
            payload=rows.payload_arr,
            window=rows.window_arr,
            flipped=not first_from_orig,
            first_gap_row_orig=_local_row(analysis.first_gap_ack_row[2 * conn], start),
            first_gap_row_resp=_local_row(analysis.first_gap_ack_row[2 * conn + 1], start),
            missed_bytes=int(analysis.holes_missed[2 * conn] + analysis.holes_missed[2 * conn + 1]),
        )
    )
    cid = community_id(orig_h, resp_h, orig_p, resp_p)
    first_frame, last_frame = int(rows.frame_arr[0]), int(rows.frame_arr[-1])
    ts_first, ts_last = int(rows.ts_arr[0]), int(rows.ts_arr[-1])
    return Connection(
        index=index,
        uid=zeek_uid(cid, ts_first, first_frame),
        community_id=cid,
        ip_version=int(table["ip_version"][0]),
        orig_h=orig_h,
        orig_p=orig_p,
        resp_h=resp_h,
        resp_p=resp_p,
        orig_inferred_by=INFERRED_BY[int(demux.inferred_by[conn])],
        ts_first_ns=ts_first,
        ts_last_ns=ts_last,
        first_frame=first_frame,
        last_frame=last_frame,
        orig=orig_stats,
        resp=resp_stats,
        orig_states=tuple(walk.timeline[True]),
        resp_states=tuple(walk.timeline[False]),
        outcome=walk.outcome(orig_stats, resp_stats),
        conn_state=zeek.conn_state,
        history=zeek.history,
        resets=tuple(walk.resets),
        events=tuple(events),
        established=walk.established,
        midstream=walk.midstream,
        port_reuse=port_reuse,
        truncated_packets=int(stats.truncated[2 * conn] + stats.truncated[2 * conn + 1]),
        packets=table,
        from_orig=rows.from_orig_arr,
        zeek_orig_bytes=zeek.orig_bytes,
        zeek_resp_bytes=zeek.resp_bytes,
        missed_bytes=zeek.missed_bytes,
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
        self, rows: _Rows, analysis: BatchAnalysis, conn: int, rst_payloads: Mapping[int, bytes]
    ) -> None:
        self.rows = rows
        self.rst_payloads = rst_payloads
        flags = rows.flags_arr
        fo = rows.from_orig_arr
        self.pure_syn = (flags & (SYN | ACK | RST)) == SYN
        self.syn_ack = (flags & (SYN | ACK | RST)) == SYN | ACK
        self.midstream = not bool((flags & SYN).any())
        isn_orig, isn_resp = int(analysis.isn_abs[2 * conn]), int(analysis.isn_abs[2 * conn + 1])
        self.isn = {True: isn_orig if isn_orig >= 0 else None, False: isn_resp if isn_resp >= 0 else None}
        syn_rows = {side: np.flatnonzero((flags & SYN).astype(bool) & (fo == side)) for side in (True, False)}
        self.syn_options = {
            side: (int(syn_rows[side][0]) if len(syn_rows[side]) else -1) for side in (True, False)
        }
        self.machines = {
            True: EndpointMachine(self._initial(True)),
            False: EndpointMachine(self._initial(False)),
        }
        first = (int(rows.frame_arr[0]), int(rows.ts_arr[0]))
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

    def _initial(self, side: bool) -> TcpState:
        rows = self.rows
        mine = rows.from_orig_arr == side
        if side:
            return TcpState.CLOSED if (self.pure_syn & mine).any() else TcpState.UNKNOWN
        if (self.syn_ack & mine).any():
            return TcpState.LISTEN
        own = np.flatnonzero(mine)
        if len(own) and (self.pure_syn & ~mine).any():
            first_flags = int(rows.flags_arr[own[0]])
            if first_flags & RST:
                return TcpState.CLOSED  # answered the SYN with an RST: no socket, or a closed port
        return TcpState.UNKNOWN

    # -- the walk
    # -------------------------------------------------------------------------------------------------

    def run(self) -> None:
        rows = self.rows
        proofs = self._proof_rows()
        both_ways = self._data_both_ways_row()
        control_mask = (rows.flags_arr & (SYN | FIN | RST)) != 0
        marks = (
            set(np.flatnonzero(control_mask).tolist())
            | set(proofs)
            | ({both_ways} if both_ways >= 0 else set())
        )
        for row in sorted(marks):
            self._row(row, proofs.get(row, ()), row == both_ways)

    def _proof_rows(self) -> dict[int, tuple[str, ...]]:
        """Rows that prove receipt of the peer's SYN or FIN: {row: ("syn"|"fin", ...)}."""
        rows = self.rows
        flags, fo, rel_ack = rows.flags_arr, rows.from_orig_arr, rows.rel_ack_arr
        has_ack = (flags & ACK) != 0
        index = np.arange(rows.n)
        proofs: dict[int, list[str]] = {}
        for side in (True, False):
            peer_syn = np.flatnonzero(((flags & SYN) != 0) & (fo != side))
            if len(peer_syn):
                candidates = np.flatnonzero(
                    (fo == side) & has_ack & ((flags & SYN) == 0) & (rel_ack >= 1) & (index > peer_syn[0])
                )
                if len(candidates):
                    proofs.setdefault(int(candidates[0]), []).append("syn")
            peer_fin = np.flatnonzero(((flags & FIN) != 0) & (fo != side))
            if len(peer_fin):
                fin_end = int(rows.seg_end_arr[peer_fin[0]])
                candidates = np.flatnonzero(
                    (fo == side) & has_ack & (rel_ack >= fin_end) & (index > peer_fin[0])
                )
                if len(candidates):
                    proofs.setdefault(int(candidates[0]), []).append("fin")
        return {row: tuple(kinds) for row, kinds in proofs.items()}

    def _data_both_ways_row(self) -> int:
        if not self.midstream:
            return -1
        rows = self.rows
        data = (rows.payload_arr > 0) & ((rows.flags_arr & RST) == 0)
        firsts = [np.flatnonzero(data & (rows.from_orig_arr == side)) for side in (True, False)]
        if all(len(f) for f in firsts):
            return int(max(firsts[0][0], firsts[1][0]))
        return -1

    def _feed(self, side: bool, event: Input, row: int) -> Action:
        machine = self.machines[side]
        transition = machine.feed(event)
        if transition.after is not transition.before:
            self.timeline[side].append(
                StateChange(transition.after, int(self.rows.frame_arr[row]), int(self.rows.ts_arr[row]))
            )
        if transition.after in (TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.CLOSE_WAIT) and (
            transition.before in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED, TcpState.UNKNOWN)
        ):
            self.reached_sync[side] = True
        return transition.action

    def _row(self, row: int, proofs: tuple[str, ...], both_ways: bool) -> None:
        rows = self.rows
        flags = int(rows.flags_arr[row])
        side = bool(rows.from_orig_arr[row])
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
        state = self.machines[side].state
        if state in (TcpState.LISTEN, TcpState.UNKNOWN, TcpState.SYN_SENT):
            self._feed(side, Input.RECV_SYN, row)
        retransmit = self.syn_ack_row >= 0
        action = self._feed(side, Input.SEND_SYNACK, row)
        self.syn_ack_row = row if self.syn_ack_row < 0 else self.syn_ack_row
        self._event(
            EventKind.SYN_ACK_RETRANSMIT if retransmit else EventKind.SYN_ACK,
            row,
            {"handshake_ack_lost": True} if action is Action.HANDSHAKE_ACK_LOST else {},
        )

    def _rst(self, row: int, side: bool, flags: int) -> None:
        rows = self.rows
        peer = not side
        receiver_state = self.machines[peer].state
        sender_state = self.machines[side].state
        acceptability = self._acceptability(row, side, flags, receiver_state)
        accepted = acceptability in ACCEPTED or (
            acceptability is RstAcceptability.UNKNOWN and not self._keeps_sending(row, peer)
        )
        frame = int(rows.frame_arr[row])
        isn = self.isn[side]
        self.resets.append(
            ResetInfo(
                sender=Side.ORIG if side else Side.RESP,
                frame=frame,
                ts_ns=int(rows.ts_arr[row]),
                seq=int(rows.table["seq"][row]),
                ack=int(rows.table["ack"][row]) if flags & ACK else None,
                rel_seq=int(rows.rel_seq_arr[row]) if isn is not None else None,
                ttl=int(rows.table["ttl"][row]),
                ip_id=int(rows.table["ip_id"][row]),
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
        rows = self.rows
        peer = not side
        if receiver_state is TcpState.SYN_SENT:
            ok = bool(flags & ACK) and int(rows.rel_ack_arr[row]) == 1
            return RstAcceptability.SYN_SENT_ACK_OK if ok else RstAcceptability.SYN_SENT_ACK_BAD
        before = np.arange(rows.n) < row
        own = before & (rows.from_orig_arr == side)
        theirs = before & (rows.from_orig_arr == peer)
        peer_acks = theirs & ((rows.flags_arr & ACK) != 0)
        candidates = []
        if own.any():
            candidates.append(int(rows.seg_end_arr[own].max()))
        if peer_acks.any():
            candidates.append(int(rows.rel_ack_arr[peer_acks].max()))
        if not candidates or not theirs.any():
            return RstAcceptability.UNKNOWN
        rcv_nxt = max(candidates)
        seq = int(rows.rel_seq_arr[row])
        if seq == rcv_nxt:
            return RstAcceptability.EXACT
        raw_window = int(rows.window_arr[np.flatnonzero(theirs)[-1]])
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
        wscale = self.rows.table["opt_wscale"]
        if int(wscale[own]) < 0 or int(wscale[peer]) < 0:
            return 0
        return min(int(wscale[own]), 14)

    def _keeps_sending(self, row: int, side: bool) -> bool:
        rows = self.rows
        later = np.flatnonzero((np.arange(rows.n) > row) & (rows.from_orig_arr == side))
        return bool(len(later)) and bool(((rows.flags_arr[later] & RST) == 0).any())

    def _challenge_ack(self, row: int, receiver: bool) -> None:
        rows = self.rows
        later = np.flatnonzero((np.arange(rows.n) > row) & (rows.from_orig_arr == receiver))
        if not len(later):
            return
        reply = int(later[0])
        pure_ack = (
            int(rows.flags_arr[reply]) & (SYN | FIN | RST | ACK) == ACK and rows.payload_arr[reply] == 0
        )
        if pure_ack and int(rows.ts_arr[reply]) - int(rows.ts_arr[row]) <= CHALLENGE_ACK_WINDOW_NS:
            self._event(EventKind.CHALLENGE_ACK, reply, {"rst_frame": int(rows.frame_arr[row])})

    def _event(self, kind: EventKind, row: int, detail: dict[str, object] | None = None) -> None:
        self.events.append(make_event(self.rows, kind, row, detail))

    # -- results ---------------------------------------------------------------------------------------
    # -------------

    @property
    def established(self) -> bool:
        return (self.reached_sync[True] and self.reached_sync[False]) or self._data_both_ways_row() >= 0

    def outcome(self, orig: DirectionStats, resp: DirectionStats) -> Outcome:
        both_fins_acked = self.fin_acked_row[True] >= 0 and self.fin_acked_row[False] >= 0
        if not self.established:
            syns = int((self.pure_syn & self.rows.from_orig_arr).sum())
            answered = bool((~self.rows.from_orig_arr).any())
            return Outcome.TIMEOUT if syns > 1 and not answered else Outcome.NOT_ESTABLISHED
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
        rows = self.rows
        last_side = bool(rows.from_orig_arr[-1])
        answered = np.flatnonzero(rows.from_orig_arr != last_side)
        tail_start = int(answered[-1]) + 1 if len(answered) else 0
        tail = slice(tail_start, rows.n)
        seq = rows.rel_seq_arr[tail]
        data = (rows.payload_arr[tail] > 0) | ((rows.flags_arr[tail] & FIN) != 0)
        repeated = data & (seq < rows.next_expected_arr[tail])
        return int(repeated.sum()) >= 2


def make_event(rows: _Rows, kind: EventKind, row: int, detail: dict[str, object] | None = None) -> Event:
    flags = int(rows.flags_arr[row])
    return Event(
        kind=kind,
        side=Side.ORIG if bool(rows.from_orig_arr[row]) else Side.RESP,
        frame=int(rows.frame_arr[row]),
        ts_ns=int(rows.ts_arr[row]),
        rel_seq=int(rows.rel_seq_arr[row]),
        rel_ack=int(rows.rel_ack_arr[row]) if flags & ACK else None,
        length=int(rows.payload_arr[row]),
        detail=dict(detail or {}),
    )


def _bulk_events(rows: _Rows, analysis: BatchAnalysis, walk: _Walk) -> list[Event]:
    """Events found with masks over the connection's rows (data, retransmissions, windows, gaps)."""
    flags, fo = rows.flags_arr, rows.from_orig_arr
    data = (rows.payload_arr > 0) & ((flags & RST) == 0)
    events: list[Event] = []
    for side in (True, False):
        mine = np.flatnonzero(data & (fo == side))
        if len(mine):
            events.append(make_event(rows, EventKind.FIRST_DATA, int(mine[0])))
            events.append(make_event(rows, EventKind.LAST_DATA, int(mine[-1])))
        events += _data_after_fin(rows, side, data)
    window = slice(rows.start, rows.start + rows.n)
    control = (flags & (SYN | RST)) != 0
    retrans = analysis.retransmission[window] & ~control
    for row in np.flatnonzero(retrans).tolist():
        events.append(make_event(rows, EventKind.RETRANSMISSION, row))
    for row in np.flatnonzero(analysis.keepalive[window]).tolist():
        events.append(make_event(rows, EventKind.KEEPALIVE_PROBE, row))
    zero = analysis.zero_window[window]
    for side in (True, False):
        mine = zero & (fo == side)
        same_side_prev = _previous_same_side(fo, side)
        starts_run = mine & ~np.where(same_side_prev >= 0, mine[np.maximum(same_side_prev, 0)], False)
        for row in np.flatnonzero(starts_run).tolist():
            events.append(make_event(rows, EventKind.ZERO_WINDOW, row))
    rtt = _handshake_rtt(rows, walk)
    threshold = max(IDLE_GAP_MIN_NS, IDLE_GAP_RTT_FACTOR * rtt) if rtt is not None else IDLE_GAP_MIN_NS
    gaps = analysis.gap_before_ns[window]
    # A silence that ends with a retransmission is a retransmission timeout (reported as such), not idleness.
    backoff = analysis.retransmission[window] | analysis.out_of_order[window]
    for row in np.flatnonzero((gaps >= threshold) & ~backoff).tolist():
        events.append(make_event(rows, EventKind.IDLE_GAP, row, {"gap_ns": int(gaps[row]), "rtt_ns": rtt}))
    return events


def _previous_same_side(fo: Array, side: bool) -> IntArray:
    """For each row, the index of the previous row sent by ``side``, or -1."""
    idx = np.where(fo == side, np.arange(len(fo)), -1)
    shifted = np.concatenate(([-1], idx[:-1]))
    return np.maximum.accumulate(shifted)


def _data_after_fin(rows: _Rows, side: bool, data: Array) -> list[Event]:
    """The first data sent by ``side`` after its own FIN or after it acknowledged the peer's FIN."""
    flags, fo, rel_ack = rows.flags_arr, rows.from_orig_arr, rows.rel_ack_arr
    index = np.arange(rows.n)
    own_fin = np.flatnonzero(((flags & FIN) != 0) & (fo == side))
    marks: list[int] = []
    if len(own_fin):
        after = np.flatnonzero(data & (fo == side) & (index > own_fin[0]))
        if len(after):
            marks.append(int(after[0]))
    peer_fin = np.flatnonzero(((flags & FIN) != 0) & (fo != side))
    if len(peer_fin):
        fin_end = int(rows.seg_end_arr[peer_fin[0]])
        acked = np.flatnonzero(
            (fo == side) & ((flags & ACK) != 0) & (rel_ack >= fin_end) & (index > peer_fin[0])
        )
        if len(acked):
            after = np.flatnonzero(data & (fo == side) & (index > acked[0]))
            if len(after):
                marks.append(int(after[0]))
    if not marks:
        return []
    return [make_event(rows, EventKind.DATA_AFTER_FIN, min(marks))]


def _handshake_rtt(rows: _Rows, walk: _Walk) -> int | None:
    """SYN to handshake ACK, the round trip seen from the capture point; None without a full handshake."""
    syn_rows = np.flatnonzero(walk.pure_syn)
    if not len(syn_rows) or walk.handshake_ack_row < 0:
        return None
    return int(rows.ts_arr[walk.handshake_ack_row]) - int(rows.ts_arr[syn_rows[-1]])


def _direction_stats(
    stats: BatchStats, rows: _Rows, analysis: BatchAnalysis, conn: int, side: bool, walk: _Walk
) -> DirectionStats:
    group = 2 * conn + (0 if side else 1)
    peer_group = 2 * conn + (1 if side else 0)
    mine = rows.from_orig_arr == side
    data_bytes = max(0, int(stats.data_end[group]) - 1)
    peer_ack = int(stats.max_ack[peer_group])
    bytes_acked = max(0, min(data_bytes, peer_ack - 1))
    syn_row = walk.syn_options[side]
    table = rows.table
    ttl_values, ttl_counts = np.unique(table["ttl"][mine], return_counts=True)
    ttls = tuple(int(v) for v in ttl_values[np.argsort(-ttl_counts, kind="stable")])
    fins = np.flatnonzero(mine & ((rows.flags_arr & FIN) != 0))
    rsts = np.flatnonzero(mine & ((rows.flags_arr & RST) != 0))
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
        ttls=ttls,
        fin_frame=int(rows.frame_arr[fins[0]]) if len(fins) else None,
        rst_frames=tuple(int(f) for f in rows.frame_arr[rsts]),
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
