"""The packet table: every TCP segment of a capture as numpy columns, plus the side tables a reader fills.

This is the contract between the readers (pcap, pcapng, tcpdump text) and the core. Readers build it with offset walks
and numpy gathers; the core groups it by connection. One row per TCP segment, in capture order.

Addresses are stored as two uint64 halves of the 128-bit IPv6 address; IPv4 addresses are IPv4-mapped
(``::ffff:a.b.c.d``), so one pair of columns serves both families and sorts/groups with plain integer operations.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

# TCP flag bits as they sit in the 9 low bits of the TCP header's offset/flags word.
FIN = 0x001
SYN = 0x002
RST = 0x004
PSH = 0x008
ACK = 0x010
URG = 0x020
ECE = 0x040
CWR = 0x080
NS = 0x100

IPV4_MAPPED_HI = np.uint64(0)
IPV4_MAPPED_LO_PREFIX = 0xFFFF << 32
"""High half 0 and low half ``0x0000ffff_xxxxxxxx``: an IPv4-mapped IPv6 address (RFC 4291 2.5.5.2)."""

SACK_MAX_BLOCKS = 4

Array = npt.NDArray[Any]
I64 = npt.NDArray[np.int64]

# Column name -> dtype. The single source of truth for the table's schema (docs and tests read it).
PACKET_COLUMNS: dict[str, np.dtype[Any]] = {
    "frame": np.dtype(np.uint64),  # 1-based record number in the capture (tshark's frame.number)
    "ts_ns": np.dtype(np.int64),  # capture timestamp, integer nanoseconds since the epoch
    "iface": np.dtype(np.uint16),  # pcapng interface id (0 for pcap and text)
    "frame_len": np.dtype(np.uint32),  # original length on the wire (pcap orig_len), as tshark counts bytes
    "ip_version": np.dtype(np.uint8),  # 4 or 6
    # IP packet length on the wire: IPv4 total length; IPv6 40 + payload length (extension headers included).
    # 0 when a reader cannot know it (the core then estimates it from the TCP header and payload).
    "ip_len": np.dtype(np.uint32),
    "src_hi": np.dtype(np.uint64),
    "src_lo": np.dtype(np.uint64),
    "dst_hi": np.dtype(np.uint64),
    "dst_lo": np.dtype(np.uint64),
    "ttl": np.dtype(np.uint8),  # IPv4 TTL / IPv6 hop limit
    "ip_id": np.dtype(np.uint32),  # IPv4 identification; IPv6 fragment id or 0
    "ip_df": np.dtype(np.bool_),  # IPv4 don't-fragment bit (False for IPv6)
    "sport": np.dtype(np.uint16),
    "dport": np.dtype(np.uint16),
    "seq": np.dtype(np.uint32),
    "ack": np.dtype(np.uint32),
    "flags": np.dtype(np.uint16),  # FIN..NS bits above
    "window": np.dtype(np.uint16),  # raw window field (unscaled)
    "payload_len": np.dtype(np.uint32),  # TCP payload length on the wire (from IP lengths, not the capture)
    "captured_payload": np.dtype(np.uint32),  # payload bytes present in the file (< payload_len when cut)
    "truncated": np.dtype(np.bool_),  # the record was cut by snaplen before the end of the segment
    "opt_mss": np.dtype(np.uint16),  # 0 when absent
    "opt_wscale": np.dtype(np.int8),  # -1 when absent
    "opt_sack_perm": np.dtype(np.bool_),
    "opt_has_ts": np.dtype(np.bool_),
    "opt_ts_val": np.dtype(np.uint32),
    "opt_ts_ecr": np.dtype(np.uint32),
    "sack_count": np.dtype(np.uint8),  # number of SACK blocks (0..4)
}
SACK_COLUMN = "sack_blocks"
"""Extra 2-D column, shape (n, 4, 2) uint32: (left, right) edges of up to four SACK blocks."""


@dataclass(slots=True)
class PacketTable:
    """Columns of TCP segments. All arrays have the same length; ``sack_blocks`` has shape (n, 4, 2)."""

    columns: dict[str, Array]

    def __post_init__(self) -> None:
        n = None
        for name in (*PACKET_COLUMNS, SACK_COLUMN):
            if name not in self.columns:
                raise ValueError(f"packet table lacks column {name!r}")
            length = len(self.columns[name])
            if n is None:
                n = length
            elif length != n:
                raise ValueError(f"column {name!r} has {length} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.columns["frame"])

    def __getitem__(self, name: str) -> Array:
        return self.columns[name]

    def row_range(self) -> tuple[dict[str, Array], int, int]:
        """Columns holding these rows, and the rows' range in them (`LazyRows` answers without slicing)."""
        return self.columns, 0, len(self)

    @classmethod
    def empty(cls, n: int = 0) -> PacketTable:
        """A table of ``n`` zeroed rows (absent options marked absent), for readers to fill column by column."""
        cols: dict[str, Array] = {name: np.zeros(n, dtype) for name, dtype in PACKET_COLUMNS.items()}
        cols["opt_wscale"][:] = -1
        cols[SACK_COLUMN] = np.zeros((n, SACK_MAX_BLOCKS, 2), np.uint32)
        return cls(cols)

    @classmethod
    def concat(cls, tables: list[PacketTable]) -> PacketTable:
        if not tables:
            return cls.empty()
        if len(tables) == 1:
            return tables[0]
        return cls({name: np.concatenate([t.columns[name] for t in tables]) for name in tables[0].columns})

    def take(self, index: Array | slice) -> PacketTable:
        """Rows selected by an integer index array, boolean mask or slice (a slice gives views, no copy)."""
        return PacketTable({name: col[index] for name, col in self.columns.items()})

    @property
    def nbytes(self) -> int:
        return sum(col.nbytes for col in self.columns.values())


