"""The connection tracker: chunks of a capture in, finished connections out (sans-IO: no files, clock or
printing).

Each `feed` demultiplexes the new chunk together with the kept connections it touches (`demux`), analyses the
connections that may be over in one vectorised pass per batch (`analysis`) and rebuilds (`build`) those that
are over:

* superseded: a later connection reuses the 4-tuple (port reuse, see `demux`);
* closed: an accepted RST, or both FINs acknowledged, followed by ``close_linger_ns`` of capture time without
  a packet (late retransmissions and TIME_WAIT answers still join the connection, as with Zeek's
  ``tcp_close_delay``);
* idle: no packet for ``idle_timeout_ns`` of capture time (Zeek's ``tcp_inactivity_timeout`` is 5 minutes
  too).

Capture time is the largest timestamp seen so far. Only the rows of connections still open are kept between
chunks (`_Carry`, grouped per connection with the facts the next feeds read), so memory follows the open
connections, not the capture, and a feed's cost follows its chunk and the connections that may be over, not
the carry. A connection evicted as idle that later shows traffic again comes back as a new (mid-stream)
connection, as in Zeek.

`Connection.index` follows the order of each connection's first packet (tshark's ``tcp.stream``): an index is
given when a connection is first seen, so it stays stable whatever chunk the connection finishes in.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from whyreset.core.analysis import analyse
from whyreset.core.build import Batch, build_connection
from whyreset.core.connection import Connection
from whyreset.core.demux import DEFAULT_REUSE_GAP_NS, Demux, canonical_sides, demultiplex
from whyreset.core.seqmath import IntArray
from whyreset.ids import Outcome
from whyreset.model import (
    FIN,
    ICMP_UNPORTED_SLACK_NS,
    RST,
    Array,
    Capture,
    IcmpError,
    PacketTable,
    ReadReport,
    format_addr,
)

DEFAULT_IDLE_TIMEOUT_NS = 300 * 1_000_000_000
DEFAULT_CLOSE_LINGER_NS = 5 * 1_000_000_000
ICMP_MATCH_SLACK_NS = 60 * 1_000_000_000
"""An ICMP error is attached to a connection when it falls between its first packet and last + this."""

BATCH_ROWS = 16384
"""Connections over in a feed are rebuilt in batches of about this many rows (memory follows the batch)."""

FourTuple = tuple[str, int | None, str, int]
"""(src, sport, dst, dport) of an ICMP error's quoted segment; sport None when the input did not show it."""


