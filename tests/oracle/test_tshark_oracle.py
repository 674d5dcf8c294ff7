"""Our connections against tshark: conversations, packets and bytes per direction, tcp.stream counts.

Inputs: every capture of /work/shared/corpus (real traffic from other projects) and captures built with
whyreset.ingest.craft. See tshark_oracle.py for what exactly is compared and why per 4-tuple.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tshark_oracle import (
    canonical_host,
    compare_exact,
    compare_with_conv_table,
    format_size,
    our_counts,
    parse_conv_table,
    sample_conv_output,
    split_endpoint,
    tshark_conversations,
    tshark_stream_counts,
    tshark_windows,
)

from whyreset.analysis import analyze

CORPUS = Path("/work/shared/corpus")
CORPUS_FILES = sorted(p for p in CORPUS.glob("*") if p.suffix in (".pcap", ".pcapng")) if CORPUS.is_dir() else []

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


# --- the parser itself (no tshark needed) -----------------------------------------------------------------


def test_parse_conv_table_rows_and_directions() -> None:
    rows = parse_conv_table(sample_conv_output())
    assert len(rows) == 2
    first, second = rows
    assert first.a == ("10.99.99.1", 55533) and first.b == ("10.99.99.45", 80)
    # "<-" columns come first: frames B sent to A; then "->": A to B (checked against tshark -T fields).
    assert (first.frames_b_to_a, first.bytes_b_to_a) == (5, "550 bytes")
    assert (first.frames_a_to_b, first.bytes_a_to_b) == (3, "275 bytes")
    assert second.a == ("2001:db8:200::1", 10002) and second.b == ("2001:db8:100::3", 443)


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 bytes"), (9999, "9999 bytes"), (10_000, "10 kB"), (183_999, "183 kB"), (12_345_678, "12 MB")],
)
def test_format_size_like_wireshark(size: int, text: str) -> None:
    assert format_size(size) == text


def test_split_endpoint_ipv6_without_brackets() -> None:
    assert split_endpoint("fe80::1:22") == ("fe80::1", 22)
    assert canonical_host("2001:0db8::0001") == "2001:db8::1"


# --- against tshark ---------------------------------------------------------------------------------------


def crafted_captures(tmp_path: Path) -> list[Path]:
    """Small captures with IPv4 and IPv6, refused, reset and port reuse, written with craft."""
    from whyreset.ingest import craft

    t0 = 1_700_000_000_000_000_000
    ms = 1_000_000
    packets: list[tuple[int, bytes]] = []

    def add(t_ms: float, ip: bytes) -> None:
        packets.append((t0 + int(t_ms * ms), craft.frame(craft.LINKTYPE_ETHERNET, ip)))

    c, s = "10.1.0.1", "10.1.0.2"
    # clean exchange
    add(0, craft.tcp_packet(c, s, 40000, 80, seq=100, flags="S", mss=1460))
    add(1, craft.tcp_packet(s, c, 80, 40000, seq=500, ack=101, flags="SA", mss=1460))
    add(2, craft.tcp_packet(c, s, 40000, 80, seq=101, ack=501, flags="A"))
    add(3, craft.tcp_packet(c, s, 40000, 80, seq=101, ack=501, flags="PA", payload=b"GET / HTTP/1.1\r\n\r\n"))
    add(4, craft.tcp_packet(s, c, 80, 40000, seq=501, ack=119, flags="PA", payload=b"x" * 1200))
    add(5, craft.tcp_packet(c, s, 40000, 80, seq=119, ack=1701, flags="FA"))
    add(6, craft.tcp_packet(s, c, 80, 40000, seq=1701, ack=120, flags="FA"))
    add(7, craft.tcp_packet(c, s, 40000, 80, seq=120, ack=1702, flags="A"))
    # refused
    add(10, craft.tcp_packet(c, s, 40001, 81, seq=7, flags="S"))
    add(11, craft.tcp_packet(s, c, 81, 40001, seq=0, ack=8, flags="RA"))
    # IPv6 reset after a request
    c6, s6 = "2001:db8::10", "2001:db8::20"
    add(20, craft.tcp_packet(c6, s6, 50000, 443, seq=1000, flags="S"))
    add(21, craft.tcp_packet(s6, c6, 443, 50000, seq=9000, ack=1001, flags="SA"))
    add(22, craft.tcp_packet(c6, s6, 50000, 443, seq=1001, ack=9001, flags="A"))
    add(23, craft.tcp_packet(c6, s6, 50000, 443, seq=1001, ack=9001, flags="PA", payload=b"hello"))
    add(24, craft.tcp_packet(s6, c6, 443, 50000, seq=9001, ack=1006, flags="RA"))
    # port reuse: the refused 4-tuple is used again 30 s later with a new ISN, and this time it works
    add(30_000, craft.tcp_packet(c, s, 40001, 81, seq=90_000, flags="S"))
    add(30_001, craft.tcp_packet(s, c, 81, 40001, seq=70_000, ack=90_001, flags="SA"))
    add(30_002, craft.tcp_packet(c, s, 40001, 81, seq=90_001, ack=70_001, flags="A"))
    add(30_003, craft.tcp_packet(c, s, 40001, 81, seq=90_001, ack=70_001, flags="RA"))
    path = tmp_path / "crafted.pcap"
    craft.write_pcap(path, packets, nanosecond=True)
    path_ng = tmp_path / "crafted-sll.pcapng"
    craft.write_pcapng(
        path_ng,
        [(ts, craft.frame(craft.LINKTYPE_LINUX_SLL, data[14:]), 0) for ts, data in packets],
        interfaces=[craft.Interface(craft.LINKTYPE_LINUX_SLL)],
    )
    return [path, path_ng]


def assert_agrees_with_tshark(path: Path) -> None:
    analysis = analyze(str(path), diagnose=False)
    ours = our_counts(analysis.connections)
    rows = tshark_conversations(str(path))
    exact, stream_count = tshark_stream_counts(str(path))
    problems = compare_with_conv_table(rows, ours, exact)
    problems += compare_exact(exact, ours)
    assert not problems, "\n".join([f"{path.name}: {len(problems)} differences", *problems[:20]])
    # tcp.stream splits port reuse as our tracker does: the counts agree wherever Wireshark's rule and ours
    # do.
    assert len(analysis.connections) == stream_count, (
        f"{path.name}: ours {len(analysis.connections)}, tshark {stream_count}"
    )


@pytest.mark.oracle
@needs_tshark
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_corpus_counts_match_tshark(path: Path) -> None:
    assert_agrees_with_tshark(path)


@pytest.mark.oracle
@needs_tshark
def test_crafted_counts_match_tshark(tmp_path: Path) -> None:
    for path in crafted_captures(tmp_path):
        assert_agrees_with_tshark(path)
        analysis = analyze(str(path), diagnose=False)
        assert len(analysis.connections) == 4  # the reused 4-tuple is a second connection, as tcp.stream says


@pytest.mark.oracle
@needs_tshark
@pytest.mark.parametrize("mix", ["stress", "web"])
def test_generated_mix_counts_match_tshark(tmp_path: Path, mix: str) -> None:
    """The benchmark's traffic mixes (bench/generate.py), small: hundreds of IPv4 and IPv6 connections; the web
    mix carries HTTP and TLS payloads, which tshark dissects."""
    from bench.generate import write_capture

    path = tmp_path / "mix.pcap"
    write_capture(path, 5000, seed=3, mix=mix)
    assert_agrees_with_tshark(path)


LAB_CORPUS = sorted((Path(__file__).parents[1] / "lab" / "corpus").glob("*.pcap"))


@pytest.mark.oracle
@needs_tshark
def test_scaled_windows_match_tshark() -> None:
    """`Connection.scaled_windows` against Wireshark's calculated window (``tcp.window_size``), frame by frame,
    on the lab's real captures and the shared corpus.

    Where whyreset knows both SYNs, the values are equal. Without both SYNs whyreset gives the raw field;
    Wireshark then guesses: with only one side's SYN seen (an asymmetric capture) it applies that side's scale
    as if the unseen answer had agreed, so those frames are not compared."""
    compared = 0
    for path in [*LAB_CORPUS, *CORPUS_FILES]:
        theirs = tshark_windows(str(path))
        for conn in analyze(str(path), diagnose=False).connections:
            frames = conn.packets["frame"].tolist()
            ours = conn.scaled_windows().tolist()
            raw = conn.packets["window"].tolist()
            for frame, window, field in zip(frames, ours, raw, strict=True):
                if frame not in theirs:
                    continue
                if conn.window_scale_known:
                    assert window == theirs[frame], f"{path.name} frame {frame}: ours {window}, tshark {theirs[frame]}"
                    compared += 1
                else:
                    assert window == field
    assert compared > 10_000
