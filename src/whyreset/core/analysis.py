"""Per-segment analysis of a whole batch of connections at once (numpy only, no per-packet Python).

Rows are taken in connection order (`Demux.order`), then regrouped per direction (connection x sender) with a
stable
sort, so every quantity below is a handful of vectorised group operations over the batch.

Definitions follow Wireshark's ``tcp.analysis.*`` (epan/dissectors/packet-tcp.c) where one exists; "next
expected"
(Wireshark's ``nextseq``) is the running maximum of sequence ends already sent in that direction:

* ``lost_segment``: a segment (not RST) starting beyond next expected: earlier data was not captured.
* ``keep_alive``: 0 or 1 byte, no SYN/FIN/RST, sequence number = next expected - 1.
* ``retransmission``: a segment occupying sequence space (data, SYN or FIN) that starts below next expected,
  is not
  a keep-alive, and overlaps data already seen. ``out_of_order``: the same but lying entirely in a hole left
  by an
  earlier ``lost_segment`` jump (it was sent before, it just arrived late). Holes are tracked exactly, in
  Python, for
  the few rows that jump or fall back (`_classify_anomalies`).
* ``duplicate_ack``: no payload, no SYN/FIN/RST, ACK set, same ACK number and window as the previous segment
  in that
  direction, sequence number = next expected.
* ``zero_window``: window field 0 on a segment without SYN, FIN or RST.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whyreset.core.demux import Demux
from whyreset.core.seqmath import (
    IntArray,
    group_first_index,
    group_ids,
    group_running_max,
    signed_delta32,
    unwrap_groups,
)
from whyreset.model import ACK, FIN, RST, SYN, Array, PacketTable


@dataclass(frozen=True, slots=True)
class BatchAnalysis:
    """Per-row facts (in connection order, aligned with `Demux.order`) and per-direction aggregates."""

    table: PacketTable
    """The batch's rows in connection order."""
    starts: IntArray
    """First row of each connection."""
    from_orig: Array
    rel_seq: IntArray
    """Sequence number relative to the sender's ISN (ISN = first seq - 1 when no SYN was seen)."""
    rel_ack: IntArray
    """Acknowledgment relative to the receiver's ISN (meaningful only where the ACK bit is set)."""
    seg_end: IntArray
    """rel_seq + sequence space occupied (payload unless RST, +1 for SYN, +1 for FIN)."""
    next_expected: IntArray
    """Running maximum of seg_end before this row, same direction (Wireshark's nextseq)."""
    retransmission: Array
    out_of_order: Array
    lost_segment: Array
    keepalive: Array
    dup_ack: Array
    zero_window: Array
    gap_before_ns: IntArray
    """Time since the previous packet of the same connection (0 for the first)."""
    isn_abs: IntArray
    """Per direction group (2*conn + 0 for orig, + 1 for resp): absolute ISN, or -1 when no SYN was seen."""
    holes_missed: IntArray
    """Per direction group: sequence space in holes never filled that the peer acknowledged (missed_bytes)."""
    first_gap_ack_row: IntArray
    """Per direction group: row (connection order) of the first peer ACK that revealed a hole, or -1."""
    later_gap_ack_rows: dict[int, tuple[int, ...]]
    """Per direction group with ten content gaps or more: the rows of the peer ACKs that revealed the 10th,
    100th, 1000th... (Zeek's ``G``/``g`` letters after the first, see `_missed_bytes`)."""


