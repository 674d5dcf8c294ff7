"""Classic pcap (libpcap) files: both byte orders, microsecond and nanosecond timestamps.

Layout (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-04.html): a 24-byte file header (magic, version
2.4, reserved, snaplen, link type with optional FCS bits) then records of a 16-byte header (seconds, fraction,
captured length, original length) followed by the captured bytes.

The walk is the only per-record Python work: read one length, check it, remember the offset. The record
headers are then decoded for the whole batch with one numpy gather.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from whyreset.errors import CaptureError, CorruptCaptureError, TruncatedCaptureError
from whyreset.ingest.records import I64, RecordBatch, WalkResult

MAGIC_USEC = 0xA1B2C3D4
MAGIC_NSEC = 0xA1B23C4D
MAGICS: dict[bytes, tuple[bool, bool]] = {
    struct.pack("<I", MAGIC_USEC): (False, False),
    struct.pack(">I", MAGIC_USEC): (True, False),
    struct.pack("<I", MAGIC_NSEC): (False, True),
    struct.pack(">I", MAGIC_NSEC): (True, True),
}
"""First four bytes -> (big endian, nanosecond timestamps)."""

FILE_HEADER_LEN = 24
RECORD_HEADER_LEN = 16
STANDARD_MAX_CAPLEN = 262144
"""libpcap's and Wireshark's maximum packet size for ordinary link types; a larger record length is bogus."""
ABSOLUTE_MAX_CAPLEN = 16 * 1024 * 1024
"""Cap on what a (possibly corrupt) header snaplen can make us accept."""
LINKTYPE_MASK = 0x03FFFFFF
"""The link type field's upper bits carry the FCS length (LT_FCS_*); the link type is below them."""


class PcapWalker:
    """Resumable walker over a classic pcap stream."""

    format_name = "pcap"

    def __init__(self) -> None:
        self.frames_read = 0
        self.big_endian = False
        self.nanosecond = False
        self.snaplen = 0
        self.linktype = -1
        self.max_caplen = STANDARD_MAX_CAPLEN
        self.declared_linktypes: set[int] = set()
        self._header_done = False
        self._caplen_at: Any = None

    def walk(self, raw: Any, pos: int, end: int, base: int, at_eof: bool, max_records: int) -> WalkResult:
        if end != len(raw):
            raise ValueError("the pcap walker reads its buffer to the end: pass end=len(raw)")
        if not self._header_done:
            if end - pos < FILE_HEADER_LEN:
                if at_eof:
                    error = TruncatedCaptureError("pcap file header is cut short", offset=base + pos)
                    return WalkResult(None, pos, error)
                return WalkResult(None, pos)
            self._read_file_header(bytes(raw[pos : pos + FILE_HEADER_LEN]), base + pos)
            pos += FILE_HEADER_LEN
        return self._walk_records(raw, pos, end, base, at_eof, max_records)

    def _read_file_header(self, header: bytes, offset: int) -> None:
        if header[:4] not in MAGICS:
            raise CorruptCaptureError("not a pcap file header", offset=offset)
        self.big_endian, self.nanosecond = MAGICS[header[:4]]
        order = ">" if self.big_endian else "<"
        major, _minor, _zone, _sigfigs, snaplen, linktype = struct.unpack(order + "HHiIII", header[4:])
        if major != 2:
            raise CorruptCaptureError(f"unsupported pcap version {major}", offset=offset + 4)
        self.snaplen = snaplen
        self.linktype = linktype & LINKTYPE_MASK
        self.declared_linktypes.add(self.linktype)
        self.max_caplen = max(STANDARD_MAX_CAPLEN, min(snaplen, ABSOLUTE_MAX_CAPLEN))
        self._caplen_at = struct.Struct(order + "8xI").unpack_from
        self._header_done = True

    def _walk_records(
        self, raw: Any, pos: int, end: int, base: int, at_eof: bool, max_records: int
    ) -> WalkResult:
        # The hot loop trusts nothing and checks nothing: it hops from length to length and lets struct
        # raise once a header no longer fits in the buffer. The hops are validated afterwards, vectorised.
        marks = [pos]
        append = marks.append
        caplen_at = self._caplen_at
        # struct reads a memoryview faster than an mmap or bytes object (no buffer export per call).
        with memoryview(raw) as view:
            try:
                for _ in range(max_records):
                    pos += RECORD_HEADER_LEN + caplen_at(view, pos)[0]
                    append(pos)
            except struct.error:
                pass
        hops = np.array(marks, np.int64)
        starts, following = hops[:-1], hops[1:]
        caplen = following - starts - RECORD_HEADER_LEN
        oversized = caplen > self.max_caplen
        bad = oversized | (following > end)
        good = int(np.argmax(bad)) if bad.any() else len(starts)
        resume = int(hops[good])
        full = good == max_records
        error: CaptureError | None = None
        record = self.frames_read + good + 1
        if good < len(starts) and oversized[good]:
            error = CorruptCaptureError(
                f"record claims {int(caplen[good])} captured bytes, over the maximum of {self.max_caplen}",
                offset=base + resume,
                record=record,
            )
        elif not full and at_eof and resume < end:
            error = TruncatedCaptureError(
                f"capture ends inside a record ({end - resume} of its bytes present)",
                offset=base + resume,
                record=record,
            )
        batch = self._batch(raw, starts[:good]) if good else None
        return WalkResult(batch, resume, error, full)

    def _batch(self, raw: Any, starts: I64) -> RecordBatch:
        buf = np.frombuffer(raw, np.uint8)
        window = sliding_window_view(buf, RECORD_HEADER_LEN)[starts]
        fields = window.view(">u4" if self.big_endian else "<u4").astype(np.int64)
        seconds, fraction, caplen, wirelen = fields[:, 0], fields[:, 1], fields[:, 2], fields[:, 3]
        ts_ns = seconds * 1_000_000_000 + (fraction if self.nanosecond else fraction * 1000)
        first = self.frames_read + 1
        n = len(starts)
        self.frames_read += n
        return RecordBatch(
            buf=buf,
            data_start=starts + RECORD_HEADER_LEN,
            caplen=caplen,
            wirelen=wirelen,
            ts_ns=ts_ns,
            linktype=np.full(n, self.linktype, np.int64),
            iface=np.zeros(n, np.uint16),
            first_frame=first,
        )