class LazyRows(PacketTable):
    """Rows ``start:stop`` of a larger table's columns, sliced on first access.

    Most connections' rows are never read (clean ones), and a connection held until the end of a capture should
    cost two integers until someone looks; the slices, once made, are numpy views (no copy)."""

    __slots__ = ("_cache", "_source", "_start", "_stop")

    def __init__(self, source: dict[str, Array], start: int, stop: int) -> None:
        self._source = source
        self._start = start
        self._stop = stop
        self._cache: dict[str, Array] | None = None

    @property
    def columns(self) -> dict[str, Array]:
        if self._cache is None:
            self._cache = {name: column[self._start : self._stop] for name, column in self._source.items()}
        return self._cache

    @columns.setter
    def columns(self, value: dict[str, Array]) -> None:
        self._cache = value

    def __len__(self) -> int:
        return self._stop - self._start

    def row_range(self) -> tuple[dict[str, Array], int, int]:
        """The larger table's columns and these rows' range in them, without slicing: a reader of a few
        columns slices only those (first access to `columns` slices every one)."""
        if self._cache is None:
            return self._source, self._start, self._stop
        return self._cache, 0, self._stop - self._start


def gather_plan(ranges: Sequence[tuple[Any, int, int]], new_starts: I64) -> list[tuple[Any, I64, I64, I64]]:
    """Rows ``start:stop`` of several sources moved to ``new_starts``: per distinct source (by identity), the
    indexes of its ranges in ``ranges``, the rows to take from it and the rows they go to."""
    count = len(ranges)
    starts = np.fromiter((start for _, start, _ in ranges), np.int64, count)
    sizes = np.fromiter((stop - start for _, start, stop in ranges), np.int64, count)
    members: dict[int, list[int]] = {}
    for index, (source, _, _) in enumerate(ranges):
        members.setdefault(id(source), []).append(index)
    plan = []
    for indexes in members.values():
        numbers = np.asarray(indexes, np.int64)
        plan.append(
            (
                ranges[indexes[0]][0],
                numbers,
                ranges_index(starts[numbers], sizes[numbers]),
                ranges_index(new_starts[numbers], sizes[numbers]),
            )
        )
    return plan


def ranges_index(starts: I64, sizes: I64) -> I64:
    """The rows ``start, start + 1, ... start + size - 1`` of every range, one range after the other."""
    offsets = np.cumsum(sizes) - sizes
    return np.asarray(np.repeat(starts - offsets, sizes) + np.arange(int(sizes.sum())), np.int64)


def ipv4_to_halves(addr_u32: Array) -> tuple[Array, Array]:
    """IPv4 addresses (host-order uint32) to the (hi, lo) IPv4-mapped halves."""
    lo = addr_u32.astype(np.uint64) | np.uint64(IPV4_MAPPED_LO_PREFIX)
    return np.zeros(len(addr_u32), np.uint64), lo


