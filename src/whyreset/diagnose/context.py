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
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import compress
from operator import and_, not_

import numpy as np

from whyreset.core.connection import Connection, EventKind
from whyreset.diagnose.facts import row_range
from whyreset.ids import Side
from whyreset.model import ACK, FIN, RST, SYN, Array, IcmpError

Endpoint = tuple[str, int]
CLUSTER_WINDOW_NS = 2_000_000
"""Resets from one listener closer together than this are counted as one burst: inet_csk_listen_stop() resets
the whole accept queue in one loop (microseconds apart on the server) and the path adds little jitter between
packets of the same server. Busy servers reset unrelated connections every few hundred milliseconds, so the
window must stay this tight."""


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
    icmp_by_flow: dict[tuple[str, int, str, int], list[IcmpError]] = field(default_factory=dict)
    """(quoted src, sport, dst, dport) -> ICMP errors quoting that flow."""
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
            self._observe_resets(conn, server, flags, from_orig, ttls, columns["ts_ns"], start)
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

    def _observe_resets(
        self,
        conn: Connection,
        server: Endpoint,
        flags: list[int],
        from_orig: list[bool],
        ttls: list[int],
        ts_column: Array,
        start: int,
    ) -> None:
        """A connection with RST rows (its ``flags``, ``from_orig``, ``ttls``; its rows are ``start:`` of
        ``ts_column``): their TTLs are not counted (a forged RST's TTL is not its host's), and a responder's RST
        without any SYN from it is a refusal."""
        plain = [not flag & RST for flag in flags]
        self._count_ttls(conn.orig_h, compress(ttls, map(and_, plain, from_orig)))
        self._count_ttls(conn.resp_h, compress(ttls, [p and not o for p, o in zip(plain, from_orig, strict=True)]))
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
            (src, sport), (dst, dport) = conn.address(quoted_side), conn.address(quoted_side.other)
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
        if not conn.established or conn.resp.data_bytes > 0 or not conn.resets:
            return
        first = conn.resets[0]
        if first.sender is not Side.RESP:
            return
        if any(flag & FIN and not is_orig for flag, is_orig in zip(flags, from_orig, strict=True)):
            return  # the server closed first: not a silent reset
        times = self._silent_reset_times.setdefault(server, [])
        at = bisect_right(times, first.ts_ns)  # after resets at the same instant, as insort would
        times.insert(at, first.ts_ns)
        self.silent_resets.setdefault(server, []).insert(at, ServerReset(first.ts_ns, conn.uid))

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
        matched = [e for e in (*forward, *backward) if e.ts_ns >= window_start]
        return sorted(matched, key=lambda e: e.frame)

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


def build_context(connections: Iterable[Connection], icmp_errors: Iterable[IcmpError] = ()) -> DiagnosisContext:
    """First pass over a capture's connections (and its ICMP errors)."""
    context = DiagnosisContext()
    for conn in connections:
        context.observe(conn)
    context.add_icmp(icmp_errors)
    return context


_NO_TTLS: Counter[int] = Counter()
"""The TTL profile of a host the capture has no ordinary packet from (never written to)."""
