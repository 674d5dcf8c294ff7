"""pcapng files (RFC draft-ietf-opsawg-pcapng): sections, interfaces, enhanced/simple/obsolete packet blocks.

Each section (SHB) fixes the byte order and numbers its interfaces (IDB) from 0; every interface has its
own link type, snaplen, timestamp resolution (``if_tsresol``: 10**-n or 2**-n seconds) and offset
(``if_tsoffset``, seconds). Blocks of other types (statistics, name resolution, decryption secrets, custom,
unknown) are skipped.

Framing is checked block by block: a length below 12, not a multiple of 4, absurdly large, or different from
the copy in the block's trailer is corruption. The walk keeps Enhanced Packet Blocks on a fast path (one
offset remembered per block; their fields are gathered with numpy for the whole batch). A batch never spans
an interface or section change, so one interface table describes all of its packets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from whyreset.errors import CaptureError, CorruptCaptureError, TruncatedCaptureError
from whyreset.ingest.records import I64, RecordBatch, WalkResult

SHB = 0x0A0D0D0A
IDB = 0x00000001
OPB = 0x00000002  # obsolete Packet Block
SPB = 0x00000003
EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
MAX_BLOCK_LEN = 32 * 1024 * 1024
"""Longer blocks are treated as corruption (Wireshark stops at 16 MiB of packet data)."""
MIN_BLOCK_LEN = 12
EPB_FIXED_LEN = 32  # header 8 + 20 bytes of fields + trailer 4
OPT_ENDOFOPT = 0
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14
MAX_TSOFFSET = 2**33
"""Seconds (about 272 years): a larger interface time offset cannot be meant and would overflow."""
NO_TIMESTAMP = -(2**63)
"""Marks a Simple Packet Block in the slow-path table: it has no timestamp of its own."""


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    """What an IDB says about the packets of its interface."""

    linktype: int
    snaplen: int
    tsresol_base: int
    """10 or 2."""
    tsresol_exponent: int
    """Timestamps count units of ``tsresol_base ** -tsresol_exponent`` seconds."""
    tsoffset: int
    """Seconds added to every timestamp."""


class PcapngWalker:
    """Resumable walker over a pcapng stream."""

    format_name = "pcapng"

    def __init__(self) -> None:
        self.frames_read = 0
        self.sections = 0
        self.big_endian = False
        self.interfaces: list[InterfaceInfo] = []
        self.declared_linktypes: set[int] = set()
        self.last_ts_ns = 0
        self._set_order(False)

    def _set_order(self, big_endian: bool) -> None:
        self.big_endian = big_endian
        self._order = ">" if big_endian else "<"
        self._type_len = struct.Struct(self._order + "II").unpack_from
        self._u32 = struct.Struct(self._order + "I").unpack_from

    # ----------------------------------------------------------------------------------- the walk
    def walk(self, raw: Any, pos: int, end: int, base: int, at_eof: bool, max_records: int) -> WalkResult:
        epb_offsets: list[int] = []
        others: list[tuple[int, int, int, int, int, int]] = []
        """(index in batch, data offset, caplen, wirelen, ts_ns or NO_TIMESTAMP, interface) of SPB/OPB."""
        error: CaptureError | None = None
        full = False
        type_len, u32 = self._type_len, self._u32
        count = 0
        view = memoryview(raw)  # struct reads a memoryview faster than an mmap or bytes object
        try:
            while True:
                if count >= max_records:
                    full = True
                    break
                if end - pos < MIN_BLOCK_LEN:
                    break
                block_type, block_len = type_len(view, pos)
                if block_type == SHB:
                    if count:
                        full = True  # a new section starts a new batch (byte order and interfaces change)
                        break
                    if end - pos < 28:
                        break
                    block_len = self._section_length(raw, pos, base)
                    type_len, u32 = self._type_len, self._u32
                elif self.sections == 0:
                    raise CorruptCaptureError(
                        "pcapng input does not start with a section header", offset=base
                    )
                self._check_length(block_len, base + pos, count)
                following = pos + block_len
                if following > end:
                    break
                if u32(view, following - 4)[0] != block_len:
                    raise CorruptCaptureError(
                        f"block trailer length differs from its header length {block_len}",
                        offset=base + pos,
                        record=self.frames_read + count + 1,
                    )
                if block_type == EPB:
                    if block_len < EPB_FIXED_LEN:
                        raise self._corrupt("enhanced packet block too short", base + pos, count)
                    epb_offsets.append(pos)
                    count += 1
                elif block_type == IDB:
                    if count:
                        full = True  # the new interface must describe only the packets after it
                        break
                    self._interface(raw, pos, block_len, base)
                elif block_type == SHB:
                    self._section(raw, pos, block_len, base)
                elif block_type in (SPB, OPB):
                    others.append(self._other_packet(raw, pos, block_type, block_len, base, count))
                    count += 1
                pos = following
        except CaptureError as exc:
            error = exc
        finally:
            view.release()
        if error is None and not full and at_eof and pos < end:
            error = TruncatedCaptureError(
                f"capture ends inside a block ({end - pos} of its bytes present)",
                offset=base + pos,
                record=self.frames_read + count + 1,
            )
        batch, batch_error = self._batch(raw, epb_offsets, others, base)
        if batch_error is not None:
            return WalkResult(batch, pos, batch_error)
        return WalkResult(batch, pos, error, full and error is None)

    def _corrupt(self, message: str, offset: int, count: int) -> CorruptCaptureError:
        return CorruptCaptureError(message, offset=offset, record=self.frames_read + count + 1)

    def _check_length(self, block_len: int, offset: int, count: int) -> None:
        if block_len < MIN_BLOCK_LEN or block_len % 4 or block_len > MAX_BLOCK_LEN:
            raise self._corrupt(f"impossible block length {block_len}", offset, count)

    # ----------------------------------------------------------------------------------- sections, interfaces
    def _section_length(self, raw: Any, pos: int, base: int) -> int:
        """Read the SHB's byte-order magic, switch to its byte order and return its block length."""
        (magic,) = struct.unpack_from("<I", raw, pos + 8)
        if magic == BYTE_ORDER_MAGIC:
            self._set_order(False)
        elif magic == struct.unpack("<I", struct.pack(">I", BYTE_ORDER_MAGIC))[0]:
            self._set_order(True)
        else:
            raise CorruptCaptureError("section header has no valid byte-order magic", offset=base + pos + 8)
        (block_len,) = self._u32(raw, pos + 4)
        if block_len < 28:
            raise CorruptCaptureError(f"section header block too short ({block_len})", offset=base + pos)
        return int(block_len)

    def _section(self, raw: Any, pos: int, block_len: int, base: int) -> None:
        major, _minor = struct.unpack_from(self._order + "HH", raw, pos + 12)
        if major != 1:
            raise CorruptCaptureError(f"unsupported pcapng major version {major}", offset=base + pos + 12)
        self.sections += 1
        self.interfaces = []

    def _interface(self, raw: Any, pos: int, block_len: int, base: int) -> None:
        if block_len < 20:
            raise CorruptCaptureError("interface description block too short", offset=base + pos)
        linktype, _reserved, snaplen = struct.unpack_from(self._order + "HHI", raw, pos + 8)
        base10, exponent, tsoffset = True, 6, 0
        for code, value in self._options(raw, pos + 16, pos + block_len - 4, base):
            if code == OPT_IF_TSRESOL and len(value) >= 1:
                base10, exponent = not value[0] & 0x80, value[0] & 0x7F
            elif code == OPT_IF_TSOFFSET and len(value) >= 8:
                (tsoffset,) = struct.unpack(self._order + "q", value[:8])
                if abs(tsoffset) > MAX_TSOFFSET:
                    raise CorruptCaptureError(f"if_tsoffset of {tsoffset} s is absurd", offset=base + pos)
        self.interfaces.append(InterfaceInfo(linktype, snaplen, 10 if base10 else 2, exponent, tsoffset))
        self.declared_linktypes.add(linktype)

    def _options(self, raw: Any, pos: int, end: int, base: int) -> list[tuple[int, bytes]]:
        options: list[tuple[int, bytes]] = []
        while end - pos >= 4:
            code, length = struct.unpack_from(self._order + "HH", raw, pos)
            if code == OPT_ENDOFOPT:
                break
            value_end = pos + 4 + length
            if value_end > end:
                raise CorruptCaptureError(f"option {code} overruns its block", offset=base + pos)
            options.append((code, bytes(raw[pos + 4 : value_end])))
            pos = value_end + (-length % 4)
        return options

    # ----------------------------------------------------------------------------------- packets
    def _other_packet(
        self, raw: Any, pos: int, block_type: int, block_len: int, base: int, count: int
    ) -> tuple[int, int, int, int, int, int]:
        """A Simple or obsolete Packet Block, decoded on the slow path (they are rare)."""
        if block_type == SPB:
            if not self.interfaces:
                raise self._corrupt("simple packet block before any interface", base + pos, count)
            if block_len < 16:
                raise self._corrupt("simple packet block too short", base + pos, count)
            (wirelen,) = self._u32(raw, pos + 8)
            snaplen = self.interfaces[0].snaplen or wirelen
            caplen = min(wirelen, snaplen, block_len - 16)
            return count, pos + 12, caplen, wirelen, NO_TIMESTAMP, 0
        if block_len < EPB_FIXED_LEN:
            raise self._corrupt("packet block too short", base + pos, count)
        iface, _drops, ts_high, ts_low, caplen, wirelen = struct.unpack_from(
            self._order + "HHIIII", raw, pos + 8
        )
        if iface >= len(self.interfaces):
            raise self._corrupt(f"packet block names undefined interface {iface}", base + pos, count)
        if caplen > block_len - EPB_FIXED_LEN:
            raise self._corrupt(f"packet block claims {caplen} captured bytes", base + pos, count)
        ts_ns = int(self._to_ns(np.array([(ts_high << 32) | ts_low], np.uint64), self.interfaces[iface])[0])
        return count, pos + 28, caplen, wirelen, ts_ns, iface

    def _batch(
        self, raw: Any, epb_offsets: list[int], others: list[tuple[int, int, int, int, int, int]], base: int
    ) -> tuple[RecordBatch | None, CaptureError | None]:
        """Columns for the packets found; an impossible EPB ends the batch before it, with its error."""
        n = len(epb_offsets) + len(others)
        if n == 0:
            return None, None
        buf = np.frombuffer(raw, np.uint8)
        columns = np.zeros((5, n), np.int64)  # data_start, caplen, wirelen, ts_ns, iface
        stamped = np.ones(n, bool)
        is_epb = np.ones(n, bool)
        if others:
            table = np.array(others, np.int64)
            is_epb[table[:, 0]] = False
            columns[:, table[:, 0]] = table[:, 1:].T
            stamped[table[:, 0]] = table[:, 4] != NO_TIMESTAMP
        error: CaptureError | None = None
        if epb_offsets:
            error, good = self._fill_epb(
                buf, np.array(epb_offsets, np.int64), np.flatnonzero(is_epb), base, columns
            )
            n = good
        if n == 0:
            return None, error
        data_start, caplen, wirelen, ts_ns, iface = columns[:, :n]
        ts_ns = self._fill_missing_timestamps(ts_ns.copy(), stamped[:n])
        linktypes = np.array([info.linktype for info in self.interfaces] or [-1], np.int64)
        first = self.frames_read + 1
        self.frames_read += n
        batch = RecordBatch(
            buf=buf,
            data_start=data_start.copy(),
            caplen=caplen.copy(),
            wirelen=wirelen.copy(),
            ts_ns=ts_ns,
            linktype=linktypes[np.minimum(iface, len(linktypes) - 1)],
            iface=iface.astype(np.uint16),
            first_frame=first,
        )
        return batch, error

    def _fill_epb(
        self, buf: Any, offsets: I64, where: I64, base: int, columns: I64
    ) -> tuple[CaptureError | None, int]:
        """Gather every EPB's fields into ``columns`` at rows ``where``.

        Returns the error of the first impossible block (undefined interface, captured length beyond the
        block) and how many leading packets of the batch are usable.
        """
        window = np.ascontiguousarray(buf[offsets[:, None] + np.arange(28)])
        fields = window.view(self._order + "u4").astype(np.int64)
        block_len, ifaces, high, low, captured, wire = (fields[:, i] for i in range(1, 7))
        bad = (ifaces >= len(self.interfaces)) | (captured > block_len - EPB_FIXED_LEN)
        error: CaptureError | None = None
        usable = columns.shape[1]
        if bad.any():
            first_bad = int(np.argmax(bad))
            usable = int(where[first_bad])
            reason = (
                f"packet block names undefined interface {int(ifaces[first_bad])}"
                if ifaces[first_bad] >= len(self.interfaces)
                else f"packet block claims {int(captured[first_bad])} captured bytes in a "
                f"{int(block_len[first_bad])}-byte block"
            )
            error = CorruptCaptureError(
                reason, offset=base + int(offsets[first_bad]), record=self.frames_read + usable + 1
            )
            ifaces = np.where(bad, 0, ifaces)
        units = (high.astype(np.uint64) << np.uint64(32)) | low.astype(np.uint64)
        stamps = np.zeros(len(offsets), np.int64)
        for index, info in enumerate(self.interfaces):
            mine = ifaces == index
            if mine.any():
                stamps[mine] = self._to_ns(units[mine], info)
        columns[0, where] = offsets + 28
        columns[1, where] = captured
        columns[2, where] = wire
        columns[3, where] = stamps
        columns[4, where] = ifaces
        return error, usable

    @staticmethod
    def _to_ns(units: Any, info: InterfaceInfo) -> I64:
        """Timestamp units of an interface to integer nanoseconds since the epoch."""
        exponent = info.tsresol_exponent
        offset_ns = info.tsoffset * 1_000_000_000
        if info.tsresol_base == 10 and exponent <= 9:
            ns = units.astype(np.int64) * (10 ** (9 - exponent))
        elif info.tsresol_base == 10 and exponent <= 27:
            ns = (units // np.uint64(10 ** (exponent - 9))).astype(np.int64)
        elif info.tsresol_base == 2 and exponent <= 32:
            seconds = (units >> np.uint64(exponent)).astype(np.int64)
            fraction = units & np.uint64((1 << exponent) - 1)
            ns = seconds * 1_000_000_000 + (
                (fraction * np.uint64(1_000_000_000)) >> np.uint64(exponent)
            ).astype(np.int64)
        else:
            # Exotic resolutions: exact integer arithmetic per packet, clamped into int64.
            divisor = info.tsresol_base**exponent
            values = [min(int(u) * 1_000_000_000 // divisor, 2**63 - 1) for u in units]
            ns = np.array(values, np.int64)
        return ns + offset_ns  # type: ignore[no-any-return]

    def _fill_missing_timestamps(self, ts_ns: I64, stamped: Any) -> I64:
        """Simple Packet Blocks carry no timestamp: give them the previous packet's."""
        if not stamped.all():
            last_stamped = np.maximum.accumulate(np.where(stamped, np.arange(len(ts_ns)), -1))
            # Before the first stamped packet of this batch, carry the last stamp of the previous batch.
            ts_ns = np.where(last_stamped >= 0, ts_ns[np.maximum(last_stamped, 0)], self.last_ts_ns)
        if len(ts_ns):
            self.last_ts_ns = int(ts_ns[-1])
        return ts_ns
