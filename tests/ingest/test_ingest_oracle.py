"""Cross-check decoded fields against tshark, on real-world captures and on crafted ones of every shape."""

from __future__ import annotations

import io
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from ingest_helpers import T0, handshake, records

from whyreset.ingest import craft, read_capture
from whyreset.model import format_addr

pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed"),
]

CORPUS = Path("/work/shared/corpus")
CORPUS_FILES = sorted(p for p in CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else []

TSHARK_PREFERENCES = [
    "-o", "tcp.desegment_tcp_streams:FALSE",
    "-o", "tcp.relative_sequence_numbers:FALSE",
    "-o", "tcp.analyze_sequence_numbers:FALSE",
    "-o", "ip.defragment:FALSE",
    "-o", "ipv6.defragment:FALSE",
]  # fmt: skip

# tshark field -> (our column, how to read tshark's text)
FIELDS: dict[str, tuple[str, str]] = {
    "tcp.srcport": ("sport", "int"),
    "tcp.dstport": ("dport", "int"),
    "tcp.seq_raw": ("seq", "int"),
    "tcp.ack_raw": ("ack", "int"),
    "tcp.flags": ("flags", "int"),
    "tcp.window_size_value": ("window", "int"),
    "tcp.len": ("payload_len", "int"),
    "ip.ttl": ("ttl", "int"),
    "ipv6.hlim": ("ttl", "int"),
    "ip.id": ("ip_id", "int"),
    "tcp.options.mss_val": ("opt_mss", "int"),
    "tcp.options.wscale.shift": ("opt_wscale", "int"),
    "tcp.options.timestamp.tsval": ("opt_ts_val", "int"),
    "tcp.options.timestamp.tsecr": ("opt_ts_ecr", "int"),
    "frame.len": ("frame_len", "int"),
    "frame.time_epoch": ("ts_ns", "epoch"),
    "ip.src": ("src", "addr"),
    "ipv6.src": ("src", "addr"),
    "ip.dst": ("dst", "addr"),
    "ipv6.dst": ("dst", "addr"),
    "tcp.options.sack_le": ("sack_left", "list"),
}


def tshark_rows(path: Path, display_filter: str, fields: list[str]) -> list[list[str]]:
    command = ["tshark", "-n", "-r", str(path), *TSHARK_PREFERENCES, "-Y", display_filter, "-T", "fields"]
    command += ["-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for name in ["frame.number", *fields]:
        command += ["-e", name]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return [line.split("\t") for line in result.stdout.splitlines()]


def ours(table, row: int, column: str) -> object:  # type: ignore[no-untyped-def]
    if column in ("src", "dst"):
        return format_addr(table[f"{column}_hi"][row], table[f"{column}_lo"][row])
    if column == "sack_left":
        return [int(v) for v in table["sack_blocks"][row, : int(table["sack_count"][row]), 0]]
    return int(table[column][row])


def theirs(text: str, kind: str) -> object:
    first = text.split(",")[0]
    if kind == "epoch":
        return int(Decimal(first) * 1_000_000_000)
    if kind == "addr":
        return first
    if kind == "list":
        return [int(v) for v in text.split(",")]
    return int(first, 0)


def compare_with_tshark(path: Path) -> int:
    """Assert that tshark and we agree on which frames are TCP and on their fields. Returns the count."""
    capture = read_capture(str(path))
    table = capture.packets
    row_of = {int(frame): row for row, frame in enumerate(table["frame"])}
    names = list(FIELDS)
    rows = tshark_rows(path, "tcp && !icmp && !icmpv6", names)
    assert sorted(row_of) == [int(r[0]) for r in rows]
    mismatches = []
    for fields in rows:
        row = row_of[int(fields[0])]
        for name, text in zip(names, fields[1:], strict=True):
            column, kind = FIELDS[name]
            if not text or (name == "ip.ttl" and "," in text):  # absent, or a tunnel's outer header
                continue
            expected, got = theirs(text, kind), ours(table, row, column)
            if kind == "epoch":
                # tshark prints microsecond files with 6 digits: compare at the precision it shows.
                precision = 10 ** (9 - len(text.split(".")[1])) if "." in text else 1
                expected, got = int(expected) // precision, int(got) // precision  # type: ignore[call-overload]
            if expected != got:
                mismatches.append((int(fields[0]), name, expected, got))
    assert mismatches[:10] == []
    icmp_rows = tshark_rows(
        path,
        "(icmp.type == 3 || icmp.type == 11 || icmpv6.type == 1 || icmpv6.type == 3) && tcp",
        ["tcp.srcport", "tcp.dstport"],
    )
    expected_icmp = [(int(r[0]), int(r[1].split(",")[0]), int(r[2].split(",")[0])) for r in icmp_rows]
    assert [(e.frame, e.quoted_sport, e.quoted_dport) for e in capture.icmp_errors] == expected_icmp
    return len(rows)


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.name for p in CORPUS_FILES])
def test_corpus_fields_match_tshark(path: Path) -> None:
    compare_with_tshark(path)


