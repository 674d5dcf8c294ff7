"""The capture-wide context: what the other connections of the same capture say about a host.

One connection rarely proves who sent its RST. The rest of the capture often does:

* a host's **TTL profile** (every TTL its ordinary packets arrived with, over all its connections): an RST
  that carries the host's address but a TTL the host never used was made somewhere else on the path;
* the **listening ports** (SYN-ACKs seen from ``host:port``): a port that answered handshakes was listening,
  so a later refusal or silence means the listener went away or was overloaded, not that nothing was ever
  there;
* **reset clusters**: a listener that closes resets every connection still waiting in its accept queue at
  once, so several "handshake, then RST from the server, no server data" connections to one ``host:port``
  within a moment point to ``listener_closed``;
* the **ICMP errors** that quote a connection's segments;
* the capture's time span (a connection that stops long before the capture ends really stopped).

Build it in a first pass (`build_context`, or `DiagnosisContext.observe` per connection), then diagnose.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress
from operator import and_, attrgetter, itemgetter, not_
from typing import NamedTuple

import numpy as np

from whyreset.core.connection import Connection, EventKind
from whyreset.diagnose.facts import row_range
from whyreset.ids import Side
from whyreset.model import ACK, FIN, ICMP_UNPORTED_SLACK_NS, RST, SYN, Array, IcmpError, gather_plan

Endpoint = tuple[str, int]
_FIELDS = attrgetter("orig_h", "resp_h", "resp_p", "packets", "resets", "icmp_errors", "established")
_TS_FIRST = attrgetter("ts_first_ns")
_TS_LAST = attrgetter("ts_last_ns")
_START_STOP = itemgetter(1, 2)
CLUSTER_WINDOW_NS = 2_000_000
"""Resets from one listener closer together than this are counted as one burst: inet_csk_listen_stop() resets
the whole accept queue in one loop (microseconds apart on the server) and the path adds little jitter between
packets of the same server. Busy servers reset unrelated connections every few hundred milliseconds, so the
window must stay this tight."""

FEW_CONNECTIONS = 40
"""`observe_many` folds shorter lists with `observe`: its numpy calls cost about 0.2 ms whatever the length,
more than `observe` takes for this many connections."""


@dataclass(frozen=True, slots=True)
class ServerReset:
    """A connection that the server reset after the handshake without sending a byte of data."""

    ts_ns: int
    uid: str


_FLAG_VALUES = np.arange(1 << 16)
_HAS_RST = ((_FLAG_VALUES & RST) != 0).astype(np.uint8).tobytes()
_IS_SYNACK = ((_FLAG_VALUES & (SYN | ACK)) == (SYN | ACK)).astype(np.uint8).tobytes()
"""Per value of the (16-bit) flags column: whether it has RST; both SYN and ACK (looked up in C by `map`)."""


@dataclass(slots=True)
class DiagnosisContext:
    """Capture-wide facts gathered over every connection before any is diagnosed."""

    host_ttls: dict[str, Counter[int]] = field(default_factory=dict)
    """address -> TTL -> count over that host's ordinary (non-RST) packets."""
    listening: dict[Endpoint, list[int]] = field(default_factory=dict)
    """server endpoint -> timestamps of SYN-ACKs it sent (sorted: queries bisect)."""
    refusals: dict[Endpoint, list[int]] = field(default_factory=dict)
    """server endpoint -> timestamps of RSTs that answered a SYN (connection refused), sorted."""
    silent_resets: dict[Endpoint, list[ServerReset]] = field(default_factory=dict)
    """server endpoint -> connections it reset after the handshake without sending data, by time."""
    icmp_by_flow: dict[tuple[str, int | None, str, int], list[IcmpError]] = field(default_factory=dict)
    """(quoted src, sport, dst, dport) -> ICMP errors quoting that flow (sport None: not shown by the input)."""
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None
    connections: int = 0
    _silent_reset_times: dict[Endpoint, list[int]] = field(default_factory=dict, init=False, repr=False)
    """server endpoint -> the times of its `silent_resets`, in the same order (bisected without a key
    function)."""

    def observe(self, conn: Connection) -> None:
        """Fold one connection into the context.

        Only the three columns it reads are sliced from the connection's batch (`row_range`). Most connections
        have no RST and one SYN-ACK: their TTLs are counted per side with C-level filters over the rows, and
        only the SYN-ACK rows are looked at one by one."""
        self.connections += 1
        if self.first_ts_ns is None or conn.ts_first_ns < self.first_ts_ns:
            self.first_ts_ns = conn.ts_first_ns
        if self.last_ts_ns is None or conn.ts_last_ns > self.last_ts_ns:
            self.last_ts_ns = conn.ts_last_ns
        columns, start, stop = row_range(conn.packets)
        flags: list[int] = columns["flags"][start:stop].tolist()
        ttls: list[int] = columns["ttl"][start:stop].tolist()
        from_orig: list[bool] = conn.from_orig.tolist()
        server = (conn.resp_h, conn.resp_p)
        if any(map(_HAS_RST.__getitem__, flags)):
            # An RST's TTL is not counted: a forged RST's TTL is not its host's.
            plain = [not flag & RST for flag in flags]
            self._count_ttls(conn.orig_h, compress(ttls, map(and_, plain, from_orig)))
            self._count_ttls(conn.resp_h, compress(ttls, [p and not o for p, o in zip(plain, from_orig, strict=True)]))
            self._observe_refusal(conn, server, flags, from_orig, columns["ts_ns"], start)
        else:
            self._count_ttls(conn.orig_h, compress(ttls, from_orig))
            self._count_ttls(conn.resp_h, compress(ttls, map(not_, from_orig)))
        from_resp = map(not_, from_orig)
        synacks = list(compress(range(len(flags)), map(and_, map(_IS_SYNACK.__getitem__, flags), from_resp)))
        if synacks:
            known = self.listening.setdefault(server, [])
            ts = columns["ts_ns"]
            for row in synacks:
                insort(known, int(ts[start + row]))
        self._observe_silent_reset(conn, server, flags, from_orig)
        if conn.icmp_errors:  # the ICMP_ERROR events are these errors (reading them builds no event list)
            self._observe_icmp_events(conn)

    def observe_many(self, connections: Sequence[Connection]) -> None:
        """Fold these connections into the context: the same context as `observe` on each one, in order.

        `observe` walks each connection's rows in Python (a few microseconds per connection even when
        nothing is notable); here the rows of all the connections are gathered into a few arrays (`_Batch`),
        and the TTL profiles, listening ports and refusals are read from them with numpy. Only the connections
        that may be silent resets, and those with ICMP errors (few on real captures), go through the
        per-connection code. Insertion orders are kept too: a TTL profile's ties (`Counter.most_common`), the
        dicts' keys and the resets at one instant follow the order `observe` would give. Lists shorter than
        `FEW_CONNECTIONS` are folded by `observe`."""
        if len(connections) < FEW_CONNECTIONS:
            for conn in connections:
                self.observe(conn)
            return
        self.connections += len(connections)
        first, last = min(map(_TS_FIRST, connections)), max(map(_TS_LAST, connections))
        if self.first_ts_ns is None or first < self.first_ts_ns:
            self.first_ts_ns = first
        if self.last_ts_ns is None or last > self.last_ts_ns:
            self.last_ts_ns = last
        batch = _Batch(connections, self.host_ttls)
        rows = batch.rows()
        self._count_ttls_many(batch, rows)
        self._listening_many(batch, rows)
        self._refusals_many(batch, rows)
        self._silent_resets_many(batch, rows)
        for conn in batch.with_icmp:
            self._observe_icmp_events(conn)

    def _count_ttls_many(self, batch: _Batch, rows: _Rows) -> None:
        """The TTLs of every non-RST row, counted for its sender, each (host, TTL) first seen in the order
        `observe` meets it.

        A side of a connection sends with one TTL or a few, so each side's rows are first cut into runs of
        one (host, TTL) (a few per connection), then the runs are summed per (host, TTL)."""
        sender = np.where(rows.from_orig, batch.orig_host[rows.conn], batch.resp_host[rows.conn])
        key = sender * 256 + rows.ttl
        runs = [
            _runs(key[mask], rows.rank[mask]) for mask in (rows.plain & rows.from_orig, rows.plain & ~rows.from_orig)
        ]
        keys = np.concatenate([r[0] for r in runs])
        if not len(keys):
            return
        counts, firsts = np.concatenate([r[1] for r in runs]), np.concatenate([r[2] for r in runs])
        order = np.lexsort((firsts, keys))
        keys, counts, firsts = keys[order], counts[order], firsts[order]
        heads = _heads(keys)
        totals = np.add.reduceat(counts, heads)
        by_first = np.argsort(firsts[heads])
        profiles = [self.host_ttls[host] for host in batch.hosts]
        for pair, total in zip(keys[heads][by_first].tolist(), totals[by_first].tolist(), strict=True):
            profiles[pair >> 8][pair & 255] += total

    def _listening_many(self, batch: _Batch, rows: _Rows) -> None:
        """The SYN-ACKs the responders sent, merged into each server's sorted times (servers first met in the
        order `observe` meets them)."""
        synack = ((rows.flags & (SYN | ACK)) == (SYN | ACK)) & ~rows.from_orig
        if not synack.any():
            return
        indexes = rows.conn[synack]
        servers, times, ranks = batch.server[indexes], rows.ts_ns[synack], rows.rank[synack]
        order = np.lexsort((times, servers))
        indexes, servers, times, ranks = indexes[order], servers[order], times[order], ranks[order]
        heads = _heads(servers)
        bounds = np.append(heads, len(servers)).tolist()
        times_list: list[int] = times.tolist()
        by_first = np.argsort(np.minimum.reduceat(ranks, heads)).tolist()
        one_conn: list[int] = indexes[heads].tolist()  # of each server
        for group in by_first:
            known = self.listening.setdefault(batch.endpoint(one_conn[group]), [])
            earlier = bool(known)  # times from an earlier call: merge
            known.extend(times_list[bounds[group] : bounds[group + 1]])
            if earlier:
                known.sort()

    def _refusals_many(self, batch: _Batch, rows: _Rows) -> None:
        """`_observe_refusal` over the gathered rows: a connection not established whose responder sent an
        RST and no SYN was refused at the time of that first RST."""
        from_resp = ~rows.from_orig
        answered = batch.any_row(rows.conn[from_resp & ((rows.flags & SYN) != 0)])
        refused = ~(batch.established | answered)
        resets = from_resp & ~rows.plain
        resets &= refused[rows.conn]
        # A connection's rows are gathered together and in order: its first row in the arrays is its first.
        indexes, firsts = np.unique(rows.conn[resets], return_index=True)
        for index, ts_ns in zip(indexes.tolist(), rows.ts_ns[resets][firsts].tolist(), strict=True):
            insort(self.refusals.setdefault(batch.endpoint(index), []), ts_ns)

    def _silent_resets_many(self, batch: _Batch, rows: _Rows) -> None:
        """`_observe_silent_reset` for the established connections with resets whose server sent no FIN, in
        list order (resets at one instant stay in the order they were observed)."""
        resp_fin = batch.any_row(rows.conn[~rows.from_orig & ((rows.flags & FIN) != 0)])
        candidates = np.array(batch.with_resets, np.int64)
        candidates = candidates[batch.established[candidates] & ~resp_fin[candidates]]
        for index in candidates.tolist():
            conn = batch.connections[index]
            if _reset_silently(conn):
                self._add_silent_reset(conn, batch.endpoint(index))

    def _observe_refusal(
        self,
        conn: Connection,
        server: Endpoint,
        flags: list[int],
        from_orig: list[bool],
        ts_column: Array,
        start: int,
    ) -> None:
        """A connection with RST rows (its ``flags``, ``from_orig``; its rows are ``start:`` of ``ts_column``):
        a responder's RST without any SYN from it is a refusal."""
        if conn.established:
            return
        first_resp_rst: int | None = None
        for row, (flag, is_orig) in enumerate(zip(flags, from_orig, strict=True)):
            if is_orig:
                continue
            if flag & SYN:
                return  # the responder answered with a SYN(-ACK): not a plain refusal
            if flag & RST and first_resp_rst is None:
                first_resp_rst = row
        if first_resp_rst is not None:
            # A plain refusal: the responder reset without ever answering with a SYN-ACK.
            insort(self.refusals.setdefault(server, []), int(ts_column[start + first_resp_rst]))

    def _count_ttls(self, host: str, ttls: Iterable[int]) -> None:
        counts = self.host_ttls.get(host)
        if counts is None:
            counts = self.host_ttls[host] = Counter()
        counts.update(ttls)

    def _observe_icmp_events(self, conn: Connection) -> None:
        """ICMP errors the core attached to the connection (so that `observe` alone, without the capture's
        ICMP list, still knows them)."""
        for event in conn.icmp_events:  # the core defers its event lists: this does not build them
            if event.kind is not EventKind.ICMP_ERROR:
                continue
            detail = event.detail
            quoted_side = Side(str(detail.get("quoted_sender", "orig")))
            (src, port), (dst, dport) = conn.address(quoted_side), conn.address(quoted_side.other)
            sport = port if detail.get("quoted_sport_shown", True) else None
            key = (src, sport, dst, dport)
            known = self.icmp_by_flow.setdefault(key, [])
            if any(e.frame == event.frame for e in known):
                continue
            known.append(
                IcmpError(
                    frame=event.frame,
                    ts_ns=event.ts_ns,
                    reporter=str(detail.get("reporter", "")),
                    ttl=int(detail.get("ttl", 0)),
                    ip_version=conn.ip_version,
                    icmp_type=int(detail.get("icmp_type", 0)),
                    icmp_code=int(detail.get("icmp_code", 0)),
                    quoted_src=src,
                    quoted_dst=dst,
                    quoted_sport=sport,
                    quoted_dport=dport,
                    quoted_seq=detail.get("quoted_seq"),
                )
            )

    def _observe_silent_reset(
        self, conn: Connection, server: Endpoint, flags: list[int], from_orig: list[bool]
    ) -> None:
        if not _reset_silently(conn):
            return
        if any(flag & FIN and not is_orig for flag, is_orig in zip(flags, from_orig, strict=True)):
            return  # the server closed first: not a silent reset
        self._add_silent_reset(conn, server)

    def _add_silent_reset(self, conn: Connection, server: Endpoint) -> None:
        ts_ns = conn.resets[0].ts_ns
        times = self._silent_reset_times.setdefault(server, [])
        at = bisect_right(times, ts_ns)  # after resets at the same instant, as insort would
        times.insert(at, ts_ns)
        self.silent_resets.setdefault(server, []).insert(at, ServerReset(ts_ns, conn.uid))

    def add_icmp(self, errors: Iterable[IcmpError]) -> None:
        for error in errors:
            key = (error.quoted_src, error.quoted_sport, error.quoted_dst, error.quoted_dport)
            known = self.icmp_by_flow.setdefault(key, [])
            if not any(e.frame == error.frame for e in known):
                known.append(error)

    # ---- queries used by the rules -------------------------------------------------------------------------

    def ttl_profile(self, host: str) -> Counter[int]:
        return self.host_ttls.get(host) or _NO_TTLS  # shared and empty: callers only read profiles

    def icmp_for(self, conn: Connection) -> list[IcmpError]:
        """ICMP errors quoting either direction of the connection, in capture order."""
        forward = self.icmp_by_flow.get((conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p), [])
        backward = self.icmp_by_flow.get((conn.resp_h, conn.resp_p, conn.orig_h, conn.orig_p), [])
        window_start = conn.ts_first_ns - 1_000_000_000
        matched = {e.frame: e for e in (*forward, *backward) if e.ts_ns >= window_start}
        # Errors that do not show the quoted source port: those sent while this connection was open.
        unported = (
            *self.icmp_by_flow.get((conn.orig_h, None, conn.resp_h, conn.resp_p), ()),
            *self.icmp_by_flow.get((conn.resp_h, None, conn.orig_h, conn.orig_p), ()),
        )
        window_end = conn.ts_last_ns + ICMP_UNPORTED_SLACK_NS
        matched.update({e.frame: e for e in unported if conn.ts_first_ns <= e.ts_ns <= window_end})
        return sorted(matched.values(), key=lambda e: e.frame)

    def listened(self, server: Endpoint) -> bool:
        return bool(self.listening.get(server))

    def synacks_after(self, server: Endpoint, ts_ns: int) -> int:
        times = self.listening.get(server, [])
        return len(times) - bisect_right(times, ts_ns)

    def refusals_after(self, server: Endpoint, ts_ns: int) -> int:
        times = self.refusals.get(server, [])
        return len(times) - bisect_right(times, ts_ns)

    def reset_burst(self, server: Endpoint, ts_ns: int, uid: str) -> list[ServerReset]:
        """Other connections the same server reset silently within `CLUSTER_WINDOW_NS` of ``ts_ns``."""
        times = self._silent_reset_times.get(server)
        if not times:
            return []
        start = bisect_left(times, ts_ns - CLUSTER_WINDOW_NS)
        stop = bisect_right(times, ts_ns + CLUSTER_WINDOW_NS, start)
        return [r for r in self.silent_resets[server][start:stop] if r.uid != uid]

    def capture_end_ns(self, conn: Connection) -> int:
        return self.last_ts_ns if self.last_ts_ns is not None else conn.ts_last_ns


