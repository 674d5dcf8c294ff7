"""The reader's contract under arbitrary input: Capture chunks, then at most one CaptureError; nothing else.

Any bytes, valid captures with bytes changed, cut or inserted, read from memory and (for a sample) from a
memory-mapped file: reading must end, yield only well-formed chunks, and raise nothing but `CaptureError`.
"""

from __future__ import annotations

import gzip
import io
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_helpers import T0, handshake, records

from whyreset.errors import CaptureError
from whyreset.ingest import craft, iter_capture
from whyreset.model import PACKET_COLUMNS


def _valid_captures() -> list[bytes]:
    v4, v6 = handshake(), handshake("2001:db8::1", "2001:db8::2")
    icmp = craft.icmp_error("192.0.2.1", v4[0])
    fragments = craft.fragment_ipv4(
        craft.tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, payload=bytes(40), df=False), 16
    )
    chain = craft.tcp_packet(
        "2001:db8::1", "2001:db8::2", 1, 2, ext_headers=[craft.Ipv6Ext(0), craft.Ipv6Ext(60)]
    )
    pcap = craft.pcap_bytes(records([*v4, icmp, *fragments, chain]), nanosecond=True)
    pcap_sll = craft.pcap_bytes(records(v6, 276, vlan=()), linktype=276, big_endian=True)
    buffer = io.BytesIO()
    writer = craft.PcapngWriter(buffer)
    writer.section()
    writer.interface(craft.Interface(craft.LINKTYPE_ETHERNET, tsresol=9))
    writer.interface(craft.Interface(craft.LINKTYPE_NULL, tsresol=0x80 | 20))
    for i, packet in enumerate(v4):
        writer.packet(T0 + i, craft.frame(1, packet, vlan=[(craft.TPID_8021AD, 5), 6]), 0)
        writer.packet(T0 + i, craft.frame(0, v6[i]), 1)
    writer.simple_packet(craft.frame(1, v4[0]))
    writer.section(big_endian=True)
    writer.interface(craft.Interface(craft.LINKTYPE_RAW))
    writer.packet(T0, v4[1])
    return [pcap, pcap_sll, buffer.getvalue()]


VALID = _valid_captures()
MAGICS = [
    b"\xd4\xc3\xb2\xa1",
    b"\xa1\xb2\xc3\xd4",
    b"\x4d\x3c\xb2\xa1",
    b"\xa1\xb2\x3c\x4d",
    b"\x0a\x0d\x0d\x0a",
]


def check_contract(data: bytes, chunk_records: int = 3) -> None:
    """Read ``data``: only CaptureError may escape, chunks are well formed, frames increase."""
    last_frame = 0
    try:
        for chunk in iter_capture(io.BytesIO(data), chunk_records=chunk_records):
            table = chunk.packets
            assert set(PACKET_COLUMNS) <= set(table.columns)
            frames = table["frame"].tolist()
            assert frames == sorted(frames) and all(frame > last_frame for frame in frames)
            last_frame = frames[-1] if frames else last_frame
            assert (table["captured_payload"] <= table["payload_len"]).all()
            assert (table["sack_count"] <= 4).all()
            for frame, payload in chunk.rst_payloads.items():
                assert isinstance(payload, bytes) and payload and frame <= chunk.report.records
    except CaptureError as exc:
        assert exc.describe()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["set", "cut", "insert", "delete", "word"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif action == "word" and len(data) >= 4:
            # Lengths are 16/32-bit words: set one to a boundary value.
            value = draw(st.sampled_from([0, 1, 12, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            at = min(at, len(data) - 4)
            data[at : at + 4] = value.to_bytes(4, draw(st.sampled_from(["little", "big"])))
    return bytes(data)


SETTINGS = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.binary(max_size=600))
def test_any_bytes(data: bytes) -> None:
    check_contract(data)


@SETTINGS
@given(st.sampled_from(MAGICS), st.binary(max_size=600))
def test_any_bytes_after_a_magic(magic: bytes, rest: bytes) -> None:
    check_contract(magic + rest)


@SETTINGS
@given(mutated())
def test_mutated_valid_captures(data: bytes) -> None:
    check_contract(data)


@settings(max_examples=40, deadline=4000)
@given(mutated())
def test_mutated_captures_compressed_and_from_files(data: bytes) -> None:
    check_contract(gzip.compress(data), chunk_records=2)
    with tempfile.NamedTemporaryFile(suffix=".pcap") as handle:
        handle.write(data)
        handle.flush()
        try:
            for _ in iter_capture(handle.name):
                pass
        except CaptureError:
            pass


def test_valid_captures_read_cleanly() -> None:
    for data in VALID:
        chunks = list(iter_capture(io.BytesIO(data)))
        assert chunks[-1].report.error is None
        assert chunks[-1].report.tcp_segments > 0
