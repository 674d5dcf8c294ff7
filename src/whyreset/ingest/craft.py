"""Build packets and write captures: the test-and-benchmark side of the readers.

Everything here produces *bytes that real tools accept*: checksums are correct, lengths are consistent,
and the capture files open in tshark/tcpdump. Two paths:

* the per-packet path (`tcp_packet`, `icmp_error`, `frame`, `write_pcap`, `PcapngWriter`) builds one packet
  at a time with every knob a test needs (IPv4 options, fragments, IPv6 extension headers, VLAN stacks,
  SLL/SLL2, BSD NULL, pcapng interfaces with different link types and timestamp resolutions, several
  sections, both byte orders);
* the bulk path (`bulk_tcp_frames`, `write_pcap_bulk`, `write_pcapng_bulk`) builds millions of
  Ethernet/SLL/raw + IPv4/IPv6 + TCP frames with numpy, for the benchmark generator (1M packets in seconds).

Addresses are text (``"10.0.0.1"``, ``"2001:db8::1"``); the IP version follows from them.
"""

from __future__ import annotations

import io
import ipaddress
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Union

import numpy as np
import numpy.typing as npt

# ---------------------------------------- link types
# LINKTYPE_* values as written in pcap/pcapng headers (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0  # BSD loopback: 4-byte address family in the capturing host's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_DLT12 = 12  # DLT_RAW on most BSDs (raw IPv4/IPv6)
LINKTYPE_RAW_DLT14 = 14  # DLT_RAW on OpenBSD
LINKTYPE_RAW = 101  # raw IPv4/IPv6, version from the first nibble
LINKTYPE_LOOP = 108  # OpenBSD loopback: 4-byte address family in network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_ARP = 0x0806
TPID_8021Q = 0x8100  # customer VLAN tag (C-tag)
TPID_8021AD = 0x88A8  # service VLAN tag (S-tag), the outer tag of QinQ

AF_INET = 2
AF_INET6_LINUX = 10
AF_INET6_BSD = 24  # NetBSD/OpenBSD; FreeBSD uses 28 and macOS 30, readers accept all three

IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_SPB = 0x00000003
PCAPNG_ISB = 0x00000005
PCAPNG_EPB = 0x00000006
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D

_FLAG_LETTERS = {
    "F": 0x001,
    "S": 0x002,
    "R": 0x004,
    "P": 0x008,
    "A": 0x010,
    "U": 0x020,
    "E": 0x040,
    "C": 0x080,
}
_FLAG_LETTERS["N"] = 0x100
_FLAG_LETTERS["W"] = 0x080  # tcpdump prints CWR as W

Target = Union[str, "os.PathLike[str]", IO[bytes]]


def tcp_flags(flags: str | int) -> int:
    """TCP flag bits from letters (``"SA"``, ``"R"``, ``"FA"``; ``"."`` or ``""`` for none) or an int."""
    if isinstance(flags, int):
        return flags & 0x1FF
    value = 0
    for letter in flags.upper():
        if letter == ".":
            continue
        if letter not in _FLAG_LETTERS:
            raise ValueError(f"unknown TCP flag letter {letter!r} in {flags!r}")
        value |= _FLAG_LETTERS[letter]
    return value