class ConnectionTracker:
    """Rebuild connections from a capture fed in chunks; memory follows the open connections."""

    def __init__(
        self,
        idle_timeout_ns: int = DEFAULT_IDLE_TIMEOUT_NS,
        close_linger_ns: int = DEFAULT_CLOSE_LINGER_NS,
        reuse_gap_ns: int = DEFAULT_REUSE_GAP_NS,
    ) -> None:
        self.idle_timeout_ns = idle_timeout_ns
        self.close_linger_ns = close_linger_ns
        self.reuse_gap_ns = reuse_gap_ns
        self._blocks: list[_Carry] = []
        self._index_by_first_frame: dict[int, int] = {}
        self._next_index = 0
        self._rst_payloads: dict[int, bytes] = {}
        self._icmp: dict[FourTuple, list[IcmpError]] = {}
        self._now_ns: int | None = None
        self._ended_tuples: dict[bytes, int] = {}
        self._ended_kept = 0
        """Entries left in `_ended_tuples` by its last pruning."""
        self._horizon: int | None = None
        """Capture time before which an ended connection no longer marks its 4-tuple as reused."""
        """Canonical 4-tuple -> last timestamp of a connection already emitted on it (to flag port reuse)."""

    @property
    def open_rows(self) -> int:
        """Packet rows kept for connections that are still open (the tracker's memory, in rows)."""
        return sum(int(block.lengths[block.alive].sum()) for block in self._blocks)

    def feed(self, chunk: Capture) -> list[Connection]:
        """Add a chunk of capture (rows in capture order); return the connections that are over, by index."""
        for error in chunk.icmp_errors:
            key = (error.quoted_src, error.quoted_sport, error.quoted_dst, error.quoted_dport)
            self._icmp.setdefault(key, []).append(error)
        if chunk.icmp_errors:
            for block in self._blocks:  # an ICMP error may end a connection kept as open (see `_Carry`)
                block.settled[:] = False
        self._rst_payloads.update(chunk.rst_payloads)
        if len(chunk.packets):
            chunk_max = int(chunk.packets["ts_ns"].max())
            self._now_ns = chunk_max if self._now_ns is None else max(self._now_ns, chunk_max)
        return self._process(chunk.packets, final=False)

    def finish(self) -> list[Connection]:
        """End of capture: every remaining connection, by index."""
        done = self._process(PacketTable.empty(), final=True)
        self._blocks = []
        self._icmp.clear()
        self._rst_payloads.clear()
        return done

    # -- internals
    # --------------------------------------------------------------------------------------------------

    def _process(self, chunk: PacketTable, final: bool) -> list[Connection]:
        if len(chunk) == 0 and not self._blocks:
            return []
        with _no_cyclic_gc():
            return self._process_batch(chunk, final)

    def _process_batch(self, chunk: PacketTable, final: bool) -> list[Connection]:
        """Regroup only the carried connections the chunk touches, find the connections that may be over, and
        analyse only their rows.

        A carried connection the chunk does not touch keeps its grouping and summary (`_Carry`): the cost of a
        feed follows the chunk and the connections that may be over, not the whole carry. Connections that stay
        open go back to the carry without analysis: with chunks shorter than the close linger, most rows would
        otherwise be analysed several times.
        """
        blocks = self._blocks
        carry = _flatten(blocks)
        touched = carry.alive & carry.touched_by(chunk)
        if touched.any():
            everything = np.arange(len(chunk), dtype=np.int64)
            work = _gather([*_block_rows(blocks, carry, touched), (chunk, everything, False)])
        else:
            work = chunk
        demux = demultiplex(work, self.reuse_gap_ns)
        fresh = _Carry.from_demux(work, demux, owned=work is not chunk)
        del work
        self._assign_indices(fresh.table["frame"][demux.order[demux.starts]].astype(np.int64))
        now = self._now_ns if self._now_ns is not None else int(max(carry.last_ts.max(initial=0), 0))
        superseded = np.zeros(len(demux.starts), bool)
        if len(superseded) > 1:
            superseded[:-1] = demux.flow[1:] == demux.flow[:-1]
        untouched = carry.alive & ~touched
        old_candidates = untouched & self._over_candidates(carry, now, final)
        new_candidates = superseded | self._over_candidates(fresh, now, final)
        old_picked, new_picked = np.flatnonzero(old_candidates), np.flatnonzero(new_candidates)
        finished: list[Connection] = []
        keeps = [np.zeros(0, bool)]
        for old_part, new_part in _pieces(carry.lengths[old_picked], fresh.lengths[new_picked]):
            old_conns, new_conns = old_picked[old_part], new_picked[new_part]
            subset, sub_demux = _candidate_batch(blocks, carry, old_conns, fresh, new_conns, demux.reuse_index)
            part_superseded = np.concatenate([np.zeros(len(old_conns), bool), superseded[new_conns]])
            analysis = analyse(subset, sub_demux, grouped=True)
            done, keep = self._rebuild(Batch(analysis, sub_demux), now, part_superseded, final)
            finished += done
            keeps.append(keep)
        keep = np.concatenate(keeps)
        old_stays = untouched.copy()
        old_stays[old_picked] = keep[: len(old_picked)]
        new_stays = ~new_candidates
        new_stays[new_picked] = keep[len(old_picked) :]
        settled = carry.settled | (old_candidates & old_stays)
        self._blocks = _next_blocks(blocks, carry, old_stays, settled, fresh, new_stays, new_candidates)
        self._prune_rst_payloads()
        self._forget_old(now)
        finished.sort(key=lambda c: c.index)
        return finished

    def _rebuild(
        self, batch: Batch, now: int, superseded: np.ndarray, final: bool
    ) -> tuple[list[Connection], np.ndarray]:
        """Rebuild every connection of the batch; return those that are over and the mask of those to keep."""
        demux = batch.demux
        count = len(demux.starts)
        table = batch.table
        finished: list[Connection] = []
        keep = np.zeros(count, bool)
        frames, first_list, last_list = batch.first_frame_list, batch.ts_first_list, batch.ts_last_list
        start_rows = batch.starts_list
        reuse_list, superseded_list = demux.reuse_index.tolist(), superseded.tolist()
        idle_since = now - self.idle_timeout_ns
        over_anyway = [
            final or superseded or last <= idle_since
            for superseded, last in zip(superseded_list, last_list, strict=True)
        ]
        no_icmp: Sequence[IcmpError] = ()
        four_tuples = batch.tuple_keys()
        indices, ended_tuples, payloads = self._index_by_first_frame, self._ended_tuples, self._rst_payloads
        horizon = self._horizon
        for conn in range(count):
            four_tuple = four_tuples[conn]
            # Port reuse: a connection emitted earlier ended on this 4-tuple, recently enough to count.
            ended = ended_tuples.get(four_tuple)
            reused = ended is not None and (horizon is None or ended >= horizon)
            connection = build_connection(
                batch,
                conn,
                indices[frames[conn]],
                reuse_list[conn] > 0 or reused,
                self._icmp_for(table, start_rows[conn], first_list[conn], last_list[conn]) if self._icmp else no_icmp,
                payloads,
            )
            if not (over_anyway[conn] or connection.outcome in _ENDED):
                keep[conn] = True
                continue
            finished.append(connection)
            ended_tuples[four_tuple] = connection.ts_last_ns
            del indices[frames[conn]]
        return finished, keep

    def _assign_indices(self, first_frames: IntArray) -> None:
        new = [int(f) for f in np.sort(first_frames) if int(f) not in self._index_by_first_frame]
        for frame in new:
            self._index_by_first_frame[frame] = self._next_index
            self._next_index += 1

    def _over_candidates(self, carry: _Carry | _Flat, now: int, final: bool) -> Array:
        """Connections that may be over: closing (FIN or RST seen, then the close linger) or idle. A settled one
        was rebuilt as closing and kept open; untouched since, only the idle timeout can end it."""
        if final:
            return np.ones(len(carry.lengths), bool)
        quiet = now - carry.last_ts
        closing = carry.ended & ~carry.settled & (quiet >= self.close_linger_ns)
        return np.asarray(closing | (quiet >= self.idle_timeout_ns))

    def _prune_rst_payloads(self) -> None:
        """Keep the payloads of the carried RSTs only (those of RSTs to come arrive with their chunk)."""
        if self._rst_payloads:
            frames = set()
            for block in self._blocks:
                table = block.table
                frames.update(table["frame"][(table["flags"] & RST) != 0].tolist())
            self._rst_payloads = {f: p for f, p in self._rst_payloads.items() if f in frames}

    def _icmp_for(self, table: PacketTable, row: int, first_ts: int, last_ts: int) -> Sequence[IcmpError]:
        if not self._icmp:
            return ()
        src = format_addr(table["src_hi"][row], table["src_lo"][row])
        dst = format_addr(table["dst_hi"][row], table["dst_lo"][row])
        sport, dport = int(table["sport"][row]), int(table["dport"][row])
        errors = self._icmp.get((src, sport, dst, dport), []) + self._icmp.get((dst, dport, src, sport), [])
        matched = [e for e in errors if first_ts <= e.ts_ns <= last_ts + ICMP_MATCH_SLACK_NS]
        # Errors whose quote shows no source port: any connection between those endpoints open at the time.
        unported = self._icmp.get((src, None, dst, dport), []) + self._icmp.get((dst, None, src, sport), [])
        matched += [e for e in unported if first_ts <= e.ts_ns <= last_ts + ICMP_UNPORTED_SLACK_NS]
        return sorted(matched, key=lambda e: e.frame) if unported else matched

    def _forget_old(self, now: int) -> None:
        horizon = now - self.idle_timeout_ns - ICMP_MATCH_SLACK_NS
        self._horizon = horizon
        # Lookups ignore entries older than the horizon (`_rebuild`), so the dict is rebuilt only once it has
        # doubled: rebuilding it at every feed cost a pass over every connection of the last minutes.
        if len(self._ended_tuples) > 2 * self._ended_kept + 1024:
            self._ended_tuples = {key: ts for key, ts in self._ended_tuples.items() if ts >= horizon}
            self._ended_kept = len(self._ended_tuples)
        for key in list(self._icmp):
            fresh = [e for e in self._icmp[key] if e.ts_ns >= horizon]
            if fresh:
                self._icmp[key] = fresh
            else:
                del self._icmp[key]


