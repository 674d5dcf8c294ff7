"""Generate the benchmark capture: >= 1,000,000 packets of mixed TCP connections, IPv4 and IPv6.

Every connection follows one of the templates below (a normal exchange, refused, reset after a request, close
with unread data, SYN unanswered, retransmissions then reset, a reset forged on the path, a keep-alive race, a
half-open peer). A template is a short list of packets relative to the connection (who sends, flags, sequence
offset, ack offset, payload length, time offset); numpy broadcasts it over thousands of connections at once,
so the whole file is built with `whyreset.ingest.craft`'s bulk path in seconds.

    .venv/bin/python bench/generate.py bench/out/bench.pcap --packets 1000000 --seed 1
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from whyreset.ingest.craft import FrameBatch, bulk_tcp_frames, write_pcap_bulk

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
CLIENT, SERVER = 0, 1
MSS = 1448
SERVER_TTL = 57  # servers look 7 hops away from the capture point
CLIENT_TTL = 64
PATH_TTL = 250  # what a middlebox near the capture puts on the RST it forges


@dataclass(frozen=True, slots=True)
class Step:
    """One packet of a template."""

    sender: int
    """CLIENT or SERVER."""
    flags: int
    seq: int
    """Offset from the sender's ISN (1 = first data byte)."""
    ack: int
    """Offset from the receiver's ISN (ignored without ACK)."""
    length: int
    """Payload bytes."""
    t_us: int
    """Time from the connection's first packet, microseconds."""
    ttl: int | None = None
    """Override of the sender's usual TTL (a forged RST)."""


def _handshake(rtt: int) -> list[Step]:
    return [
        Step(CLIENT, SYN, 0, 0, 0, 0),
        Step(SERVER, SYN | ACK, 0, 1, 0, rtt),
        Step(CLIENT, ACK, 1, 1, 0, rtt + 50),
    ]


def _normal(rtt: int = 800, segments: int = 6) -> list[Step]:
    request = 320
    steps = _handshake(rtt)
    steps.append(Step(CLIENT, PSH | ACK, 1, 1, request, rtt + 100))
    t = 2 * rtt + 200
    for i in range(segments):
        steps.append(Step(SERVER, ACK, 1 + i * MSS, 1 + request, MSS, t + i * 20))
        if i % 2 == 1:
            steps.append(Step(CLIENT, ACK, 1 + request, 1 + (i + 1) * MSS, 0, t + i * 20 + rtt))
    end = 1 + segments * MSS
    t += segments * 20 + 2 * rtt
    steps += [
        Step(CLIENT, FIN | ACK, 1 + request, end, 0, t),
        Step(SERVER, FIN | ACK, end, 2 + request, 0, t + rtt),
        Step(CLIENT, ACK, 2 + request, end + 1, 0, t + rtt + 40),
    ]
    return steps


def _refused() -> list[Step]:
    return [Step(CLIENT, SYN, 0, 0, 0, 0), Step(SERVER, RST | ACK, 0, 1, 0, 300)]


def _reset_after_request(rtt: int = 900) -> list[Step]:
    return [
        *_handshake(rtt),
        Step(CLIENT, PSH | ACK, 1, 1, 200, rtt + 100),
        Step(SERVER, ACK, 1, 201, 0, 2 * rtt + 100),
        Step(SERVER, RST | ACK, 1, 201, 0, 2 * rtt + 5_000),
    ]


def _close_with_unread_data(rtt: int = 700) -> list[Step]:
    return [
        *_handshake(rtt),
        Step(CLIENT, PSH | ACK, 1, 1, 900, rtt + 100),
        Step(SERVER, ACK, 1, 901, 0, 2 * rtt + 100),
        Step(CLIENT, PSH | ACK, 901, 1, 400, 2 * rtt + 300),
        Step(SERVER, RST | ACK, 1, 1301, 0, 3 * rtt + 300),
    ]


def _syn_unanswered() -> list[Step]:
    return [Step(CLIENT, SYN, 0, 0, 0, i * 1_000_000) for i in range(4)]


def _retransmissions_then_reset(rtt: int = 1000) -> list[Step]:
    steps = [*_handshake(rtt), Step(CLIENT, PSH | ACK, 1, 1, 500, rtt + 100)]
    steps += [Step(CLIENT, PSH | ACK, 1, 1, 500, rtt + 100 + 200_000 * 2**i) for i in range(5)]
    steps.append(Step(CLIENT, RST | ACK, 501, 1, 0, rtt + 100 + 200_000 * 2**6))
    return steps


