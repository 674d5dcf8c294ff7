"""Demultiplex a packet table into connections: 4-tuple grouping, port-reuse splitting and role assignment.

Everything bulk is numpy: one ``lexsort`` on the canonical 4-tuple (and frame number, so each group is in
capture
order); Python only loops over the rare SYNs that might start a new connection on a reused 4-tuple.

Port reuse (mirrors Wireshark's ``tcp.stream`` / ``tcp.analysis.reused_ports``, epan/dissectors/packet-tcp.c):
a SYN
without ACK whose sequence number differs from the base sequence number of the current conversation in that
direction starts a new conversation. Wireshark applies this to any new ISN; like its later versions we also
require
evidence that the earlier connection is over, so a host that retries ``connect()`` with a fresh ISN while its
first
SYN is still pending does not split one attempt in two:

* the earlier connection saw a FIN or an RST, or
* the SYN comes after a silence of at least ``reuse_gap_ns`` on that 4-tuple.

A SYN repeating the current ISN is a retransmission, never a new connection.

Roles: the originator is the sender of the connection's first SYN (without ACK); else the receiver of its
first
SYN-ACK; else, when the ports differ, the endpoint with the higher port (the lower, usually well-known, port
is taken
to be the server); else the sender of the first packet. `Connection.orig_inferred_by` records which rule
decided.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whyreset.core.seqmath import IntArray
from whyreset.model import ACK, FIN, RST, SYN, Array, PacketTable

DEFAULT_REUSE_GAP_NS = 60 * 1_000_000_000
"""Silence on a 4-tuple after which a SYN with a new ISN starts a new connection even without FIN/RST."""

INFERRED_BY = ("syn", "syn_ack", "port", "first_packet")


@dataclass(frozen=True, slots=True)
class Demux:
    """How the rows of one table split into connections."""

    order: IntArray
    """Row indices of the table, grouped by connection, each connection's rows in frame order."""
    starts: IntArray
    """Position in `order` where each connection begins (ascending, first is 0)."""
    sender_is_a: Array
    """Per row of `order`: the sender is the canonical lower endpoint ``a``."""
    orig_is_a: Array
    """Per connection: the originator is the canonical endpoint ``a``."""
    inferred_by: IntArray
    """Per connection: index into `INFERRED_BY`."""
    reuse_index: IntArray
    """Per connection: 0 for the first connection on its 4-tuple in this table, 1, 2... for later ones."""
    flow: IntArray
    """Per connection: the 4-tuple group it belongs to (equal for connections that reuse a 4-tuple)."""

    def select(self, picked_connections: Array) -> tuple[IntArray, Demux]:
        """The demux of the table's rows that belong to the picked connections (a boolean mask over
        connections), without grouping them again: (the rows picked, in capture order; their demux, whose
        rows index that selection and whose i-th connection is the i-th picked one).

        Taking whole connections out of a table does not change how they group: ``demultiplex`` on the
        selection would split them the same way, in the same (4-tuple, frame) order.
        """
        lengths = np.diff(np.append(self.starts, len(self.order)))
        positions = np.flatnonzero(np.repeat(picked_connections, lengths))
        rows = self.order[positions]
        picked_rows = np.sort(rows)
        kept_lengths = lengths[picked_connections]
        starts = np.concatenate(([0], np.cumsum(kept_lengths)[:-1])).astype(np.int64)
        selection = Demux(
            order=np.searchsorted(picked_rows, rows).astype(np.int64),
            starts=starts if len(kept_lengths) else np.zeros(0, np.int64),
            sender_is_a=self.sender_is_a[positions],
            orig_is_a=self.orig_is_a[picked_connections],
            inferred_by=self.inferred_by[picked_connections],
            reuse_index=self.reuse_index[picked_connections],
            flow=self.flow[picked_connections],
        )
        return picked_rows, selection

    @property
    def from_orig(self) -> Array:
        """Per row of `order`: the originator sent it."""
        lengths = np.diff(np.append(self.starts, len(self.order)))
        return np.asarray(self.sender_is_a == np.repeat(self.orig_is_a, lengths))


