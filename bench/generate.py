"""Generate a benchmark capture: >= 1,000,000 packets of mixed TCP connections, IPv4 and IPv6.

Every connection follows one of the templates below (normal exchanges, refused, reset after a request, close
with unread data, SYN unanswered, retransmissions then reset, a reset forged on the path, a keep-alive race, a
half-open peer). A template is a short list of packets relative to the connection (who sends, flags, sequence
offset, ack offset, payload length, time offset); numpy broadcasts it over thousands of connections at once,
so the whole file is built with `whyreset.ingest.craft`'s bulk path in seconds.

Two mixes (``--mix``):

* ``stress``: the worst case for a per-connection analysis. 88,000 short connections per million packets,
  half of them abnormal, payload bytes all zero. Every connection costs whyreset its full diagnosis.
* ``web``: what a busy web server's capture looks like. HTTP/1.1 keep-alive exchanges on port 80 and TLS
  records on 443 (payloads carry real request/response text and record headers, so every tool dissects what
  it would dissect on a real capture), responses from 1 to 200 segments, ~5 % abnormal connections (the same
  abnormal templates). About 700 bytes per packet, like the 774 MB per million packets of issue 2's
  reference capture.

    .venv/bin/python bench/generate.py bench/out/bench-1m.pcap --packets 1000000 --seed 1
    .venv/bin/python bench/generate.py bench/out/web-1m.pcap --mix web --packets 1000000 --seed 1
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
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


def _web(responses: tuple[int, ...], rtt: int = 900, think_us: int = 40_000) -> list[Step]:
    """An HTTP/1.1 keep-alive connection: one request per response (of that many MSS segments, the last one
    shorter), the client acknowledging every second segment, then the client closes."""
    request = 420
    steps = _handshake(rtt)
    client, server = 1, 1
    t = rtt + 100
    for segments in responses:
        steps.append(Step(CLIENT, PSH | ACK, client, server, request, t))
        client += request
        t += rtt
        for i in range(segments):
            size = MSS if i < segments - 1 else 517
            steps.append(Step(SERVER, (PSH | ACK) if i == segments - 1 else ACK, server, client, size, t + i * 15))
            server += size
            if i % 2 == 1 or i == segments - 1:
                steps.append(Step(CLIENT, ACK, client, server, 0, t + i * 15 + rtt // 2))
        t += segments * 15 + rtt + think_us
    steps += [
        Step(CLIENT, FIN | ACK, client, server, 0, t),
        Step(SERVER, FIN | ACK, server, client + 1, 0, t + rtt),
        Step(CLIENT, ACK, client + 1, server + 1, 0, t + rtt + 40),
    ]
    return steps


MIXES: dict[str, dict[str, tuple[float, list[Step]]]] = {
    # name: (share of connections, packets)
    "stress": {
        "normal": (0.52, _normal()),
        "refused": (0.10, _refused()),
        "reset_after_request": (0.08, _reset_after_request()),
        "close_with_unread_data": (0.06, _close_with_unread_data()),
        "syn_unanswered": (0.05, _syn_unanswered()),
        "retransmissions_then_reset": (0.05, _retransmissions_then_reset()),
        "middlebox_reset": (0.05, _middlebox_reset()),
        "keepalive_race": (0.05, _keepalive_race()),
        "half_open_peer": (0.04, _half_open_peer()),
    },
    "web": {
        "api_calls": (0.55, _web((1, 2, 1, 3))),
        "page": (0.25, _web((24, 3, 3, 2))),
        "download": (0.15, _web((180,))),
        "refused": (0.01, _refused()),
        "reset_after_request": (0.008, _reset_after_request()),
        "close_with_unread_data": (0.007, _close_with_unread_data()),
        "syn_unanswered": (0.005, _syn_unanswered()),
        "retransmissions_then_reset": (0.005, _retransmissions_then_reset()),
        "middlebox_reset": (0.005, _middlebox_reset()),
        "keepalive_race": (0.005, _keepalive_race()),
        "half_open_peer": (0.005, _half_open_peer()),
    },
}
CONNECTIONS_PER_SECOND = {"stress": 2000, "web": 400}
IPV6_SHARE = 0.2


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


def _template_batch(
    steps: list[Step], conn_ids: npt.NDArray[np.int64], ipv6: bool, rng: np.random.Generator, mix: str
) -> Batch:
    n_conn, n_steps = len(conn_ids), len(steps)
    sender = np.array([s.sender for s in steps])
    flags = np.array([s.flags for s in steps])
    seq_off = np.array([s.seq for s in steps], np.int64)
    ack_off = np.array([s.ack for s in steps], np.int64)
    length = np.array([s.length for s in steps], np.int64)
    t_us = np.array([s.t_us for s in steps], np.int64)
    ttl_override = np.array([s.ttl if s.ttl is not None else 0 for s in steps])

    isn = rng.integers(0, 2**32, size=(n_conn, 2), dtype=np.int64)  # client, server
    start_ns = conn_ids * (1_000_000_000 // CONNECTIONS_PER_SECOND[mix]) + rng.integers(0, 400_000, n_conn)
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
    if mix == "web":
        _write_payloads(frames, steps, server_port == 80, ipv6)
    return Batch(frames, start_ns[rows] + t_us[cols] * 1000)


# -- payload bytes (web mix)
# Every connection of a template batch has the same frame layout (same steps, lengths and header sizes), so
# the batch's bytes are a (connections x bytes per connection) matrix: a step's payload is a column slice,
# written for all connections of one port at once, and its TCP checksum is patched by the payload's
# ones' complement sum (RFC 1624), a constant per step and port.

HTTP_REQUEST = (
    b"GET /api/v1/catalogue/items?page=2&sort=price HTTP/1.1\r\nHost: shop.example\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) bench/1.0\r\nAccept: application/json\r\n"
    b"Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nX-Request-Id: "
)
HTTP_BODY_TEXT = b'{"id": 1042, "name": "espresso cup", "price": 12.5, "tags": ["kitchen", "ceramic"]},\n'


def _http_request(size: int) -> bytes:
    return (HTTP_REQUEST + b"0" * max(0, size - len(HTTP_REQUEST) - 4) + b"\r\n\r\n")[-size:]


def _http_response_head(size: int, body_total: int) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\n"
        b"Connection: keep-alive\r\nContent-Length: %d\r\n\r\n"
    )
    header = head % body_total
    header = head % (body_total - len(header))
    return (header + _repeat(HTTP_BODY_TEXT, size - len(header)))[:size]


def _repeat(text: bytes, size: int) -> bytes:
    return (text * (size // len(text) + 1))[: max(size, 0)]


def _tls_record(size: int, filler: bytes) -> bytes:
    """A TLS 1.2/1.3 application-data record filling the segment (header + opaque bytes)."""
    return bytes((0x17, 0x03, 0x03)) + (size - 5).to_bytes(2, "big") + filler[: size - 5]


def _step_payloads(steps: list[Step], http: bool) -> list[bytes]:
    """Payload bytes of every step, for a port-80 (HTTP) or port-443 (TLS) connection."""
    filler = np.random.default_rng(443).integers(0, 256, MSS, dtype=np.uint8).tobytes()
    payloads: list[bytes] = []
    for index, step in enumerate(steps):
        if step.length == 0 or step.flags & RST:
            payloads.append(b"")
        elif not http:
            payloads.append(_tls_record(step.length, filler))
        elif step.sender == CLIENT:
            payloads.append(_http_request(step.length))
        elif _starts_response(steps, index):
            payloads.append(_http_response_head(step.length, _response_length(steps, index)))
        else:
            payloads.append(_repeat(HTTP_BODY_TEXT, step.length))
    return payloads


def _starts_response(steps: list[Step], index: int) -> bool:
    earlier = [s for s in steps[:index] if s.length and not s.flags & RST]
    return not earlier or earlier[-1].sender == CLIENT


def _response_length(steps: list[Step], index: int) -> int:
    """Bytes of the server's data steps from ``index`` up to the client's next data."""
    total = 0
    for step in steps[index:]:
        if step.length and step.sender == CLIENT:
            break
        if step.sender == SERVER and not step.flags & RST:
            total += step.length
    return total


def _write_payloads(frames: FrameBatch, steps: list[Step], http: npt.NDArray[np.bool_], ipv6: bool) -> None:
    n_conn = len(http)
    if n_conn == 0:
        return
    sizes = frames.lengths[: len(steps)]
    per_conn = int(sizes.sum())
    matrix = frames.data.reshape(n_conn, per_conn)
    header_len = 14 + (40 if ipv6 else 20) + 20
    checksum_at = 14 + (40 if ipv6 else 20) + 16
    step_starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    for use_http in (True, False):
        rows = np.flatnonzero(http == use_http)
        if not len(rows):
            continue
        for step_start, payload in zip(step_starts.tolist(), _step_payloads(steps, use_http), strict=True):
            if not payload:
                continue
            at = step_start + header_len
            matrix[rows, at : at + len(payload)] = np.frombuffer(payload, np.uint8)
            field = matrix[rows, step_start + checksum_at : step_start + checksum_at + 2]
            old = field[:, 0].astype(np.int64) << 8 | field[:, 1]
            new = _ones_complement_add(old, _word_sum(payload))
            matrix[rows, step_start + checksum_at] = new >> 8
            matrix[rows, step_start + checksum_at + 1] = new & 0xFF


def _word_sum(payload: bytes) -> int:
    padded = payload + b"\0" * (len(payload) % 2)
    return int(np.frombuffer(padded, ">u2").sum(dtype=np.int64))


def _ones_complement_add(checksum: npt.NDArray[np.int64], words: int) -> npt.NDArray[np.int64]:
    """The checksum of a segment whose data words grew by ``words`` (RFC 1624: HC' = ~(~HC + m'))."""
    total = (~checksum & 0xFFFF) + words
    for _ in range(3):
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def generate(
    packets: int, seed: int, mix: str = "stress"
) -> tuple[FrameBatch, npt.NDArray[np.int64], dict[str, int]]:
    """Frames sorted by time, their timestamps (ns) and the number of connections per template."""
    templates = MIXES[mix]
    rng = np.random.default_rng(seed)
    mean_len = sum(share * len(steps) for share, steps in templates.values())
    n_connections = int(np.ceil(packets / mean_len))
    shares = [share for share, _ in templates.values()]
    kinds = rng.choice(len(templates), size=n_connections, p=shares)
    sizes = np.array([len(steps) for _, steps in templates.values()])
    while (deficit := packets - int(sizes[kinds].sum())) > 0:  # the draw fell short of the packet count
        more = rng.choice(len(templates), size=int(np.ceil(deficit / mean_len)) + 1, p=shares)
        kinds = np.concatenate([kinds, more])
        n_connections = len(kinds)
    ipv6 = rng.random(n_connections) < IPV6_SHARE
    batches: list[Batch] = []
    counts: dict[str, int] = {}
    for kind, (name, (_share, steps)) in enumerate(templates.items()):
        for family in (False, True):
            ids = np.flatnonzero((kinds == kind) & (ipv6 == family)).astype(np.int64)
            if len(ids):
                batches.append(_template_batch(steps, ids, family, rng, mix))
        counts[name] = int(np.count_nonzero(kinds == kind))
    # IPv4 and IPv6 frames come from separate bulk calls: same link type, so they concatenate; then sort by
    # time.
    frames = FrameBatch.concat([b.frames for b in batches])
    ts_ns = np.concatenate([b.ts_ns for b in batches]) + 1_700_000_000 * 1_000_000_000
    order = np.argsort(ts_ns, kind="stable")
    return frames.take(order), ts_ns[order], counts


def write_capture(path: str | Path, packets: int, seed: int, mix: str = "stress") -> tuple[int, dict[str, int]]:
    """Generate a mix and write it to ``path`` as a pcap; the packets written and the connections per template."""
    frames, ts_ns, counts = generate(packets, seed, mix)
    write_pcap_bulk(path, ts_ns, frames)
    return len(frames), counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="pcap file to write")
    parser.add_argument("--packets", type=int, default=1_000_000, help="at least this many packets")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mix", choices=sorted(MIXES), default="stress", help="connection mix (see above)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    written, counts = write_capture(args.output, args.packets, args.seed, args.mix)
    elapsed = time.perf_counter() - started
    total = sum(counts.values())
    print(f"{args.output}: {written} packets, {total} connections in {elapsed:.1f} s", file=sys.stderr)
    for name, count in counts.items():
        print(f"  {name:28} {count:8} connections", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