def _middlebox_reset(rtt: int = 1200) -> list[Step]:
    return [
        *_handshake(rtt),
        Step(CLIENT, PSH | ACK, 1, 1, 150, rtt + 100),
        Step(SERVER, PSH | ACK, 1, 151, 600, 2 * rtt + 100),
        Step(CLIENT, ACK, 151, 601, 0, 2 * rtt + 200),
        # 5 minutes idle, then the client's next request meets an RST that never came from the server (its
        # TTL).
        Step(CLIENT, PSH | ACK, 151, 601, 150, 300_000_000),
        Step(SERVER, RST, 601, 0, 0, 300_000_300, ttl=PATH_TTL),
    ]


def _keepalive_race(rtt: int = 600) -> list[Step]:
    return [
        *_handshake(rtt),
        Step(CLIENT, PSH | ACK, 1, 1, 180, rtt + 100),
        Step(SERVER, PSH | ACK, 1, 181, 700, 2 * rtt + 100),
        Step(CLIENT, ACK, 181, 701, 0, 2 * rtt + 200),
        Step(SERVER, FIN | ACK, 701, 181, 0, 5_000_000),
        Step(CLIENT, PSH | ACK, 181, 701, 180, 5_000_000 + 100),
        Step(CLIENT, ACK, 361, 702, 0, 5_000_000 + 150),
        Step(SERVER, RST, 702, 0, 0, 5_000_000 + rtt),
    ]


def _half_open_peer(rtt: int = 1500) -> list[Step]:
    return [
        *_handshake(rtt),
        Step(CLIENT, PSH | ACK, 1, 1, 90, rtt + 100),
        Step(SERVER, PSH | ACK, 1, 91, 90, 2 * rtt + 100),
        Step(CLIENT, ACK, 91, 91, 0, 2 * rtt + 200),
        Step(CLIENT, PSH | ACK, 91, 91, 90, 60_000_000),
        Step(SERVER, RST, 91, 0, 0, 60_000_000 + rtt),
    ]


TEMPLATES: dict[str, tuple[float, list[Step]]] = {
    # name: (share of connections, packets)
    "normal": (0.52, _normal()),
    "refused": (0.10, _refused()),
    "reset_after_request": (0.08, _reset_after_request()),
    "close_with_unread_data": (0.06, _close_with_unread_data()),
    "syn_unanswered": (0.05, _syn_unanswered()),
    "retransmissions_then_reset": (0.05, _retransmissions_then_reset()),
    "middlebox_reset": (0.05, _middlebox_reset()),
    "keepalive_race": (0.05, _keepalive_race()),
    "half_open_peer": (0.04, _half_open_peer()),
}
IPV6_SHARE = 0.2
CONNECTIONS_PER_SECOND = 2000


@dataclass(slots=True)
class Batch:
    frames: FrameBatch
    ts_ns: npt.NDArray[np.int64]


def _addresses(ids: npt.NDArray[np.int64], ipv6: bool, server: bool) -> npt.NDArray[Any]:
    """Client addresses are unique per 50,000 connections (ports make each 4-tuple unique); servers are
    few."""
    if not ipv6:
        base = 0xC0000200 if server else 0x0A000000  # 192.0.2.0/24 servers, 10.0.0.0/8 clients
        host = ids % 16 + 1 if server else ids // 50_000 + 1
        return (base + host).astype(np.uint32)
    out = np.zeros((len(ids), 16), np.uint8)
    out[:, :4] = (0x20, 0x01, 0x0D, 0xB8)  # 2001:db8::/32 documentation prefix
    out[:, 4] = 1 if server else 2
    host = ids % 16 + 1 if server else ids // 50_000 + 1
    out[:, 12:16] = host.astype(">u4").view(np.uint8).reshape(-1, 4)
    return out