def format_addr(hi: int, lo: int) -> str:
    """Canonical text of an address stored as two halves (IPv4 dotted quad for IPv4-mapped, RFC 5952 for IPv6)."""
    hi, lo = int(hi), int(lo)
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def endpoint_text(host: str, port: int | str) -> str:
    """``host:port``, with an IPv6 address in brackets (RFC 3986) so that its colons cannot be read as the port's."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_addr(text: str) -> tuple[int, int]:
    """Inverse of `format_addr`."""
    ip = ipaddress.ip_address(text)
    value = int(ip) | IPV4_MAPPED_LO_PREFIX if ip.version == 4 else int(ip)
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True, slots=True)
class IcmpError:
    """An ICMP/ICMPv6 error that quotes a TCP segment (destination unreachable, time exceeded...)."""

    frame: int
    """Capture record number of the ICMP packet."""
    ts_ns: int
    """Capture timestamp of the ICMP packet."""
    reporter: str
    """Address of the host or router that sent the ICMP error."""
    ttl: int
    """TTL / hop limit of the ICMP packet itself."""
    ip_version: int
    """4 for ICMP, 6 for ICMPv6."""
    icmp_type: int
    """ICMP type (3 = destination unreachable for v4; 1 for v6; 11 / 3 time exceeded)."""
    icmp_code: int
    """ICMP code (e.g. v4 3 = port unreachable, 13 = administratively prohibited; v6 1 / 4)."""
    quoted_src: str
    """Source address of the quoted (offending) TCP segment."""
    quoted_dst: str
    """Destination address of the quoted TCP segment."""
    quoted_sport: int | None
    """Source port of the quoted TCP segment; None when the input does not show it (tcpdump text prints a port
    unreachable without -v, and every ICMPv6 one, with only the destination address and port): such an error
    is linked to every connection from ``quoted_src`` to ``quoted_dst:quoted_dport`` open at its time."""
    quoted_dport: int
    """Destination port of the quoted TCP segment."""
    quoted_seq: int | None
    """Sequence number of the quoted segment, when the quote is long enough to carry it."""


ICMP_UNPORTED_SLACK_NS = 3 * 1_000_000_000
"""An ICMP error whose quote shows no source port (`IcmpError.quoted_sport` None) answers one of its victim's
packets within a round trip: a connection that ended longer ago than this before the error is not its victim."""


@dataclass(slots=True)
class ReadReport:
    """What a reader saw besides the TCP segments: counts, skips, limits and the error that stopped it."""

    source: str = ""
    """Path, ``-`` for standard input."""
    format: str = ""
    """``pcap``, ``pcapng``, ``tcpdump-text`` (with ``+gzip`` when compressed)."""
    records: int = 0
    """Records (packets, or packet lines for text) read."""
    tcp_segments: int = 0
    """Rows put in the packet table."""
    non_ip: int = 0
    """Records that carry no IPv4/IPv6 packet (ARP, LLDP...)."""
    non_tcp: int = 0
    """IP packets that are not TCP (UDP, ICMP that quotes no TCP...)."""
    fragments: int = 0
    """IP fragments seen (they are counted, not reassembled; non-first fragments carry no TCP header)."""
    truncated: int = 0
    """TCP segments cut by snaplen (kept with their header fields, marked in the table)."""
    undecodable: int = 0
    """Records too short or malformed to yield a TCP header (counted, skipped)."""
    link_types: dict[int, int] = field(default_factory=dict)
    """Link type -> number of records seen with it."""
    unsupported_link_types: dict[int, int] = field(default_factory=dict)
    """Link type -> number of records skipped because whyreset cannot decode that link type."""
    skipped_lines: int = 0
    """Text input: noise lines skipped (banners, prompts, ``N packets captured``)."""
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    """Text input: (line number, reason) for lines that looked like packets but could not be parsed."""
    limits: list[str] = field(default_factory=list)
    """What the input cannot carry (e.g. text without -v has no TTL), to be reported as limits of the evidence."""
    error: str | None = None
    """The one-line error that stopped reading early (the packets before it are still analysed)."""
    error_offset: int | None = None
    error_record: int | None = None
    bytes_read: int = 0
    """Bytes of input (decompressed, for gzip) consumed so far: progress for the CLI."""

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class Capture:
    """Everything a reader produced for one input: the TCP segments, ICMP errors, RST payloads and the report."""

    packets: PacketTable
    icmp_errors: list[IcmpError]
    rst_payloads: dict[int, bytes]
    """Frame number -> captured payload of RST segments that carry data (RFC 1122 4.2.2.12 diagnostic text)."""
    report: ReadReport
