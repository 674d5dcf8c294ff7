"""Where things are, for every connection of a batch at once: first SYN, first FIN, the ACKs that prove
them...

`build` rebuilds each connection in Python, but only over a handful of rows; everything it needs to find those
rows (and the per-direction facts of `DirectionStats`) is located here with whole-batch numpy operations.
Arrays named ``*_row`` are indexed by direction key ``2 * conn + (0 for the originator, 1 for the responder)``
and hold a row position in the batch (connection order), or -1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whyreset.core.analysis import BatchAnalysis
from whyreset.core.seqmath import IntArray, group_ids, group_running_max
from whyreset.model import ACK, FIN, RST, SYN, Array

NONE = np.iinfo(np.int64).max


def first_per_key(mask: Array, key: IntArray, keys: int) -> IntArray:
    """Per key, the first row where ``mask`` holds, or -1."""
    out = np.full(keys, NONE, np.int64)
    rows = np.flatnonzero(mask)
    np.minimum.at(out, key[rows], rows)
    return np.where(out == NONE, -1, out)


def last_per_key(mask: Array, key: IntArray, keys: int) -> IntArray:
    """Per key, the last row where ``mask`` holds, or -1."""
    out = np.full(keys, -1, np.int64)
    rows = np.flatnonzero(mask)
    np.maximum.at(out, key[rows], rows)
    return out


def max_per_key(values: IntArray, mask: Array, key: IntArray, keys: int, empty: int) -> IntArray:
    out = np.full(keys, empty, np.int64)
    np.maximum.at(out, key[mask], values[mask])
    return out


class RowsByConnection:
    """Rows where a mask holds, split per connection: ``rows[conn]`` is that connection's list."""

    __slots__ = ("_bounds", "_rows", "flat_array")

    def __init__(self, mask: Array, conn: IntArray, count: int) -> None:
        rows = np.flatnonzero(mask)
        self._bounds: list[int] = np.searchsorted(conn[rows], np.arange(count + 1)).tolist()
        self._rows: list[int] = rows.tolist()
        self.flat_array: IntArray = rows.astype(np.int64)
        """`flat` as a numpy array."""

    def __getitem__(self, conn: int) -> list[int]:
        return self._rows[self._bounds[conn] : self._bounds[conn + 1]]

    def span(self, conn: int) -> tuple[int, int]:
        """Where that connection's rows sit in the flat list of all rows."""
        return self._bounds[conn], self._bounds[conn + 1]

    @property
    def flat(self) -> list[int]:
        """Every connection's rows, one after the other (`span` gives each connection's place)."""
        return self._rows


def rows_by_connection(mask: Array, conn: IntArray, count: int) -> RowsByConnection:
    """The rows where ``mask`` holds, split per connection (rows are in connection order already)."""
    return RowsByConnection(mask, conn, count)


@dataclass(frozen=True, slots=True)
class BatchIndex:
    """Row positions and per-direction facts for every connection of an analysed batch.

    Per-key and per-connection facts are Python lists: the rebuild reads them one at a time.
    """

    conn: IntArray
    """Connection number of every row."""
    key: IntArray
    """Direction key of every row."""
    first_pure_syn_row: list[int]
    pure_syn_count: list[int]
    first_syn_row: list[int]
    """First segment with SYN (with or without ACK, without RST)."""
    first_synack_row: list[int]
    first_fin_row: list[int]
    first_data_row: list[int]
    last_data_row: list[int]
    first_row: list[int]
    last_non_rst_row: list[int]
    syn_proof_row: list[int]
    """First ACK from this side that acknowledges the peer's SYN (not itself a SYN)."""
    fin_proof_row: list[int]
    """First ACK from this side that acknowledges the peer's first FIN."""
    data_after_fin_row: list[int]
    """First data from this side after its own FIN or after it acknowledged the peer's FIN."""
    zeek_plain_data_row: list[int]
    zeek_plain_ack_row: list[int]
    zeek_bulk_candidates: list[bool]
    """Per connection: a zero window or re-sent data that may give Zeek's W/T letters."""
    zeek_own_last: list[int]
    zeek_peer_acked: list[int]
    zeek_fed: RowsByConnection
    """Per connection: rows that can change Zeek's endpoint states."""
    zeek_shapes: bytes
    """`zeek.shape_code` of every fed row, aligned with `zeek_fed`'s flat list (a connection's slice is its
    memo key)."""
    control: RowsByConnection
    """Per connection: SYN/FIN/RST rows and the proof rows (sorted)."""
    retransmission_rows: RowsByConnection
    keepalive_rows: RowsByConnection
    zero_window_rows: RowsByConnection
    """First row of each run of zero-window segments from one side."""
    ack_max_orig: IntArray
    """Per row: the originator's highest ACK sent so far in the connection (inclusive), or int64 min."""
    ack_max_resp: IntArray
    last_row_orig: IntArray
    """Per row: the originator's last row so far in the connection (inclusive), or -1."""
    last_row_resp: IntArray
    arrays: dict[str, IntArray]
    """The per-key row lists above as the numpy arrays they were made from (for whole-batch work)."""