def _crafted_pcapng(big_endian: bool) -> bytes:
    buffer = io.BytesIO()
    w = craft.PcapngWriter(buffer, big_endian=big_endian)
    w.section()
    eth = w.interface(craft.Interface(craft.LINKTYPE_ETHERNET, tsresol=9))
    sll = w.interface(craft.Interface(craft.LINKTYPE_LINUX_SLL, tsresol=6))
    null = w.interface(craft.Interface(craft.LINKTYPE_NULL, tsresol=0x80 | 20, tsoffset=1_000_000_000))
    v6 = handshake("2001:db8::1", "2001:db8::2", 50000, 443)
    for i, packet in enumerate(handshake()):
        w.packet(T0 + i * 1_000_000, craft.frame(1, packet, vlan=[(craft.TPID_8021AD, 10), 20]), eth)
        w.packet(T0 + i * 1_000_000 + 500, craft.frame(113, v6[i]), sll)
        w.packet(T0 + i * 1_000_000 + 900, craft.frame(0, packet), null)
    w.section(big_endian=not big_endian)
    raw = w.interface(craft.Interface(craft.LINKTYPE_RAW, tsresol=9))
    syn = craft.tcp_packet("10.1.1.1", "10.2.2.2", 1234, 22, seq=1, flags="S", ip_options=b"\x01" * 8)
    w.packet(T0 + 10, syn, raw)
    w.packet(T0 + 11, craft.icmp_error("192.0.2.1", syn, code=10), raw)
    chain = [craft.Ipv6Ext(craft.IPPROTO_HOPOPTS), craft.Ipv6Ext(craft.IPPROTO_DSTOPTS, bytes(10))]
    w.packet(T0 + 12, craft.tcp_packet("2001:db8::5", "2001:db8::6", 9, 10, seq=3, ext_headers=chain), raw)
    syn6 = craft.tcp_packet("2001:db8::5", "2001:db8::6", 9, 10, seq=3)
    w.packet(T0 + 13, craft.icmp_error("2001:db8::1", syn6, icmp_type=3, code=0), raw)
    return buffer.getvalue()


def _fragments() -> list[bytes]:
    whole = craft.tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, seq=5, payload=bytes(90), df=False, ip_id=3)
    return [*craft.fragment_ipv4(whole, 40), handshake()[0]]


CRAFTED = {
    "pcap-usec-le": lambda: craft.pcap_bytes(records(handshake())),
    "pcap-nsec-be-snaplen": lambda: craft.pcap_bytes(
        records(handshake() * 2), nanosecond=True, big_endian=True, snaplen=80
    ),
    "pcap-sll2-v6": lambda: craft.pcap_bytes(
        records(handshake("2001:db8::1", "2001:db8::2"), 276), linktype=276, nanosecond=True
    ),
    "pcap-raw-fragments": lambda: craft.pcap_bytes(records(_fragments(), 101), linktype=101),
    "pcapng-le": lambda: _crafted_pcapng(False),
    "pcapng-be": lambda: _crafted_pcapng(True),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_captures_match_tshark(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.cap"
    path.write_bytes(CRAFTED[name]())
    assert compare_with_tshark(path) > 0