@dataclass(slots=True)
class _Carry:
    """A block of the rows of open connections kept between feeds, grouped per connection (each in frame
    order), with the per-connection facts a feed reads without regrouping them.

    A feed regroups only the carried connections its chunk touches (same 4-tuple, by `flow_hash`): demultiplexing
    is per 4-tuple, and a connection's grouping and roles depend on its own rows only, so an untouched one keeps
    them. It is carried alone on its 4-tuple (an earlier connection on it was superseded, hence emitted), so its
    `Demux.reuse_index` is 0.

    The carry is a list of blocks (`_next_blocks`): a feed adds one with the connections it keeps, and marks the
    ones it takes from older blocks dead (`alive`) instead of copying the rest; a block is compacted once most
    of its rows are dead, so a feed's cost follows its chunk, not the carry.
    """

    table: PacketTable
    lengths: IntArray
    last_ts: IntArray
    ended: Array
    """A FIN or an RST was seen."""
    orig_is_a: Array
    inferred_by: IntArray
    flow_hash: Array
    settled: Array
    """Rebuilt as closing and kept (its outcome is not over); only the idle timeout can end it while untouched.
    Cleared when ICMP errors arrive (one may answer its SYN)."""
    alive: Array
    """Still carried here (not emitted, not regrouped into a later block)."""
    order: IntArray | None = None
    """Row of `table` at each grouped position, or None when the table is grouped already (a feed's regrouped
    connections are read through their demux's order rather than copied in it)."""
    owned: bool = True
    """The table is the tracker's own (it may be consumed), not the caller's chunk."""

    @classmethod
    def from_demux(cls, work: PacketTable, demux: Demux, owned: bool) -> _Carry:
        """The connections of ``work`` as ``demux`` groups them."""
        order, starts = demux.order, demux.starts
        n = len(work)
        count = len(starts)
        lengths = np.diff(np.append(starts, n)).astype(np.int64)
        if not n:
            none = np.zeros(0, bool)
            return cls(
                work,
                lengths,
                lengths,
                none,
                demux.orig_is_a,
                demux.inferred_by,
                np.zeros(0, np.uint64),
                none,
                none,
                order,
                owned,
            )
        last_ts = work["ts_ns"][order[starts + lengths - 1]].astype(np.int64)
        ended = np.add.reduceat((work["flags"][order] & (FIN | RST)) != 0, starts) > 0
        flow_hash = _flow_hash(work.take(order[starts]))
        return cls(
            work,
            lengths,
            last_ts,
            np.asarray(ended, bool),
            demux.orig_is_a,
            demux.inferred_by,
            flow_hash,
            np.zeros(count, bool),
            np.ones(count, bool),
            order,
            owned,
        )

    def row_indices(self, picked: Array) -> IntArray:
        """The table rows of the picked connections (a boolean mask), grouped."""
        positions = np.flatnonzero(np.repeat(picked, self.lengths))
        return positions if self.order is None else self.order[positions]

    @property
    def live_rows(self) -> int:
        return int(self.lengths[self.alive].sum())


