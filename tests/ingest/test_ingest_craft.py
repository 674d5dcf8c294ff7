"""craft: the packet builder and writers that every other test (and the benchmark) relies on."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ingest_helpers import T0, handshake

from whyreset.ingest import craft, read_capture


def test_internet_checksum_rfc1071_example() -> None:
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (after the end-around carry).
    assert craft.internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
    # A packet that includes its own correct checksum sums to zero.
    packet = craft.tcp_packet("10.0.0.1", "10.0.0.2", 1, 2)
    assert craft.internet_checksum(packet[:20]) == 0


def test_flag_letters() -> None:
    assert craft.tcp_flags("SA") == 0x12
    assert craft.tcp_flags("R.") == 0x04
    assert craft.tcp_flags("FPAUECN") == 0x1F9
    assert craft.tcp_flags(".") == 0
    with pytest.raises(ValueError):
        craft.tcp_flags("X")


def test_options_are_padded_and_bounded() -> None:
    assert len(craft.tcp_options(mss=1460, wscale=7, sack_perm=True, timestamps=(1, 2))) == 20
    assert len(craft.tcp_options(wscale=7)) == 4
    with pytest.raises(ValueError):
        craft.tcp_options(timestamps=(1, 2), sack_blocks=[(1, 2)] * 4)


def test_snaplen_cuts_records_but_keeps_the_wire_length() -> None:
    data = craft.pcap_bytes([(T0, bytes(100))], snaplen=60)
    assert len(data) == 24 + 16 + 60
    assert int.from_bytes(data[24 + 12 : 24 + 16], "little") == 100


@pytest.mark.parametrize("linktype", [craft.LINKTYPE_ETHERNET, craft.LINKTYPE_LINUX_SLL2, craft.LINKTYPE_RAW])
@pytest.mark.parametrize("ipv6", [False, True])
@pytest.mark.parametrize("with_timestamps", [False, True])
def test_bulk_frames_equal_per_packet_frames(linktype: int, ipv6: bool, with_timestamps: bool) -> None:
    n = 6
    rng = np.random.default_rng(7)
    if ipv6:
        src = rng.integers(0, 256, (n, 16), dtype=np.uint8)
        dst = rng.integers(0, 256, (n, 16), dtype=np.uint8)
        texts = [(str(_v6(s)), str(_v6(d))) for s, d in zip(src, dst, strict=True)]
    else:
        src = rng.integers(0, 2**32, n, dtype=np.uint32)
        dst = rng.integers(0, 2**32, n, dtype=np.uint32)
        texts = [(_v4(s), _v4(d)) for s, d in zip(src, dst, strict=True)]
    sport = rng.integers(1, 65536, n)
    seq = rng.integers(0, 2**32, n)
    ack = rng.integers(0, 2**32, n)
    flags = np.array([0x02, 0x12, 0x10, 0x18, 0x04, 0x11])
    payload = np.array([0, 0, 1, 1460, 7, 0])
    ts_val = rng.integers(0, 2**32, n) if with_timestamps else None
    batch = craft.bulk_tcp_frames(
        src=src, dst=dst, sport=sport, dport=443, seq=seq, ack=ack, flags=flags, window=501,
        payload_len=payload, ttl=61, ip_id=np.arange(n), ts_val=ts_val, ts_ecr=5, linktype=linktype,
    )  # fmt: skip
    for i in range(n):
        packet = craft.tcp_packet(
            *texts[i], int(sport[i]), 443, seq=int(seq[i]), ack=int(ack[i]), flags=int(flags[i]), window=501,
            payload=bytes(int(payload[i])), ttl=61, ip_id=i,
            timestamps=(int(ts_val[i]), 5) if ts_val is not None else None,
        )  # fmt: skip
        assert batch.frame(i) == craft.frame(linktype, packet), i


def _v4(value: int) -> str:
    import ipaddress

    return str(ipaddress.IPv4Address(int(value)))


def _v6(value: np.ndarray) -> str:  # type: ignore[type-arg]
    import ipaddress

    return str(ipaddress.IPv6Address(bytes(value)))


def _small_batch() -> craft.FrameBatch:
    return craft.bulk_tcp_frames(
        src=np.array([1, 2, 3], np.uint32), dst=np.array([4, 5, 6], np.uint32), sport=1, dport=2,
        payload_len=np.array([0, 10, 200]),
    )  # fmt: skip


@pytest.mark.parametrize("nanosecond", [False, True])
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("snaplen", [0, 1, 60, 100, 262144])
def test_bulk_pcap_equals_per_record_pcap(nanosecond: bool, big_endian: bool, snaplen: int) -> None:
    batch = _small_batch().take(np.array([2, 0, 1]))  # out of order in the source buffer, too
    stamps = np.array([T0, T0 + 1500, T0 + 2_000_000_001])
    bulk = io.BytesIO()
    craft.write_pcap_bulk(bulk, stamps, batch, nanosecond=nanosecond, big_endian=big_endian, snaplen=snaplen)
    frames = [(int(t), batch.frame(i)) for i, t in enumerate(stamps)]
    expected = craft.pcap_bytes(frames, nanosecond=nanosecond, big_endian=big_endian, snaplen=snaplen)
    assert bulk.getvalue() == expected


def test_bulk_pcapng_equals_writer_output() -> None:
    batch = _small_batch()
    stamps = np.array([T0, T0 + 1, T0 + 2])
    bulk = io.BytesIO()
    craft.write_pcapng_bulk(bulk, stamps, batch, tsresol=9, snaplen=90)
    interface = craft.Interface(batch.linktype, snaplen=90, tsresol=9)
    expected = craft.pcapng_bytes(
        [(int(t), batch.frame(i), 0) for i, t in enumerate(stamps)], interfaces=[interface]
    )
    assert bulk.getvalue() == expected


def test_frame_batch_take_and_concat() -> None:
    batch = _small_batch()
    reordered = batch.take(np.array([2, 0]))
    assert [reordered.frame(0), reordered.frame(1)] == [batch.frame(2), batch.frame(0)]
    joined = craft.FrameBatch.concat([batch, reordered])
    assert [joined.frame(i) for i in range(5)] == [
        *(batch.frame(i) for i in range(3)),
        batch.frame(2),
        batch.frame(0),
    ]
    one = np.array([1], np.uint32)
    other = craft.bulk_tcp_frames(src=one, dst=one, sport=1, dport=2, linktype=craft.LINKTYPE_RAW)
    with pytest.raises(ValueError):
        craft.FrameBatch.concat([batch, other])


def test_bulk_capture_reads_back(tmp_path: Path) -> None:
    n = 5000
    rng = np.random.default_rng(1)
    seq = rng.integers(0, 2**32, n)
    batch = craft.bulk_tcp_frames(
        src=rng.integers(0, 2**32, n, dtype=np.uint32), dst=rng.integers(0, 2**32, n, dtype=np.uint32),
        sport=rng.integers(1024, 65536, n), dport=80, seq=seq, flags=0x18,
        payload_len=rng.integers(0, 300, n), ts_val=np.arange(n),
    )  # fmt: skip
    path = tmp_path / "bulk.pcap"
    craft.write_pcap_bulk(path, T0 + np.arange(n) * 10, batch)
    t = read_capture(str(path)).packets
    assert np.array_equal(t["seq"], seq.astype(np.uint32))
    assert np.array_equal(t["opt_ts_val"], np.arange(n, dtype=np.uint32))
    assert np.array_equal(t["ts_ns"], T0 + np.arange(n) * 10)


@pytest.mark.oracle
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_finds_every_checksum_good(tmp_path: Path) -> None:
    v4, v6 = handshake(), handshake("2001:db8::1", "2001:db8::2")
    chain = [craft.Ipv6Ext(craft.IPPROTO_HOPOPTS), craft.Ipv6Ext(craft.IPPROTO_ROUTING, bytes(22))]
    packets = [
        *v4, *v6,
        craft.tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, ip_options=b"\x01\x01\x01\x00"),
        craft.tcp_packet("2001:db8::1", "2001:db8::2", 1, 2, ext_headers=chain),
        craft.icmp_error("192.0.2.1", v4[0]),
        craft.icmp_error("2001:db8::9", v6[0]),
        craft.udp_packet("10.0.0.1", "10.0.0.2", 53, 53, b"odd"),
        craft.udp_packet("2001:db8::1", "2001:db8::2", 53, 53, b"even"),
    ]  # fmt: skip
    bulk = craft.bulk_tcp_frames(
        src=np.array([0x0A000001, 0xC0000201], np.uint32), dst=np.array([0x0A000002, 0x0A000003], np.uint32),
        sport=1, dport=2, payload_len=np.array([0, 33]), ts_val=np.array([1, 2]),
    )  # fmt: skip
    frames = [craft.frame(1, p) for p in packets] + [bulk.frame(0), bulk.frame(1)]
    path = tmp_path / "checksums.pcap"
    craft.write_pcap(path, [(T0 + i, f) for i, f in enumerate(frames)])
    fields = ["ip.checksum.status", "tcp.checksum.status", "udp.checksum.status"]
    fields += ["icmp.checksum.status", "icmpv6.checksum.status"]
    command = ["tshark", "-r", str(path), "-T", "fields", "-E", "occurrence=f"]
    command += [
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
    ]
    for field in fields:
        command += ["-e", field]
    output = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    lines = output.splitlines()
    assert len(lines) == len(frames)
    statuses = {value for line in lines for value in line.split("\t") if value}
    assert statuses == {"1"}  # 1 = good; 0 would be bad, 2 unverified


def test_take_across_several_blocks_keeps_every_frame() -> None:
    n = 3 * craft.TAKE_BLOCK_FRAMES + 5
    rng = np.random.default_rng(2)
    batch = craft.bulk_tcp_frames(
        src=rng.integers(0, 2**32, n, dtype=np.uint32), dst=rng.integers(0, 2**32, n, dtype=np.uint32),
        sport=1, dport=2, seq=np.arange(n), payload_len=rng.integers(0, 50, n),
    )  # fmt: skip
    order = rng.permutation(n)
    shuffled = batch.take(order)
    for i in (0, 1, craft.TAKE_BLOCK_FRAMES - 1, craft.TAKE_BLOCK_FRAMES, n - 1):
        assert shuffled.frame(i) == batch.frame(int(order[i]))
    back = shuffled.take(np.argsort(order))
    assert np.array_equal(back.data, batch.data)