def index_batch(analysis: BatchAnalysis) -> BatchIndex:
    """Locate, for the whole batch, the rows and facts that `build` needs per connection."""
    table = analysis.table
    n = len(table)
    starts = analysis.starts
    count = len(starts)
    keys = 2 * count
    conn = group_ids(starts, n)
    fo = analysis.from_orig
    key = conn * 2 + (~fo).astype(np.int64)
    peer_key = key ^ 1
    flags = table["flags"].astype(np.int64)
    payload = table["payload_len"].astype(np.int64)
    syn, fin, rst, ack = (flags & SYN) != 0, (flags & FIN) != 0, (flags & RST) != 0, (flags & ACK) != 0
    data = (payload > 0) & ~rst
    plain = ~(syn | fin | rst)
    row = np.arange(n)

    first_pure_syn = first_per_key(syn & ~ack & ~rst, key, keys)
    first_syn = first_per_key(syn & ~rst, key, keys)
    first_fin = first_per_key(fin & ~rst, key, keys)
    peer_syn = first_syn[peer_key]
    syn_proof = first_per_key(ack & ~syn & (analysis.rel_ack >= 1) & (peer_syn >= 0) & (row > peer_syn), key, keys)
    fin_end = np.where(first_fin >= 0, analysis.seg_end[np.maximum(first_fin, 0)], 0)
    peer_fin = first_fin[peer_key]
    fin_proof = first_per_key(
        ack & (peer_fin >= 0) & (row > peer_fin) & (analysis.rel_ack >= fin_end[peer_key]), key, keys
    )
    own_fin = first_fin[key]
    proof = fin_proof[key]
    after_own_fin = data & (own_fin >= 0) & (row > own_fin)
    after_peer_fin = data & (proof >= 0) & (row >= proof)  # the proof row itself may carry the data
    data_after_fin = first_per_key(after_own_fin | after_peer_fin, key, keys)

    control_mask = syn | fin | rst
    control_mask[syn_proof[syn_proof >= 0]] = True
    control_mask[fin_proof[fin_proof >= 0]] = True
    rank = _rank_within_key(fo, starts, conn)
    zeek_fed_mask = (syn | fin | rst) | (rank < 3)

    zeek_end = analysis.seg_end
    zeek_candidates_rows = ((table["window"] == 0) & ~rst) | (
        (payload > 0) & (rank > 0) & (zeek_end <= analysis.next_expected)
    )
    bulk = np.bincount(conn[zeek_candidates_rows], minlength=count) > 0
    own_last = max_per_key(zeek_end, ~rst | (np.abs(analysis.rel_seq) <= 1_048_576), key, keys, 0)
    peer_acked_by_sender = max_per_key(analysis.rel_ack, ack & ~rst, key, keys, 0)

    zero = analysis.zero_window
    previous_same_side = _previous_same_side(fo, conn, starts)
    zero_run_start = zero & ~np.where(previous_same_side >= 0, zero[np.maximum(previous_same_side, 0)], False)
    low = np.iinfo(np.int64).min
    ack_max = {
        side: group_running_max(np.where((fo == side) & ack, analysis.rel_ack, low), starts, exclusive=False)
        for side in (True, False)
    }
    last_row = {
        side: group_running_max(np.where(fo == side, row, -1), starts, exclusive=False, initial=np.full(count, -1))
        for side in (True, False)
    }
    arrays: dict[str, IntArray] = {
        "first_pure_syn_row": first_pure_syn,
        "first_syn_row": first_syn,
        "first_synack_row": first_per_key(syn & ack & ~rst, key, keys),
        "first_fin_row": first_fin,
        "first_data_row": first_per_key(data, key, keys),
        "last_data_row": last_per_key(data, key, keys),
        "first_row": first_per_key(np.ones(n, bool), key, keys),
        "last_non_rst_row": last_per_key(~rst, key, keys),
        "syn_proof_row": syn_proof,
        "fin_proof_row": fin_proof,
        "data_after_fin_row": data_after_fin,
        "zeek_plain_data_row": first_per_key(plain & (payload > 0), key, keys),
        "zeek_plain_ack_row": first_per_key(plain & (payload == 0) & ack, key, keys),
        "zeek_own_last": own_last,
        "zeek_peer_acked": peer_acked_by_sender[np.arange(keys) ^ 1],
    }
    return BatchIndex(
        conn=conn,
        key=key,
        first_pure_syn_row=arrays["first_pure_syn_row"].tolist(),
        pure_syn_count=(np.bincount(key[syn & ~ack & ~rst], minlength=keys)).tolist(),
        first_syn_row=arrays["first_syn_row"].tolist(),
        first_synack_row=arrays["first_synack_row"].tolist(),
        first_fin_row=arrays["first_fin_row"].tolist(),
        first_data_row=arrays["first_data_row"].tolist(),
        last_data_row=arrays["last_data_row"].tolist(),
        first_row=arrays["first_row"].tolist(),
        last_non_rst_row=arrays["last_non_rst_row"].tolist(),
        syn_proof_row=arrays["syn_proof_row"].tolist(),
        fin_proof_row=arrays["fin_proof_row"].tolist(),
        data_after_fin_row=arrays["data_after_fin_row"].tolist(),
        zeek_plain_data_row=arrays["zeek_plain_data_row"].tolist(),
        zeek_plain_ack_row=arrays["zeek_plain_ack_row"].tolist(),
        zeek_bulk_candidates=bulk.tolist(),
        zeek_own_last=arrays["zeek_own_last"].tolist(),
        zeek_peer_acked=arrays["zeek_peer_acked"].tolist(),
        zeek_fed=rows_by_connection(zeek_fed_mask, conn, count),
        zeek_shapes=_zeek_shapes(zeek_fed_mask, key, flags, payload, analysis.rel_seq, fo),
        control=rows_by_connection(control_mask, conn, count),
        retransmission_rows=rows_by_connection(analysis.retransmission & ~(syn | rst), conn, count),
        keepalive_rows=rows_by_connection(analysis.keepalive, conn, count),
        zero_window_rows=rows_by_connection(zero_run_start, conn, count),
        ack_max_orig=ack_max[True],
        ack_max_resp=ack_max[False],
        last_row_orig=last_row[True],
        last_row_resp=last_row[False],
        arrays=arrays,
    )


