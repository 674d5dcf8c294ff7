"""The tracker as it was before its carry kept connections grouped (re-demultiplexing the whole carry with every
chunk): the reference `test_carry` checks `ConnectionTracker` against, chunk for chunk.

Kept verbatim but for this docstring and the class name; slow on purpose (its cost follows the whole carry).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from whyreset.core.analysis import analyse
from whyreset.core.build import Batch, build_connection
from whyreset.core.connection import Connection
from whyreset.core.demux import DEFAULT_REUSE_GAP_NS, demultiplex
from whyreset.core.seqmath import IntArray, group_ids
from whyreset.ids import Outcome
from whyreset.model import FIN, RST, Capture, IcmpError, PacketTable, format_addr

DEFAULT_IDLE_TIMEOUT_NS = 300 * 1_000_000_000
DEFAULT_CLOSE_LINGER_NS = 5 * 1_000_000_000
ICMP_MATCH_SLACK_NS = 60 * 1_000_000_000
"""An ICMP error is attached to a connection when it falls between its first packet and last + this."""

FourTuple = tuple[str, int, str, int]


class ReferenceTracker:
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
        self._carry = PacketTable.empty()
        self._index_by_first_frame: dict[int, int] = {}
        self._next_index = 0
        self._rst_payloads: dict[int, bytes] = {}
        self._icmp: dict[FourTuple, list[IcmpError]] = {}
        self._now_ns: int | None = None
        self._ended_tuples: dict[tuple[int, ...], int] = {}
        self._ended_kept = 0
        """Entries left in `_ended_tuples` by its last pruning."""
        self._horizon: int | None = None
        """Capture time before which an ended connection no longer marks its 4-tuple as reused."""
        """Canonical 4-tuple -> last timestamp of a connection already emitted on it (to flag port reuse)."""

    @property
    def open_rows(self) -> int:
        """Packet rows kept for connections that are still open (the tracker's memory, in rows)."""
        return len(self._carry)

    def feed(self, chunk: Capture) -> list[Connection]:
        """Add a chunk of capture (rows in capture order); return the connections that are over, by index."""
        for error in chunk.icmp_errors:
            key = (error.quoted_src, error.quoted_sport, error.quoted_dst, error.quoted_dport)
            self._icmp.setdefault(key, []).append(error)
        self._rst_payloads.update(chunk.rst_payloads)
        if len(chunk.packets):
            chunk_max = int(chunk.packets["ts_ns"].max())
            self._now_ns = chunk_max if self._now_ns is None else max(self._now_ns, chunk_max)
        table = PacketTable.concat([self._carry, chunk.packets]) if len(self._carry) else chunk.packets
        return self._process(table, final=False)

    def finish(self) -> list[Connection]:
        """End of capture: every remaining connection, by index."""
        table = self._carry
        self._carry = PacketTable.empty()
        done = self._process(table, final=True)
        self._icmp.clear()
        self._rst_payloads.clear()
        return done

    # -- internals
    # --------------------------------------------------------------------------------------------------

    def _process(self, table: PacketTable, final: bool) -> list[Connection]:
        if len(table) == 0:
            return []
        with _no_cyclic_gc():
            return self._process_batch(table, final)

    def _process_batch(self, table: PacketTable, final: bool) -> list[Connection]:
        """Find the connections that may be over from the grouping alone, and analyse only their rows.

        Connections that stay open go back to the carry without analysis: with chunks shorter than the close
        linger, most rows would otherwise be analysed several times.
        """
        demux = demultiplex(table, self.reuse_gap_ns)
        order, starts = demux.order, demux.starts
        n = len(table)
        lengths = np.diff(np.append(starts, n))
        self._assign_indices(table["frame"][order[starts]].astype(np.int64))
        last_ts = table["ts_ns"][order[starts + lengths - 1]].astype(np.int64)
        now = self._now_ns if self._now_ns is not None else int(last_ts.max())
        candidates, superseded = self._over_candidates(table["flags"][order], starts, demux.flow, last_ts, now, final)
        if not candidates.any():
            self._carry = table
            self._forget_old(now)
            return []
        if candidates.all():
            picked, subset, sub_demux = np.arange(n), table, demux
        else:
            picked, sub_demux = demux.select(candidates)
            subset = table.take(picked)
        analysis = analyse(subset, sub_demux)
        finished, keep = self._rebuild(Batch(analysis, sub_demux), now, superseded[candidates], final)
        sub_lengths = np.diff(np.append(sub_demux.starts, len(subset)))
        kept_rows = picked[sub_demux.order[np.repeat(keep, sub_lengths)]]
        self._keep(table, np.concatenate([order[np.repeat(~candidates, lengths)], kept_rows]))
        self._forget_old(now)
        finished.sort(key=lambda c: c.index)
        return finished

    def _rebuild(
        self, batch: Batch, now: int, superseded: np.ndarray, final: bool
    ) -> tuple[list[Connection], np.ndarray]:
        """Rebuild every connection of the batch; return those that are over and the mask of those to keep."""
        analysis, demux = batch.analysis, batch.demux
        starts = demux.starts
        count = len(starts)
        table = analysis.table
        n = len(table)
        finished: list[Connection] = []
        keep = np.zeros(count, bool)
        frames = table["frame"][starts].astype(np.int64).tolist()
        first_list = table["ts_ns"][starts].astype(np.int64).tolist()
        last_list = table["ts_ns"][np.append(starts[1:], n) - 1].astype(np.int64).tolist()
        start_rows = starts.tolist()
        reuse_list, superseded_list = demux.reuse_index.tolist(), superseded.tolist()
        idle_since = now - self.idle_timeout_ns
        over_anyway = [
            final or superseded or last <= idle_since
            for superseded, last in zip(superseded_list, last_list, strict=True)
        ]
        no_icmp: Sequence[IcmpError] = ()
        four_tuples = batch.canonical_tuples()
        for conn in range(count):
            four_tuple = four_tuples[conn]
            connection = build_connection(
                batch,
                conn,
                self._index_by_first_frame[frames[conn]],
                reuse_list[conn] > 0 or self._reused(four_tuple),
                self._icmp_for(table, start_rows[conn], first_list[conn], last_list[conn]) if self._icmp else no_icmp,
                self._rst_payloads,
            )
            if not (over_anyway[conn] or connection.outcome in _ENDED):
                keep[conn] = True
                continue
            finished.append(connection)
            self._ended_tuples[four_tuple] = connection.ts_last_ns
            del self._index_by_first_frame[frames[conn]]
        return finished, keep

    def _assign_indices(self, first_frames: IntArray) -> None:
        new = [int(f) for f in np.sort(first_frames) if int(f) not in self._index_by_first_frame]
        for frame in new:
            self._index_by_first_frame[frame] = self._next_index
            self._next_index += 1

    def _over_candidates(
        self, flags: np.ndarray, starts: IntArray, flow: IntArray, last_ts: IntArray, now: int, final: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        count = len(starts)
        superseded = np.zeros(count, bool)
        if count > 1:
            superseded[:-1] = flow[1:] == flow[:-1]
        if final:
            return np.ones(count, bool), superseded
        n = len(flags)
        conn = group_ids(starts, n)
        rst_seen = np.bincount(conn, weights=((flags & RST) != 0).astype(np.float64), minlength=count) > 0
        fin_seen = np.bincount(conn, weights=((flags & FIN) != 0).astype(np.float64), minlength=count) > 0
        quiet = now - last_ts
        closing = (rst_seen | fin_seen) & (quiet >= self.close_linger_ns)
        return np.asarray(superseded | closing | (quiet >= self.idle_timeout_ns)), superseded

    def _keep(self, table: PacketTable, rows: IntArray) -> None:
        """Carry these rows of ``table`` (in capture order) to the next feed."""
        self._carry = table.take(np.sort(rows))
        frames = set(self._carry["frame"].tolist()) if self._rst_payloads else set()
        self._rst_payloads = {f: p for f, p in self._rst_payloads.items() if f in frames}

    def _icmp_for(self, table: PacketTable, row: int, first_ts: int, last_ts: int) -> Sequence[IcmpError]:
        if not self._icmp:
            return ()
        src = format_addr(table["src_hi"][row], table["src_lo"][row])
        dst = format_addr(table["dst_hi"][row], table["dst_lo"][row])
        sport, dport = int(table["sport"][row]), int(table["dport"][row])
        errors = self._icmp.get((src, sport, dst, dport), []) + self._icmp.get((dst, dport, src, sport), [])
        return [e for e in errors if first_ts <= e.ts_ns <= last_ts + ICMP_MATCH_SLACK_NS]

    def _reused(self, four_tuple: tuple[int, ...]) -> bool:
        """A connection emitted earlier ended on this 4-tuple, recently enough to count as reused."""
        ended = self._ended_tuples.get(four_tuple)
        return ended is not None and (self._horizon is None or ended >= self._horizon)

    def _forget_old(self, now: int) -> None:
        horizon = now - self.idle_timeout_ns - ICMP_MATCH_SLACK_NS
        self._horizon = horizon
        # Lookups ignore entries older than the horizon (`_reused`), so the dict is rebuilt only once it has
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