def analyse(table: PacketTable, demux: Demux, *, grouped: bool = False) -> BatchAnalysis:
    """Compute the per-row analysis for every connection of ``demux``. ``grouped``: the table's rows are in
    `Demux.order` already (it is the identity), so they are not copied again."""
    rows = table if grouped else table.take(demux.order)
    n = len(rows)
    starts = demux.starts
    from_orig = demux.from_orig
    conn = group_ids(starts, n)
    direction_key = conn * 2 + (~from_orig).astype(np.int64)
    by_dir = np.argsort(direction_key, kind="stable")
    dkey = direction_key[by_dir]
    dstarts = np.flatnonzero(np.concatenate(([n > 0], dkey[1:] != dkey[:-1]))).astype(np.int64)
    group_of_dstart = dkey[dstarts]
    flags = rows["flags"][by_dir]
    payload = rows["payload_len"][by_dir].astype(np.int64)
    syn = (flags & SYN) != 0
    fin = (flags & FIN) != 0
    rst = (flags & RST) != 0
    has_ack = (flags & ACK) != 0

    seq_u = unwrap_groups(rows["seq"][by_dir], dstarts)
    first_syn = group_first_index(syn & ~rst, dstarts, n)
    isn_u = np.where(first_syn >= 0, seq_u[np.maximum(first_syn, 0)], seq_u[dstarts] - 1)
    lengths = np.diff(np.append(dstarts, n))
    rel_seq = seq_u - np.repeat(isn_u, lengths)
    occupied = np.where(rst, 0, payload) + syn + fin
    seg_end = rel_seq + occupied
    next_expected = group_running_max(seg_end, dstarts, exclusive=True, initial=rel_seq[dstarts])

    isn_abs_by_group = np.full(2 * len(starts), -1, np.int64)
    isn_raw_group = np.full(2 * len(starts), -1, np.int64)
    # int64 before the -1: np.where(uint32, -1) casts the -1 to 4294967295 (NumPy 2), a plausible ISN.
    syn_seq = rows["seq"][by_dir][np.maximum(first_syn, 0)].astype(np.int64)
    isn_abs_by_group[group_of_dstart] = np.where(first_syn >= 0, syn_seq, -1)
    isn_raw_group[group_of_dstart] = (rows["seq"][by_dir][dstarts].astype(np.int64) - seq_u[dstarts] + isn_u) % (
        1 << 32
    )

    rel_ack = _relative_acks(rows["ack"][by_dir], has_ack, dstarts, dkey, isn_raw_group)

    first_in_group = np.zeros(n, bool)
    first_in_group[dstarts] = True
    control = syn | fin | rst
    consumes = (payload > 0) & ~rst | syn | fin
    keepalive = ~first_in_group & (payload <= 1) & ~control & (rel_seq == next_expected - 1)
    lost = ~first_in_group & ~rst & (rel_seq > next_expected)
    fell_back = ~first_in_group & consumes & ~keepalive & (rel_seq < next_expected)
    prev_ack = np.roll(rows["ack"][by_dir], 1)
    prev_win = np.roll(rows["window"][by_dir], 1)
    prev_has_ack = np.roll(has_ack, 1)
    dup_ack = (
        ~first_in_group
        & (payload == 0)
        & ~control
        & has_ack
        & prev_has_ack
        & (rows["ack"][by_dir] == prev_ack)
        & (rows["window"][by_dir] == prev_win)
        & (rel_seq == next_expected)
    )
    zero_window = (rows["window"][by_dir] == 0) & ~control
    retrans, out_of_order, holes = _classify_anomalies(lost, fell_back, rel_seq, seg_end, next_expected, dkey)

    inverse = np.empty(n, np.int64)
    inverse[by_dir] = np.arange(n)
    ts = rows["ts_ns"]
    gap = np.zeros(n, np.int64)
    if n > 1:
        gap[1:] = ts[1:] - ts[:-1]
    gap[starts] = 0
    missed, gap_rows, later_gap_rows = _missed_bytes(
        holes, rel_ack[inverse], rows["flags"], conn, from_orig, len(starts), n
    )
    return BatchAnalysis(
        table=rows,
        starts=starts,
        from_orig=from_orig,
        rel_seq=rel_seq[inverse],
        rel_ack=rel_ack[inverse],
        seg_end=seg_end[inverse],
        next_expected=next_expected[inverse],
        retransmission=retrans[inverse],
        out_of_order=out_of_order[inverse],
        lost_segment=lost[inverse],
        keepalive=keepalive[inverse],
        dup_ack=dup_ack[inverse],
        zero_window=zero_window[inverse],
        gap_before_ns=gap,
        isn_abs=isn_abs_by_group,
        holes_missed=missed,
        first_gap_ack_row=gap_rows,
        later_gap_ack_rows=later_gap_rows,
    )


def _relative_acks(ack: Array, has_ack: Array, dstarts: IntArray, dkey: IntArray, isn_raw_group: IntArray) -> IntArray:
    """Acknowledgment numbers unwrapped per direction and made relative to the peer's ISN.

    Rows without the ACK bit carry meaningless ack fields, so they take the previous ACK's value before
    unwrapping.
    When the peer's ISN is unknown (the peer never sent anything) the first ACK defines it as ack - 1 (as
    Zeek does).
    """
    n = len(ack)
    if n == 0:
        return np.zeros(0, np.int64)
    index = np.where(has_ack, np.arange(n), -1)
    filled_from = np.maximum.accumulate(index)
    group = group_ids(dstarts, n)
    group_start = dstarts[group]
    first_ack = group_first_index(has_ack, dstarts, n)
    fallback = np.where(first_ack >= 0, first_ack, dstarts)[group]
    source = np.where(filled_from >= group_start, filled_from, fallback)
    values = ack[source]
    unwrapped = unwrap_groups(values, dstarts)
    peer_group = dkey[dstarts] ^ 1
    peer_isn = isn_raw_group[peer_group]
    first_values = values[dstarts].astype(np.int64)
    peer_isn = np.where(peer_isn >= 0, peer_isn, (first_values - 1) % (1 << 32))
    first_rel = signed_delta32(first_values, peer_isn)
    lengths = np.diff(np.append(dstarts, n))
    return np.asarray(unwrapped - np.repeat(unwrapped[dstarts] - first_rel, lengths))