def canonical_sides(table: PacketTable) -> Array:
    """Per row: True when (src address, src port) sorts before (dst address, dst port): sender is ``a``."""
    src_hi, src_lo, dst_hi, dst_lo = table["src_hi"], table["src_lo"], table["dst_hi"], table["dst_lo"]
    sport, dport = table["sport"], table["dport"]
    return np.asarray(
        (src_hi < dst_hi)
        | ((src_hi == dst_hi) & (src_lo < dst_lo))
        | ((src_hi == dst_hi) & (src_lo == dst_lo) & (sport <= dport))
    )


def demultiplex(table: PacketTable, reuse_gap_ns: int = DEFAULT_REUSE_GAP_NS) -> Demux:
    """Group the rows of ``table`` into connections (see the module docstring for the rules)."""
    n = len(table)
    sender_is_a = canonical_sides(table)
    a_hi = np.where(sender_is_a, table["src_hi"], table["dst_hi"])
    a_lo = np.where(sender_is_a, table["src_lo"], table["dst_lo"])
    b_hi = np.where(sender_is_a, table["dst_hi"], table["src_hi"])
    b_lo = np.where(sender_is_a, table["dst_lo"], table["src_lo"])
    a_port = np.where(sender_is_a, table["sport"], table["dport"])
    b_port = np.where(sender_is_a, table["dport"], table["sport"])
    order = np.lexsort((table["frame"], b_port, a_port, b_lo, b_hi, a_lo, a_hi)).astype(np.int64)
    if n == 0:
        empty = np.zeros(0, np.int64)
        return Demux(order, empty, np.zeros(0, bool), np.zeros(0, bool), empty, empty, empty)
    keys = (a_hi[order], a_lo[order], b_hi[order], b_lo[order], a_port[order], b_port[order])
    new_flow = np.zeros(n, bool)
    new_flow[0] = True
    for key in keys:
        new_flow[1:] |= key[1:] != key[:-1]
    sorted_sender_a = sender_is_a[order]
    starts, flow_of_conn, reuse_index = _split_port_reuse(table, order, new_flow, sorted_sender_a, reuse_gap_ns)
    orig_is_a, inferred_by = _assign_roles(table, order, starts, sorted_sender_a)
    return Demux(order, starts, sorted_sender_a, orig_is_a, inferred_by, reuse_index, flow_of_conn)


