"""Turn an analysed batch into `Connection` objects.

Bulk numbers (`DirectionStats`) are aggregated for the whole batch with ``np.bincount``/``np.maximum.at``, and
`batchindex` locates every row the rebuild needs; the per-connection Python work then walks only the control
rows (SYN, FIN, RST, the ACKs that acknowledge a SYN or FIN, and the row where a mid-stream connection has
seen data both ways) through the two endpoint machines of `tcpstate`. For a connection without RST those rows
are packed one byte each for the whole batch (`walk.mark_code`) and the walk is looked up by that key.

What every reader needs is made at once (outcome, Zeek fields, counters, RSTs); the event list and the two
state timelines are `Deferred` (`_Details`): made on first read from the batch's numpy arrays (`LazySource`,
never its per-row Python lists). `Connection.final_state` and `Connection.icmp_events` answer without
building them.

Delivery (``bytes_acked``/``unacked_bytes``) counts the acknowledgments of every segment but RSTs; an RST's
acknowledgment counts only when its receiver accepted it and its TTL is one its sender's own packets carry (a
forged RST acknowledges whatever the forger guessed).

RST acceptability (RFC 5961 3.2, RFC 9293 3.10.7.4), judged against the receiver R of an RST sent by X:

* R in SYN_SENT: accepted when the RST has ACK and acknowledges R's SYN (ack = ISN + 1), else dropped.
* otherwise R's RCV.NXT lies between R's own highest ACK and X's sequence end sent so far (X's last segments
  may be in flight, or lost past the capture point): an RST matching either is exact. Otherwise the furthest
  of the two is RCV.NXT, and R's window is its last advertised window, shifted by R's window scale when both
  SYNs carried the option (RFC 7323). seq = RCV.NXT is exact (accepted), RCV.NXT < seq < RCV.NXT + window
  draws a challenge ACK (not accepted), anything else is dropped. Without SYNs the scale is unknown: only an
  exact match or a fit in the unscaled window can be judged.
* when R's receive state is unknown, the RST counts as accepted unless R keeps sending afterwards.

Outcomes (design/causes.md), first rule that matches: ``not_established`` (no handshake; but SYNs
retransmitted without any answer, not even an ICMP error quoting them, is ``timeout``; a side left in
SYN_RECEIVED by a SYN-ACK retransmitted after the handshake ACK, with no later sign of having established,
was never established), ``clean`` (both FINs acknowledged before any accepted RST), ``reset`` (an accepted
RST), ``half_closed`` (one FIN acknowledged), ``timeout`` (the connection ends with unanswered retransmissions
by one side), ``open``.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

import numpy as np

from whyreset.core.analysis import BatchAnalysis
from whyreset.core.batchindex import RowsByConnection, index_batch, rows_by_connection
from whyreset.core.connection import (
    Connection,
    Deferred,
    DeferredDetails,
    DirectionStats,
    Event,
    EventKind,
    ResetInfo,
    RstAcceptability,
    StateChange,
    pending_details,
)
from whyreset.core.demux import INFERRED_BY, Demux
from whyreset.core.seqmath import IntArray, group_ids
from whyreset.core.slots import slot_builder
from whyreset.core.walk import (
    ACCEPTED,
    MARK_FROM_ORIG,
    MARK_PROVES_FIN,
    MARK_PROVES_SYN,
    MARK_SYN_REPLY,
    RST_HAS_REPLY,
    RST_RECEIVER_KEEPS_SENDING,
    RST_SYN_SENT_OK,
    RST_VERDICTS,
    Mark,
    RstFacts,
    WalkTemplate,
    marks_from_codes,
    marks_from_rst_codes,
    walk,
    walk_coded,
)
from whyreset.core.zeek import (
    PlainRows,
    ZeekSummary,
    community_ids,
    summarise_plain,
    summarise_small,
    zeek_uids,
)
from whyreset.ids import Outcome, Side, TcpState
from whyreset.model import (
    ACK,
    FIN,
    RST,
    SYN,
    Array,
    IcmpError,
    LazyRows,
    PacketTable,
    format_addr,
    gather_plan,
    ranges_index,
)

IDLE_GAP_MIN_NS = 1_000_000_000
"""Silences shorter than this are never reported as idle gaps."""
IDLE_GAP_RTT_FACTOR = 10
"""...nor those shorter than this many handshake RTTs (when the RTT is known)."""
CHALLENGE_ACK_WINDOW_NS = 1_000_000_000
"""A challenge ACK must follow the unacceptable RST within this time."""
IPV4_HEADER = 20
IPV6_HEADER = 40

_TUPLE_KEY = np.dtype(
    [("a_hi", "<u8"), ("a_lo", "<u8"), ("a_port", "<u2"), ("b_hi", "<u8"), ("b_lo", "<u8"), ("b_port", "<u2")]
)
"""`Batch.tuple_keys`'s layout (packed, in `canonical_tuple`'s order)."""

RstRow = tuple[int, int, int, int, bool, int, bool, int, int, int, int]
"""`Batch.reset_row_facts` of one RST row."""


def _python_list(array: Array) -> list[Any]:
    """The column as Python values (``tolist`` builds the list already; this only gives it a type)."""
    values: list[Any] = array.tolist()
    return values


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

    rst = (flags & RST) != 0
    data = (payload > 0) & ~rst
    # An RST's acknowledgment says nothing reliable about delivery: it may be forged (off-path, or a
    # middlebox), and a receiver that refuses the RST (RFC 5961) never acted on it. Only other segments count.
    has_ack = (flags & ACK) != 0
    # Zeek's *_ip_bytes: the readers' IP lengths, estimated from the headers only where a reader had none.
    ip_len = table["ip_len"].astype(np.int64)
    unknown = ip_len == 0
    if unknown.any():
        header = np.where(table["ip_version"] == 6, IPV6_HEADER, IPV4_HEADER) + _tcp_header_length(table)
        ip_len = np.where(unknown, header + payload, ip_len)
    return BatchStats(
        packets=(np.bincount(key, minlength=groups).astype(np.int64)).tolist(),
        payload_bytes=(total(payload)).tolist(),
        frame_bytes=(total(table["frame_len"])).tolist(),
        ip_bytes=(total(ip_len)).tolist(),
        data_end=(maximum(analysis.rel_seq + payload, data, 1)).tolist(),
        max_ack=(maximum(analysis.rel_ack, has_ack & ~rst, 0)).tolist(),
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
        self._addresses: dict[tuple[int, int], str] = {}
        self.ttl_lists = _ttl_lists(table["ttl"], self.index.key, 2 * len(analysis.starts))
        gaps = analysis.gap_before_ns
        count = len(analysis.starts)
        self.idle_rows = rows_by_connection(gaps >= IDLE_GAP_MIN_NS, self.index.conn, count)
        starts = analysis.starts
        self.starts_list: list[int] = starts.tolist()
        self.stops_list: list[int] = [*self.starts_list[1:], self.n]
        # What every connection reads of its first and last rows; the per-row lists below are made only when a
        # rarer path (RST facts, mid-stream marks, W/T letters...) reads rows one by one.
        last_rows = (np.append(starts[1:], self.n) - 1)[: len(starts)]
        self.first_fo_list: list[bool] = self.fo[starts].tolist()
        self.first_frame_list: list[int] = self.frame[starts].tolist()
        self.last_frame_list: list[int] = self.frame[last_rows].tolist()
        self.ts_first_list: list[int] = self.ts[starts].tolist()
        self.ts_last_list: list[int] = self.ts[last_rows].tolist()
        self.inferred_by_list: list[int] = demux.inferred_by.tolist()
        self.first_row_facts: list[tuple[int, int, int, int, int, int, int]] = list(
            zip(
                *(
                    table[name][starts].tolist()
                    for name in ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport", "ip_version")
                ),
                strict=True,
            )
        )
        self._per_key_lists(table)
        self.community_id_list = community_ids(
            *(table[name][starts] for name in ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport"))
        )
        self.uid_list = zeek_uids(self.community_id_list, self.ts_first_list, self.first_frame_list)
        self.first_gap_list: list[int] = analysis.first_gap_ack_row.tolist()
        self.isn_list: list[int] = analysis.isn_abs.tolist()
        self.direction_stats = self._direction_stats()
        self._own_ttls: set[int] | None = None
        self._reset_rows: dict[int, RstRow] | None = None
        self._mark_codes(analysis)
        self.walk_starts = self._walk_starts()
        fed = self.index.zeek_fed.flat_array
        self.zeek_fed_local: list[int] = (fed - starts[self.index.conn[fed]]).tolist()
        """`index.zeek_fed`'s flat list of rows, each relative to its connection's first row."""
        self.holes_missed_list: list[int] = analysis.holes_missed.tolist()
        self._zeek_facts(analysis)
        index = self.index
        self.source = LazySource(
            frame=self.frame,
            ts=self.ts,
            rel_seq=self.rel_seq,
            rel_ack=self.rel_ack,
            flags=self.flags,
            payload=self.payload,
            from_orig=self.fo,
            gap_before_ns=gaps,
            retransmission=analysis.retransmission,
            out_of_order=analysis.out_of_order,
            first_data_row=index.first_data_row,
            last_data_row=index.last_data_row,
            data_after_fin_row=index.data_after_fin_row,
            first_pure_syn_row=index.first_pure_syn_row,
            retransmission_rows=index.retransmission_rows,
            keepalive_rows=index.keepalive_rows,
            zero_window_rows=index.zero_window_rows,
            idle_rows=self.idle_rows,
        )

    # Python lists of the columns read row by row (indexing a list is several times cheaper than a numpy scalar),
    # made on first use: most connections need none of them.

    @cached_property
    def frame_list(self) -> list[int]:
        return _python_list(self.frame)

    @cached_property
    def ts_list(self) -> list[int]:
        return _python_list(self.ts)

    @cached_property
    def rel_seq_list(self) -> list[int]:
        return _python_list(self.rel_seq)

    @cached_property
    def rel_ack_list(self) -> list[int]:
        return _python_list(self.rel_ack)

    @cached_property
    def payload_list(self) -> list[int]:
        return _python_list(self.payload)

    @cached_property
    def flags_list(self) -> list[int]:
        return _python_list(self.flags)

    @cached_property
    def fo_list(self) -> list[bool]:
        return _python_list(self.fo)

    def _per_key_lists(self, table: PacketTable) -> None:
        """SYN options, first FIN frame and RST frames per direction key, for the whole batch at once."""
        syn_rows = self.index.arrays["first_syn_row"]
        has_syn = syn_rows >= 0
        syn_at = np.maximum(syn_rows, 0)
        self.wscale_list: list[int] = np.where(has_syn, table["opt_wscale"][syn_at], -1).tolist()
        self.mss_list: list[int] = np.where(has_syn, table["opt_mss"][syn_at], 0).tolist()
        fin_rows = self.index.arrays["first_fin_row"]
        self.fin_frame_list: list[int] = np.where(
            fin_rows >= 0, self.frame[np.maximum(fin_rows, 0)].astype(np.int64), -1
        ).tolist()
        rst_rows = np.flatnonzero((self.flags & RST) != 0)
        by_key: dict[int, list[int]] = {}
        for key, frame in zip(self.index.key[rst_rows].tolist(), self.frame[rst_rows].tolist(), strict=True):
            by_key.setdefault(key, []).append(frame)
        self.rst_frames: dict[int, tuple[int, ...]] = {key: tuple(frames) for key, frames in by_key.items()}

    def _zeek_facts(self, analysis: BatchAnalysis) -> None:
        """Per connection, what `_zeek_summary` reads besides the fed rows, for the whole batch at once: the
        rows (relative to the connection's first) of the D, A, d, a, G and g letters or -1, and the sizes'
        inputs (each side's last sequence end and the acknowledgment it received) with the missed bytes."""
        index = self.index
        starts = analysis.starts

        def local(per_key: IntArray) -> tuple[list[int], list[int]]:
            rows = per_key.reshape(-1, 2)
            relative = np.where(rows >= 0, rows - starts[:, None], -1)
            return relative[:, 0].tolist(), relative[:, 1].tolist()

        data_orig, data_resp = local(index.arrays["zeek_plain_data_row"])
        ack_orig, ack_resp = local(index.arrays["zeek_plain_ack_row"])
        gap_orig, gap_resp = local(analysis.first_gap_ack_row)
        self.zeek_letter_rows: list[tuple[int, int, int, int, int, int]] = list(
            zip(data_orig, ack_orig, data_resp, ack_resp, gap_orig, gap_resp, strict=True)
        )
        own_last = index.arrays["zeek_own_last"].reshape(-1, 2)
        peer_acked = index.arrays["zeek_peer_acked"].reshape(-1, 2)
        missed = analysis.holes_missed.reshape(-1, 2).sum(axis=1)
        self.zeek_sizes: list[tuple[int, int, int, int, int]] = list(
            zip(*(column.tolist() for column in (*own_last.T, *peer_acked.T, missed)), strict=True)
        )

    def own_ttls(self) -> set[int]:
        """``key * 256 + ttl`` for every TTL a direction's non-RST segments carry (made on first use)."""
        if self._own_ttls is None:
            not_rst = (self.flags & RST) == 0
            codes = self.index.key[not_rst] * 256 + self.table["ttl"][not_rst].astype(np.int64)
            self._own_ttls = set(np.unique(codes).tolist())
        return self._own_ttls

    def _mark_codes(self, analysis: BatchAnalysis) -> None:
        """`walk.mark_code` of every control row, and the row of each pure SYN's prompt pure-ACK reply (a
        challenge ACK if the SYN reached a synchronised endpoint), for the whole batch at once.

        Connections with an RST (whose marks need the RFC 5961 numbers) or a mid-stream both-ways row take the
        per-row path of `_Walk.run` instead (`coded_walk`).
        """
        index = self.index
        count = len(analysis.starts)
        control = index.control.flat_array
        flags = self.flags[control]
        fo = self.fo[control]
        key = index.key[control]
        proves_syn = index.arrays["syn_proof_row"][key] == control
        proves_fin = index.arrays["fin_proof_row"][key] == control
        reply = np.full(len(control), -1, np.int64)
        pure_syn_mask = (flags & (SYN | ACK | RST)) == SYN
        rst_mask = (flags & RST) != 0
        # A pure SYN's reply is a challenge ACK if the SYN reached a synchronised endpoint, an RST's if it was in
        # the receiver's window: the same lookup for both.
        asking_rows = np.flatnonzero(pure_syn_mask | rst_mask)
        for receiver in (True, False):
            asking = asking_rows[fo[asking_rows] != receiver]
            own_rows = np.flatnonzero(self.fo == receiver)
            if not len(asking) or not len(own_rows):
                continue
            at = np.searchsorted(own_rows, control[asking], side="right")
            found = at < len(own_rows)
            nxt = own_rows[np.minimum(at, len(own_rows) - 1)]
            found &= index.conn[nxt] == index.conn[control[asking]]
            found &= (self.flags[nxt] & (SYN | FIN | RST | ACK)) == ACK
            found &= self.payload[nxt] == 0
            found &= (
                self.ts[nxt].astype(np.int64) - self.ts[control[asking]].astype(np.int64) <= CHALLENGE_ACK_WINDOW_NS
            )
            reply[asking[found]] = nxt[found]
        codes = (
            (flags & (FIN | SYN | RST))
            | ((flags & ACK) >> 1)
            | np.where(fo, MARK_FROM_ORIG, 0)
            | np.where(proves_syn, MARK_PROVES_SYN, 0)
            | np.where(proves_fin, MARK_PROVES_FIN, 0)
            | np.where(pure_syn_mask & (reply >= 0), MARK_SYN_REPLY, 0)
        )
        self.mark_codes: bytes = codes.astype(np.uint8).tobytes()
        self.syn_reply_rows: list[int] = reply.tolist()
        self.has_replies: list[bool] = (np.bincount(index.conn[control[reply >= 0]], minlength=count) > 0).tolist()
        """Per control row: the reply row of a pure SYN or an RST (a possible challenge ACK), or -1."""
        rst_codes = np.zeros(len(control), np.int64)
        rst_codes[rst_mask] = self._rst_codes(control[rst_mask], reply[rst_mask] >= 0)
        self.rst_codes: bytes = rst_codes.astype(np.uint8).tobytes()
        has_rst = np.bincount(index.conn[(self.flags & RST) != 0], minlength=count) > 0
        self.coded_walk: list[bool] = (~has_rst).tolist()

    def _walk_starts(self) -> list[tuple[TcpState, TcpState, bool, int]]:
        """Per connection: both endpoints' initial states, mid-stream, and the row where a mid-stream
        connection has seen data both ways (or -1), for the whole batch at once."""
        index = self.index
        pure_syn = index.arrays["first_pure_syn_row"].reshape(-1, 2)
        syn = index.arrays["first_syn_row"].reshape(-1, 2)
        first = index.arrays["first_row"].reshape(-1, 2)
        data = index.arrays["first_data_row"].reshape(-1, 2)
        orig_closed = pure_syn[:, 0] >= 0
        resp_listen = index.arrays["first_synack_row"].reshape(-1, 2)[:, 1] >= 0
        resp_first = first[:, 1]
        # The responder answered the SYN with an RST: no socket, or a closed port.
        refused = (resp_first >= 0) & orig_closed & ((self.flags[np.maximum(resp_first, 0)] & RST) != 0)
        midstream = (syn[:, 0] < 0) & (syn[:, 1] < 0)
        both_ways = np.where(midstream & (data.min(axis=1) >= 0), data.max(axis=1), -1)
        states = (TcpState.UNKNOWN, TcpState.CLOSED, TcpState.LISTEN)
        orig = [states[code] for code in orig_closed.astype(np.int64).tolist()]
        resp = [states[code] for code in np.where(resp_listen, 2, np.where(refused, 1, 0)).tolist()]
        return list(zip(orig, resp, midstream.tolist(), both_ways.tolist(), strict=True))

    def _rst_codes(self, rows: IntArray, has_reply: Array) -> IntArray:
        """`walk.rst_code` of the RST rows ``rows``: the facts `_Walk._rst_facts` finds row by row (the
        reference), for every RST of the batch at once."""
        index = self.index
        side = self.fo[rows]
        key = index.key[rows]
        peer_key = key ^ 1
        if_syn_sent_ok = ((self.flags[rows] & ACK) != 0) & (self.rel_ack[rows] == 1)
        keeps_sending = index.arrays["last_non_rst_row"][peer_key] > rows
        verdict = _rst_verdicts(self, rows, side, key, peer_key)
        return np.asarray(
            verdict
            | np.where(if_syn_sent_ok, RST_SYN_SENT_OK, 0)
            | np.where(keeps_sending, RST_RECEIVER_KEEPS_SENDING, 0)
            | np.where(has_reply, RST_HAS_REPLY, 0),
            np.int64,
        )

    def reset_row_facts(self) -> dict[int, RstRow]:
        """Per RST row of the batch: seq, ack, TTL, IP ID, whether the TTL is one the sender's own non-RST
        segments carry, flags, sent by the originator, frame, timestamp, relative seq and ack (made on first use,
        for every RST at once)."""
        if self._reset_rows is None:
            table = self.table
            rows = np.flatnonzero((self.flags & RST) != 0)
            not_rst = (self.flags & RST) == 0
            own_codes = np.unique(self.index.key[not_rst] * 256 + table["ttl"][not_rst].astype(np.int64))
            ttl = table["ttl"][rows].astype(np.int64)
            own_ttl = np.isin(self.index.key[rows] * 256 + ttl, own_codes)
            self._reset_rows = dict(
                zip(
                    rows.tolist(),
                    zip(
                        table["seq"][rows].tolist(),
                        table["ack"][rows].tolist(),
                        ttl.tolist(),
                        table["ip_id"][rows].tolist(),
                        own_ttl.tolist(),
                        self.flags[rows].tolist(),
                        self.fo[rows].tolist(),
                        self.frame[rows].tolist(),
                        self.ts[rows].tolist(),
                        self.rel_seq[rows].tolist(),
                        self.rel_ack[rows].tolist(),
                        strict=True,
                    ),
                    strict=True,
                )
            )
        return self._reset_rows

    def _direction_stats(self) -> list[DirectionStats]:
        """Every direction key's `DirectionStats`, for the whole batch at once (made from the field columns by
        `map`, no row tuples; a connection whose trusted RST raises its delivery makes its own instead: see
        `_direction_stats`)."""
        stats = self.stats
        data_bytes = np.maximum(np.asarray(stats.data_end, np.int64) - 1, 0)
        peer_acked = np.asarray(stats.max_ack, np.int64).reshape(-1, 2)[:, ::-1].reshape(-1)
        bytes_acked = np.minimum(np.maximum(peer_acked - 1, 0), data_bytes)
        keys = len(data_bytes)
        return list(
            map(
                _new_direction_stats,
                stats.packets,
                stats.payload_bytes,
                stats.frame_bytes,
                stats.ip_bytes,
                _none_below(self.isn_list, 0),
                data_bytes.tolist(),
                bytes_acked.tolist(),
                (data_bytes - bytes_acked).tolist(),
                stats.retransmissions,
                stats.out_of_order,
                stats.lost,
                stats.dup_acks,
                stats.zero_windows,
                stats.keepalives,
                stats.max_idle,
                _none_below(self.wscale_list, 0),
                _none_below(self.mss_list, 1),
                self.ttl_lists,
                _none_below(self.fin_frame_list, 0),
                [self.rst_frames.get(key, ()) for key in range(keys)],
            )
        )

    def canonical_tuple(self, conn: int) -> tuple[int, ...]:
        """The connection's 4-tuple, lower endpoint first (the same for both directions)."""
        src_hi, src_lo, dst_hi, dst_lo, sport, dport, _ = self.first_row_facts[conn]
        src, dst = (src_hi, src_lo, sport), (dst_hi, dst_lo, dport)
        return (*min(src, dst), *max(src, dst))

    def canonical_tuples(self) -> list[tuple[int, ...]]:
        """`canonical_tuple` of every connection of the batch, at once."""
        return list(zip(*(column.tolist() for column in self._canonical_columns()), strict=True))

    def tuple_keys(self) -> list[bytes]:
        """Every connection's `canonical_tuple` packed in 36 bytes: equal keys, equal 4-tuples. A dict keyed by
        them holds a third of what the tuples of Python ints take."""
        columns = self._canonical_columns()
        packed = np.empty(len(columns[0]), _TUPLE_KEY)
        for name, column in zip(_TUPLE_KEY.names or (), columns, strict=True):
            packed[name] = column
        return _python_list(packed.view(f"V{_TUPLE_KEY.itemsize}"))

    def _canonical_columns(self) -> tuple[Array, ...]:
        """The six columns of the connections' canonical 4-tuples (lower endpoint first)."""
        starts = self.analysis.starts
        src_hi, src_lo, dst_hi, dst_lo = (self.table[name][starts] for name in ("src_hi", "src_lo", "dst_hi", "dst_lo"))
        sport, dport = self.table["sport"][starts], self.table["dport"][starts]
        swap = (src_hi > dst_hi) | ((src_hi == dst_hi) & ((src_lo > dst_lo) | ((src_lo == dst_lo) & (sport > dport))))
        low = (np.where(swap, dst_hi, src_hi), np.where(swap, dst_lo, src_lo), np.where(swap, dport, sport))
        high = (np.where(swap, src_hi, dst_hi), np.where(swap, src_lo, dst_lo), np.where(swap, sport, dport))
        return (*low, *high)

    def address(self, hi: int, lo: int) -> str:
        text = self._addresses.get((hi, lo))
        if text is None:
            text = self._addresses[(hi, lo)] = format_addr(hi, lo)
        return text

    def rows_of(self, start: int, stop: int) -> PacketTable:
        """The connection's rows, sliced from the batch only when someone reads them."""
        return LazyRows(self.table.columns, start, stop)


_new_connection = slot_builder(Connection)
_CONNECTION_FIELDS = (
    "index",
    "uid",
    "community_id",
    "ip_version",
    "orig_h",
    "orig_p",
    "resp_h",
    "resp_p",
    "orig_inferred_by",
    "ts_first_ns",
    "ts_last_ns",
    "first_frame",
    "last_frame",
    "orig",
    "resp",
    "orig_states",
    "resp_states",
    "outcome",
    "conn_state",
    "history",
    "resets",
    "events",
    "established",
    "midstream",
    "port_reuse",
    "truncated_packets",
    "packets",
    "from_orig",
    "zeek_orig_bytes",
    "zeek_resp_bytes",
    "missed_bytes",
    "icmp_errors",
)
"""The order `build_connection` passes `Connection`'s fields in."""
if tuple(item.name for item in fields(Connection)) != _CONNECTION_FIELDS:
    raise ImportError("Connection's fields changed: update build_connection's positional call")
_new_direction_stats = slot_builder(DirectionStats)
_new_reset = slot_builder(ResetInfo)
_new_event = slot_builder(Event)
"""`Event(...)`: about ten per connection whose events are read."""
_new_state_change = slot_builder(StateChange)


def _ttl_lists(ttl: Array, key: IntArray, keys: int) -> list[tuple[int, ...]]:
    """Per direction key, the distinct TTLs, most frequent first."""
    combined = key * 256 + ttl.astype(np.int64)
    values, counts = np.unique(combined, return_counts=True)
    owner = values // 256
    order = np.lexsort((-counts, owner))
    ttls: list[int] = (values[order] % 256).tolist()
    bounds: list[int] = np.searchsorted(owner[order], np.arange(keys + 1)).tolist()
    return [tuple(ttls[bounds[k] : bounds[k + 1]]) for k in range(keys)]


_VERDICT_CODE = {verdict: number for number, verdict in enumerate(RST_VERDICTS)}


def _rst_verdicts(batch: Batch, rows: IntArray, side: Array, key: IntArray, peer_key: IntArray) -> IntArray:
    """`_Walk._acceptability` (the receiver not in SYN_SENT) of the RST rows ``rows`` sent by ``side``, as the
    index of each verdict in `walk.RST_VERDICTS`."""
    index = batch.index
    analysis = batch.analysis
    table = batch.table
    no_ack = np.iinfo(np.int64).min
    starts = analysis.starts[index.conn[rows]]
    peer_last_row = np.where(side, index.last_row_resp[rows], index.last_row_orig[rows]).astype(np.int64)
    has_expected = index.arrays["first_row"][key] < rows
    expected = analysis.next_expected[rows].astype(np.int64)
    peer_ack = np.where(side, index.ack_max_resp[rows], index.ack_max_orig[rows]).astype(np.int64)
    has_peer_ack = peer_ack > no_ack
    seq = batch.rel_seq[rows].astype(np.int64)
    # See `_Walk._acceptability`: R's RCV.NXT lies between its own highest ACK and X's sequence end.
    exact = (has_expected & (seq == expected)) | (has_peer_ack & (seq == peer_ack))
    rcv_nxt = np.maximum(np.where(has_expected, expected, no_ack), np.where(has_peer_ack, peer_ack, no_ack))
    raw_window = table["window"][np.maximum(peer_last_row, 0)].astype(np.int64)
    syn_rows = index.arrays["first_syn_row"]
    receiver_syn, sender_syn = syn_rows[peer_key], syn_rows[key]
    scale_known = (receiver_syn >= 0) & (sender_syn >= 0)
    wscale = table["opt_wscale"].astype(np.int64)
    receiver_wscale, sender_wscale = wscale[np.maximum(receiver_syn, 0)], wscale[np.maximum(sender_syn, 0)]
    scale = np.where(scale_known & (receiver_wscale >= 0) & (sender_wscale >= 0), np.minimum(receiver_wscale, 14), 0)
    in_window = (rcv_nxt < seq) & (seq < rcv_nxt + (raw_window << scale))
    unknown = (peer_last_row < starts) | ~(has_expected | has_peer_ack)
    # Missed segments both ways (`_Walk._acceptability`): ahead of RCV.NXT, acknowledging data the receiver was
    # never seen to send, and the receiver never speaks again.
    receiver_last = np.maximum(peer_last_row, 0)
    receiver_end = np.maximum(analysis.next_expected[receiver_last], analysis.seg_end[receiver_last])
    receiver_silent = index.arrays["last_non_rst_row"][peer_key] <= rows
    acks_unseen = ((batch.flags[rows] & ACK) != 0) & (batch.rel_ack[rows] > receiver_end)
    unknown |= ~exact & receiver_silent & (seq > rcv_nxt) & acks_unseen
    verdict = np.where(
        exact,
        _VERDICT_CODE[RstAcceptability.EXACT],
        np.where(
            in_window,
            _VERDICT_CODE[RstAcceptability.IN_WINDOW],
            np.where(
                scale_known, _VERDICT_CODE[RstAcceptability.OUT_OF_WINDOW], _VERDICT_CODE[RstAcceptability.UNKNOWN]
            ),
        ),
    )
    return np.asarray(np.where(unknown, _VERDICT_CODE[RstAcceptability.UNKNOWN], verdict), np.int64)


def build_connection(
    batch: Batch,
    conn: int,
    index: int,
    port_reuse: bool,
    icmp_errors: Sequence[IcmpError],
    rst_payloads: Mapping[int, bytes],
) -> Connection:
    """Rebuild connection number ``conn`` of the batch, to be published as ``Connection.index = index``.

    What every reader needs (outcome, Zeek fields, counters, RSTs) is made now; the event list and the state
    timelines are left `Deferred` (made on first read from the batch's arrays, see `_Details`).
    """
    start, stop = batch.starts_list[conn], batch.stops_list[conn]
    src_hi, src_lo, dst_hi, dst_lo, sport, dport, ip_version = batch.first_row_facts[conn]
    src, dst = batch.address(src_hi, src_lo), batch.address(dst_hi, dst_lo)
    first_from_orig = batch.first_fo_list[conn]
    orig_h, orig_p, resp_h, resp_p = (src, sport, dst, dport) if first_from_orig else (dst, dport, src, sport)
    walk = _Walk(batch, conn, start, stop, rst_payloads)
    template = walk.run()
    icmp_events = _icmp_events(icmp_errors, orig_h, orig_p, resp_h, resp_p) if icmp_errors else []
    deferred = Deferred(_Details(batch.source, walk, template, icmp_events))
    zeek = _zeek_summary(batch, conn, start, stop, first_from_orig)
    first_frame, last_frame = batch.first_frame_list[conn], batch.last_frame_list[conn]
    ts_first, ts_last = batch.ts_first_list[conn], batch.ts_last_list[conn]
    key = 2 * conn
    resets = walk.stamp_resets(template) if template.resets else ()
    orig_stats = (
        batch.direction_stats[key]
        if not walk.rst_acked[True]
        else _direction_stats(batch, key, walk.isn[True], walk.rst_acked[True])
    )
    resp_stats = (
        batch.direction_stats[key + 1]
        if not walk.rst_acked[False]
        else _direction_stats(batch, key + 1, walk.isn[False], walk.rst_acked[False])
    )
    # Positional, in field order (`_CONNECTION_FIELDS`): matching 32 keywords cost a microsecond per connection.
    return _new_connection(
        index,
        batch.uid_list[conn],
        batch.community_id_list[conn],
        ip_version,
        orig_h,
        orig_p,
        resp_h,
        resp_p,
        INFERRED_BY[batch.inferred_by_list[conn]],
        ts_first,  # ts_first_ns
        ts_last,  # ts_last_ns
        first_frame,
        last_frame,
        orig_stats,
        resp_stats,
        deferred,  # orig_states
        deferred,  # resp_states
        walk.outcome(any(event.side is Side.RESP for event in icmp_events)),
        zeek.conn_state,
        zeek.history,
        resets,
        deferred,  # events
        walk.established,
        walk.midstream,
        port_reuse,
        batch.stats.truncated[key] + batch.stats.truncated[key + 1],  # truncated_packets
        batch.rows_of(start, stop),  # packets
        batch.fo[start:stop],  # from_orig
        zeek.orig_bytes,
        zeek.resp_bytes,
        zeek.missed_bytes,
        tuple(icmp_errors),
    )


def _zeek_summary(batch: Batch, conn: int, start: int, stop: int, first_from_orig: bool) -> ZeekSummary:
    """Zeek's fields: from the batch's precomputed facts alone, unless some row may give a W or T letter."""
    index = batch.index
    lo, hi = index.zeek_fed.span(conn)

    def load_fed() -> list[tuple[int, bool, int, int, int]]:
        # Only when the shape is not memoised yet: this connection's rows, not the batch's per-row lists.
        rows = np.asarray(index.zeek_fed.flat[lo:hi], np.int64)
        columns = (batch.fo[rows].tolist(), batch.flags[rows].tolist(), batch.rel_seq[rows].tolist())
        return list(zip((rows - start).tolist(), *columns, batch.payload[rows].tolist(), strict=True))

    own_orig, own_resp, acked_orig, acked_resp, missed = batch.zeek_sizes[conn]
    letter_rows = batch.zeek_letter_rows[conn]
    shape = index.zeek_shapes[lo:hi]
    fed_rows = batch.zeek_fed_local[lo:hi]
    sizes = ((own_orig, own_resp), (acked_orig, acked_resp))
    later = batch.analysis.later_gap_ack_rows
    later_orig, later_resp = (later.get(2 * conn, ()), later.get(2 * conn + 1, ())) if later else ((), ())
    if not index.zeek_bulk_candidates[conn] and not (later_orig or later_resp):
        return summarise_plain(shape, load_fed, fed_rows, letter_rows, *sizes, not first_from_orig, missed)
    gaps = []
    if (gap_orig := letter_rows[4]) >= 0:
        gaps.append((gap_orig, 3, "G"))
    if (gap_resp := letter_rows[5]) >= 0:
        gaps.append((gap_resp, 3, "g"))
    gaps += [(row - start, 3, "G") for row in later_orig]  # the 10th, 100th... gap (Zeek's scaled letters)
    gaps += [(row - start, 3, "g") for row in later_resp]
    rows = PlainRows(
        batch.fo[start:stop].tolist(),
        batch.flags[start:stop].tolist(),
        batch.rel_seq[start:stop].tolist(),
        batch.payload[start:stop].tolist(),
        batch.table["window"][start:stop].tolist(),
    )
    return summarise_small(shape, load_fed, fed_rows, gaps, *sizes, not first_from_orig, missed, rows)


def _event_order(event: Event) -> tuple[int, int]:
    return (event.frame, _KIND_ORDER[event.kind])


_KIND_ORDER = {kind: number for number, kind in enumerate(EventKind)}
_KIND_ORDER[EventKind.IDLE_GAP] = -1  # the silence comes before what ended it


class _Walk:
    """One connection's control walk: its marks, the memoised template, the template stamped with rows."""

    def __init__(self, batch: Batch, conn: int, start: int, stop: int, rst_payloads: Mapping[int, bytes]) -> None:
        self.batch = batch
        self.conn = conn
        self.start = start
        self.stop = stop
        self.rst_payloads = rst_payloads
        index = batch.index
        # Per-side facts are two-item lists [responder, originator]: indexed by the side (False, True) as a dict
        # keyed by it would be, for a fraction of a dict's cost (one walk per connection).
        self.keys = [2 * conn + 1, 2 * conn]
        initial_orig, initial_resp, self.midstream, self.both_ways_row = batch.walk_starts[conn]
        isn_orig, isn_resp = batch.isn_list[2 * conn], batch.isn_list[2 * conn + 1]
        self.isn = [isn_resp if isn_resp >= 0 else None, isn_orig if isn_orig >= 0 else None]
        self.syn_options = [index.first_syn_row[2 * conn + 1], index.first_syn_row[2 * conn]]
        self.initial = [initial_resp, initial_orig]
        self.rows: list[int] = []
        self.replies: dict[int, int] = {}
        self.never_established = False
        """A side was left in SYN_RECEIVED with no sign of the handshake completing (see `run`)."""
        self.rst_acked = [0, 0]
        """Per side: the highest relative ACK of that side's data carried by a trusted RST of the peer."""
        self.accepted_rst_row = -1
        self.fin_acked_row = [-1, -1]
        self.reached_sync = {True: False, False: False}
        self.syn_ack_row = -1
        self.handshake_ack_row = -1

    def _initial(self, side: bool) -> TcpState:
        """``side``'s state before its first control segment, row by row (the reference of `_walk_starts`)."""
        index = self.batch.index
        key, peer_key = self.keys[side], self.keys[not side]
        if side:
            return TcpState.CLOSED if index.first_pure_syn_row[key] >= 0 else TcpState.UNKNOWN
        if index.first_synack_row[key] >= 0:
            return TcpState.LISTEN
        first_own = index.first_row[key]
        if first_own >= 0 and index.first_pure_syn_row[peer_key] >= 0 and self.batch.flags_list[first_own] & RST:
            return TcpState.CLOSED  # answered the SYN with an RST: no socket, or a closed port
        return TcpState.UNKNOWN

    def _data_both_ways_row(self) -> int:
        """Mid-stream: the row where data has flowed both ways, row by row (the reference of `_walk_starts`)."""
        if not self.midstream:
            return -1
        index = self.batch.index
        firsts = [index.first_data_row[self.keys[side]] for side in (True, False)]
        return max(firsts) if min(firsts) >= 0 else -1

    # -- marks, template, stamping --------------------------------------------------------------------

    def run(self) -> WalkTemplate:
        """Walk the control rows (memoised by shape); the template is stamped later, when read."""
        batch = self.batch
        self.rows = batch.index.control[self.conn]  # sorted, and holding the SYN and FIN proofs
        codes = b""
        rst_codes = None
        if self.both_ways_row < 0:
            lo, hi = batch.index.control.span(self.conn)
            codes = batch.mark_codes[lo:hi]
            rst_codes = None if batch.coded_walk[self.conn] else batch.rst_codes[lo:hi]
            template = walk_coded(self.initial[True], self.initial[False], codes, rst_codes)
            if batch.has_replies[self.conn]:
                for position, reply in enumerate(batch.syn_reply_rows[lo:hi]):
                    if reply >= 0:
                        self.replies[position] = reply
            marks = None
        else:
            marks = self._marks()
            template = walk(self.initial[True], self.initial[False], tuple(marks))
        for side in (True, False):
            if template.timeline[side] and template.timeline[side][-1][0] is TcpState.SYN_RECEIVED:
                if marks is None:
                    marks = marks_from_codes(codes) if rst_codes is None else marks_from_rst_codes(codes, rst_codes)
                template = self._settle_syn_received(side, marks, template)
        self._resolve(template)
        return template

    def _marks(self) -> list[Mark]:
        """The marks of the control rows, one by one (connections with an RST or a both-ways row)."""
        batch = self.batch
        index = batch.index
        syn_proofs = {index.syn_proof_row[self.keys[side]] for side in (True, False)}
        fin_proofs = {index.fin_proof_row[self.keys[side]] for side in (True, False)}
        rows = self.rows
        if self.both_ways_row >= 0 and self.both_ways_row not in rows:
            bisect.insort(rows, self.both_ways_row)
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
        return marks

    def _settle_syn_received(self, side: bool, marks: list[Mark], template: WalkTemplate) -> WalkTemplate:
        """``side`` ends in SYN_RECEIVED: its SYN-ACK was retransmitted after the peer's handshake ACK, so that
        ACK never completed its handshake (lost, or dropped by a full accept queue). A later segment from
        ``side`` that only an established socket sends (data, FIN, an ACK of the peer's data) shows the
        handshake completed after all: walk again with that row marked. Without one, the connection was never
        established (`never_established`)."""
        row = self._accepting_row(side)
        if row < 0:
            self.never_established = True
            return template
        if row in self.rows:
            position = self.rows.index(row)
            marks[position] = marks[position]._replace(accepts=True)
        else:
            position = bisect.bisect(self.rows, row)
            self.rows.insert(position, row)
            self.replies = {(mark + 1 if mark >= position else mark): reply for mark, reply in self.replies.items()}
            flags = self.batch.flags_list[row] & (SYN | FIN | RST | ACK)
            marks.insert(position, Mark(side, flags, False, False, False, None, False, True))
        return walk(self.initial[True], self.initial[False], tuple(marks))

    def _accepting_row(self, side: bool) -> int:
        """First row after ``side``'s last SYN-ACK where ``side`` sends data or a FIN or acknowledges data."""
        batch = self.batch
        flags, fo, payload, rel_ack = batch.flags_list, batch.fo_list, batch.payload_list, batch.rel_ack_list
        last_syn_ack = max(
            (row for row in self.rows if fo[row] == side and flags[row] & (SYN | ACK | RST) == SYN | ACK),
            default=self.start - 1,
        )
        for row in range(last_syn_ack + 1, self.stop):
            if fo[row] != side or flags[row] & (SYN | RST):
                continue
            if payload[row] > 0 or flags[row] & FIN or (flags[row] & ACK and rel_ack[row] > 1):
                return row
        return -1

    def _rst_facts(self, position: int, row: int, side: bool, flags: int) -> RstFacts:
        peer = not side
        reply = self._reply_row(row, peer)
        if reply >= 0:
            self.replies[position] = reply
        return RstFacts(
            RstAcceptability.SYN_SENT_ACK_OK
            if flags & ACK and self.batch.rel_ack_list[row] == 1
            else RstAcceptability.SYN_SENT_ACK_BAD,
            self._acceptability(row, side, receiver_silent=self.batch.index.last_non_rst_row[self.keys[peer]] <= row),
            self.batch.index.last_non_rst_row[self.keys[peer]] > row,
            reply >= 0,
        )

    def _resolve(self, template: WalkTemplate) -> None:
        """The rows of the marks the outcome and the RTT read."""
        rows = self.rows
        mark = template.accepted_rst_mark
        self.accepted_rst_row = rows[mark] if mark >= 0 else -1
        orig_mark, resp_mark = template.fin_acked_mark[True], template.fin_acked_mark[False]
        self.fin_acked_row = [rows[resp_mark] if resp_mark >= 0 else -1, rows[orig_mark] if orig_mark >= 0 else -1]
        self.reached_sync = template.reached_sync
        mark = template.syn_ack_mark
        self.syn_ack_row = rows[mark] if mark >= 0 else -1
        mark = template.handshake_ack_mark
        self.handshake_ack_row = rows[mark] if mark >= 0 else -1

    def stamp_resets(self, template: WalkTemplate) -> tuple[ResetInfo, ...]:
        """The template's RST verdicts on this connection's RST rows."""
        batch = self.batch
        row_facts = batch.reset_row_facts()
        resets = []
        for reset in template.resets:
            row = self.rows[reset.mark]
            seq, ack, ttl, ip_id, own_ttl, flags, side, frame, ts, rel_seq, rel_ack = row_facts[row]
            # Trusted: its receiver accepted it, and its TTL is one the sender's own packets carry (a forged
            # RST's ack is the forger's guess); see `_trusted_rst`, the row-by-row reference.
            if flags & ACK and own_ttl and reset.acceptability in ACCEPTED:
                self.rst_acked[not side] = max(self.rst_acked[not side], rel_ack)
            resets.append(
                _new_reset(
                    sender=Side.ORIG if side else Side.RESP,
                    frame=frame,
                    ts_ns=ts,
                    seq=seq,
                    ack=ack if flags & ACK else None,
                    rel_seq=rel_seq if self.isn[side] is not None else None,
                    ttl=ttl,
                    ip_id=ip_id,
                    acceptability=reset.acceptability,
                    receiver_state=reset.receiver_state,
                    sender_state=reset.sender_state,
                    payload_text=printable_text(self.rst_payloads.get(frame)),
                )
            )
        return tuple(resets)

    def _trusted_rst(self, acceptability: RstAcceptability, row: int, side: bool) -> bool:
        """An RST whose acknowledgment tells what its sender received: its receiver accepted it, and its TTL is
        one the sender's own (non-RST) packets carry (a forged RST's ack is the forger's guess)."""
        if acceptability not in ACCEPTED:
            return False
        return self.keys[side] * 256 + int(self.batch.table["ttl"][row]) in self.batch.own_ttls()

    def _acceptability(self, row: int, side: bool, *, receiver_silent: bool = False) -> RstAcceptability:
        """RFC 5961 verdict for an RST from ``side`` whose receiver is not in SYN_SENT.

        An RST ahead of everything its sender was seen to send, acknowledging data its receiver was never seen to
        send, after which the receiver never speaks again, proves the capture missed segments both ways (a paste
        that skips the transfer, a capture dropping packets): the receiver's RCV.NXT is then unknown, not "in
        window". A blind injected RST is ahead too, but its receiver answers (challenge ACK) and carries on."""
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
        seq = batch.rel_seq_list[row]
        # R's RCV.NXT lies between its own highest ACK (what it surely received) and X's sequence end (all of X's
        # segments arrived): a segment of X seen here may still be in flight, or lost after this capture point
        # (a FIN dropped on the path). An RST matching either bound is exact: a reply RST carries R's own ACK.
        if seq in candidates:
            return RstAcceptability.EXACT
        rcv_nxt = max(candidates)
        if receiver_silent and seq > rcv_nxt and self._acks_unseen_data(row, peer_last_row):
            return RstAcceptability.UNKNOWN
        raw_window = int(batch.table["window"][peer_last_row])
        scale = self._window_scale(peer)
        if scale is None:
            if rcv_nxt < seq < rcv_nxt + raw_window:
                return RstAcceptability.IN_WINDOW
            return RstAcceptability.UNKNOWN
        if rcv_nxt < seq < rcv_nxt + (raw_window << scale):
            return RstAcceptability.IN_WINDOW
        return RstAcceptability.OUT_OF_WINDOW

    def _acks_unseen_data(self, row: int, receiver_last_row: int) -> bool:
        """The RST at ``row`` acknowledges sequence space its receiver was never seen to send."""
        if not int(self.batch.table["flags"][row]) & ACK:
            return False
        analysis = self.batch.analysis
        receiver_end = max(int(analysis.next_expected[receiver_last_row]), int(analysis.seg_end[receiver_last_row]))
        return int(self.batch.rel_ack_list[row]) > receiver_end

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
                pure_ack = batch.flags_list[reply] & (SYN | FIN | RST | ACK) == ACK and not batch.payload_list[reply]
                prompt = batch.ts_list[reply] - batch.ts_list[row] <= CHALLENGE_ACK_WINDOW_NS
                return reply if pure_ack and prompt else -1
        return -1

    # -- results ---------------------------------------------------------------------------------------

    @property
    def established(self) -> bool:
        if self.never_established:
            return False
        return (self.reached_sync[True] and self.reached_sync[False]) or self.both_ways_row >= 0

    def outcome(self, syn_answered_by_icmp: bool = False) -> Outcome:
        """The outcome (module docstring). ``syn_answered_by_icmp``: an ICMP error quoting the originator's
        packets came back, so its SYN was answered (negatively) even if nothing came from the responder."""
        index = self.batch.index
        if not self.established:
            syns = index.pure_syn_count[self.keys[True]]
            answered = index.first_row[self.keys[False]] >= 0 or syn_answered_by_icmp
            return Outcome.TIMEOUT if syns > 1 and not answered else Outcome.NOT_ESTABLISHED
        both_fins_acked = self.fin_acked_row[True] >= 0 and self.fin_acked_row[False] >= 0
        if both_fins_acked and (self.accepted_rst_row < 0 or max(self.fin_acked_row) < self.accepted_rst_row):
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
        other_last = int((batch.index.last_row_resp if last_side else batch.index.last_row_orig)[self.stop - 1])
        tail = slice(max(other_last + 1, self.start), self.stop)
        carries = (batch.payload[tail] > 0) | ((batch.flags[tail] & FIN) != 0)
        repeated = carries & (batch.rel_seq[tail] < batch.analysis.next_expected[tail])
        return int(repeated.sum()) >= 2


@dataclass(frozen=True, slots=True)
class LazySource:
    """The part of a batch that deferred details read: numpy arrays and a few per-key lists, never the
    per-row Python lists of `Batch` (a connection kept for later must not pin those)."""

    frame: Array
    ts: Array
    rel_seq: IntArray
    rel_ack: IntArray
    flags: Array
    payload: Array
    from_orig: Array
    gap_before_ns: IntArray
    retransmission: Array
    out_of_order: Array
    first_data_row: list[int]
    last_data_row: list[int]
    data_after_fin_row: list[int]
    first_pure_syn_row: list[int]
    retransmission_rows: RowsByConnection
    keepalive_rows: RowsByConnection
    zero_window_rows: RowsByConnection
    idle_rows: RowsByConnection


class _Details(DeferredDetails):
    """One connection's deferred fields: its state timelines and events, stamped from the walk template."""

    __slots__ = (
        "conn",
        "handshake_ack_row",
        "icmp",
        "initial",
        "replies",
        "rows",
        "source",
        "start",
        "stop",
        "syn_ack_row",
        "template",
    )

    def __init__(self, source: LazySource, walk: _Walk, template: WalkTemplate, icmp: list[Event]) -> None:
        self.source = source
        self.conn = walk.conn
        self.start = walk.start
        self.stop = walk.stop
        self.initial = (walk.initial[True], walk.initial[False])
        self.rows = walk.rows
        self.replies = walk.replies
        self.template = template
        self.icmp = icmp
        self.syn_ack_row = walk.syn_ack_row
        self.handshake_ack_row = walk.handshake_ack_row

    def final_state(self, from_orig: bool) -> TcpState:
        timeline = self.template.timeline[from_orig]
        return timeline[-1][0] if timeline else self.initial[0 if from_orig else 1]

    def icmp_events(self) -> tuple[Event, ...]:
        return tuple(sorted(self.icmp, key=_event_order))

    def materialise(self, name: str) -> dict[str, object]:
        if name != "events":  # both timelines together: they read the same two columns
            frame = self.source.frame[self.start : self.stop].tolist()
            ts = self.source.ts[self.start : self.stop].tolist()
            return {"orig_states": self._timeline(frame, ts, True), "resp_states": self._timeline(frame, ts, False)}
        rows = _LocalRows(self.source, self.start, self.stop)
        events = self._walk_events(rows) + self._bulk_events(rows) + self.icmp
        events.sort(key=_event_order)
        return {"events": tuple(events)}

    def _timeline(self, frame: list[int], ts: list[int], side: bool) -> tuple[StateChange, ...]:
        line = [_new_state_change(self.initial[0 if side else 1], frame[0], ts[0])]
        for state, mark in self.template.timeline[side]:
            local = self.rows[mark] - self.start
            line.append(_new_state_change(state, frame[local], ts[local]))
        return tuple(line)

    def _walk_events(self, rows: _LocalRows) -> list[Event]:
        events = []
        for op in self.template.events:
            row = self.rows[op.mark]
            if op.on_reply:
                cause = "rst_frame" if rows.flags[row - self.start] & RST else "syn_frame"
                events.append(rows.event(op.kind, self.replies[op.mark], {cause: rows.frame[row - self.start]}))
            else:
                events.append(rows.event(op.kind, row, dict(op.detail) if op.detail else None))
        return events

    def _bulk_events(self, rows: _LocalRows) -> list[Event]:
        """Events at rows the batch index located (data, retransmissions, keep-alives, windows, gaps)."""
        source, conn = self.source, self.conn
        events: list[Event] = []
        for key in (2 * conn, 2 * conn + 1):
            first, last = source.first_data_row[key], source.last_data_row[key]
            if first >= 0:
                events.append(rows.event(EventKind.FIRST_DATA, first))
                events.append(rows.event(EventKind.LAST_DATA, last))
            after_fin = source.data_after_fin_row[key]
            if after_fin >= 0:
                events.append(rows.event(EventKind.DATA_AFTER_FIN, after_fin))
        events += [rows.event(EventKind.RETRANSMISSION, row) for row in source.retransmission_rows[conn]]
        events += [rows.event(EventKind.KEEPALIVE_PROBE, row) for row in source.keepalive_rows[conn]]
        events += [rows.event(EventKind.ZERO_WINDOW, row) for row in source.zero_window_rows[conn]]
        return events + self._idle_gaps(rows)

    def _idle_gaps(self, rows: _LocalRows) -> list[Event]:
        source = self.source
        gap_rows = source.idle_rows[self.conn]
        if not gap_rows:
            return []
        rtt = self._handshake_rtt(rows)
        threshold = max(IDLE_GAP_MIN_NS, IDLE_GAP_RTT_FACTOR * rtt) if rtt is not None else IDLE_GAP_MIN_NS
        events = []
        for row in gap_rows:
            gap = int(source.gap_before_ns[row])
            # A silence that ends with a retransmission is a retransmission timeout (reported as such), not
            # idleness.
            if gap >= threshold and not (source.retransmission[row] or source.out_of_order[row]):
                events.append(rows.event(EventKind.IDLE_GAP, row, {"gap_ns": gap, "rtt_ns": rtt}))
        return events

    def _handshake_rtt(self, rows: _LocalRows) -> int | None:
        """SYN to handshake ACK: the round trip seen from the capture point; None without a full handshake."""
        syn = self.source.first_pure_syn_row[2 * self.conn]
        if syn < 0 or self.handshake_ack_row < 0 or self.syn_ack_row < 0:
            return None
        return rows.ts[self.handshake_ack_row - self.start] - rows.ts[syn - self.start]


def detach_details(connections: Sequence[Connection], columns: Mapping[str, Array], from_orig: Array) -> None:
    """Point the still-deferred fields of ``connections`` at their own rows, laid out one connection after the
    other in ``columns`` and ``from_orig`` (a compact copy of their rows, in this order: see
    `whyreset.analysis.compact_packets`), so that they stop holding the tracker's batch.

    Making the fields instead would also free the batch, but a connection's events and timelines take ~3 kB as
    Python objects against ~30 bytes per row here: a capture with tens of thousands of abnormal connections
    waiting for the end of the capture holds them all. The fields made later are the same: the rows carry the
    same values, only their place changes.
    """
    details: list[tuple[int, _Details]] = []  # (the connection's first row in ``columns``, its details)
    start = 0
    for conn in connections:
        pending = pending_details(conn)
        if isinstance(pending, _Details):
            details.append((start, pending))
        start += len(conn.from_orig)
    if details:
        _rebase(details, columns, from_orig)


def _rebase(details: list[tuple[int, _Details]], columns: Mapping[str, Array], from_orig: Array) -> None:
    """One `LazySource` over the compact rows for every detail, each renumbered as connection ``i`` of it.

    The details come from a few batches (`LazySource`s): each batch's rows, per-key rows and row lists move with
    a few numpy calls per field, not per connection."""
    total, count = len(from_orig), len(details)
    per_row: dict[str, Array] = {name: np.zeros(total, dtype) for name, dtype in _PER_ROW}
    per_key = {name: np.full(2 * count, -1, np.int64) for name in _PER_KEY}
    row_masks = {name: np.zeros(total, bool) for name in _ROW_LISTS}
    conn_of_row = np.full(total, count, np.int64)  # rows of connections already made: in none of the lists
    new_starts = np.fromiter((start for start, _ in details), np.int64, count)
    old_starts = np.fromiter((item.start for _, item in details), np.int64, count)
    old_conns = np.fromiter((item.conn for _, item in details), np.int64, count)
    sizes = np.fromiter((item.stop - item.start for _, item in details), np.int64, count)
    shifts = new_starts - old_starts
    ranges = [(item.source, item.start, item.stop) for _, item in details]
    for old, numbers, src, dst in gather_plan(ranges, new_starts):
        for name, _ in _PER_ROW:
            per_row[name][dst] = getattr(old, name)[src]
        conn_of_row[dst] = np.repeat(numbers, sizes[numbers])
        keys = np.stack([2 * old_conns[numbers], 2 * old_conns[numbers] + 1], axis=1).ravel()
        new_keys = np.stack([2 * numbers, 2 * numbers + 1], axis=1).ravel()
        key_shifts = np.repeat(shifts[numbers], 2)
        for name in _PER_KEY:
            values = np.asarray(getattr(old, name), np.int64)[keys]
            per_key[name][new_keys] = np.where(values >= 0, values + key_shifts, -1)
        for name in _ROW_LISTS:
            lists: RowsByConnection = getattr(old, name)
            spans = np.array([lists.span(conn) for conn in old_conns[numbers].tolist()], np.int64).reshape(-1, 2)
            counts = spans[:, 1] - spans[:, 0]
            picked = lists.flat_array[ranges_index(spans[:, 0], counts)]
            row_masks[name][picked + np.repeat(shifts[numbers], counts)] = True
    row_lists = {name: rows_by_connection(mask, conn_of_row, count) for name, mask in row_masks.items()}
    source = LazySource(
        frame=columns["frame"],
        ts=columns["ts_ns"],
        rel_seq=per_row["rel_seq"],
        rel_ack=per_row["rel_ack"],
        flags=columns["flags"],
        payload=columns["payload_len"],
        from_orig=from_orig,
        gap_before_ns=per_row["gap_before_ns"],
        retransmission=per_row["retransmission"],
        out_of_order=per_row["out_of_order"],
        first_data_row=per_key["first_data_row"].tolist(),
        last_data_row=per_key["last_data_row"].tolist(),
        data_after_fin_row=per_key["data_after_fin_row"].tolist(),
        first_pure_syn_row=per_key["first_pure_syn_row"].tolist(),
        retransmission_rows=row_lists["retransmission_rows"],
        keepalive_rows=row_lists["keepalive_rows"],
        zero_window_rows=row_lists["zero_window_rows"],
        idle_rows=row_lists["idle_rows"],
    )
    for number, (start, item) in enumerate(details):
        shift = start - item.start
        item.source, item.conn, item.start, item.stop = source, number, start, item.stop + shift
        item.rows = [row + shift for row in item.rows]
        if item.replies:
            item.replies = {mark: row + shift for mark, row in item.replies.items()}
        item.syn_ack_row = item.syn_ack_row + shift if item.syn_ack_row >= 0 else -1
        item.handshake_ack_row = item.handshake_ack_row + shift if item.handshake_ack_row >= 0 else -1


_PER_ROW = (
    ("rel_seq", np.dtype(np.int64)),
    ("rel_ack", np.dtype(np.int64)),
    ("gap_before_ns", np.dtype(np.int64)),
    ("retransmission", np.dtype(bool)),
    ("out_of_order", np.dtype(bool)),
)
"""`LazySource`'s per-row arrays that the compact rows of `detach_details` do not hold already."""
_PER_KEY = ("first_data_row", "last_data_row", "data_after_fin_row", "first_pure_syn_row")
_ROW_LISTS = ("retransmission_rows", "keepalive_rows", "zero_window_rows", "idle_rows")


class _LocalRows:
    """One connection's rows of a `LazySource` as Python lists (indexing a list beats a numpy scalar)."""

    __slots__ = ("flags", "fo", "frame", "payload", "rel_ack", "rel_seq", "start", "ts")

    def __init__(self, source: LazySource, start: int, stop: int) -> None:
        self.start = start
        self.frame: list[int] = source.frame[start:stop].tolist()
        self.ts: list[int] = source.ts[start:stop].tolist()
        self.rel_seq: list[int] = source.rel_seq[start:stop].tolist()
        self.rel_ack: list[int] = source.rel_ack[start:stop].tolist()
        self.flags: list[int] = source.flags[start:stop].tolist()
        self.payload: list[int] = source.payload[start:stop].tolist()
        self.fo: list[bool] = source.from_orig[start:stop].tolist()

    def event(self, kind: EventKind, row: int, detail: dict[str, object] | None = None) -> Event:
        """The event at batch row ``row``."""
        at = row - self.start
        return _new_event(
            kind,
            Side.ORIG if self.fo[at] else Side.RESP,
            self.frame[at],
            self.ts[at],
            self.rel_seq[at],
            self.rel_ack[at] if self.flags[at] & ACK else None,
            self.payload[at],
            dict(detail) if detail else {},
        )


def _none_below(values: list[int], least: int) -> list[int | None]:
    """``values`` with None for those below ``least`` (the "absent" markers of the batch lists)."""
    return [value if value >= least else None for value in values]


def _direction_stats(batch: Batch, group: int, isn: int | None, rst_acked: int) -> DirectionStats:
    """The counters of direction ``group`` (2 * conn, + 1 for the responder), read from the batch lists.

    ``rst_acked`` is the highest acknowledgment of this side's data carried by a trusted RST of the peer (the
    batch's ACK maxima leave RSTs out: see `batch_stats`).
    """
    stats = batch.stats
    data_bytes = max(0, stats.data_end[group] - 1)
    bytes_acked = max(0, min(data_bytes, max(stats.max_ack[group ^ 1], rst_acked) - 1))
    wscale = batch.wscale_list[group]
    mss = batch.mss_list[group]
    fin_frame = batch.fin_frame_list[group]
    return _new_direction_stats(
        packets=stats.packets[group],
        payload_bytes=stats.payload_bytes[group],
        frame_bytes=stats.frame_bytes[group],
        ip_bytes=stats.ip_bytes[group],
        isn=isn,
        data_bytes=data_bytes,
        bytes_acked=bytes_acked,
        unacked_bytes=data_bytes - bytes_acked,
        retransmissions=stats.retransmissions[group],
        out_of_order=stats.out_of_order[group],
        lost_segments=stats.lost[group],
        dup_acks=stats.dup_acks[group],
        zero_windows=stats.zero_windows[group],
        keepalive_probes=stats.keepalives[group],
        max_idle_ns=stats.max_idle[group],
        wscale=wscale if wscale >= 0 else None,
        mss=mss if mss > 0 else None,
        ttls=batch.ttl_lists[group],
        fin_frame=fin_frame if fin_frame >= 0 else None,
        rst_frames=batch.rst_frames.get(group, ()),
    )


def _icmp_events(errors: Sequence[IcmpError], orig_h: str, orig_p: int, resp_h: str, resp_p: int) -> list[Event]:
    events = []
    for error in errors:
        quoted = (error.quoted_src, error.quoted_sport, error.quoted_dst, error.quoted_dport)
        if quoted in ((orig_h, orig_p, resp_h, resp_p), (orig_h, None, resp_h, resp_p)):
            victim = Side.ORIG
        elif quoted in ((resp_h, resp_p, orig_h, orig_p), (resp_h, None, orig_h, orig_p)):
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
                    **({} if error.quoted_sport is not None else {"quoted_sport_shown": False}),
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
