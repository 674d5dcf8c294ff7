"""tshark as an oracle: its TCP conversation table and per-packet fields, parsed; ours aggregated alike.

What tshark calls a TCP conversation: ``-z conv,tcp`` adds each packet to the conversation of its
``tcp.stream`` (epan/dissectors/packet-tcp.c, ``tcpip_conversation_packet`` passes ``th_stream`` as the
conversation id), so a 4-tuple reused by a new connection normally gets a row of its own. Wireshark's
port-reuse rules and ours need not agree on every odd capture, so the comparison of packet and byte counts is
made **per 4-tuple**: tshark's rows and our connections are each summed per unordered 4-tuple, then compared
direction by direction. Counting connections is a separate check (`tcp.stream` count against ours).

The table prints byte counts with Wireshark's ``format_size`` (wsutil/str_util.c): exact below 10,000 (``9120
bytes``), then integer-divided with an SI prefix (``10 kB``, ``183 kB``, ``12 MB``). `format_size` below
reproduces it, so our exact counts are compared with tshark's text exactly; the per-packet fields give exact
bytes.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from whyreset.core.connection import Connection

Endpoint = tuple[str, int]
TupleKey = frozenset[Endpoint]

_UNITS = ("bytes", "B", "kB", "MB", "GB", "TB")


@dataclass(slots=True)
class DirectionCount:
    """Packets and bytes one endpoint sent."""

    frames: int = 0
    bytes: int = 0


@dataclass(slots=True)
class TupleCounts:
    """Counts of one 4-tuple, per sending endpoint, and how many conversations/connections made them."""

    by_sender: dict[Endpoint, DirectionCount] = field(default_factory=lambda: defaultdict(DirectionCount))
    conversations: int = 0
    malformed_tcp: dict[Endpoint, DirectionCount] = field(default_factory=lambda: defaultdict(DirectionCount))
    """Frames whose TCP header tshark could not dissect to the end ("Malformed Packet: TCP"): they get a
    tcp.stream but never reach the conversation tap (the dissector throws before queueing it)."""


@dataclass(frozen=True, slots=True)
class ConvRow:
    """One row of ``tshark -q -z conv,tcp``."""

    a: Endpoint
    b: Endpoint
    frames_b_to_a: int
    bytes_b_to_a: str
    """As printed (``550 bytes``, ``170 kB``)."""
    frames_a_to_b: int
    bytes_a_to_b: str


def canonical_host(text: str) -> str:
    return str(ipaddress.ip_address(text))


def split_endpoint(text: str) -> Endpoint:
    """``10.0.0.1:80`` or ``2001:db8::1:443`` (IPv6 printed without brackets): split at the last colon."""
    host, _, port = text.rpartition(":")
    return canonical_host(host.strip("[]")), int(port)


def format_size(size: int) -> str:
    """Wireshark's format_size(size, FORMAT_SIZE_UNIT_BYTES, FORMAT_SIZE_PREFIX_SI), as tshark 4.x prints."""
    for power, prefix in ((4, "T"), (3, "G"), (2, "M"), (1, "k")):
        if size // 1000**power >= 10:
            return f"{size // 1000**power} {prefix}B"
    return f"{size} bytes"


def parse_conv_table(text: str) -> list[ConvRow]:
    """Rows of the table; header, separator and filter lines are ignored, any other line is an error."""
    rows: list[ConvRow] = []
    for line in text.splitlines():
        if "<->" not in line:
            continue
        left, right = line.split("<->", 1)
        tokens = right.split()
        b = split_endpoint(tokens[0])
        values = _sized_values(tokens[1:])
        if len(values) < 6:
            raise ValueError(f"unexpected conv,tcp row: {line!r}")
        rows.append(
            ConvRow(
                a=split_endpoint(left.strip()),
                b=b,
                frames_b_to_a=int(values[0]),
                bytes_b_to_a=values[1],
                frames_a_to_b=int(values[2]),
                bytes_a_to_b=values[3],
            )
        )
    return rows


