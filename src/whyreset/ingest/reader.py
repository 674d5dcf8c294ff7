"""`iter_capture`: open any capture, sniff its format, walk it in chunks and decode each chunk.

Sources: a path, ``-`` (standard input) or a binary file object. Formats: classic pcap (4 magics), pcapng,
either of them gzip-compressed (decompressed as a stream), or tcpdump text (handed to
`whyreset.ingest.tcpdump_text`).

Contract (the architecture's one exception family): reading yields every chunk it could decode, then, if the
input is cut or corrupt, records the error in the shared `ReadReport` and raises the matching `CaptureError`.
Nothing else escapes except `OSError` from the operating system (a missing file, an I/O error), which is not a
property of the capture.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import struct
import sys
import time
from collections.abc import Iterator
from typing import IO, Any, NoReturn

from whyreset.errors import CaptureError, CorruptCaptureError, UnknownFormatError, UnsupportedLinkTypeError
from whyreset.ingest.columnar import SUPPORTED_LINKTYPES, decode_batch, empty_capture
from whyreset.ingest.pcap import MAGICS as PCAP_MAGICS
from whyreset.ingest.pcap import PcapWalker
from whyreset.ingest.pcapng import SHB, PcapngWalker
from whyreset.ingest.records import Walker, WalkResult
from whyreset.ingest.source import (
    GZIP_MAGIC,
    ByteStream,
    GzipStream,
    PageReleaser,
    PrefixedRawIO,
    RawStream,
    map_regular_file,
)
from whyreset.ingest.tcpdump_text import iter_text_capture, looks_like_tcpdump_text
from whyreset.model import Capture, PacketTable, ReadReport

DEFAULT_CHUNK_RECORDS = 262144
READ_SIZE = 1 << 20
"""Bytes asked of a stream per read (a pipe returns what it has, up to this)."""
STREAM_BATCH_BYTES = 8 << 20
"""While more bytes keep coming, read up to this much before decoding."""
STREAM_PAUSE = 0.01
"""A producer silent this long (seconds) has paused: decode and hand over what arrived."""
STREAM_MAX_DELAY = 0.25
"""After this long (seconds) gathering a batch, hand it over as soon as the producer is not ready."""
SNIFF_BYTES = 4
PCAPNG_MAGIC = SHB.to_bytes(4, "little")  # 0A 0D 0D 0A reads the same in both byte orders
TEXT_SAMPLE = 4096

Source = str | os.PathLike[str] | IO[bytes]


def iter_capture(source: Source, *, chunk_records: int = DEFAULT_CHUNK_RECORDS) -> Iterator[Capture]:
    """Read a capture chunk by chunk; every chunk shares one `ReadReport` that keeps being updated.

    At least one chunk is yielded for a readable capture, even an empty one. ``chunk_records`` bounds the
    records per chunk (and so memory); from a stream a chunk is also handed over whenever the producer
    pauses, so a live ``tcpdump -w - -U`` pipe is analysed as it runs.
    """
    chunk_records = max(1, int(chunk_records))
    name = _source_name(source)
    report = ReadReport(source=name)
    with _opened(source) as handle:
        yield from _read_handle(handle, report, chunk_records)


def read_capture(source: Source) -> Capture:
    """The whole capture as one `Capture` (for small files and tests; raises like `iter_capture`)."""
    chunks = list(iter_capture(source))
    return Capture(
        PacketTable.concat([chunk.packets for chunk in chunks]),
        [error for chunk in chunks for error in chunk.icmp_errors],
        {frame: data for chunk in chunks for frame, data in chunk.rst_payloads.items()},
        chunks[-1].report,
    )


def _source_name(source: Source) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return str(getattr(source, "name", "<stream>"))


@contextlib.contextmanager
def _opened(source: Source) -> Iterator[IO[bytes]]:
    if isinstance(source, str | os.PathLike):
        if os.fspath(source) == "-":
            yield sys.stdin.buffer
            return
        with open(source, "rb") as handle:
            yield handle
        return
    yield source


def _read_handle(handle: IO[bytes], report: ReadReport, chunk_records: int) -> Iterator[Capture]:
    mapping = map_regular_file(handle)
    if mapping is not None:
        magic = bytes(mapping[:SNIFF_BYTES])
        if magic in PCAP_MAGICS or magic == PCAPNG_MAGIC:
            walker = _walker_for(magic, report, compressed=False)
            if walker is None:  # cannot happen: the magic was just checked
                raise UnknownFormatError("unrecognised capture", offset=0)
            try:
                yield from _drive(walker, report, _MappedInput(mapping), chunk_records)
            finally:
                with contextlib.suppress(BufferError):
                    mapping.close()  # a lingering numpy view keeps it open until collected
            return
        mapping.close()  # gzip or text: read as a stream (from the start: mapping did not move the handle)
    yield from _read_stream(RawStream(handle), report, chunk_records)


def _read_stream(stream: RawStream, report: ReadReport, chunk_records: int) -> Iterator[Capture]:
    source: RawStream | GzipStream = stream
    prefix = _sniff(stream, report)
    compressed = prefix.startswith(GZIP_MAGIC)
    if compressed:
        source = GzipStream(stream)
        prefix = _sniff(source, report)
    walker = _walker_for(prefix, report, compressed=compressed)
    if walker is None:
        yield from _read_text(source, report, chunk_records)
        return
    yield from _drive(walker, report, _StreamInput(source), chunk_records)


def _sniff(stream: RawStream | GzipStream, report: ReadReport) -> bytes:
    """The first bytes of ``stream`` (at least `SNIFF_BYTES` unless the input is shorter), pushed back."""
    prefix = b""
    try:
        while len(prefix) < SNIFF_BYTES:
            data = stream.read_some(READ_SIZE)
            if not data:
                break
            prefix += data
    except CaptureError as exc:
        _fail(report, exc)
    if not prefix:
        _fail(report, UnknownFormatError("the input is empty", offset=0))
    stream.push_back(prefix)
    return prefix


def _walker_for(prefix: bytes, report: ReadReport, *, compressed: bool) -> Walker | None:
    """The walker for the format these first bytes announce; None for text; raises for anything else."""
    magic = prefix[:4]
    suffix = "+gzip" if compressed else ""
    if magic in PCAP_MAGICS:
        report.format = "pcap" + suffix
        return PcapWalker()
    if magic == PCAPNG_MAGIC:
        report.format = "pcapng" + suffix
        return PcapngWalker()
    if _looks_like_text(prefix):
        report.format = "tcpdump-text" + suffix
        return None
    _fail(report, UnknownFormatError(f"unknown capture format (starts with {magic.hex(' ')})", offset=0))


def _looks_like_text(prefix: bytes) -> bool:
    sample = prefix[:TEXT_SAMPLE]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 3:  # only a multi-byte character cut at the end of the sample is fine
            return False
        text = sample[: exc.start].decode("utf-8")
    # isspace() admits the no-break spaces that pastes from web pages and chat tools carry.
    if bool(text) and all(char.isprintable() or char.isspace() for char in text):
        return True
    return looks_like_tcpdump_text(sample)


def _read_text(stream: ByteStream, report: ReadReport, chunk_records: int) -> Iterator[Capture]:
    compressed = report.format.endswith("+gzip")
    text_stream = io.BufferedReader(PrefixedRawIO(stream), buffer_size=1 << 16)
    for chunk in iter_text_capture(text_stream, report, chunk_records):
        if compressed and not report.format.endswith("+gzip"):
            report.format += "+gzip"
        yield chunk




# ----------------------------------------------------------------------------------------- the walk
class _MappedInput:
    """All of a memory-mapped file, available at once."""

    def __init__(self, mapping: mmap.mmap) -> None:
        self.raw: Any = mapping
        self.base = 0
        self.end = len(mapping)
        self.at_eof = True
        self.failure: CaptureError | None = None
        self.releaser = PageReleaser(mapping)

    def more(self, pos: int) -> int:
        return pos


class _StreamInput:
    """A window over a stream: ``raw`` holds the unconsumed bytes from stream offset ``base`` on."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.raw: Any = b""
        self.base = stream.offset
        self.end = 0
        self.at_eof = False
        self.failure: CaptureError | None = None
        """The stream below broke (corrupt or cut gzip): raised once what was read before is walked."""

    def more(self, pos: int) -> int:
        """Drop the consumed bytes before ``pos``, read what is ready (waiting for at least one read)."""
        pieces = [self.raw[pos:]]
        self.base += pos
        got = 0
        # Batch while the producer keeps up (a fast pipe gives 64 kB per read: decoding each alone would
        # cost more than reading it); a pause of STREAM_PAUSE means a live capture is waiting for traffic.
        deadline = time.monotonic() + STREAM_MAX_DELAY
        while True:
            try:
                data = self.stream.read_some(READ_SIZE)
            except CaptureError as exc:
                self.failure = exc
                break
            if not data:
                self.at_eof = True
                break
            pieces.append(data)
            got += len(data)
            wait = STREAM_PAUSE if time.monotonic() < deadline else 0.0
            if got >= STREAM_BATCH_BYTES or not self.stream.more_ready(wait):
                break
        self.raw = b"".join(pieces)
        self.end = len(self.raw)
        return 0