_PER_CONNECTION = ("lengths", "last_ts", "ended", "orig_is_a", "inferred_by", "flow_hash", "settled", "alive")


@dataclass(slots=True)
class _Flat:
    """The per-connection facts of every block, one after the other (what a feed decides on, at once)."""

    lengths: IntArray
    last_ts: IntArray
    ended: Array
    orig_is_a: Array
    inferred_by: IntArray
    flow_hash: Array
    settled: Array
    alive: Array
    offsets: list[int]
    """Where each block's connections begin, and the total at the end."""

    def touched_by(self, chunk: PacketTable) -> Array:
        """Per connection: the chunk has rows on its 4-tuple (or on one with the same hash)."""
        if not len(self.lengths) or not len(chunk):
            return np.zeros(len(self.lengths), bool)
        return np.isin(self.flow_hash, _flow_hash(chunk))


def _flatten(blocks: list[_Carry]) -> _Flat:
    offsets = [0]
    for block in blocks:
        offsets.append(offsets[-1] + len(block.lengths))
    if not blocks:
        none = np.zeros(0, np.int64)
        no = np.zeros(0, bool)
        return _Flat(none, none, no, no, none, none.astype(np.uint64), no, no, offsets)
    lengths, last_ts, ended, orig_is_a, inferred_by, flow_hash, settled, alive = (
        np.concatenate([getattr(block, name) for block in blocks]) for name in _PER_CONNECTION
    )
    return _Flat(lengths, last_ts, ended, orig_is_a, inferred_by, flow_hash, settled, alive, offsets)


