"""What the file-format walkers hand to the decoder: where each packet's bytes are, and its metadata.

A walker (pcap, pcapng) does the one inherently sequential job, following record lengths through the
buffer, and keeps its per-record Python work to a few integer operations. Everything it learns is returned
as columns (`RecordBatch`), and `whyreset.ingest.columnar` decodes the link, IP and TCP headers of the whole
batch at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from whyreset.errors import CaptureError

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
Buffer = U8
"""The bytes being walked, as a numpy uint8 view (of a memory map or of a bytes object)."""


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """Packet records of one chunk: their bytes stay in ``buf``, described column by column."""

    buf: Buffer
    """The buffer holding every record of the batch."""
    data_start: I64
    """Offset in ``buf`` of each packet's first captured byte."""
    caplen: I64
    """Captured bytes of each packet (what the file holds)."""
    wirelen: I64
    """Original length of each packet on the wire."""
    ts_ns: I64
    """Capture timestamps, integer nanoseconds since the epoch."""
    linktype: npt.NDArray[np.int64]
    """Link type of each packet (pcapng interfaces may differ)."""
    iface: npt.NDArray[np.uint16]
    """pcapng interface id (0 for pcap)."""
    first_frame: int
    """1-based record number of the first packet in the batch (frames are numbered consecutively)."""

    def __len__(self) -> int:
        return len(self.data_start)


def empty_batch(buf: Buffer, first_frame: int) -> RecordBatch:
    zeros = np.zeros(0, np.int64)
    return RecordBatch(buf, zeros, zeros, zeros, zeros, zeros, np.zeros(0, np.uint16), first_frame)


@dataclass(frozen=True, slots=True)
class WalkResult:
    """One step of a walker over ``buf[pos:end]``."""

    batch: RecordBatch | None
    """Complete packet records found (None when none)."""
    pos: int
    """Where the next step starts (the first byte not consumed)."""
    error: CaptureError | None = None
    """Reading must stop after ``batch`` is used: the framing is corrupt or the input ends mid-record."""
    full: bool = False
    """The step stopped because it reached its record limit (more may be in the buffer already)."""


class Walker(Protocol):
    """A file-format walker: resumable over a growing stream, one buffer at a time."""

    format_name: str
    frames_read: int
    """Packet records handed out so far."""
    declared_linktypes: set[int]
    """Link types the file header / interface blocks announced so far."""

    def walk(self, raw: Any, pos: int, end: int, base: int, at_eof: bool, max_records: int) -> WalkResult:
        """Consume complete records of ``raw[pos:end]``; ``base`` is the stream offset of ``raw[0]``.

        ``raw`` is a bytes-like object (bytes, mmap). At ``at_eof`` a record cut short is a
        `TruncatedCaptureError`; otherwise the walker returns early and is called again with more bytes.
        """
        ...
