"""Broken input: truncation at every byte, impossible lengths, unknown formats, gzip, text delegation."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import pytest
from ingest_helpers import T0, handshake, records

from whyreset.errors import (
    CaptureError,
    CorruptCaptureError,
    TruncatedCaptureError,
    UnknownFormatError,
)
from whyreset.ingest import craft, iter_capture
from whyreset.model import Capture


def read_all(source: object) -> tuple[list[Capture], CaptureError | None]:
    """Chunks read before the error, and the error (None when the input was fine)."""
    chunks: list[Capture] = []
    try:
        for chunk in iter_capture(source):  # type: ignore[arg-type]
            chunks.append(chunk)
    except CaptureError as exc:
        return chunks, exc
    return chunks, None


def segments(chunks: list[Capture]) -> list[int]:
    return [int(frame) for chunk in chunks for frame in chunk.packets["frame"]]


def small_pcap() -> tuple[bytes, list[int]]:
    """Three records, and the offset where each record ends."""
    data = craft.pcap_bytes(records(handshake()[:3]), nanosecond=True)
    ends, pos = [], 24
    while pos < len(data):
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
        ends.append(pos)
    return data, ends


def small_pcapng() -> tuple[bytes, list[int]]:
    buffer = io.BytesIO()
    writer = craft.PcapngWriter(buffer)
    writer.section()
    writer.interface(craft.Interface(craft.LINKTYPE_ETHERNET, tsresol=9))
    packets = handshake()[:3]
    ends = []
    for i, packet in enumerate(packets):
        writer.packet(T0 + i, craft.frame(1, packet))
        ends.append(buffer.tell())
    return buffer.getvalue(), ends


@pytest.mark.parametrize("build", [small_pcap, small_pcapng], ids=["pcap", "pcapng"])
@pytest.mark.parametrize("via", ["stream", "file"])
def test_truncated_at_every_byte(build, via: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, ends = build()
    path = tmp_path / "cut"
    for cut in range(len(data) + 1):
        prefix = data[:cut]
        if via == "file":
            path.write_bytes(prefix)
            chunks, error = read_all(str(path))
        else:
            chunks, error = read_all(io.BytesIO(prefix))
        complete = sum(1 for end in ends if end <= cut)
        assert segments(chunks) == list(range(1, complete + 1)), cut
        if cut in _block_boundaries(data):
            assert error is None, (cut, error)
        elif cut < 4:
            # Too short to tell: unknown, or (when the bytes happen to be printable) empty text.
            assert error is None or isinstance(error, UnknownFormatError), (cut, error)
        else:
            assert isinstance(error, TruncatedCaptureError), (cut, error)
            if complete or cut >= _first_record_start(data):
                assert error.record == complete + 1, (cut, error.record)
            assert error.offset is not None and error.offset <= cut


def _block_boundaries(data: bytes) -> set[int]:
    """Offsets where a valid (possibly empty) capture can end: after the file header, a block or a record."""
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        boundaries, pos = set(), 0
        while pos < len(data):
            pos += struct.unpack_from("<I", data, pos + 4)[0]
            boundaries.add(pos)
        return boundaries
    return {24, *small_pcap()[1]}


def _first_record_start(data: bytes) -> int:
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        shb = struct.unpack_from("<I", data, 4)[0]
        return shb + struct.unpack_from("<I", data, shb + 4)[0]
    return 24


def test_truncation_is_recorded_in_the_report() -> None:
    data, ends = small_pcap()
    chunks, error = read_all(io.BytesIO(data[: ends[1] + 5]))
    assert isinstance(error, TruncatedCaptureError)
    report = chunks[-1].report
    assert report.error == error.describe()
    assert (report.error_record, report.error_offset) == (3, ends[1])
    assert "record 3" in str(error)


@pytest.mark.parametrize("caplen", [262145, 0x7FFFFFFF, 0xFFFFFFFF])
def test_impossible_record_length_is_corruption_after_the_good_records(caplen: int) -> None:
    data, ends = small_pcap()
    broken = bytearray(data)
    struct.pack_into("<I", broken, ends[0] + 8, caplen)
    chunks, error = read_all(io.BytesIO(bytes(broken)))
    assert isinstance(error, CorruptCaptureError)
    assert segments(chunks) == [1]
    assert (error.record, error.offset) == (2, ends[0])


def test_large_snaplen_allows_large_records() -> None:
    big = craft.tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, flags="PA", payload=b"j" * 60_000)
    record = craft.frame(1, big) + bytes(240_000)  # a 300 kB record: beyond 262144, within the snaplen
    data = craft.pcap_bytes([(T0, record)], snaplen=1 << 20)
    chunks, error = read_all(io.BytesIO(data))
    assert error is None
    assert [int(n) for n in chunks[0].packets["payload_len"]] == [60_000]


def test_bad_pcap_version_is_corruption() -> None:
    data = bytearray(small_pcap()[0])
    struct.pack_into("<H", data, 4, 3)
    _, error = read_all(io.BytesIO(bytes(data)))
    assert isinstance(error, CorruptCaptureError)


@pytest.mark.parametrize("data", [b"", b"\x00" * 100, bytes(range(256)), b"\x89PNG\r\n\x1a\n" + bytes(50)])
def test_unknown_formats(data: bytes) -> None:
    chunks, error = read_all(io.BytesIO(data))
    assert isinstance(error, UnknownFormatError)
    assert chunks == []


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(iter_capture(str(tmp_path / "nope.pcap")))


# ------------------------------------------------------------------------------------------------ gzip
@pytest.mark.parametrize("build", [small_pcap, small_pcapng], ids=["pcap", "pcapng"])
def test_gzip_is_decompressed_as_a_stream(build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, _ = build()
    compressed = gzip.compress(data)
    path = tmp_path / "c.gz"
    path.write_bytes(compressed)
    for source in (io.BytesIO(compressed), str(path)):
        chunks, error = read_all(source)
        assert error is None
        assert segments(chunks) == [1, 2, 3]
        assert chunks[-1].report.format.endswith("+gzip")
        assert chunks[-1].report.bytes_read == len(data)


def test_gzip_with_several_members_and_padding() -> None:
    data, _ = small_pcap()
    compressed = gzip.compress(data[:40]) + gzip.compress(data[40:]) + bytes(16)
    chunks, error = read_all(io.BytesIO(compressed))
    assert error is None
    assert segments(chunks) == [1, 2, 3]


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_gzip_gives_the_readable_prefix(keep: float) -> None:
    rng = __import__("random").Random(5)
    payloads = [bytes(rng.getrandbits(8) for _ in range(300)) for _ in range(40)]  # incompressible
    packets = [
        craft.tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, seq=i, payload=p) for i, p in enumerate(payloads)
    ]
    compressed = gzip.compress(craft.pcap_bytes(records(packets)))
    chunks, error = read_all(io.BytesIO(compressed[: int(len(compressed) * keep)]))
    assert isinstance(error, TruncatedCaptureError)
    # Everything decompressed before the cut is read: about ``keep`` of the 40 records.
    got = segments(chunks)
    assert got == list(range(1, len(got) + 1))
    assert len(got) >= int(40 * keep) - 3


def test_corrupt_gzip_is_corruption() -> None:
    data, _ = small_pcap()
    compressed = bytearray(gzip.compress(data))
    compressed[20:30] = b"\xff" * 10
    _, error = read_all(io.BytesIO(bytes(compressed)))
    assert isinstance(error, (CorruptCaptureError, TruncatedCaptureError))


def test_gzip_of_garbage_is_unknown() -> None:
    _, error = read_all(io.BytesIO(gzip.compress(bytes(range(200)))))
    assert isinstance(error, UnknownFormatError)


# ------------------------------------------------------------------------------------------------ text
TEXT = (
    b"1700000000.000001 IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1000, win 64240, length 0\n"
    b"1700000000.000002 IP 10.0.0.2.80 > 10.0.0.1.40000: Flags [R.], seq 0, ack 1001, win 0, length 0\n"
)


@pytest.mark.parametrize("compress", [False, True])
def test_text_is_handed_to_the_tcpdump_text_reader(compress: bool) -> None:
    data = gzip.compress(TEXT) if compress else TEXT
    chunks, error = read_all(io.BytesIO(data))
    assert error is None
    report = chunks[-1].report
    assert report.format.startswith("tcpdump-text")
    assert report.format.endswith("+gzip") == compress
    assert sum(len(chunk.packets) for chunk in chunks) == 2