def _reset_silently(conn: Connection) -> bool:
    """The server reset the established connection first, without having sent data (unless it had sent a FIN
    first, which the caller checks on the rows)."""
    return (
        conn.established and not conn.resp.data_bytes > 0 and bool(conn.resets) and conn.resets[0].sender is Side.RESP
    )


class _Rows(NamedTuple):
    """The rows of a list of connections, gathered (one entry per row)."""

    conn: Array
    """The connection's index in the list."""
    rank: Array
    """Where `observe` meets the row: rows in list order, and an originator's rows before its responder's
    on a connection between one host's own addresses (their TTLs count for the same profile)."""
    flags: Array
    ttl: Array
    ts_ns: Array
    from_orig: Array
    plain: Array
    """No RST flag."""


class _Batch:
    """A list of connections as arrays (hosts as small integers, servers, whether established), their rows'
    ranges in their tables, and the ones that need the per-connection code."""

    def __init__(self, connections: Sequence[Connection], host_ttls: dict[str, Counter[int]]) -> None:
        """Read each connection's few attributes with C-level maps (a Python loop over tens of thousands of
        connections would cost as much as the numpy work)."""
        self.connections = connections
        count = len(connections)
        orig_h, resp_h, resp_p, packets, resets, icmp_errors, established = zip(*map(_FIELDS, connections), strict=True)
        hosts = list(chain.from_iterable(zip(orig_h, resp_h, strict=True)))
        host_ids = {host: i for i, host in enumerate(dict.fromkeys(hosts))}
        for host in host_ids:
            host_ttls.setdefault(host, Counter())  # `observe` makes a profile even if it stays empty
        pairs = np.fromiter(map(host_ids.__getitem__, hosts), np.int64, 2 * count).reshape(-1, 2)
        self.hosts = list(host_ids)
        self.orig_host, self.resp_host = pairs[:, 0], pairs[:, 1]
        self.resp_h, self.resp_p = resp_h, resp_p
        self.server = self.resp_host * 65536 + np.fromiter(resp_p, np.int64, count)
        """Per connection: its server (responder host and port) as one integer."""
        self.established = np.fromiter(established, bool, count)
        self.ranges = list(map(row_range, packets))
        bounds = np.fromiter(chain.from_iterable(map(_START_STOP, self.ranges)), np.int64, 2 * count).reshape(-1, 2)
        self.lengths = bounds[:, 1] - bounds[:, 0]
        self.with_resets: list[int] = list(compress(range(count), resets))
        self.with_icmp: list[Connection] = list(compress(connections, icmp_errors))

    def endpoint(self, index: int) -> Endpoint:
        return self.resp_h[index], self.resp_p[index]

    def any_row(self, conn: Array) -> Array:
        """Per connection: whether any of these rows (given by their connections) is its."""
        found = np.zeros(len(self.connections), bool)
        found[conn] = True
        return found

    def rows(self) -> _Rows:
        """The rows of every connection: one gather per table (`gather_plan`)."""
        lengths = self.lengths
        offsets = np.cumsum(lengths) - lengths
        parts = [
            self._gather(columns, members, rows, places - np.repeat(offsets[members], lengths[members]))
            for columns, members, rows, places in gather_plan(self.ranges, offsets)
        ]
        conn, pos, flags, ttl, ts_ns, from_orig = (
            np.concatenate(column) if len(parts) > 1 else column[0] for column in zip(*parts, strict=True)
        )
        rank = 2 * offsets[conn] + pos
        loops = self.orig_host == self.resp_host
        if loops.any():
            rank += np.where(loops[conn] & ~from_orig, lengths[conn], 0)
        return _Rows(conn, rank, flags, ttl.astype(np.int64), ts_ns, from_orig, (flags & RST) == 0)

    def _gather(self, columns: dict[str, Array], members: Array, rows: Array, within: Array) -> tuple[Array, ...]:
        """The ``rows`` of one table, those of its connections ``members`` (in list order; ``within``: each row's
        position in its connection): their connection, position, flags, TTL, time and direction."""
        index: Array | slice = rows
        if len(rows) and bool((np.diff(rows) == 1).all()):
            index = slice(int(rows[0]), int(rows[-1]) + 1)  # one run of rows: views, no copy
        from_orig = [self.connections[m].from_orig for m in members.tolist()]
        return (
            np.repeat(members, self.lengths[members]),
            within,
            columns["flags"][index],
            columns["ttl"][index],
            columns["ts_ns"][index],
            np.concatenate(from_orig).astype(bool, copy=False) if from_orig else np.zeros(0, bool),
        )


def _heads(sorted_keys: Array) -> Array:
    """Where each run of equal values of a sorted array starts."""
    return np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))


def _runs(keys: Array, ranks: Array) -> tuple[Array, Array, Array]:
    """Runs of equal consecutive ``keys``: each run's key, length and smallest rank."""
    if not len(keys):
        return keys, keys, ranks
    heads = _heads(keys)
    return keys[heads], np.diff(np.append(heads, len(keys))), np.minimum.reduceat(ranks, heads)


def build_context(connections: Iterable[Connection], icmp_errors: Iterable[IcmpError] = ()) -> DiagnosisContext:
    """First pass over a capture's connections (and its ICMP errors)."""
    context = DiagnosisContext()
    context.observe_many(connections if isinstance(connections, Sequence) else list(connections))
    context.add_icmp(icmp_errors)
    return context


_NO_TTLS: Counter[int] = Counter()
"""The TTL profile of a host the capture has no ordinary packet from (never written to)."""