def _block_rows(blocks: list[_Carry], flat: _Flat, picked: Array) -> list[tuple[PacketTable, IntArray, bool]]:
    """`_gather` parts for the rows of the picked connections (a mask over `flat`), block by block."""
    parts = []
    for block, lo, hi in zip(blocks, flat.offsets, flat.offsets[1:], strict=False):
        mask = picked[lo:hi]
        if mask.any():
            parts.append((block.table, block.row_indices(mask), False))
    return parts


def _compose(sources: list[tuple[_Carry, Array]]) -> _Carry:
    """One block of the picked connections (a mask per source) of these blocks, in one copy of their rows;
    sources the tracker owns are consumed."""
    table = _gather([(block.table, block.row_indices(mask), block.owned) for block, mask in sources])
    lengths, last_ts, ended, orig_is_a, inferred_by, flow_hash, settled, _ = (
        np.concatenate([getattr(block, name)[mask] for block, mask in sources]) for name in _PER_CONNECTION
    )
    alive = np.ones(len(lengths), bool)
    return _Carry(table, lengths, last_ts, ended, orig_is_a, inferred_by, flow_hash, settled, alive)


MAX_BLOCKS = 8
"""Beyond this many blocks, the carry is compacted into one."""


def _next_blocks(
    blocks: list[_Carry],
    flat: _Flat,
    stays: Array,
    settled: Array,
    fresh: _Carry,
    fresh_stays: Array,
    fresh_settled: Array,
) -> list[_Carry]:
    """The carry after a feed: the old blocks with what stays alive (compacted once most of a block is dead),
    then a block of the regrouped connections that stay."""
    kept: list[_Carry] = []
    for block, lo, hi in zip(blocks, flat.offsets, flat.offsets[1:], strict=False):
        block.alive = stays[lo:hi]
        block.settled = settled[lo:hi]
        live = block.live_rows
        if live == 0:
            continue
        kept.append(_compose([(block, block.alive)]) if 2 * live < len(block.table) else block)
    if fresh_stays.any():
        fresh.settled = fresh_settled
        kept.append(_compose([(fresh, fresh_stays)]))
    if len(kept) > MAX_BLOCKS:
        kept = [_compose([(block, block.alive) for block in kept])]
    return kept


def _gather(parts: list[tuple[PacketTable, IntArray, bool]]) -> PacketTable:
    """The given rows of each table, one table after the other, each column copied once. A part whose flag is
    set is consumed: its columns are dropped once copied (it must not be read again)."""
    total = sum(len(rows) for _, rows, _ in parts)
    columns: dict[str, Array] = {}
    for name in list(parts[0][0].columns):
        column = parts[0][0].columns[name]
        out = np.empty((total, *column.shape[1:]), column.dtype)
        at = 0
        for table, rows, _ in parts:
            if len(rows):
                # mode="clip": the rows are valid, and "raise" buffers the output (several times slower)
                np.take(table.columns[name], rows, axis=0, out=out[at : at + len(rows)], mode="clip")
                at += len(rows)
        columns[name] = out
        for table, _, consume in parts:
            if consume:
                del table.columns[name]
    return PacketTable(columns)


_HASH_MULTIPLIERS = tuple(
    np.uint64(m)
    for m in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD)
)