def _template_batch(steps: list[Step], conn_ids: npt.NDArray[np.int64], ipv6: bool, rng: np.random.Generator) -> Batch:
    n_conn, n_steps = len(conn_ids), len(steps)
    sender = np.array([s.sender for s in steps])
    flags = np.array([s.flags for s in steps])
    seq_off = np.array([s.seq for s in steps], np.int64)
    ack_off = np.array([s.ack for s in steps], np.int64)
    length = np.array([s.length for s in steps], np.int64)
    t_us = np.array([s.t_us for s in steps], np.int64)
    ttl_override = np.array([s.ttl if s.ttl is not None else 0 for s in steps])

    isn = rng.integers(0, 2**32, size=(n_conn, 2), dtype=np.int64)  # client, server
    start_ns = conn_ids * (1_000_000_000 // CONNECTIONS_PER_SECOND) + rng.integers(0, 400_000, n_conn)
    client = _addresses(conn_ids, ipv6, server=False)
    server = _addresses(conn_ids, ipv6, server=True)
    client_port = 10_000 + conn_ids % 50_000
    server_port = np.where(conn_ids % 3 == 0, 80, 443)

    # Broadcast the template over the connections: row = connection, column = step; then flatten.
    from_client = np.broadcast_to(sender == CLIENT, (n_conn, n_steps)).reshape(-1)
    rows = np.repeat(np.arange(n_conn), n_steps)
    cols = np.tile(np.arange(n_steps), n_conn)
    sender_isn = np.where(from_client, isn[rows, 0], isn[rows, 1])
    receiver_isn = np.where(from_client, isn[rows, 1], isn[rows, 0])
    step_flags = flags[cols]
    ack = np.where(step_flags & ACK, receiver_isn + ack_off[cols], 0)
    ttl = np.where(ttl_override[cols] > 0, ttl_override[cols], np.where(from_client, CLIENT_TTL, SERVER_TTL))
    addr_c, addr_s = client[rows], server[rows]
    if ipv6:
        src = np.where(from_client[:, None], addr_c, addr_s)
        dst = np.where(from_client[:, None], addr_s, addr_c)
    else:
        src = np.where(from_client, addr_c, addr_s)
        dst = np.where(from_client, addr_s, addr_c)
    frames = bulk_tcp_frames(
        src=src,
        dst=dst,
        sport=np.where(from_client, client_port[rows], server_port[rows]),
        dport=np.where(from_client, server_port[rows], client_port[rows]),
        seq=(sender_isn + seq_off[cols]) & 0xFFFFFFFF,
        ack=ack & 0xFFFFFFFF,
        flags=step_flags,
        window=np.where(from_client, 64240, 65160),
        payload_len=length[cols],
        ttl=ttl,
        ip_id=rng.integers(0, 65536, n_conn * n_steps),
    )
    return Batch(frames, start_ns[rows] + t_us[cols] * 1000)


def generate(packets: int, seed: int) -> tuple[FrameBatch, npt.NDArray[np.int64], dict[str, int]]:
    """Frames sorted by time, their timestamps (ns) and the number of connections per template."""
    rng = np.random.default_rng(seed)
    mean_len = sum(share * len(steps) for share, steps in TEMPLATES.values())
    n_connections = int(np.ceil(packets / mean_len))
    kinds = rng.choice(len(TEMPLATES), size=n_connections, p=[share for share, _ in TEMPLATES.values()])
    ipv6 = rng.random(n_connections) < IPV6_SHARE
    batches: list[Batch] = []
    counts: dict[str, int] = {}
    for kind, (name, (_share, steps)) in enumerate(TEMPLATES.items()):
        for family in (False, True):
            ids = np.flatnonzero((kinds == kind) & (ipv6 == family)).astype(np.int64)
            if len(ids):
                batches.append(_template_batch(steps, ids, family, rng))
        counts[name] = int(np.count_nonzero(kinds == kind))
    # IPv4 and IPv6 frames come from separate bulk calls: same link type, so they concatenate; then sort by
    # time.
    frames = FrameBatch.concat([b.frames for b in batches])
    ts_ns = np.concatenate([b.ts_ns for b in batches]) + 1_700_000_000 * 1_000_000_000
    order = np.argsort(ts_ns, kind="stable")
    return frames.take(order), ts_ns[order], counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="pcap file to write")
    parser.add_argument("--packets", type=int, default=1_000_000, help="at least this many packets")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    frames, ts_ns, counts = generate(args.packets, args.seed)
    write_pcap_bulk(args.output, ts_ns, frames)
    elapsed = time.perf_counter() - started
    total = sum(counts.values())
    print(f"{args.output}: {len(frames)} packets, {total} connections in {elapsed:.1f} s", file=sys.stderr)
    for name, count in counts.items():
        print(f"  {name:28} {count:8} connections", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