def _classify_anomalies(
    lost: Array,
    fell_back: Array,
    rel_seq: IntArray,
    seg_end: IntArray,
    next_expected: IntArray,
    dkey: IntArray,
) -> tuple[Array, Array, dict[int, list[tuple[int, int]]]]:
    """Split segments that fall back below next expected into retransmissions and out-of-order arrivals.

    Only rows that jump (lost_segment) or fall back are visited; each direction keeps its list of holes.
    Returns the two masks and the holes still open at the end, per direction group.
    """
    n = len(rel_seq)
    retrans = np.zeros(n, bool)
    out_of_order = np.zeros(n, bool)
    holes: dict[int, list[tuple[int, int]]] = {}
    for row in np.flatnonzero(lost | fell_back).tolist():
        key = int(dkey[row])
        open_holes = holes.setdefault(key, [])
        start, end = int(rel_seq[row]), int(seg_end[row])
        if lost[row]:
            open_holes.append((int(next_expected[row]), start))
            continue
        inside = any(lo <= start and end <= hi for lo, hi in open_holes)
        if inside:
            out_of_order[row] = True
        else:
            retrans[row] = True
        holes[key] = _fill(open_holes, start, end)
    return retrans, out_of_order, holes


def _fill(open_holes: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    remaining: list[tuple[int, int]] = []
    for lo, hi in open_holes:
        if end <= lo or start >= hi:
            remaining.append((lo, hi))
            continue
        if lo < start:
            remaining.append((lo, start))
        if end < hi:
            remaining.append((end, hi))
    return remaining


def _missed_bytes(
    holes: dict[int, list[tuple[int, int]]],
    rel_ack: IntArray,
    flags: Array,
    conn: IntArray,
    from_orig: Array,
    connections: int,
    n: int,
) -> tuple[IntArray, IntArray, dict[int, tuple[int, ...]]]:
    """Zeek's content gaps: hole bytes the peer acknowledged although the capture never saw them; per direction,
    the row of the first gap and those of the 10th, 100th... (Zeek's scaled ``G``/``g`` letters).

    Zeek's reassembler reports a gap (`TCP_Reassembler::Undelivered`) for every missing range an acknowledgment
    moves past: each hole the new highest ACK reaches, and again for the rest of a hole an earlier ACK reached
    only part of. So an ACK that raises the highest acknowledgment from ``before`` to ``after`` reveals the holes
    ``[lo, hi)`` with ``lo < after`` and ``hi > before``."""
    missed = np.zeros(2 * connections, np.int64)
    first_rows = np.full(2 * connections, -1, np.int64)
    later_rows: dict[int, tuple[int, ...]] = {}
    if not any(holes.values()):
        return missed, first_rows, later_rows
    has_ack = (flags & ACK) != 0
    for key, open_holes in holes.items():
        if not open_holes:
            continue
        connection, sender_is_resp = divmod(key, 2)
        peer_rows = np.flatnonzero((conn == connection) & (from_orig == bool(sender_is_resp)) & has_ack)
        if len(peer_rows) == 0:
            continue
        acks = np.maximum.accumulate(rel_ack[peer_rows])
        top = int(acks[-1])
        missed[key] = sum(max(0, min(hi, top) - lo) for lo, hi in open_holes)
        gap_rows = _gap_rows(sorted(open_holes), acks, peer_rows)
        if gap_rows:
            first_rows[key] = gap_rows[0]
        if len(gap_rows) > 1:
            later_rows[key] = tuple(gap_rows[1:])
    return missed, first_rows, later_rows


def _gap_rows(holes: list[tuple[int, int]], acks: IntArray, rows: IntArray) -> list[int]:
    """The rows at which the 1st, 10th, 100th... gap is revealed (``acks``: the running highest ACK at each of
    the peer's ``rows``; ``holes``: sorted, disjoint ``[lo, hi)`` ranges)."""
    before = np.concatenate(([np.iinfo(np.int64).min], acks[:-1]))
    raised = acks > before
    lows = np.array([lo for lo, _ in holes], np.int64)
    highs = np.array([hi for _, hi in holes], np.int64)
    # Holes reached so far, minus those passed entirely before this ACK: the holes this ACK moves into.
    revealed = np.searchsorted(lows, acks, side="left") - np.searchsorted(highs, before, side="right")
    total = np.cumsum(np.where(raised, np.maximum(revealed, 0), 0))
    thresholds, threshold = [], 1
    while threshold <= total[-1]:  # Zeek's ScaledHistoryEntry: the 1st, 10th, 100th...
        thresholds.append(threshold)
        threshold *= 10
    picked: list[int] = rows[np.searchsorted(total, thresholds, side="left")].tolist()
    return picked