def _flow_hash(table: PacketTable) -> Array:
    """Per row: a hash of the canonical 4-tuple (equal for both directions; a collision only costs a regrouping)."""
    sender_is_a = canonical_sides(table)
    src = (table["src_hi"], table["src_lo"])
    dst = (table["dst_hi"], table["dst_lo"])
    ports = (table["sport"].astype(np.uint64) << np.uint64(16)) | table["dport"].astype(np.uint64)
    swapped = (table["dport"].astype(np.uint64) << np.uint64(16)) | table["sport"].astype(np.uint64)
    values = (
        np.where(sender_is_a, src[0], dst[0]),
        np.where(sender_is_a, src[1], dst[1]),
        np.where(sender_is_a, dst[0], src[0]),
        np.where(sender_is_a, dst[1], src[1]),
        np.where(sender_is_a, ports, swapped),
    )
    out = np.zeros(len(table), np.uint64)
    for value, multiplier in zip(values, _HASH_MULTIPLIERS, strict=True):
        out = (out ^ value.astype(np.uint64)) * multiplier
        out ^= out >> np.uint64(29)
    return out


def _pieces(old_lengths: IntArray, new_lengths: IntArray) -> Iterator[tuple[slice, slice]]:
    """Consecutive runs of the candidates (carried ones first, then the regrouped ones) of about
    `BATCH_ROWS` rows each, as slices of each kind: a batch's per-row lists and arrays stay small."""
    lengths = np.concatenate([old_lengths, new_lengths])
    piece = (np.cumsum(lengths) - lengths) // BATCH_ROWS
    bounds = np.flatnonzero(np.diff(piece)) + 1
    edges = [0, *bounds.tolist(), len(lengths)]
    split = len(old_lengths)
    for lo, hi in itertools.pairwise(edges):
        yield slice(min(lo, split), min(hi, split)), slice(max(lo, split) - split, max(hi, split) - split)


def _candidate_batch(
    blocks: list[_Carry], flat: _Flat, old_conns: IntArray, fresh: _Carry, new_conns: IntArray, reuse_index: IntArray
) -> tuple[PacketTable, Demux]:
    """The rows of the candidate connections (carried ones first, then the regrouped ones), grouped, and their
    demux."""
    old, new = np.zeros(len(flat.lengths), bool), np.zeros(len(fresh.lengths), bool)
    old[old_conns] = True
    new[new_conns] = True
    table = _gather([*_block_rows(blocks, flat, old), (fresh.table, fresh.row_indices(new), False)])
    lengths = np.concatenate([flat.lengths[old], fresh.lengths[new]])
    count = len(lengths)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64) if count else np.zeros(0, np.int64)
    demux = Demux(
        order=np.arange(len(table), dtype=np.int64),
        starts=starts,
        sender_is_a=canonical_sides(table),
        orig_is_a=np.concatenate([flat.orig_is_a[old], fresh.orig_is_a[new]]),
        inferred_by=np.concatenate([flat.inferred_by[old], fresh.inferred_by[new]]),
        reuse_index=np.concatenate([np.zeros(len(old_conns), np.int64), reuse_index[new]]),
        flow=np.arange(count, dtype=np.int64),
    )
    return table, demux


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector during a feed.

    What a feed allocates holds no reference cycles, and the collector's full passes over the caller's ever
    larger heap of results cost more than the rebuild itself.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_ENDED = frozenset((Outcome.RESET, Outcome.CLEAN, Outcome.NOT_ESTABLISHED))
"""Outcomes of a rebuilt connection that is over: a closing candidate with one is emitted (an unaccepted RST
does not end a connection)."""


def build_connections(
    packets: PacketTable,
    icmp_errors: Iterable[IcmpError] = (),
    rst_payloads: Mapping[int, bytes] | None = None,
) -> list[Connection]:
    """All connections of a complete packet table, by index (one chunk through a `ConnectionTracker`)."""
    tracker = ConnectionTracker()
    capture = Capture(packets, list(icmp_errors), dict(rst_payloads or {}), ReadReport())
    connections = tracker.feed(capture) + tracker.finish()
    connections.sort(key=lambda c: c.index)
    return connections