def _sized_values(tokens: list[str]) -> list[str]:
    """Group ``550 bytes`` / ``170 kB`` into one value; frame counts and times stay single tokens."""
    values: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if index + 1 < len(tokens) and tokens[index + 1] in _UNITS:
            values.append(f"{token} {tokens[index + 1]}")
            index += 2
        else:
            values.append(token)
            index += 1
    return values


def tshark(*args: str) -> str:
    result = subprocess.run(["tshark", "-n", *args], capture_output=True, text=True, timeout=300, check=True)
    return result.stdout


def tshark_conversations(path: str) -> list[ConvRow]:
    return parse_conv_table(tshark("-q", "-z", "conv,tcp", "-r", path))


def tshark_stream_counts(path: str) -> tuple[dict[TupleKey, TupleCounts], int]:
    """Exact per-4-tuple counts from per-packet fields, and the number of distinct ``tcp.stream`` values.

    TCP headers quoted inside ICMP errors are left out (``!icmp``): they are not segments of the connection.
    """
    fields = (
        "tcp.stream",
        "ip.src",
        "ipv6.src",
        "tcp.srcport",
        "ip.dst",
        "ipv6.dst",
        "tcp.dstport",
        "frame.len",
        "frame.number",
    )
    malformed_tcp = _frames_malformed_in_tcp(path)
    args = ["-r", path, "-Y", "tcp && !icmp && !icmpv6", "-T", "fields", "-E", "occurrence=l"]
    for name in fields:
        args += ["-e", name]
    counts: dict[TupleKey, TupleCounts] = defaultdict(TupleCounts)
    streams: dict[TupleKey, set[int]] = defaultdict(set)
    for line in tshark(*args).splitlines():
        cells = line.split("\t")
        cells += [""] * (len(fields) - len(cells))  # tshark drops trailing empty fields
        stream, src4, src6, sport, dst4, dst6, dport, length, number = cells
        if not stream:
            continue
        src = (canonical_host(src6 or src4), int(sport))
        dst = (canonical_host(dst6 or dst4), int(dport))
        key = frozenset((src, dst))
        direction = counts[key].by_sender[src]
        direction.frames += 1
        direction.bytes += int(length)
        streams[key].add(int(stream))
        if int(number) in malformed_tcp:
            counts[key].malformed_tcp[src].frames += 1
            counts[key].malformed_tcp[src].bytes += int(length)
    for key, ids in streams.items():
        counts[key].conversations = len(ids)
    return dict(counts), sum(len(ids) for ids in streams.values())


def tshark_windows(path: str) -> dict[int, int]:
    """Wireshark's calculated window (``tcp.window_size``) of every TCP frame, by frame number."""
    lines = tshark("-r", path, "-Y", "tcp", "-T", "fields", "-e", "frame.number", "-e", "tcp.window_size")
    windows = {}
    for line in lines.splitlines():
        frame, _, window = line.partition("\t")
        if window:  # an ICMP error quoting TCP shows the quoted header's: whyreset has no such row to compare
            windows[int(frame)] = int(window.split(",")[0])
    return windows


def _frames_malformed_in_tcp(path: str) -> set[int]:
    """Frames whose TCP header dissection failed ("[Malformed Packet: TCP]"), not a reassembly above it."""
    lines = tshark("-r", path, "-Y", "_ws.malformed", "-T", "fields", "-e", "frame.number", "-e", "_ws.malformed")
    return {int(line.split("\t")[0]) for line in lines.splitlines() if "Malformed Packet: TCP" in line}


def conv_rows_by_tuple(rows: Iterable[ConvRow]) -> dict[TupleKey, list[ConvRow]]:
    grouped: dict[TupleKey, list[ConvRow]] = defaultdict(list)
    for row in rows:
        grouped[frozenset((row.a, row.b))].append(row)
    return dict(grouped)