# ---------------------------------------- checksums
def internet_checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 ones' complement checksum of ``data`` (plus an already summed ``initial``)."""
    if len(data) % 2:
        data += b"\0"
    total = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def _pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Sum of the IPv4 (RFC 793) or IPv6 (RFC 8200 8.1) pseudo-header words, not yet folded."""
    if len(src) == 4:
        header = src + dst + struct.pack("!BBH", 0, proto, length)
    else:
        header = src + dst + struct.pack("!IxxxB", length, proto)
    return sum(struct.unpack(f"!{len(header) // 2}H", header))


def _addr_bytes(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


# ---------------------------------------- TCP
def tcp_options(
    *,
    mss: int | None = None,
    wscale: int | None = None,
    sack_perm: bool = False,
    sack_blocks: Sequence[tuple[int, int]] = (),
    timestamps: tuple[int, int] | None = None,
) -> bytes:
    """TCP options laid out as Linux does (MSS, SACK-permitted+TS, NOP+WS, NOP NOP SACK), 32-bit padded."""
    out = bytearray()
    if mss is not None:
        out += struct.pack("!BBH", 2, 4, mss)
    if sack_perm and timestamps is not None:
        out += struct.pack("!BBBBII", 4, 2, 8, 10, timestamps[0], timestamps[1])
    else:
        if sack_perm:
            out += b"\x01\x01\x04\x02"
        if timestamps is not None:
            out += struct.pack("!BBBBII", 1, 1, 8, 10, timestamps[0], timestamps[1])
    if wscale is not None:
        out += struct.pack("!BBBB", 1, 3, 3, wscale)
    if sack_blocks:
        out += struct.pack("!BBBB", 1, 1, 5, 2 + 8 * len(sack_blocks))
        for left, right in sack_blocks:
            out += struct.pack("!II", left, right)
    while len(out) % 4:
        out += b"\0"  # end-of-option-list, then zero padding
    if len(out) > 40:
        raise ValueError(f"TCP options take {len(out)} bytes, more than the 40 a header can carry")
    return bytes(out)


def tcp_segment(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    *,
    seq: int = 0,
    ack: int = 0,
    flags: str | int = "S",
    window: int = 65535,
    options: bytes = b"",
    payload: bytes = b"",
    urgent: int = 0,
    checksum: int | None = None,
) -> bytes:
    """A TCP header + payload with the checksum computed over the pseudo-header of ``src``/``dst``."""
    if len(options) % 4:
        raise ValueError("raw TCP options must be a multiple of 4 bytes")
    data_offset = (20 + len(options)) // 4
    offset_flags = (data_offset << 12) | tcp_flags(flags)
    header = struct.pack(
        "!HHIIHHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, offset_flags, window, 0, urgent
    )
    segment = header + options + payload
    if checksum is None:
        src_b, dst_b = _addr_bytes(src), _addr_bytes(dst)
        checksum = internet_checksum(segment, _pseudo_header_sum(src_b, dst_b, IPPROTO_TCP, len(segment)))
    return segment[:16] + struct.pack("!H", checksum) + segment[18:]


# ---------------------------------------- IP
def ipv4_packet(
    src: str,
    dst: str,
    proto: int,
    payload: bytes,
    *,
    ttl: int = 64,
    ip_id: int = 0,
    df: bool = True,
    more_fragments: bool = False,
    fragment_offset: int = 0,
    options: bytes = b"",
    tos: int = 0,
    total_length: int | None = None,
) -> bytes:
    """An IPv4 packet. ``fragment_offset`` is in bytes (multiple of 8); ``options`` a multiple of 4 bytes."""
    if len(options) % 4 or len(options) > 40:
        raise ValueError("IPv4 options must be a multiple of 4 bytes, at most 40")
    if fragment_offset % 8:
        raise ValueError("IPv4 fragment offsets are multiples of 8 bytes")
    ihl = 5 + len(options) // 4
    frag_word = (0x4000 if df else 0) | (0x2000 if more_fragments else 0) | (fragment_offset // 8)
    length = ihl * 4 + len(payload) if total_length is None else total_length
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, tos, length, ip_id, frag_word, ttl, proto, 0,
        _addr_bytes(src), _addr_bytes(dst),
    ) + options  # fmt: skip
    checksum = internet_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + payload


@dataclass(frozen=True, slots=True)
class Ipv6Ext:
    """One IPv6 extension header: its protocol number and its body after the next-header/length bytes."""

    kind: int
    """IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_DSTOPTS or IPPROTO_AH."""
    body: bytes = b""
    """Bytes after the first two (zero-padded to the header's alignment: 8 bytes, or 4 for AH)."""

    def encode(self, next_header: int) -> bytes:
        if self.kind == IPPROTO_FRAGMENT:
            return bytes([next_header, 0]) + self.body.ljust(6, b"\0")[:6]
        if self.kind == IPPROTO_AH:
            total = _round_up(2 + len(self.body), 8)
            return bytes([next_header, total // 4 - 2]) + self.body.ljust(total - 2, b"\0")
        total = _round_up(2 + len(self.body), 8)
        return bytes([next_header, total // 8 - 1]) + self.body.ljust(total - 2, b"\0")


def ipv6_fragment_ext(offset: int, more: bool, ident: int) -> Ipv6Ext:
    """An IPv6 Fragment header (RFC 8200 4.5); ``offset`` in bytes, a multiple of 8."""
    if offset % 8:
        raise ValueError("IPv6 fragment offsets are multiples of 8 bytes")
    return Ipv6Ext(IPPROTO_FRAGMENT, struct.pack("!HI", offset | (1 if more else 0), ident))


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def ipv6_packet(
    src: str,
    dst: str,
    next_header: int,
    payload: bytes,
    *,
    hop_limit: int = 64,
    flow_label: int = 0,
    traffic_class: int = 0,
    ext_headers: Sequence[Ipv6Ext] = (),
    payload_length: int | None = None,
) -> bytes:
    """An IPv6 packet, ``ext_headers`` chained in order before ``payload`` (of protocol ``next_header``)."""
    chain = b""
    following = next_header
    for ext in reversed(ext_headers):
        chain = ext.encode(following) + chain
        following = ext.kind
    body = chain + payload
    length = len(body) if payload_length is None else payload_length
    first_word = (6 << 28) | (traffic_class << 20) | (flow_label & 0xFFFFF)
    header = struct.pack(
        "!IHBB16s16s", first_word, length, following, hop_limit, _addr_bytes(src), _addr_bytes(dst)
    )
    return header + body


def tcp_packet(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    *,
    seq: int = 0,
    ack: int = 0,
    flags: str | int = "S",
    window: int = 65535,
    payload: bytes = b"",
    mss: int | None = None,
    wscale: int | None = None,
    sack_perm: bool = False,
    sack_blocks: Sequence[tuple[int, int]] = (),
    timestamps: tuple[int, int] | None = None,
    raw_options: bytes | None = None,
    ttl: int = 64,
    ip_id: int = 0,
    df: bool = True,
    ip_options: bytes = b"",
    ext_headers: Sequence[Ipv6Ext] = (),
    flow_label: int = 0,
) -> bytes:
    """A complete IPv4 or IPv6 packet carrying one TCP segment (``ttl`` is the hop limit for IPv6)."""
    options = (
        raw_options
        if raw_options is not None
        else tcp_options(
            mss=mss, wscale=wscale, sack_perm=sack_perm, sack_blocks=sack_blocks, timestamps=timestamps
        )
    )
    segment = tcp_segment(
        src, dst, sport, dport, seq=seq, ack=ack, flags=flags, window=window, options=options, payload=payload
    )
    if ipaddress.ip_address(src).version == 4:
        return ipv4_packet(src, dst, IPPROTO_TCP, segment, ttl=ttl, ip_id=ip_id, df=df, options=ip_options)
    return ipv6_packet(
        src, dst, IPPROTO_TCP, segment, hop_limit=ttl, ext_headers=ext_headers, flow_label=flow_label
    )


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes = b"", *, ttl: int = 64) -> bytes:
    """A UDP datagram in IPv4/IPv6 (for "not TCP" records)."""
    length = 8 + len(payload)
    datagram = struct.pack("!HHHH", sport, dport, length, 0) + payload
    checksum = internet_checksum(
        datagram, _pseudo_header_sum(_addr_bytes(src), _addr_bytes(dst), IPPROTO_UDP, length)
    )
    datagram = datagram[:6] + struct.pack("!H", checksum or 0xFFFF) + datagram[8:]
    if ipaddress.ip_address(src).version == 4:
        return ipv4_packet(src, dst, IPPROTO_UDP, datagram, ttl=ttl)
    return ipv6_packet(src, dst, IPPROTO_UDP, datagram, hop_limit=ttl)


def icmp_error(
    reporter: str,
    offending_packet: bytes,
    *,
    icmp_type: int | None = None,
    code: int = 3,
    ttl: int = 64,
    quote_bytes: int | None = None,
    mtu: int = 0,
) -> bytes:
    """An ICMP (v4) or ICMPv6 error from ``reporter`` quoting ``offending_packet``, sent back to its source.

    The default type is destination unreachable (3 for v4, 1 for v6). The quote defaults to what Linux
    sends: as much of the offending packet as fits in 576 bytes (v4) or 1280 bytes (v6); RFC 792's minimum
    is the IP header plus 8 bytes, which ``quote_bytes`` can reproduce.
    """
    version = offending_packet[0] >> 4
    if version == 4:
        offender = str(ipaddress.IPv4Address(offending_packet[12:16]))
        limit = 576 - 20 - 8 if quote_bytes is None else quote_bytes
        quote = offending_packet[:limit]
        kind = 3 if icmp_type is None else icmp_type
        body = struct.pack("!BBHHH", kind, code, 0, 0, mtu) + quote
        body = body[:2] + struct.pack("!H", internet_checksum(body)) + body[4:]
        return ipv4_packet(reporter, offender, IPPROTO_ICMP, body, ttl=ttl, df=False)
    offender = str(ipaddress.IPv6Address(offending_packet[8:24]))
    limit = 1280 - 40 - 8 if quote_bytes is None else quote_bytes
    quote = offending_packet[:limit]
    kind = 1 if icmp_type is None else icmp_type
    body = struct.pack("!BBHI", kind, code, 0, mtu) + quote
    pseudo = _pseudo_header_sum(_addr_bytes(reporter), _addr_bytes(offender), IPPROTO_ICMPV6, len(body))
    body = body[:2] + struct.pack("!H", internet_checksum(body, pseudo)) + body[4:]
    return ipv6_packet(reporter, offender, IPPROTO_ICMPV6, body, hop_limit=ttl)


def fragment_ipv4(packet: bytes, fragment_payload: int) -> list[bytes]:
    """Split an IPv4 packet into fragments carrying ``fragment_payload`` bytes each (a multiple of 8)."""
    if fragment_payload % 8 or fragment_payload <= 0:
        raise ValueError("fragment payload size must be a positive multiple of 8")
    ihl = (packet[0] & 0x0F) * 4
    header, data = packet[:ihl], packet[ihl:]
    src = str(ipaddress.IPv4Address(header[12:16]))
    dst = str(ipaddress.IPv4Address(header[16:20]))
    ip_id = struct.unpack("!H", header[4:6])[0]
    pieces = []
    for start in range(0, len(data), fragment_payload):
        chunk = data[start : start + fragment_payload]
        more = start + fragment_payload < len(data)
        pieces.append(
            ipv4_packet(
                src,
                dst,
                header[9],
                chunk,
                ttl=header[8],
                ip_id=ip_id,
                df=False,
                more_fragments=more,
                fragment_offset=start,
                options=header[20:ihl],
            )
        )
    return pieces


def fragment_ipv6(packet: bytes, fragment_payload: int, ident: int = 0x1234) -> list[bytes]:
    """Split an IPv6 packet (without extension headers) into fragments with a Fragment header each."""
    if fragment_payload % 8 or fragment_payload <= 0:
        raise ValueError("fragment payload size must be a positive multiple of 8")
    src = str(ipaddress.IPv6Address(packet[8:24]))
    dst = str(ipaddress.IPv6Address(packet[24:40]))
    next_header, hop_limit = packet[6], packet[7]
    data = packet[40:]
    pieces = []
    for start in range(0, len(data), fragment_payload):
        more = start + fragment_payload < len(data)
        chunk = data[start : start + fragment_payload]
        ext = [ipv6_fragment_ext(start, more, ident)]
        pieces.append(ipv6_packet(src, dst, next_header, chunk, hop_limit=hop_limit, ext_headers=ext))
    return pieces


# ---------------------------------------- link layer
def frame(
    linktype: int,
    ip_bytes: bytes,
    *,
    vlan: Sequence[int | tuple[int, int]] = (),
    ethertype: int | None = None,
    src_mac: bytes = b"\x02\x00\x00\x00\x00\x01",
    dst_mac: bytes = b"\x02\x00\x00\x00\x00\x02",
    null_family: int | None = None,
    null_big_endian: bool = False,
    sll_packet_type: int = 0,
    sll_ifindex: int = 1,
) -> bytes:
    """Wrap an IP packet (or any payload with an explicit ``ethertype``) in a link-layer header.

    ``vlan`` lists tags outermost first; an int is a VLAN id under an 802.1Q tag, a ``(tpid, vid)`` pair
    picks the TPID (``(TPID_8021AD, 100), 200`` is a QinQ stack). ``null_family`` defaults to AF_INET / BSD
    AF_INET6 (24).
    """
    version = ip_bytes[0] >> 4 if ip_bytes else 0
    if ethertype is None:
        ethertype = ETHERTYPE_IPV6 if version == 6 else ETHERTYPE_IPV4
    if linktype == LINKTYPE_ETHERNET:
        tags = b""
        for tag in vlan:
            tpid, vid = (TPID_8021Q, tag) if isinstance(tag, int) else tag
            tags += struct.pack("!HH", tpid, vid & 0x0FFF)
        return dst_mac + src_mac + tags + struct.pack("!H", ethertype) + ip_bytes
    if linktype == LINKTYPE_LINUX_SLL:
        return struct.pack("!HHH8sH", sll_packet_type, 1, 6, src_mac, ethertype) + ip_bytes
    if linktype == LINKTYPE_LINUX_SLL2:
        return struct.pack("!HHIHBB8s", ethertype, 0, sll_ifindex, 1, sll_packet_type, 6, src_mac) + ip_bytes
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        family = null_family if null_family is not None else (AF_INET6_BSD if version == 6 else AF_INET)
        big = null_big_endian or linktype == LINKTYPE_LOOP
        return struct.pack(">I" if big else "<I", family) + ip_bytes
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_DLT12, LINKTYPE_RAW_DLT14, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return ip_bytes
    raise ValueError(f"craft cannot build link type {linktype}")


# ---------------------------------------- writers
@contextmanager
def _open_target(target: Target) -> Iterator[IO[bytes]]:
    if isinstance(target, (str, os.PathLike)):
        with open(target, "wb") as handle:
            yield handle
    else:
        yield target


Record = tuple[int, bytes] | tuple[int, bytes, int]
"""(ts_ns, frame) or (ts_ns, frame, original length on the wire)."""


def pcap_header(
    *,
    linktype: int = LINKTYPE_ETHERNET,
    nanosecond: bool = False,
    big_endian: bool = False,
    snaplen: int = 262144,
) -> bytes:
    """The 24-byte classic pcap file header."""
    order = ">" if big_endian else "<"
    magic = PCAP_MAGIC_NSEC if nanosecond else PCAP_MAGIC_USEC
    return struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(
    ts_ns: int, data: bytes, *, nanosecond: bool = False, big_endian: bool = False, snaplen: int = 262144,
    orig_len: int | None = None,
) -> bytes:  # fmt: skip
    """One classic pcap record (16-byte header + data cut to ``snaplen``)."""
    seconds, fraction_ns = divmod(ts_ns, 1_000_000_000)
    fraction = fraction_ns if nanosecond else fraction_ns // 1000
    captured = data[:snaplen]
    wire = len(data) if orig_len is None else orig_len
    order = ">" if big_endian else "<"
    return struct.pack(order + "IIII", seconds, fraction, len(captured), wire) + captured


def write_pcap(
    target: Target,
    records: Iterable[Record],
    *,
    linktype: int = LINKTYPE_ETHERNET,
    nanosecond: bool = False,
    big_endian: bool = False,
    snaplen: int = 262144,
) -> int:
    """Write a classic pcap file; frames longer than ``snaplen`` are cut (orig_len keeps the wire length).

    Returns the number of records written.
    """
    count = 0
    with _open_target(target) as out:
        out.write(
            pcap_header(linktype=linktype, nanosecond=nanosecond, big_endian=big_endian, snaplen=snaplen)
        )
        for record in records:
            orig_len = record[2] if len(record) == 3 else None
            out.write(
                pcap_record(
                    record[0],
                    record[1],
                    nanosecond=nanosecond,
                    big_endian=big_endian,
                    snaplen=snaplen,
                    orig_len=orig_len,
                )
            )
            count += 1
    return count


def pcap_bytes(records: Iterable[Record], **kwargs: Any) -> bytes:
    """`write_pcap` into memory."""
    buffer = io.BytesIO()
    write_pcap(buffer, records, **kwargs)
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class Interface:
    """A pcapng interface (IDB)."""

    linktype: int = LINKTYPE_ETHERNET
    snaplen: int = 0
    """0 means no limit."""
    tsresol: int = 6
    """Raw if_tsresol byte: ``n`` means units of 10**-n s, ``0x80 | n`` means units of 2**-n s."""
    tsoffset: int = 0
    """if_tsoffset: seconds added to every timestamp of this interface."""
    name: str | None = None
    write_tsresol: bool = True
    """Write the if_tsresol option even when it is the default 6 (False omits it, exercising the default)."""

    def units(self, ts_ns: int) -> int:
        """Timestamp in this interface's units, relative to its offset (exact when the resolution allows)."""
        relative = ts_ns - self.tsoffset * 1_000_000_000
        if self.tsresol & 0x80:
            return int((relative << (self.tsresol & 0x7F)) // 1_000_000_000)
        exponent = self.tsresol
        if exponent >= 9:
            return int(relative * 10 ** (exponent - 9))
        return int(relative // 10 ** (9 - exponent))


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


class PcapngWriter:
    """Write pcapng blocks one by one: sections, interfaces, enhanced/simple packets, statistics, raw blocks.

    Example::

        writer = PcapngWriter(buffer)
        writer.section()
        eth = writer.interface(Interface(LINKTYPE_ETHERNET, tsresol=9))
        writer.packet(1_700_000_000_000_000_000, frame(LINKTYPE_ETHERNET, ip_packet), eth)
    """

    def __init__(self, out: IO[bytes], *, big_endian: bool = False) -> None:
        self.out = out
        self.big_endian = big_endian
        self.interfaces: list[Interface] = []

    @property
    def _order(self) -> str:
        return ">" if self.big_endian else "<"

    def block(self, block_type: int, body: bytes) -> None:
        """Write any block (unknown types included) with correct padding and both length fields."""
        body = _pad4(body)
        total = 12 + len(body)
        self.out.write(
            struct.pack(self._order + "II", block_type, total) + body + struct.pack(self._order + "I", total)
        )

    def _options(self, options: Sequence[tuple[int, bytes]]) -> bytes:
        if not options:
            return b""
        out = b"".join(
            struct.pack(self._order + "HH", code, len(value)) + _pad4(value) for code, value in options
        )
        return out + struct.pack(self._order + "HH", 0, 0)  # opt_endofopt

    def section(self, *, big_endian: bool | None = None, section_length: int = -1) -> None:
        """Start a new section (SHB); interfaces are numbered from 0 again."""
        if big_endian is not None:
            self.big_endian = big_endian
        self.interfaces = []
        body = struct.pack(self._order + "IHHq", PCAPNG_BYTE_ORDER_MAGIC, 1, 0, section_length)
        body += self._options([(4, b"whyreset craft")])  # shb_userappl
        self.block(PCAPNG_SHB, body)

    def interface(self, interface: Interface) -> int:
        """Describe an interface (IDB); returns its id within the section."""
        options: list[tuple[int, bytes]] = []
        if interface.name is not None:
            options.append((2, interface.name.encode()))
        if interface.tsresol != 6 or interface.write_tsresol:
            options.append((9, bytes([interface.tsresol])))
        if interface.tsoffset:
            options.append((14, struct.pack(self._order + "q", interface.tsoffset)))
        body = struct.pack(self._order + "HHI", interface.linktype, 0, interface.snaplen) + self._options(
            options
        )
        self.block(PCAPNG_IDB, body)
        self.interfaces.append(interface)
        return len(self.interfaces) - 1

    def packet(
        self,
        ts_ns: int,
        data: bytes,
        iface: int = 0,
        *,
        orig_len: int | None = None,
        comment: str | None = None,
    ) -> None:
        """An Enhanced Packet Block; the data is cut to the interface's snaplen."""
        interface = self.interfaces[iface]
        captured = data[: interface.snaplen] if interface.snaplen else data
        units = interface.units(ts_ns)
        wire = len(data) if orig_len is None else orig_len
        header = struct.pack(
            self._order + "IIIII", iface, (units >> 32) & 0xFFFFFFFF, units & 0xFFFFFFFF, len(captured), wire
        )
        options = self._options([(1, comment.encode())] if comment else [])
        self.block(PCAPNG_EPB, header + _pad4(captured) + options)

    def simple_packet(self, data: bytes, *, orig_len: int | None = None) -> None:
        """A Simple Packet Block (interface 0, no timestamp)."""
        interface = self.interfaces[0]
        captured = data[: interface.snaplen] if interface.snaplen else data
        wire = len(data) if orig_len is None else orig_len
        self.block(PCAPNG_SPB, struct.pack(self._order + "I", wire) + captured)

    def statistics(self, iface: int, ts_ns: int, *, received: int = 0, dropped: int = 0) -> None:
        """An Interface Statistics Block."""
        units = self.interfaces[iface].units(ts_ns)
        options = self._options(
            [(4, struct.pack(self._order + "Q", received)), (5, struct.pack(self._order + "Q", dropped))]
        )
        body = (
            struct.pack(self._order + "III", iface, (units >> 32) & 0xFFFFFFFF, units & 0xFFFFFFFF) + options
        )
        self.block(PCAPNG_ISB, body)


PcapngRecord = tuple[int, bytes, int]
"""(ts_ns, frame, interface id)."""


def write_pcapng(
    target: Target,
    records: Iterable[PcapngRecord],
    *,
    interfaces: Sequence[Interface] = (Interface(),),
    big_endian: bool = False,
) -> int:
    """Write a one-section pcapng with ``interfaces`` and enhanced packet blocks; returns the record count."""
    count = 0
    with _open_target(target) as out:
        writer = PcapngWriter(out, big_endian=big_endian)
        writer.section()
        for interface in interfaces:
            writer.interface(interface)
        for ts_ns, data, iface in records:
            writer.packet(ts_ns, data, iface)
            count += 1
    return count


def pcapng_bytes(records: Iterable[PcapngRecord], **kwargs: Any) -> bytes:
    """`write_pcapng` into memory."""
    buffer = io.BytesIO()
    write_pcapng(buffer, records, **kwargs)
    return buffer.getvalue()


# ---------------------------------------- bulk path
U8 = npt.NDArray[np.uint8]
IntArray = npt.NDArray[np.integer[Any]]
ArrayLike = IntArray | int


TAKE_BLOCK_FRAMES = 8192


@dataclass(frozen=True, slots=True)
class FrameBatch:
    """Many frames in one byte buffer: frame ``i`` is ``data[offsets[i] : offsets[i] + lengths[i]]``."""

    data: U8
    offsets: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int64]
    linktype: int = LINKTYPE_ETHERNET
    """Link type of every frame (the writers put it in the file header)."""

    def __len__(self) -> int:
        return len(self.offsets)

    def frame(self, index: int) -> bytes:
        start = int(self.offsets[index])
        return self.data[start : start + int(self.lengths[index])].tobytes()

    def take(self, order: IntArray) -> FrameBatch:
        """Frames reordered (or selected) by ``order``, packed into a new buffer."""
        order = np.asarray(order, np.int64)
        lengths = self.lengths[order]
        offsets = _starts(lengths)
        data = np.empty(int(lengths.sum()), np.uint8)
        # A block of frames at a time: the per-byte index array of a gather stays a few MB.
        for first in range(0, len(order), TAKE_BLOCK_FRAMES):
            block = slice(first, first + TAKE_BLOCK_FRAMES)
            source = _byte_positions(self.offsets[order[block]], lengths[block])
            start = int(offsets[first])
            data[start : start + len(source)] = self.data[source]
        return FrameBatch(data, offsets, lengths, self.linktype)

    @classmethod
    def concat(cls, batches: Sequence[FrameBatch]) -> FrameBatch:
        """One batch of all frames, in order; they must share a link type."""
        if len({b.linktype for b in batches}) > 1:
            raise ValueError("cannot concatenate frame batches of different link types")
        shifts = np.cumsum([0] + [len(b.data) for b in batches[:-1]])
        return cls(
            np.concatenate([b.data for b in batches]),
            np.concatenate([b.offsets + shift for b, shift in zip(batches, shifts, strict=True)]),
            np.concatenate([b.lengths for b in batches]),
            batches[0].linktype,
        )


def _starts(lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    starts = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return starts


def _byte_positions(starts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Concatenated ``range(start, start + length)`` for every row, without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    packed_starts = _starts(lengths)
    return np.repeat(starts - packed_starts, lengths) + np.arange(total, dtype=np.int64)


def _column(value: ArrayLike, n: int, dtype: type[np.integer[Any]]) -> npt.NDArray[Any]:
    return np.broadcast_to(np.asarray(value).astype(dtype, copy=False), (n,))


def _put_be(header: U8, at: int, value: npt.NDArray[Any], size: int) -> None:
    """Store ``value`` big-endian into ``size`` bytes at column ``at`` of every header row."""
    header[:, at : at + size] = value.astype(f">u{size}").view(np.uint8).reshape(-1, size)


def _fold(total: npt.NDArray[np.int64]) -> npt.NDArray[np.uint16]:
    for _ in range(3):
        total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF).astype(np.uint16)


def _word_sum(header: U8, start: int, stop: int) -> npt.NDArray[np.int64]:
    words = np.ascontiguousarray(header[:, start:stop]).view(">u2")
    total: npt.NDArray[np.int64] = words.sum(axis=1, dtype=np.int64)
    return total


def _link_header(linktype: int, n: int, version: int) -> U8:
    sample = frame(linktype, bytes([version << 4]))[:-1]
    return np.broadcast_to(np.frombuffer(sample, np.uint8), (n, len(sample)))


def bulk_tcp_frames(
    *,
    src: IntArray,
    dst: IntArray,
    sport: ArrayLike,
    dport: ArrayLike,
    seq: ArrayLike = 0,
    ack: ArrayLike = 0,
    flags: ArrayLike = 0x10,
    window: ArrayLike = 65535,
    payload_len: ArrayLike = 0,
    ttl: ArrayLike = 64,
    ip_id: ArrayLike = 0,
    ts_val: IntArray | None = None,
    ts_ecr: ArrayLike = 0,
    linktype: int = LINKTYPE_ETHERNET,
) -> FrameBatch:
    """Many link + IP + TCP frames at once, checksums included; payload bytes are zeros.

    ``src``/``dst`` are uint32 arrays (IPv4, host order) or (n, 16) uint8 arrays (IPv6). Passing ``ts_val``
    adds a NOP NOP Timestamps option to every segment. Every other field is a scalar or an array of length n.
    """
    ipv6 = np.asarray(src).ndim == 2
    n = len(src)
    version = 6 if ipv6 else 4
    link = _link_header(linktype, n, version)
    ip_len = 40 if ipv6 else 20
    tcp_len = 32 if ts_val is not None else 20
    link_len = link.shape[1]
    header_len = link_len + ip_len + tcp_len
    payload = _column(payload_len, n, np.int64)
    header = np.zeros((n, header_len), np.uint8)
    header[:, :link_len] = link
    ip_at, tcp_at = link_len, link_len + ip_len
    segment_len = tcp_len + payload
    if ipv6:
        _put_be(header, ip_at, np.full(n, 6 << 28, np.int64), 4)
        _put_be(header, ip_at + 4, segment_len, 2)
        header[:, ip_at + 6] = IPPROTO_TCP
        header[:, ip_at + 7] = _column(ttl, n, np.uint8)
        header[:, ip_at + 8 : ip_at + 24] = np.asarray(src, np.uint8)
        header[:, ip_at + 24 : ip_at + 40] = np.asarray(dst, np.uint8)
        pseudo = _word_sum(header, ip_at + 8, ip_at + 40) + segment_len + IPPROTO_TCP
    else:
        header[:, ip_at] = 0x45
        _put_be(header, ip_at + 2, ip_len + segment_len, 2)
        _put_be(header, ip_at + 4, _column(ip_id, n, np.int64), 2)
        header[:, ip_at + 6] = 0x40  # DF
        header[:, ip_at + 8] = _column(ttl, n, np.uint8)
        header[:, ip_at + 9] = IPPROTO_TCP
        _put_be(header, ip_at + 12, np.asarray(src, np.int64), 4)
        _put_be(header, ip_at + 16, np.asarray(dst, np.int64), 4)
        _put_be(header, ip_at + 10, _fold(_word_sum(header, ip_at, ip_at + 20)), 2)
        pseudo = _word_sum(header, ip_at + 12, ip_at + 20) + segment_len + IPPROTO_TCP
    _put_be(header, tcp_at, _column(sport, n, np.int64), 2)
    _put_be(header, tcp_at + 2, _column(dport, n, np.int64), 2)
    _put_be(header, tcp_at + 4, _column(seq, n, np.int64) & 0xFFFFFFFF, 4)
    _put_be(header, tcp_at + 8, _column(ack, n, np.int64) & 0xFFFFFFFF, 4)
    _put_be(header, tcp_at + 12, ((tcp_len // 4) << 12) | (_column(flags, n, np.int64) & 0x1FF), 2)
    _put_be(header, tcp_at + 14, _column(window, n, np.int64), 2)
    if ts_val is not None:
        header[:, tcp_at + 20 : tcp_at + 24] = np.frombuffer(b"\x01\x01\x08\x0a", np.uint8)
        _put_be(header, tcp_at + 24, _column(ts_val, n, np.int64) & 0xFFFFFFFF, 4)
        _put_be(header, tcp_at + 28, _column(ts_ecr, n, np.int64) & 0xFFFFFFFF, 4)
    # Zero payload bytes add nothing to the ones' complement sum, so the header words decide the checksum.
    _put_be(header, tcp_at + 16, _fold(pseudo + _word_sum(header, tcp_at, tcp_at + tcp_len)), 2)
    lengths = header_len + payload
    offsets = _starts(lengths)
    data = np.zeros(int(lengths.sum()), np.uint8)
    data[_region_mask(len(data), offsets, np.full(n, header_len, np.int64))] = header.reshape(-1)
    return FrameBatch(data, offsets, lengths, linktype)


def _interleave(
    record_headers: U8, batch: FrameBatch, captured: npt.NDArray[np.int64], trailer_pad: npt.NDArray[np.int64]
) -> U8:
    """Records = fixed-size header row + first ``captured`` frame bytes + ``trailer_pad`` zero bytes.

    Copies go through boolean masks of the output (built from region starts and ends), never through
    per-byte index arrays: those would take eight times the capture's size in memory.
    """
    n, head = record_headers.shape
    record_len = head + captured + trailer_pad
    starts = _starts(record_len)
    out = np.zeros(int(record_len.sum()), np.uint8)
    out[_region_mask(len(out), starts, np.full(n, head, np.int64))] = record_headers.reshape(-1)
    if np.array_equal(captured, batch.lengths) and np.array_equal(batch.offsets, _starts(batch.lengths)):
        frames = batch.data[: int(batch.lengths.sum())]  # packed in order and uncut: use as it is
    else:
        frames = batch.data[_region_mask(len(batch.data), batch.offsets, captured)]
    out[_region_mask(len(out), starts + head, captured)] = frames
    return out


def _region_mask(
    size: int, starts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """True on ``[start, start + length)`` of every region (regions do not overlap, starts increase)."""
    edges = np.zeros(size + 1, np.int8)
    # np.add.at, not ``edges[i] += 1``: an empty region ends where the previous one ends (repeated index).
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + lengths, -1)
    np.cumsum(edges, out=edges)
    mask: npt.NDArray[np.bool_] = edges[:size].view(np.bool_)
    return mask


def write_pcap_bulk(
    target: Target,
    ts_ns: IntArray,
    batch: FrameBatch,
    *,
    nanosecond: bool = True,
    big_endian: bool = False,
    snaplen: int = 262144,
) -> None:
    """Write ``batch`` as a classic pcap in one go (frames cut to ``snaplen``)."""
    n = len(batch)
    stamps = np.asarray(ts_ns, np.int64)
    seconds, fraction = np.divmod(stamps, 1_000_000_000)
    if not nanosecond:
        fraction //= 1000
    captured = np.minimum(batch.lengths, snaplen)
    fields = np.stack([seconds, fraction, captured, batch.lengths], axis=1).astype(
        ">u4" if big_endian else "<u4"
    )
    headers = fields.view(np.uint8).reshape(n, 16)
    body = _interleave(headers, batch, captured, np.zeros(n, np.int64))
    with _open_target(target) as out:
        out.write(
            pcap_header(
                linktype=batch.linktype, nanosecond=nanosecond, big_endian=big_endian, snaplen=snaplen
            )
        )
        out.write(body.tobytes())


def write_pcapng_bulk(
    target: Target,
    ts_ns: IntArray,
    batch: FrameBatch,
    *,
    tsresol: int = 9,
    snaplen: int = 0,
    big_endian: bool = False,
) -> None:
    """Write ``batch`` as a one-section, one-interface pcapng of enhanced packet blocks."""
    n = len(batch)
    interface = Interface(batch.linktype, snaplen=snaplen, tsresol=tsresol)
    relative = np.asarray(ts_ns, np.int64) - interface.tsoffset * 1_000_000_000
    if interface.tsresol & 0x80:
        raise ValueError("the bulk writer supports power-of-10 resolutions only")
    units = (
        relative * 10 ** (interface.tsresol - 9)
        if interface.tsresol >= 9
        else relative // 10 ** (9 - interface.tsresol)
    )
    captured = np.minimum(batch.lengths, interface.snaplen) if interface.snaplen else batch.lengths
    padding = -captured % 4
    total = 28 + captured + padding + 4
    order = ">u4" if big_endian else "<u4"
    fields = np.stack(
        [
            np.full(n, PCAPNG_EPB),
            total,
            np.zeros(n, np.int64),
            units >> 32,
            units & 0xFFFFFFFF,
            captured,
            batch.lengths,
        ],
        axis=1,
    ).astype(order)
    body = _interleave(fields.view(np.uint8).reshape(n, 28), batch, captured, padding + 4)
    # The trailing copy of the block length sits in the last 4 bytes of every block.
    block_ends = _starts(total) + total
    trailer = total.astype(order).view(np.uint8).reshape(n, 4)
    body[(block_ends - 4)[:, None] + np.arange(4)] = trailer
    with _open_target(target) as out:
        writer = PcapngWriter(out, big_endian=big_endian)
        writer.section()
        writer.interface(interface)
        out.write(body.tobytes())
