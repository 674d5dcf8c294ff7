"""A large synthetic packet table built with numpy, for the tracker's speed and chunking tests.

Each connection follows one template (handshake, request, a response of ``segments`` data packets with ACKs,
then a clean close or a reset), with its own addresses, ports, ISNs (some near 2**32 to cross the wrap) and
start time, so connections overlap in capture order like real traffic.
"""

from __future__ import annotations

import itertools

import numpy as np

from whyreset.model import ACK, FIN, PSH, RST, SYN, PacketTable, ipv4_to_halves

CLIENT, SERVER = 0, 1


def _template(segments: int, reset: bool) -> list[tuple[int, int, int, int, int]]:
    """(sender, flags, seq offset, ack offset, length); offsets relative to each side's ISN."""
    steps = [(CLIENT, SYN, 0, 0, 0), (SERVER, SYN | ACK, 0, 1, 0), (CLIENT, ACK, 1, 1, 0)]
    steps.append((CLIENT, PSH | ACK, 1, 1, 200))
    seq = 1
    for _ in range(segments):
        steps.append((SERVER, ACK, seq, 201, 1448))
        seq += 1448
        steps.append((CLIENT, ACK, 201, seq, 0))
    if reset:
        steps.append((SERVER, RST | ACK, seq, 201, 0))
    else:
        steps += [
            (SERVER, FIN | ACK, seq, 201, 0),
            (CLIENT, FIN | ACK, 201, seq + 1, 0),
            (SERVER, ACK, seq + 1, 202, 0),
        ]
    return steps


def synthetic_table(packets: int, segments: int = 8, seed: int = 1) -> PacketTable:
    """About ``packets`` rows: clean connections and, every fifth, one reset by the server."""
    rng = np.random.default_rng(seed)
    clean, reset = _template(segments, False), _template(segments, True)
    per_pair = len(clean) * 4 + len(reset)
    groups = max(1, packets // per_pair)
    templates = [clean] * 4 + [reset]
    pieces = []
    for t_index, template in enumerate(templates):
        steps = np.asarray(template, np.int64)
        count = groups
        k = len(steps)
        conn = np.repeat(np.arange(count) * 5 + t_index, k)
        step = np.tile(np.arange(k), count)
        pieces.append((conn, steps[step]))
    conn = np.concatenate([p[0] for p in pieces])
    steps = np.concatenate([p[1] for p in pieces])
    total_conns = groups * 5
    client_ip = (10 << 24) + rng.integers(1, 2**16, total_conns)
    server_ip = (192 << 24) + (168 << 16) + rng.integers(1, 255, total_conns)
    client_port = rng.integers(1024, 65535, total_conns)
    client_isn = rng.integers(0, 2**32, total_conns)
    client_isn[::7] = 2**32 - 500  # cross the wrap
    server_isn = rng.integers(0, 2**32, total_conns)
    start_ns = 1_700_000_000 * 10**9 + np.sort(rng.integers(0, 60 * 10**9, total_conns))
    sender, flags, seq_off, ack_off, length = steps.T
    from_client = sender == CLIENT
    n = len(conn)
    # Position of each packet within its connection: rows of one connection are contiguous here.
    first_of_connection = np.concatenate(([True], np.diff(conn) != 0))
    step_index = np.arange(n) - np.maximum.accumulate(np.where(first_of_connection, np.arange(n), 0))
    ts = start_ns[conn] + step_index * 400_000
    order = np.lexsort((np.arange(n), ts))
    table = PacketTable.empty(n)
    c_ip_hi, c_ip_lo = ipv4_to_halves(client_ip[conn].astype(np.uint32))
    s_ip_hi, s_ip_lo = ipv4_to_halves(server_ip[conn].astype(np.uint32))
    table["frame"][:] = np.arange(1, n + 1)
    table["ts_ns"][:] = ts[order]
    table["ip_version"][:] = 4
    table["src_hi"][:] = np.where(from_client, c_ip_hi, s_ip_hi)[order]
    table["src_lo"][:] = np.where(from_client, c_ip_lo, s_ip_lo)[order]
    table["dst_hi"][:] = np.where(from_client, s_ip_hi, c_ip_hi)[order]
    table["dst_lo"][:] = np.where(from_client, s_ip_lo, c_ip_lo)[order]
    table["sport"][:] = np.where(from_client, client_port[conn], 443)[order]
    table["dport"][:] = np.where(from_client, 443, client_port[conn])[order]
    own_isn = np.where(from_client, client_isn[conn], server_isn[conn])
    peer_isn = np.where(from_client, server_isn[conn], client_isn[conn])
    table["seq"][:] = ((own_isn + seq_off) % 2**32)[order]
    table["ack"][:] = np.where(flags & ACK, (peer_isn + ack_off) % 2**32, 0)[order]
    table["flags"][:] = flags[order]
    table["window"][:] = 502
    table["payload_len"][:] = length[order]
    table["captured_payload"][:] = length[order]
    table["frame_len"][:] = (54 + length)[order]
    table["ttl"][:] = np.where(from_client, 64, 57)[order]
    table["opt_wscale"][:] = np.where(flags & SYN, 7, -1)[order]
    table["opt_mss"][:] = np.where(flags & SYN, 1460, 0)[order]
    return table


def split(table: PacketTable, chunks: int) -> list[PacketTable]:
    edges = np.linspace(0, len(table), chunks + 1).astype(np.int64)
    return [table.take(slice(int(a), int(b))) for a, b in itertools.pairwise(edges)]
