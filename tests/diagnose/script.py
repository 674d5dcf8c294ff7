"""Script TCP exchanges as the two kernels would play them, and capture them from any point of the path.

A `Path` has a one-way delay, a number of routers and a capture position (0 = next to the client, 1 = next to
the server). Each `Conn` keeps both endpoints' SND.NXT and RCV.NXT; a segment sent at the sender's time ``t``
reaches the capture point ``position * delay`` later (from the client) and the peer after the full one-way
delay, with its TTL lowered by the routers crossed. An endpoint's ACK field is what it had *received by then*,
so segments cross in flight exactly as they do on a real path. The result is a `PacketTable`, the same input
the core gets from a pcap.

    path = Path(one_way_ms=20, capture_at=0.0) c = path.conn() t = c.handshake(0) c.send(CLIENT, 120, t) table
    = path.table()
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from whyreset.core.connection import Connection
from whyreset.core.tracker import build_connections
from whyreset.diagnose import build_context, diagnose
from whyreset.diagnose.finding import Finding
from whyreset.ingest import craft
from whyreset.model import ACK, FIN, PSH, RST, SYN, IcmpError, PacketTable, parse_addr

CLIENT = "client"
SERVER = "server"
MS = 1_000_000
S = 1_000_000_000
T0 = 1_700_000_000 * S


@dataclass
class End:
    addr: str
    port: int
    isn: int
    ttl: int
    snd_nxt: int = 0
    rcv_nxt: int | None = None
    ip_id: int = 1000
    pending: list[tuple[int, int]] = field(default_factory=list)
    """(arrival time, RCV.NXT after that arrival) for segments still in flight toward this end."""

    def __post_init__(self) -> None:
        self.snd_nxt = self.isn

    def catch_up(self, t: int) -> None:
        """Apply every delivery that arrived by time ``t``."""
        arrived = [p for p in self.pending if p[0] <= t]
        self.pending = [p for p in self.pending if p[0] > t]
        for _, value in sorted(arrived):
            if self.rcv_nxt is None or value > self.rcv_nxt:
                self.rcv_nxt = value


@dataclass
class Path:
    """One client-server path and the capture point on it; holds the captured rows of all its connections."""

    one_way_ms: float = 10.0
    capture_at: float = 0.0
    """0 = capture next to the client, 1 = next to the server, in between = a tap on the path."""
    hops: int = 6
    client_ttl: int = 64
    server_ttl: int = 64
    rows: list[dict[str, Any]] = field(default_factory=list)
    icmp: list[IcmpError] = field(default_factory=list)

    @property
    def delay_ns(self) -> int:
        return int(self.one_way_ms * MS)

    def conn(
        self,
        client: tuple[str, int] = ("10.1.0.5", 40100),
        server: tuple[str, int] = ("10.2.0.9", 8080),
        client_isn: int = 1_000_000,
        server_isn: int = 7_000_000,
    ) -> Conn:
        return Conn(self, End(*client, client_isn, self.client_ttl), End(*server, server_isn, self.server_ttl))

    def to_capture(self, from_client: bool) -> tuple[int, int]:
        """(delay, routers crossed) from the sender to the capture point."""
        share = self.capture_at if from_client else 1.0 - self.capture_at
        return int(self.delay_ns * share), round(self.hops * share)

    def table(self) -> PacketTable:
        rows = sorted(self.rows, key=lambda r: r["ts_ns"])
        table = PacketTable.empty(len(rows))
        for i, row in enumerate(rows):
            row["frame"] = i + 1
            for name, value in row.items():
                if name in ("src", "dst"):
                    hi, lo = parse_addr(value)
                    table[f"{name}_hi"][i] = hi
                    table[f"{name}_lo"][i] = lo
                    table["ip_version"][i] = 6 if ":" in value else 4
                else:
                    table[name][i] = value
        return table

    def write_pcap(self, target: str | os.PathLike[str]) -> int:
        """Write the captured rows as a real pcap (Ethernet, ns timestamps) with `whyreset.ingest.craft`."""
        records = []
        for row in sorted(self.rows, key=lambda r: r["ts_ns"]):
            packet = craft.tcp_packet(
                row["src"],
                row["dst"],
                row["sport"],
                row["dport"],
                seq=row["seq"],
                ack=row["ack"],
                flags=row["flags"],
                window=row["window"],
                payload=b"x" * row["payload_len"],
                mss=row["opt_mss"] or None,
                ttl=row["ttl"],
                ip_id=row["ip_id"] & 0xFFFF,
            )
            records.append((row["ts_ns"], craft.frame(craft.LINKTYPE_ETHERNET, packet)))
        return craft.write_pcap(target, records, nanosecond=True)

    def connections(self) -> list[Connection]:
        return build_connections(self.table(), self.icmp)

    def diagnose_all(self) -> list[tuple[Connection, Finding | None]]:
        conns = self.connections()
        context = build_context(conns, self.icmp)
        return [(c, diagnose(c, context)) for c in conns]

    def only_finding(self) -> Finding | None:
        results = self.diagnose_all()
        assert len(results) == 1, [c.uid for c, _ in results]
        return results[0][1]


@dataclass
class Conn:
    path: Path
    client: End
    server: End

    def ends(self, who: str) -> tuple[End, End]:
        return (self.client, self.server) if who == CLIENT else (self.server, self.client)

    def send(
        self,
        who: str,
        length: int = 0,
        t: int = 0,
        *,
        flags: int = ACK | PSH,
        seq: int | None = None,
        ack: int | None = None,
        deliver: bool = True,
        ttl: int | None = None,
        ip_id: int | None = None,
        advance: bool = True,
        seen_at: int | None = None,
    ) -> int:
        """Send one segment at the sender's time ``t`` (ns after T0); returns its arrival time at the peer.

        ``seen_at`` overrides the capture time (a segment forged by a middlebox between the two)."""
        me, peer = self.ends(who)
        me.catch_up(t)
        if length == 0 and flags == ACK | PSH:
            flags = ACK
        seq_value = me.snd_nxt if seq is None else seq
        ack_value = (me.rcv_nxt or 0) if ack is None else ack
        delay, routers = self.path.to_capture(who == CLIENT)
        me.ip_id += 1
        self.path.rows.append(
            {
                "ts_ns": T0 + (t + delay if seen_at is None else seen_at),
                "src": me.addr,
                "dst": peer.addr,
                "sport": me.port,
                "dport": peer.port,
                "seq": seq_value % (1 << 32),
                "ack": ack_value % (1 << 32) if flags & ACK else 0,
                "flags": flags,
                "payload_len": length,
                "captured_payload": 0,
                "window": 502,
                "ttl": (me.ttl if ttl is None else ttl) - routers,
                "ip_id": me.ip_id if ip_id is None else ip_id,
                "ip_df": True,
                "frame_len": 54 + length,
                "opt_mss": 1460 if flags & SYN else 0,
            }
        )
        end = seq_value + length + (1 if flags & (SYN | FIN) else 0)
        if advance and seq is None:
            me.snd_nxt = max(me.snd_nxt, end)
        arrival = t + self.path.delay_ns
        if deliver and not flags & RST:
            peer.pending.append((arrival, end))
        return arrival

    # ---- the usual moves -----------------------------------------------------------------------------------

    def handshake(self, t: int = 0) -> int:
        """SYN, SYN-ACK, ACK; returns the time the client sent its ACK (it may send data right away)."""
        t1 = self.send(CLIENT, 0, t, flags=SYN)
        t2 = self.send(SERVER, 0, t1, flags=SYN | ACK)
        self.send(CLIENT, 0, t2, flags=ACK)
        return t2

    def exchange(self, t: int, request: int = 120, response: int = 900) -> int:
        """Request, ACK, response, ACK; returns the time the client has received the response and ACKed it."""
        t1 = self.send(CLIENT, request, t)
        t2 = self.send(SERVER, response, t1 + 200_000)
        self.send(CLIENT, 0, t2)
        return t2

    def fin(self, who: str, t: int, **kw: Any) -> int:
        return self.send(who, 0, t, flags=FIN | ACK, **kw)

    def ack(self, who: str, t: int, **kw: Any) -> int:
        return self.send(who, 0, t, flags=ACK, **kw)

    def rst(self, who: str, t: int, *, with_ack: bool = True, **kw: Any) -> int:
        """An active reset: seq = SND.NXT, ack = RCV.NXT (tcp_send_active_reset)."""
        return self.send(who, 0, t, flags=RST | (ACK if with_ack else 0), **kw)

    def reply_rst(self, who: str, t: int, answering_ack: int, **kw: Any) -> int:
        """A reply reset to a segment carrying ACK ``answering_ack``: seq = that ACK, no ACK bit (RFC
        9293)."""
        return self.send(who, 0, t, flags=RST, seq=answering_ack, **kw)

    def client_next_seq_ack(self) -> int:
        """The ACK value the client's next segment will carry about the server (for reply resets)."""
        return self.client.rcv_nxt or 0