def _drive(
    walker: Walker, report: ReadReport, source: _MappedInput | _StreamInput, chunk_records: int
) -> Iterator[Capture]:
    yielded = False
    pos = 0
    needs_data = not source.at_eof
    while True:
        if needs_data:
            if source.failure is not None:  # corrupt or cut gzip underneath, after what it gave was used
                _fail(report, source.failure)
            pos = source.more(pos)
        result = _walk(walker, report, source, pos, chunk_records)
        report.bytes_read = source.base + result.pos
        if result.batch is not None:
            yield decode_batch(result.batch, report)
            yielded = True
        if result.error is not None:
            _fail(report, result.error)
        pos = result.pos
        if isinstance(source, _MappedInput):
            source.releaser.release_before(pos)  # the file's pages behind us leave the resident memory
        if result.full:
            needs_data = False  # more records may already be in the buffer
        elif source.at_eof:
            break  # the walker consumed everything (it raises when the input ends mid-record)
        else:
            needs_data = True
    _check_link_types(report, walker.declared_linktypes)
    if not yielded:
        yield empty_capture(report)


def _walk(
    walker: Walker, report: ReadReport, source: _MappedInput | _StreamInput, pos: int, chunk_records: int
) -> WalkResult:
    try:
        return walker.walk(source.raw, pos, source.end, source.base, source.at_eof, chunk_records)
    except CaptureError as exc:
        _fail(report, exc)
    except (ValueError, IndexError, OverflowError, struct.error) as exc:  # a case the walker did not foresee
        _fail(report, CorruptCaptureError(f"unreadable framing: {exc}", offset=source.base + pos))


def _check_link_types(report: ReadReport, declared: set[int]) -> None:
    """Fail when nothing could be decoded because of the link types (and only then)."""
    skipped = sum(report.unsupported_link_types.values())
    if report.records and skipped == report.records:
        unusable = set(report.unsupported_link_types)
    elif not report.records and declared and not declared & SUPPORTED_LINKTYPES:
        unusable = declared
    else:
        return
    names = ", ".join(str(linktype) for linktype in sorted(unusable))
    _fail(report, UnsupportedLinkTypeError(f"no packet has a supported link type (link types: {names})"))


def _fail(report: ReadReport, error: CaptureError) -> NoReturn:
    """Record ``error`` in the report and raise it."""
    report.error = error.describe()
    report.error_offset = error.offset
    report.error_record = error.record
    raise error
