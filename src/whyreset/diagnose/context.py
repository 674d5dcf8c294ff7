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

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from whyreset.core.connection import Connection, EventKind
from whyreset.ids import Side
from whyreset.model import ACK, FIN, RST, SYN, IcmpError

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


@dataclass(slots=True)
class DiagnosisContext:
    """Capture-wide facts gathered over every connection before any is diagnosed."""

    host_ttls: dict[str, Counter[int]] = field(default_factory=dict)
    """address -> TTL -> count over that host's ordinary (non-RST) packets."""
    listening: dict[Endpoint, list[int]] = field(default_factory=dict)
    """server endpoint -> timestamps of SYN-ACKs it sent."""
    refusals: dict[Endpoint, list[int]] = field(default_factory=dict)
    """server endpoint -> timestamps of RSTs that answered a SYN (connection refused)."""
    silent_resets: dict[Endpoint, list[ServerReset]] = field(default_factory=dict)
    """server endpoint -> connections it reset after the handshake without sending data."""
    icmp_by_flow: dict[tuple[str, int, str, int], list[IcmpError]] = field(default_factory=dict)
    """(quoted src, sport, dst, dport) -> ICMP errors quoting that flow."""
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None
    connections: int = 0

    def observe(self, conn: Connection) -> None:
        """Fold one connection into the context."""
        self.connections += 1
        self.first_ts_ns = (
            conn.ts_first_ns if self.first_ts_ns is None else min(self.first_ts_ns, conn.ts_first_ns)
        )
        self.last_ts_ns = (
            conn.ts_last_ns if self.last_ts_ns is None else max(self.last_ts_ns, conn.ts_last_ns)
        )
        flags = conn.packets["flags"].astype(np.int64)
        ttls = conn.packets["ttl"]
        ts = conn.packets["ts_ns"]
        from_orig = conn.from_orig.astype(bool)
        not_rst = (flags & RST) == 0
        for host, mask in ((conn.orig_h, from_orig), (conn.resp_h, ~from_orig)):
            self.host_ttls.setdefault(host, Counter()).update(ttls[mask & not_rst].tolist())
        server = (conn.resp_h, conn.resp_p)
        synack = (~from_orig) & ((flags & (SYN | ACK)) == (SYN | ACK))
        if synack.any():
            self.listening.setdefault(server, []).extend(int(t) for t in ts[synack])
        self._observe_refusal(conn, server, flags, from_orig, ts)
        self._observe_silent_reset(conn, server, flags, from_orig)
        self._observe_icmp_events(conn)

    def _observe_icmp_events(self, conn: Connection) -> None:
        """ICMP errors the core attached to the connection (so that `observe` alone, without the capture's
        ICMP list, still knows them)."""
        for event in conn.events:
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

    def _observe_refusal(
        self, conn: Connection, server: Endpoint, flags: np.ndarray, from_orig: np.ndarray, ts: np.ndarray
    ) -> None:
        resp_rst = (~from_orig) & ((flags & RST) != 0)
        if conn.established or not resp_rst.any():
            return
        if ((~from_orig) & ((flags & SYN) != 0)).any():
            return  # the responder answered with a SYN-ACK at some point: not a plain refusal
        self.refusals.setdefault(server, []).extend(int(t) for t in ts[resp_rst][:1])

    def _observe_silent_reset(
        self, conn: Connection, server: Endpoint, flags: np.ndarray, from_orig: np.ndarray
    ) -> None:
        if not conn.established or conn.resp.data_bytes > 0 or not conn.resets:
            return
        first = conn.resets[0]
        if first.sender.value != "resp":
            return
        resp_fin = (~from_orig) & ((flags & FIN) != 0)
        if resp_fin.any():
            return
        self.silent_resets.setdefault(server, []).append(ServerReset(first.ts_ns, conn.uid))

    def add_icmp(self, errors: Iterable[IcmpError]) -> None:
        for error in errors:
            key = (error.quoted_src, error.quoted_sport, error.quoted_dst, error.quoted_dport)
            known = self.icmp_by_flow.setdefault(key, [])
            if not any(e.frame == error.frame for e in known):
                known.append(error)

    # ---- queries used by the rules -------------------------------------------------------------------------

    def ttl_profile(self, host: str) -> Counter[int]:
        return self.host_ttls.get(host, Counter())

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
        return sum(1 for t in self.listening.get(server, []) if t > ts_ns)

    def refusals_after(self, server: Endpoint, ts_ns: int) -> int:
        return sum(1 for t in self.refusals.get(server, []) if t > ts_ns)

    def reset_burst(self, server: Endpoint, ts_ns: int, uid: str) -> list[ServerReset]:
        """Other connections the same server reset silently within `CLUSTER_WINDOW_NS` of ``ts_ns``."""
        return [
            r
            for r in self.silent_resets.get(server, [])
            if r.uid != uid and abs(r.ts_ns - ts_ns) <= CLUSTER_WINDOW_NS
        ]

    def capture_end_ns(self, conn: Connection) -> int:
        return self.last_ts_ns if self.last_ts_ns is not None else conn.ts_last_ns


def build_context(
    connections: Iterable[Connection], icmp_errors: Iterable[IcmpError] = ()
) -> DiagnosisContext:
    """First pass over a capture's connections (and its ICMP errors)."""
    context = DiagnosisContext()
    for conn in connections:
        context.observe(conn)
    context.add_icmp(icmp_errors)
    return context