def _zeek_shapes(fed: Array, key: IntArray, flags: IntArray, payload: IntArray, rel_seq: IntArray, fo: Array) -> bytes:
    """`zeek.shape_code` for every fed row, vectorised.

    "Repeats" compares a single-flag SYN, FIN or RST with the previous fed row of the same kind from the same
    endpoint (0 before the first), as Zeek's history does.
    """
    rows = np.flatnonzero(fed)
    row_flags = flags[rows]
    control = row_flags & (SYN | FIN | RST)
    single = (control == SYN) | (control == FIN) | (control == RST)
    value = rel_seq[rows] + np.where(control == FIN, payload[rows], 0)
    repeats = np.zeros(len(rows), bool)
    picked = np.flatnonzero(single)
    if len(picked):
        group = key[rows[picked]] * 8 + control[picked]
        order = picked[np.argsort(group, kind="stable")]
        sorted_group = key[rows[order]] * 8 + control[order]
        previous = np.concatenate(([0], value[order][:-1]))
        first = np.concatenate(([True], sorted_group[1:] != sorted_group[:-1]))
        previous = np.where(first, 0, previous)
        repeats[order] = value[order] == previous
    codes = (
        control
        | ((row_flags & ACK) >> 1)
        | ((payload[rows] > 0).astype(np.int64) << 4)
        | (repeats.astype(np.int64) << 5)
        | (fo[rows].astype(np.int64) << 6)
    )
    return codes.astype(np.uint8).tobytes()


def _rank_within_key(fo: Array, starts: IntArray, conn: IntArray) -> IntArray:
    """Per row, how many earlier rows of the same connection the same side sent."""
    rank = np.empty(len(fo), np.int64)
    for side in (True, False):
        mine = (fo == side).astype(np.int64)
        before = np.cumsum(mine) - mine
        base = before[starts]
        rank_side = before - base[conn]
        rank = np.where(fo == side, rank_side, rank)
    return rank


def _previous_same_side(fo: Array, conn: IntArray, starts: IntArray) -> IntArray:
    """Per row, the previous row of the same connection sent by the same side, or -1."""
    n = len(fo)
    result = np.full(n, -1, np.int64)
    row = np.arange(n)
    for side in (True, False):
        idx = np.where(fo == side, row, -1)
        shifted = np.concatenate(([-1], idx[:-1]))
        running = np.maximum.accumulate(shifted)
        valid = running >= starts[conn]
        result = np.where(fo == side, np.where(valid, running, -1), result)
    return result
