"""Decode a batch of packet records into the packet table, a layer at a time, for all records at once.

Theory of operation. Every record gets a *status* (pending until a layer settles it: TCP segment, not IP,
not TCP, ICMP error, skipped fragment, undecodable, unsupported link type) and a few offsets into the shared
buffer: ``l3`` (IP header), ``l4`` (transport header), ``ip_end`` (end of the IP packet *on the wire*, from
the IP lengths) and ``cap_end`` (end of what the file holds). Each layer works on the index array of the
records still pending for it and reads fixed-size header windows with one numpy gather
(``buf[offsets[:, None] + arange(w)]``), so the per-record Python work is nil on the common path:
Ethernet (with any VLAN/QinQ stack), Linux SLL/SLL2, raw IP and BSD loopback, carrying IPv4 (with or
without options) or IPv6, carrying TCP (options parsed by a vectorised walk). Rare shapes take a per-record
slow path: IPv6 extension header chains and ICMP errors.

Every index is checked against ``cap_end`` before it is read, so a cut or lying packet can only be counted
as undecodable, never read out of bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from whyreset.ingest.records import I64, U8, RecordBatch
from whyreset.model import (
    IPV4_MAPPED_LO_PREFIX,
    RST,
    SACK_COLUMN,
    SACK_MAX_BLOCKS,
    Capture,
    IcmpError,
    PacketTable,
    ReadReport,
    format_addr,
)

# Record statuses.
PENDING, TCP, NON_IP, NON_TCP, UNDECODABLE, UNSUPPORTED, FRAGMENT, ICMP_ERROR = range(8)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100, 0x9200)
"""802.1Q C-tag, 802.1ad S-tag, and the pre-standard QinQ TPIDs still seen in captures."""
MAX_VLAN_TAGS = 8
NULL_AF_INET = 2
NULL_AF_INET6 = (10, 24, 28, 30)
"""AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD, macOS: a loopback capture may come from any of them."""

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_BSD = (12, 14)
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = frozenset({0, 1, 12, 14, 101, 108, 113, 228, 229, 276})

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_ICMPV6 = 58
IPV6_EXTENSIONS = frozenset({0, 43, 44, 51, 60})
"""Hop-by-hop, routing, fragment, authentication, destination options: headers we walk past."""
IPV6_FRAGMENT = 44
IPV6_AH = 51
MAX_IPV6_EXTENSIONS = 16
ICMP_ERRORS_V4 = (3, 11)
ICMP_ERRORS_V6 = (1, 3)
NOP_NOP_TIMESTAMPS = 0x0101080A
MAX_TCP_OPTIONS = 40
"""At most 40 option bytes, so at most 40 options (all NOPs): the vectorised walk ends within 40 steps."""


def decode_batch(batch: RecordBatch, report: ReadReport) -> Capture:
    """Decode every record of ``batch``; update ``report`` (shared by all chunks) and return the chunk."""
    return _Decoder(batch, report).run()


def empty_capture(report: ReadReport) -> Capture:
    return Capture(PacketTable.empty(), [], {}, report)


@dataclass(frozen=True, slots=True)
class _Quoted:
    """The TCP segment an ICMP error quotes."""

    src: str
    dst: str
    sport: int
    dport: int
    seq: int | None


class _Decoder:
    def __init__(self, batch: RecordBatch, report: ReadReport) -> None:
        n = len(batch)
        self.batch = batch
        self.report = report
        self.buf: U8 = batch.buf
        self.start = batch.data_start
        self.cap_end = batch.data_start + batch.caplen
        self.wire_end = batch.data_start + np.maximum(batch.wirelen, batch.caplen)
        self.status = np.zeros(n, np.int8)
        self.l3 = np.zeros(n, np.int64)
        self.version = np.zeros(n, np.int8)
        self.l4 = np.zeros(n, np.int64)
        self.ip_end = np.zeros(n, np.int64)
        self.proto = np.full(n, -1, np.int64)
        self.first_fragment = np.zeros(n, bool)
        self.table = PacketTable.empty(n)
        self.cols = self.table.columns
        self.icmp_errors: list[IcmpError] = []
        self._sliding: dict[int, U8] = {}

    # ------------------------------------------------------------------------------- helpers
    def _window(self, at: I64, width: int) -> U8:
        """``width`` bytes from each offset in ``at`` (callers have checked they are captured)."""
        if at.size == 0:
            return np.zeros((0, width), np.uint8)
        view = self._sliding.get(width)
        if view is None:
            # A strided (len, width) view of the buffer: gathering rows of it copies only the rows.
            view = self._sliding[width] = sliding_window_view(self.buf, width)
        window: U8 = view[at]
        return window

    @staticmethod
    def _u16(window: U8, i: int) -> I64:
        return (window[:, i].astype(np.int64) << 8) | window[:, i + 1]

    @staticmethod
    def _u32(window: U8, i: int) -> I64:
        values: I64 = np.ascontiguousarray(window[:, i : i + 4]).view(">u4")[:, 0].astype(np.int64)
        return values

    def _be16_at(self, at: I64) -> I64:
        return self._u16(self._window(at, 2), 0)

    def _be32_at(self, at: I64) -> I64:
        return self._u32(self._window(at, 4), 0)

    def _set(self, rows: I64, status: int) -> None:
        self.status[rows] = status

    def _pending(self, mask: npt.NDArray[np.bool_] | None = None) -> I64:
        pending = self.status == PENDING
        return np.flatnonzero(pending if mask is None else pending & mask)

    # ------------------------------------------------------------------------------- driver
    def run(self) -> Capture:
        self._count_link_types()
        self._link_layer()
        self._ipv4()
        self._ipv6()
        self._ipv6_extensions()
        self._icmp()
        self._tcp()
        self.status[self.status == PENDING] = NON_TCP
        return self._finish()

    def _count_link_types(self) -> None:
        values, counts = np.unique(self.batch.linktype, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            self.report.link_types[value] = self.report.link_types.get(value, 0) + count

    # ------------------------------------------------------------------------------- link layer
    def _link_layer(self) -> None:
        linktype = self.batch.linktype
        for value in np.unique(linktype).tolist():
            rows = np.flatnonzero(linktype == value)
            if value not in SUPPORTED_LINKTYPES:
                self._set(rows, UNSUPPORTED)
                unsupported = self.report.unsupported_link_types
                unsupported[value] = unsupported.get(value, 0) + len(rows)
                continue
            empty = self.batch.caplen[rows] <= 0
            self._set(rows[empty], UNDECODABLE)
            rows = rows[~empty]
            if value == LINKTYPE_ETHERNET:
                self._ethertype_rows(rows, ethertype_at=12, l3_at=14)
            elif value == LINKTYPE_LINUX_SLL:
                self._ethertype_rows(rows, ethertype_at=14, l3_at=16)
            elif value == LINKTYPE_LINUX_SLL2:
                self._ethertype_rows(rows, ethertype_at=0, l3_at=20)
            elif value in (LINKTYPE_RAW, *LINKTYPE_RAW_BSD):
                self._raw_rows(rows, expected=None)
            elif value == LINKTYPE_IPV4:
                self._raw_rows(rows, expected=4)
            elif value == LINKTYPE_IPV6:
                self._raw_rows(rows, expected=6)
            else:
                self._null_rows(rows, network_order=value == LINKTYPE_LOOP)

    def _ethertype_rows(self, rows: I64, *, ethertype_at: int, l3_at: int) -> None:
        """Link headers that name the payload with an EtherType, possibly behind a stack of VLAN tags."""
        fits = self.cap_end[rows] - self.start[rows] >= l3_at
        self._set(rows[~fits], UNDECODABLE)
        rows = rows[fits]
        ethertype = self._be16_at(self.start[rows] + ethertype_at)
        l3 = self.start[rows] + l3_at
        # A tag is (TCI, inner EtherType) right where the payload would start; peel tags until a payload type.
        for _ in range(MAX_VLAN_TAGS + 1):
            tagged = np.flatnonzero(np.isin(ethertype, VLAN_TPIDS))
            if tagged.size == 0:
                break
            complete = l3[tagged] + 4 <= self.cap_end[rows[tagged]]
            cut = tagged[~complete]
            self._set(rows[cut], UNDECODABLE)
            ethertype[cut] = -1
            tagged = tagged[complete]
            ethertype[tagged] = self._be16_at(l3[tagged] + 2)
            l3[tagged] += 4
        too_deep = np.isin(ethertype, VLAN_TPIDS)
        self._set(rows[too_deep], UNDECODABLE)
        ipv4 = ethertype == ETHERTYPE_IPV4
        ipv6 = ethertype == ETHERTYPE_IPV6
        self._set(rows[~(ipv4 | ipv6 | too_deep) & (ethertype >= 0)], NON_IP)
        self._mark_ip(rows[ipv4], l3[ipv4], 4)
        self._mark_ip(rows[ipv6], l3[ipv6], 6)

    def _raw_rows(self, rows: I64, *, expected: int | None) -> None:
        version = self.buf[self.start[rows]] >> 4
        if expected is not None:
            # A link type that promises one version: anything else is a broken packet, not another protocol.
            self._set(rows[version != expected], UNDECODABLE)
            rows, version = rows[version == expected], version[version == expected]
        for ip in (4, 6):
            mine = version == ip
            self._mark_ip(rows[mine], self.start[rows[mine]], ip)
        self._set(rows[(version != 4) & (version != 6)], UNDECODABLE)

    def _null_rows(self, rows: I64, *, network_order: bool) -> None:
        """BSD loopback: a 4-byte address family, in the capturing host's order (DLT_NULL) or big-endian."""
        fits = self.cap_end[rows] - self.start[rows] >= 4
        self._set(rows[~fits], UNDECODABLE)
        rows = rows[fits]
        window = self._window(self.start[rows], 4)
        big = self._u32(window, 0)
        if network_order:
            family = big
        else:
            little = np.ascontiguousarray(window).view("<u4")[:, 0].astype(np.int64)
            # Written on a host of the other byte order: the family then sits in the high half.
            family = np.where(little > 0xFFFF, big, little)
        ipv4 = family == NULL_AF_INET
        ipv6 = np.isin(family, NULL_AF_INET6)
        self._set(rows[~(ipv4 | ipv6)], NON_IP)
        self._mark_ip(rows[ipv4], self.start[rows[ipv4]] + 4, 4)
        self._mark_ip(rows[ipv6], self.start[rows[ipv6]] + 4, 6)

    def _mark_ip(self, rows: I64, l3: I64, version: int) -> None:
        self.l3[rows] = l3
        self.version[rows] = version

    # ------------------------------------------------------------------------------- IP
    def _ip_rows(self, version: int, header_len: int) -> I64:
        """Pending rows of this IP version whose fixed header is captured and says the right version."""
        rows = self._pending(self.version == version)
        fits = self.cap_end[rows] - self.l3[rows] >= header_len
        self._set(rows[~fits], UNDECODABLE)
        rows = rows[fits]
        right_version = (self.buf[self.l3[rows]] >> 4) == version
        self._set(rows[~right_version], UNDECODABLE)
        good: I64 = rows[right_version]
        return good

    def _ipv4(self) -> None:
        rows = self._ip_rows(4, 20)
        l3 = self.l3[rows]
        w = self._window(l3, 20)
        header_len = (w[:, 0] & 0x0F).astype(np.int64) * 4
        total = self._u16(w, 2)
        on_wire = self.wire_end[rows] - l3
        # Total length 0 is what TSO/GSO packets captured before segmentation show: the frame is the packet.
        total = np.where(total == 0, on_wire, np.minimum(total, on_wire))
        broken = (header_len < 20) | (total < header_len)
        self._set(rows[broken], UNDECODABLE)
        keep = ~broken
        rows, w, l3, header_len, total = rows[keep], w[keep], l3[keep], header_len[keep], total[keep]
        fragment_word = self._u16(w, 6)
        offset = fragment_word & 0x1FFF
        more = (fragment_word & 0x2000) != 0
        self._count_fragments(rows, offset != 0, more)
        cols = self.cols
        cols["ip_version"][rows] = 4
        cols["ttl"][rows] = w[:, 8]
        cols["ip_id"][rows] = self._u16(w, 4)
        cols["ip_df"][rows] = (fragment_word & 0x4000) != 0
        cols["src_lo"][rows] = self._u32(w, 12) | IPV4_MAPPED_LO_PREFIX
        cols["dst_lo"][rows] = self._u32(w, 16) | IPV4_MAPPED_LO_PREFIX
        self.l4[rows] = l3 + header_len
        self.ip_end[rows] = l3 + total
        self.proto[rows] = w[:, 9]

    def _count_fragments(self, rows: I64, later: npt.NDArray[np.bool_], more: npt.NDArray[np.bool_]) -> None:
        """Later fragments carry no TCP header: skip them. A first fragment is decoded, marked truncated."""
        self.report.fragments += int(np.count_nonzero(later | more))
        self._set(rows[later], FRAGMENT)
        self.first_fragment[rows[more & ~later]] = True

    def _ipv6(self) -> None:
        rows = self._ip_rows(6, 40)
        l3 = self.l3[rows]
        w = self._window(l3, 40)
        payload = self._u16(w, 4)
        on_wire = self.wire_end[rows] - l3 - 40
        # Payload length 0: a jumbogram or a GSO packet captured before segmentation; the frame is the packet.
        payload = np.where(payload == 0, on_wire, np.minimum(payload, on_wire))
        addresses = np.ascontiguousarray(w[:, 8:40]).view(">u8").astype(np.uint64)
        cols = self.cols
        cols["ip_version"][rows] = 6
        cols["ttl"][rows] = w[:, 7]
        cols["src_hi"][rows], cols["src_lo"][rows] = addresses[:, 0], addresses[:, 1]
        cols["dst_hi"][rows], cols["dst_lo"][rows] = addresses[:, 2], addresses[:, 3]
        self.l4[rows] = l3 + 40
        self.ip_end[rows] = l3 + 40 + payload
        self.proto[rows] = w[:, 6]

    def _ipv6_extensions(self) -> None:
        """Slow path: walk IPv6 extension header chains to the transport header."""
        rows = self._pending((self.version == 6) & np.isin(self.proto, list(IPV6_EXTENSIONS)))
        for row in rows.tolist():
            limit = int(min(self.cap_end[row], self.ip_end[row]))
            start = int(self.l4[row])
            data = bytes(self.buf[start:limit])
            walked = skip_ipv6_extensions(data, int(self.proto[row]))
            if walked is None:
                self.status[row] = UNDECODABLE
                continue
            length, next_header, fragment = walked
            if fragment is not None:
                offset, more, ident = fragment
                self.report.fragments += int(offset != 0 or more)
                self.cols["ip_id"][row] = ident
                if offset != 0:
                    self.status[row] = FRAGMENT
                    continue
                self.first_fragment[row] = more
            self.l4[row] = start + length
            self.proto[row] = next_header

    # ------------------------------------------------------------------------------- ICMP
    def _icmp(self) -> None:
        """Slow path: ICMP/ICMPv6 errors that quote a TCP segment become `IcmpError` records."""
        icmp = ((self.version == 4) & (self.proto == IPPROTO_ICMP)) | (
            (self.version == 6) & (self.proto == IPPROTO_ICMPV6)
        )
        for row in self._pending(icmp).tolist():
            start = int(self.l4[row])
            data = bytes(self.buf[start : int(min(self.cap_end[row], self.ip_end[row]))])
            version = int(self.version[row])
            error_types = ICMP_ERRORS_V4 if version == 4 else ICMP_ERRORS_V6
            if len(data) < 8 or data[0] not in error_types:
                self.status[row] = NON_TCP
                continue
            quoted = parse_quoted_tcp(data[8:], version)
            if quoted is None:
                self.status[row] = NON_TCP
                continue
            self.status[row] = ICMP_ERROR
            self.icmp_errors.append(self._icmp_error(row, data[0], data[1], quoted))

    def _icmp_error(self, row: int, icmp_type: int, code: int, quoted: _Quoted) -> IcmpError:
        cols = self.cols
        return IcmpError(
            frame=self.batch.first_frame + row,
            ts_ns=int(self.batch.ts_ns[row]),
            reporter=format_addr(int(cols["src_hi"][row]), int(cols["src_lo"][row])),
            ttl=int(cols["ttl"][row]),
            ip_version=int(self.version[row]),
            icmp_type=icmp_type,
            icmp_code=code,
            quoted_src=quoted.src,
            quoted_dst=quoted.dst,
            quoted_sport=quoted.sport,
            quoted_dport=quoted.dport,
            quoted_seq=quoted.seq,
        )

    # ------------------------------------------------------------------------------- TCP
    def _tcp(self) -> None:
        rows = self._pending(self.proto == IPPROTO_TCP)
        l4 = self.l4[rows]
        fits = (self.cap_end[rows] >= l4 + 20) & (self.ip_end[rows] >= l4 + 20)
        self._set(rows[~fits], UNDECODABLE)
        rows, l4 = rows[fits], l4[fits]
        w = self._window(l4, 20)
        header_len = (w[:, 12] >> 4).astype(np.int64) * 4
        ip_end = self.ip_end[rows]
        broken = (header_len < 20) | (l4 + header_len > ip_end)
        self._set(rows[broken], UNDECODABLE)
        keep = ~broken
        rows, w, l4, header_len, ip_end = rows[keep], w[keep], l4[keep], header_len[keep], ip_end[keep]
        cap_end = self.cap_end[rows]
        data_at = l4 + header_len
        payload_len = ip_end - data_at
        cols = self.cols
        cols["sport"][rows] = self._u16(w, 0)
        cols["dport"][rows] = self._u16(w, 2)
        cols["seq"][rows] = self._u32(w, 4)
        cols["ack"][rows] = self._u32(w, 8)
        cols["flags"][rows] = ((w[:, 12].astype(np.int64) & 1) << 8) | w[:, 13]
        cols["window"][rows] = self._u16(w, 14)
        cols["payload_len"][rows] = payload_len
        cols["ip_len"][rows] = ip_end - self.l3[rows]
        cols["captured_payload"][rows] = np.clip(cap_end - data_at, 0, payload_len)
        cols["truncated"][rows] = (cap_end < ip_end) | self.first_fragment[rows]
        self.status[rows] = TCP
        with_options = header_len > 20
        if with_options.any():
            opt_rows = rows[with_options]
            self._tcp_options(
                opt_rows,
                l4[with_options] + 20,
                np.minimum(data_at, cap_end)[with_options],
                data_at[with_options],
            )

    def _tcp_options(self, rows: I64, begin: I64, end: I64, header_end: I64) -> None:
        """Parse the options of ``rows`` from ``begin`` to ``end`` (captured) within ``header_end``.

        The usual data-segment layout is read directly, the others are walked.
        """
        rest = self._timestamps_only(rows, begin, end)
        if rest.size:
            self._walk_tcp_options(rows[rest], begin[rest], end[rest], header_end[rest])

    def _timestamps_only(self, rows: I64, begin: I64, end: I64) -> I64:
        """Rows whose options are exactly NOP NOP Timestamps (Linux data segments) are read in one go.

        Returns the indices (into ``rows``) of the other rows, which need the general walk.
        """
        candidates = np.flatnonzero(end - begin == 12)
        window = self._window(begin[candidates], 12)
        layout = np.ascontiguousarray(window[:, :4]).view(">u4")[:, 0]
        simple = layout == NOP_NOP_TIMESTAMPS
        target = rows[candidates[simple]]
        self.cols["opt_has_ts"][target] = True
        self.cols["opt_ts_val"][target] = self._u32(window[simple], 4)
        self.cols["opt_ts_ecr"][target] = self._u32(window[simple], 8)
        others = np.ones(len(rows), bool)
        others[candidates[simple]] = False
        return np.flatnonzero(others)

    def _walk_tcp_options(self, rows: I64, begin: I64, end: I64, header_end: I64) -> None:
        """Walk the option lists of all ``rows`` in lock step: one option per row per step.

        An option that overruns the TCP header is malformed and ends the walk; one that is only cut by the
        snaplen ends it too, but keeps the SACK blocks that were captured whole.
        """
        cols = self.cols
        sack = cols[SACK_COLUMN]
        cursor = begin.copy()
        active = np.arange(len(rows))
        for _ in range(MAX_TCP_OPTIONS):
            active = active[cursor[active] < end[active]]
            if active.size == 0:
                break
            at = cursor[active]
            kind = self.buf[at]
            nop = kind == 1
            cursor[active[nop]] += 1
            # End-of-list stops a row; every other kind has a length byte that must be captured and sane.
            other = ~nop & (kind != 0)
            listed, at, kind = active[other], at[other], kind[other]
            has_length = at + 1 < end[listed]
            length = np.zeros(len(listed), np.int64)
            length[has_length] = self.buf[at[has_length] + 1]
            sane = has_length & (length >= 2) & (at + length <= header_end[listed])
            listed, at, kind, length = listed[sane], at[sane], kind[sane], length[sane]
            target = rows[listed]
            captured = at + length <= end[listed]
            kind = np.where(captured | (kind == 5), kind, 0)  # a cut option other than SACK is lost
            mss = (kind == 2) & (length == 4)
            cols["opt_mss"][target[mss]] = self._be16_at(at[mss] + 2)
            wscale = (kind == 3) & (length == 3)
            cols["opt_wscale"][target[wscale]] = np.minimum(self.buf[at[wscale] + 2], 127)
            sack_perm = (kind == 4) & (length == 2)
            cols["opt_sack_perm"][target[sack_perm]] = True
            stamps = (kind == 8) & (length == 10)
            cols["opt_has_ts"][target[stamps]] = True
            cols["opt_ts_val"][target[stamps]] = self._be32_at(at[stamps] + 2)
            cols["opt_ts_ecr"][target[stamps]] = self._be32_at(at[stamps] + 6)
            blocks = np.where((kind == 5) & (length >= 10) & ((length - 2) % 8 == 0), (length - 2) // 8, 0)
            whole_blocks_captured = np.maximum((end[listed] - at - 2) // 8, 0)
            blocks = np.minimum(
                np.where(captured, blocks, np.minimum(blocks, whole_blocks_captured)), SACK_MAX_BLOCKS
            )
            cols["sack_count"][target[blocks > 0]] = blocks[blocks > 0]
            for block in range(SACK_MAX_BLOCKS):
                has = blocks > block
                edge = at[has] + 2 + 8 * block
                sack[target[has], block, 0] = self._be32_at(edge)
                sack[target[has], block, 1] = self._be32_at(edge + 4)
            cursor[listed] = at + length
            active = np.concatenate([active[nop], listed])

    # ------------------------------------------------------------------------------- result
    def _finish(self) -> Capture:
        batch, cols, report = self.batch, self.cols, self.report
        n = len(batch)
        cols["frame"][:] = batch.first_frame + np.arange(n, dtype=np.uint64)
        cols["ts_ns"][:] = batch.ts_ns
        cols["iface"][:] = batch.iface
        cols["frame_len"][:] = np.minimum(batch.wirelen, 0xFFFFFFFF)
        tcp_rows = np.flatnonzero(self.status == TCP)
        counts = np.bincount(self.status, minlength=8)
        report.tcp_segments += int(counts[TCP])
        report.non_ip += int(counts[NON_IP])
        report.non_tcp += int(counts[NON_TCP])
        report.undecodable += int(counts[UNDECODABLE])
        report.truncated += int(np.count_nonzero(cols["truncated"][tcp_rows]))
        report.records += n
        rst_payloads = self._rst_payloads(tcp_rows)
        packets = self.table if len(tcp_rows) == n else self.table.take(tcp_rows)
        return Capture(packets, self.icmp_errors, rst_payloads, report)

    def _rst_payloads(self, tcp_rows: I64) -> dict[int, bytes]:
        cols = self.cols
        with_data = tcp_rows[
            ((cols["flags"][tcp_rows] & RST) != 0) & (cols["captured_payload"][tcp_rows] > 0)
        ]
        payloads: dict[int, bytes] = {}
        for row in with_data.tolist():
            end = int(min(self.cap_end[row], self.ip_end[row]))
            size = int(cols["captured_payload"][row])
            payloads[self.batch.first_frame + row] = bytes(self.buf[end - size : end])
        return payloads


# ----------------------------------------------------------------------------------- byte-level helpers
def skip_ipv6_extensions(
    data: bytes, next_header: int
) -> tuple[int, int, tuple[int, int, int] | None] | None:
    """Walk the extension headers at the start of ``data``.

    Returns (bytes walked, protocol after them, (fragment offset, more fragments, identification) if a
    Fragment header was seen), or None when the chain is cut or malformed.
    """
    pos = 0
    fragment = None
    for _ in range(MAX_IPV6_EXTENSIONS):
        if next_header not in IPV6_EXTENSIONS:
            return pos, next_header, fragment
        if next_header == IPV6_FRAGMENT:
            if pos + 8 > len(data):
                return None
            word = int.from_bytes(data[pos + 2 : pos + 4], "big")
            fragment = (word & 0xFFF8, word & 1, int.from_bytes(data[pos + 4 : pos + 8], "big"))
            length = 8
        else:
            if pos + 2 > len(data):
                return None
            length = (data[pos + 1] + 2) * 4 if next_header == IPV6_AH else (data[pos + 1] + 1) * 8
        if fragment is not None and fragment[0] != 0:
            return pos + length, data[pos], fragment  # later fragment: what follows is not a header
        next_header = data[pos]
        pos += length
        if pos > len(data) and next_header in IPV6_EXTENSIONS:
            return None
    return None if next_header in IPV6_EXTENSIONS else (pos, next_header, fragment)


def parse_quoted_tcp(quote: bytes, version: int) -> _Quoted | None:
    """The TCP ports (and sequence number, if quoted) of the IP packet an ICMP error quotes."""
    if version == 4:
        if len(quote) < 20 or quote[0] >> 4 != 4:
            return None
        header_len = (quote[0] & 0x0F) * 4
        if header_len < 20 or quote[9] != IPPROTO_TCP or int.from_bytes(quote[6:8], "big") & 0x1FFF:
            return None
        src_lo, dst_lo = (int.from_bytes(quote[i : i + 4], "big") | IPV4_MAPPED_LO_PREFIX for i in (12, 16))
        src, dst = format_addr(0, src_lo), format_addr(0, dst_lo)
        tcp = quote[header_len:]
    else:
        if len(quote) < 40 or quote[0] >> 4 != 6:
            return None
        walked = skip_ipv6_extensions(quote[40:], quote[6])
        if walked is None or walked[1] != IPPROTO_TCP or (walked[2] is not None and walked[2][0] != 0):
            return None
        src, dst = (format_addr(*_halves(quote[i : i + 16])) for i in (8, 24))
        tcp = quote[40 + walked[0] :]
    if len(tcp) < 4:
        return None
    seq = int.from_bytes(tcp[4:8], "big") if len(tcp) >= 8 else None
    return _Quoted(src, dst, int.from_bytes(tcp[0:2], "big"), int.from_bytes(tcp[2:4], "big"), seq)


def _halves(address: bytes) -> tuple[int, int]:
    return int.from_bytes(address[:8], "big"), int.from_bytes(address[8:], "big")