def _split_port_reuse(
    table: PacketTable, order: IntArray, new_flow: Array, sender_a: Array, reuse_gap_ns: int
) -> tuple[IntArray, IntArray, IntArray]:
    flags = table["flags"][order]
    seq = table["seq"][order].astype(np.int64)
    ts = table["ts_ns"][order]
    pure_syn = (flags & (SYN | ACK | RST)) == SYN
    ends_connection = (flags & (FIN | RST)) != 0
    closes_before = np.concatenate(([0], np.cumsum(ends_connection)))  # FIN/RST rows strictly before position i
    flow_id = np.cumsum(new_flow) - 1
    flow_starts = np.flatnonzero(new_flow)
    # Candidates: pure SYNs that are not their flow's first row. Most are retransmissions (same ISN as
    # the previous
    # pure SYN in that direction): drop those vectorised, keep the rest for the exact walk below.
    candidates = np.flatnonzero(pure_syn & ~new_flow)
    if len(candidates):
        syn_rows = np.flatnonzero(pure_syn)
        position = np.searchsorted(syn_rows, candidates)
        previous = np.full(len(candidates), -1, np.int64)
        for back in range(1, 3):  # the previous pure SYN in the same direction is one of the two before
            idx = position - back
            ok = idx >= 0
            prev_rows = np.where(ok, syn_rows[np.maximum(idx, 0)], -1)
            same = (
                ok
                & (previous < 0)
                & (flow_id[np.maximum(prev_rows, 0)] == flow_id[candidates])
                & (sender_a[np.maximum(prev_rows, 0)] == sender_a[candidates])
            )
            previous = np.where(same, prev_rows, previous)
        is_retransmission = (previous >= 0) & (seq[np.maximum(previous, 0)] == seq[candidates])
        candidates = candidates[~is_retransmission]
    extra_starts: list[int] = []
    current_start: dict[int, int] = {}  # flow -> start position of its current connection
    current_isn: dict[tuple[int, bool], int] = {}
    for pos in candidates.tolist():
        flow = int(flow_id[pos])
        start = current_start.get(flow, int(flow_starts[flow]))
        direction = (flow, bool(sender_a[pos]))
        known_isn = current_isn.get(direction)
        if known_isn is None:
            known_isn = _first_syn_seq(pure_syn, sender_a, seq, start, pos, bool(sender_a[pos]))
        if known_isn is not None and known_isn == int(seq[pos]):
            continue
        ended = closes_before[pos] > closes_before[start]
        silent = int(ts[pos]) - int(ts[pos - 1]) >= reuse_gap_ns
        if ended or silent:
            extra_starts.append(pos)
            current_start[flow] = pos
            current_isn = {k: v for k, v in current_isn.items() if k[0] != flow}
            current_isn[direction] = int(seq[pos])
        elif known_isn is None:
            current_isn[direction] = int(seq[pos])
    is_start = new_flow.copy()
    if extra_starts:
        is_start[np.asarray(extra_starts, np.int64)] = True
    starts = np.flatnonzero(is_start).astype(np.int64)
    flow_of_conn = flow_id[starts].astype(np.int64)
    first_of_flow = np.ones(len(starts), bool)
    first_of_flow[1:] = flow_of_conn[1:] != flow_of_conn[:-1]
    conn_number = np.arange(len(starts))
    reuse_index = conn_number - np.maximum.accumulate(np.where(first_of_flow, conn_number, 0))
    return starts, flow_of_conn, reuse_index.astype(np.int64)


def _first_syn_seq(pure_syn: Array, sender_a: Array, seq: Array, start: int, stop: int, from_a: bool) -> int | None:
    """Sequence number of the first pure SYN sent by side ``from_a`` in rows [start, stop), or None."""
    window = np.flatnonzero(pure_syn[start:stop] & (sender_a[start:stop] == from_a))
    return int(seq[start + window[0]]) if len(window) else None


def _assign_roles(table: PacketTable, order: IntArray, starts: IntArray, sender_a: Array) -> tuple[Array, IntArray]:
    n = len(order)
    flags = table["flags"][order]
    count = len(starts)
    lengths = np.diff(np.append(starts, n))
    conn = np.repeat(np.arange(count), lengths)
    pure_syn = (flags & (SYN | ACK | RST)) == SYN
    syn_ack = (flags & (SYN | ACK | RST)) == SYN | ACK

    def first_row(mask: Array) -> IntArray:
        rows = np.flatnonzero(mask)
        result = np.full(count, -1, np.int64)
        if len(rows):
            groups = conn[rows]
            keep = np.ones(len(rows), bool)
            keep[1:] = groups[1:] != groups[:-1]
            result[groups[keep]] = rows[keep]
        return result

    first_syn = first_row(pure_syn)
    first_synack = first_row(syn_ack)
    sport = table["sport"][order][starts].astype(np.int64)
    dport = table["dport"][order][starts].astype(np.int64)
    first_from_a = sender_a[starts]
    port_a = np.where(first_from_a, sport, dport)
    port_b = np.where(first_from_a, dport, sport)
    by_port = port_a != port_b
    orig_is_a = np.where(
        first_syn >= 0,
        sender_a[np.maximum(first_syn, 0)],
        np.where(
            first_synack >= 0,
            ~sender_a[np.maximum(first_synack, 0)],
            np.where(by_port, port_a > port_b, first_from_a),
        ),
    )
    inferred = np.where(first_syn >= 0, 0, np.where(first_synack >= 0, 1, np.where(by_port, 2, 3)))
    return np.asarray(orig_is_a, bool), inferred.astype(np.int64)