def our_counts(connections: Iterable[Connection]) -> dict[TupleKey, TupleCounts]:
    counts: dict[TupleKey, TupleCounts] = defaultdict(TupleCounts)
    for conn in connections:
        orig = (canonical_host(conn.orig_h), conn.orig_p)
        resp = (canonical_host(conn.resp_h), conn.resp_p)
        entry = counts[frozenset((orig, resp))]
        entry.conversations += 1
        for endpoint, stats in ((orig, conn.orig), (resp, conn.resp)):
            entry.by_sender[endpoint].frames += stats.packets
            entry.by_sender[endpoint].bytes += stats.frame_bytes
    return dict(counts)


def compare_with_conv_table(
    rows: list[ConvRow], ours: dict[TupleKey, TupleCounts], exact: dict[TupleKey, TupleCounts] | None = None
) -> list[str]:
    """Differences between tshark's table (summed per 4-tuple) and our connections; empty when they agree.

    ``exact`` (`tshark_stream_counts`) names the frames tshark dissected as malformed TCP: the table leaves
    them out, so they are taken off our counts before comparing.
    """
    problems: list[str] = []
    grouped = conv_rows_by_tuple(rows)
    for key in sorted(set(grouped) - set(ours), key=sorted):
        problems.append(f"tshark has {sorted(key)}, we do not")
    for key in sorted(set(ours) - set(grouped), key=sorted):
        problems.append(f"we have {sorted(key)}, tshark does not")
    for key in sorted(set(grouped) & set(ours), key=sorted):
        exact_bytes: dict[Endpoint, list[str]] = defaultdict(list)
        frames: dict[Endpoint, int] = defaultdict(int)
        for row in grouped[key]:
            frames[row.a] += row.frames_a_to_b
            frames[row.b] += row.frames_b_to_a
            exact_bytes[row.a].append(row.bytes_a_to_b)
            exact_bytes[row.b].append(row.bytes_b_to_a)
        for endpoint in key:
            counted = ours[key].by_sender.get(endpoint, DirectionCount())
            skipped = exact[key].malformed_tcp.get(endpoint) if exact and key in exact else None
            skipped = skipped or DirectionCount()
            our = DirectionCount(counted.frames - skipped.frames, counted.bytes - skipped.bytes)
            if frames[endpoint] != our.frames:
                problems.append(f"{sorted(key)} from {endpoint}: tshark {frames[endpoint]} frames, ours {our.frames}")
            if len(grouped[key]) == 1 and exact_bytes[endpoint][0] != format_size(our.bytes):
                problems.append(f"{sorted(key)} from {endpoint}: tshark {exact_bytes[endpoint][0]}, ours {our.bytes} B")
    return problems


def compare_exact(theirs: dict[TupleKey, TupleCounts], ours: dict[TupleKey, TupleCounts]) -> list[str]:
    """Exact packet and byte counts per 4-tuple and direction (tshark per-packet fields vs ours)."""
    problems: list[str] = []
    for key in sorted(set(theirs) | set(ours), key=sorted):
        for endpoint in key:
            a = theirs.get(key, TupleCounts()).by_sender.get(endpoint, DirectionCount())
            b = ours.get(key, TupleCounts()).by_sender.get(endpoint, DirectionCount())
            if (a.frames, a.bytes) != (b.frames, b.bytes):
                problems.append(
                    f"{sorted(key)} from {endpoint}: tshark {a.frames}/{a.bytes}B, ours {b.frames}/{b.bytes}B"
                )
    return problems


def sample_conv_output() -> str:
    """tshark 4.0's output on suricata-tcp-fastopen-01.pcap plus an IPv6 row (for the parser's own tests)."""
    return "\n".join(
        [
            "=" * 80,
            "TCP Conversations",
            "Filter:<No Filter>",
            "                                                           |       <-      | |       ->      |",
            "                                                           | Frames  Bytes | | Frames  Bytes |",
            "10.99.99.1:55533           <-> 10.99.99.45:80                   5 550 bytes       3 275 bytes"
            "       8 825 bytes     0.000000000         0.0071",
            "2001:db8:200::1:10002      <-> 2001:db8:100::3:443              8 9280 bytes       8 912 bytes"
            "      16 10 kB         0.001210027         0.0044",
            "=" * 80,
        ]
    )
