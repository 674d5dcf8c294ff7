"""Build small packet tables segment by segment for the core's unit tests.

`Dialogue` keeps each side's next sequence number, so a test reads like the exchange it describes:
``d.syn(); d.syn_ack(); d.ack(); d.data(CLIENT, 100); d.fin(SERVER)``. Any field can be overridden per
segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whyreset.model import ACK, FIN, PSH, RST, SYN, PacketTable, parse_addr

CLIENT = True
SERVER = False
MS = 1_000_000
S = 1_000_000_000


@dataclass
class Endpoint:
    addr: str
    port: int
    isn: int
    nxt: int = 0
    acked: int = 0  # next byte expected from the peer (what this side acknowledges)
    window: int = 502
    wscale: int = 7
    ttl: int = 64

    def __post_init__(self) -> None:
        self.nxt = self.isn


@dataclass
class Dialogue:
    client: Endpoint = field(default_factory=lambda: Endpoint("10.0.0.1", 40000, 1000))
    server: Endpoint = field(default_factory=lambda: Endpoint("10.0.0.2", 80, 5000))
    ts_ns: int = 1_700_000_000 * S
    step_ns: int = MS
    rows: list[dict[str, Any]] = field(default_factory=list)

    def side(self, from_client: bool) -> tuple[Endpoint, Endpoint]:
        return (self.client, self.server) if from_client else (self.server, self.client)

    def segment(
        self,
        from_client: bool,
        flags: int,
        length: int = 0,
        *,
        seq: int | None = None,
        ack: int | None = None,
        advance: bool = True,
        gap_ns: int | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        me, peer = self.side(from_client)
        self.ts_ns += self.step_ns if gap_ns is None else gap_ns
        seq_value = me.nxt if seq is None else seq
        ack_value = me.acked if ack is None else ack
        row: dict[str, Any] = {
            "frame": len(self.rows) + 1,
            "ts_ns": self.ts_ns,
            "src": me.addr,
            "dst": peer.addr,
            "sport": me.port,
            "dport": peer.port,
            "seq": seq_value % (1 << 32),
            "ack": (ack_value % (1 << 32)) if flags & ACK else 0,
            "flags": flags,
            "payload_len": length,
            "window": me.window,
            "ttl": me.ttl,
        }
        if flags & SYN:
            row["opt_wscale"] = me.wscale
            row["opt_mss"] = 1460
        row.update(extra)
        if advance:
            end = seq_value + (0 if flags & RST else length) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
            me.nxt = max(me.nxt, end)
        self.rows.append(row)
        return row

    # The usual segments
    # -------------------------------------------------------------------------------------------

    def syn(self, **kw: Any) -> dict[str, Any]:
        return self.segment(CLIENT, SYN, **kw)

    def syn_ack(self, **kw: Any) -> dict[str, Any]:
        self.server.acked = self.client.isn + 1
        return self.segment(SERVER, SYN | ACK, **kw)

    def ack(self, from_client: bool = CLIENT, **kw: Any) -> dict[str, Any]:
        self.receive(from_client)
        return self.segment(from_client, ACK, **kw)

    def handshake(self) -> None:
        self.syn()
        self.syn_ack()
        self.ack()

    def data(self, from_client: bool, length: int, **kw: Any) -> dict[str, Any]:
        self.receive(from_client)
        return self.segment(from_client, ACK | PSH, length, **kw)

    def fin(self, from_client: bool, **kw: Any) -> dict[str, Any]:
        self.receive(from_client)
        return self.segment(from_client, FIN | ACK, **kw)

    def rst(self, from_client: bool, with_ack: bool = False, **kw: Any) -> dict[str, Any]:
        return self.segment(from_client, RST | (ACK if with_ack else 0), **kw)

    def receive(self, from_client: bool) -> None:
        """The sender has received everything its peer sent so far (its ACK number catches up)."""
        me, peer = self.side(from_client)
        me.acked = peer.nxt

    def table(self) -> PacketTable:
        return make_table(self.rows)


def make_table(rows: list[dict[str, Any]]) -> PacketTable:
    table = PacketTable.empty(len(rows))
    for i, row in enumerate(rows):
        for name, value in row.items():
            if name in ("src", "dst"):
                hi, lo = parse_addr(value)
                table[f"{name}_hi"][i] = hi
                table[f"{name}_lo"][i] = lo
                table["ip_version"][i] = 6 if ":" in value else 4
            else:
                table[name][i] = value
        table["frame_len"][i] = 54 + row.get("payload_len", 0)
    return table


def concat(*dialogues: Dialogue) -> PacketTable:
    """Merge dialogues in timestamp order and renumber frames (one capture holding several connections)."""
    rows = sorted((row for d in dialogues for row in d.rows), key=lambda r: r["ts_ns"])
    renumbered = [dict(row, frame=i + 1) for i, row in enumerate(rows)]
    return make_table(renumbered)


def as_array(values: list[int]) -> np.ndarray:
    return np.asarray(values, np.int64)
