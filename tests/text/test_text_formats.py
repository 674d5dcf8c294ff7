"""The shapes pasted tcpdump text takes: wrapped, numbered, CRLF, noisy, damaged, timestamps, names.

Each test starts from what tcpdump itself prints for a real capture, changes it the way pastes do, and checks
that the packet table is the one the clean text gives (or the one tshark decodes from the capture).
"""

from __future__ import annotations

import io
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from text_captures import CORPUS
from text_oracle import require_tools, tcpdump_text

from whyreset.ingest.tcpdump_text import iter_text_capture, looks_like_tcpdump_text
from whyreset.model import PacketTable, ReadReport

SMALL_PCAP = CORPUS / "suricata-bug-6244-tcp-rst-with-data.pcap"
MEDIUM_PCAP = CORPUS / "suricata-tcp-rst-unacked-stream-09.pcap"
TABLE_FIELDS = ("frame", "seq", "ack", "flags", "window", "payload_len", "sport", "dport", "src_lo", "dst_lo")


def read_text(text: bytes, chunk_records: int = 262144) -> tuple[PacketTable, ReadReport]:
    report = ReadReport()
    captures = list(iter_text_capture(io.BytesIO(text), report, chunk_records))
    return PacketTable.concat([capture.packets for capture in captures]), report


def packet_lines(pcap: Path, *options: str) -> list[str]:
    require_tools("tcpdump")
    if not pcap.exists():
        pytest.skip(f"{pcap} is not here")
    text = tcpdump_text(pcap, *options).decode()
    return [line for line in text.splitlines() if not line.startswith("reading from")]


def assert_same_table(got: PacketTable, want: PacketTable, fields: tuple[str, ...] = TABLE_FIELDS) -> None:
    assert len(got) == len(want) > 0
    for name in fields:
        assert np.array_equal(got[name], want[name]), name


def test_wrapped_lines_read_like_whole_ones() -> None:
    lines = packet_lines(MEDIUM_PCAP, "-nn", "-vv")
    clean, _ = read_text("\n".join(lines).encode())
    # A terminal cuts at a column, anywhere in a word; a web page breaks at spaces and drops them.
    hard_cut = "\n".join(piece for line in lines for piece in textwrap.wrap(line, 80, drop_whitespace=False))
    soft_cut = "\n".join(textwrap.fill(line, 70, break_long_words=False) for line in lines)
    for text in (hard_cut, soft_cut):
        table, report = read_text(text.encode())
        assert report.bad_lines == []
        assert_same_table(table, clean, (*TABLE_FIELDS, "ttl", "opt_ts_val", "opt_ts_ecr"))


def test_numbered_lines_and_crlf() -> None:
    lines = packet_lines(SMALL_PCAP, "-nn")
    clean, _ = read_text("\n".join(lines).encode())
    numbered = "\r\n".join(f"{n} {line}" for n, line in enumerate(lines, 1))
    dotted = "\r\n".join(f"{n}. {line}" for n, line in enumerate(lines, 1))
    for text in (numbered, dotted):
        table, report = read_text(text.encode())
        assert report.bad_lines == []
        assert_same_table(table, clean)


def test_noise_is_counted_and_skipped() -> None:
    lines = packet_lines(SMALL_PCAP, "-nn")
    noise = [
        "$ sudo tcpdump -nn -i eth0 port 8080",
        "tcpdump: verbose output suppressed, use -v[v]... for full protocol decode",
        "listening on eth0, link-type EN10MB (Ethernet), snapshot length 262144 bytes",
        "",
        "Here the server resets the connection:",
    ]
    trailer = ["8 packets captured", "8 packets received by filter", "0 packets dropped by kernel"]
    table, report = read_text("\n".join(noise + lines + trailer).encode())
    clean, _ = read_text("\n".join(lines).encode())
    assert_same_table(table, clean)
    assert report.skipped_lines == len(noise) + len(trailer)
    assert report.bad_lines == []
    assert report.format == "tcpdump-text"


def test_damaged_packet_line_is_reported_and_reading_goes_on() -> None:
    lines = packet_lines(SMALL_PCAP, "-nn")
    damaged = list(lines)
    damaged[2] = damaged[2].replace("win 65535", "win sixty")
    table, report = read_text("\n".join(damaged).encode())
    assert [line_no for line_no, _ in report.bad_lines] == [3]
    assert "TCP fields" in report.bad_lines[0][1]
    assert report.records == len(lines)
    # The damaged record keeps its frame number: the others stay aligned with the capture.
    assert list(table["frame"]) == [1, 2, 4, 5, 6, 7, 8]


def test_timestamp_styles_agree() -> None:
    epoch, _ = read_text("\n".join(packet_lines(MEDIUM_PCAP, "-nn", "-tt")).encode())
    dated, dated_report = read_text("\n".join(packet_lines(MEDIUM_PCAP, "-nn", "-tttt")).encode())
    clock, clock_report = read_text("\n".join(packet_lines(MEDIUM_PCAP, "-nn")).encode())
    delta, delta_report = read_text("\n".join(packet_lines(MEDIUM_PCAP, "-nn", "-ttt")).encode())
    since, _ = read_text("\n".join(packet_lines(MEDIUM_PCAP, "-nn", "-ttttt")).encode())
    none, none_report = read_text("\n".join(packet_lines(MEDIUM_PCAP, "-nn", "-t")).encode())
    day_ns = 86_400 * 10**9
    assert np.array_equal(dated["ts_ns"], epoch["ts_ns"])  # tcpdump ran with TZ=UTC
    assert np.array_equal(clock["ts_ns"], epoch["ts_ns"] % day_ns)
    relative = epoch["ts_ns"] - epoch["ts_ns"][0]
    assert np.array_equal(since["ts_ns"], relative)
    assert np.array_equal(delta["ts_ns"], relative)
    assert np.array_equal(none["ts_ns"], (none["frame"].astype(np.int64) - 1) * 1000)
    assert any("local time" in limit for limit in dated_report.limits)
    assert any("no date" in limit for limit in clock_report.limits)
    assert any("relative" in limit for limit in delta_report.limits)
    assert any("-t)" in limit for limit in none_report.limits)


def test_delta_timestamps_that_go_down_are_read_as_deltas() -> None:
    text = "\n".join(packet_lines(MEDIUM_PCAP, "-nn", "-ttt"))
    table, _ = read_text(text.encode())
    assert np.all(np.diff(table["ts_ns"]) >= 0)


def test_chunks_concatenate_to_the_whole() -> None:
    text = "\n".join(packet_lines(MEDIUM_PCAP, "-nn")).encode()
    whole, _ = read_text(text)
    report = ReadReport()
    captures = list(iter_text_capture(io.BytesIO(text), report, chunk_records=7))
    assert len(captures) == -(-len(whole) // 7)
    assert all(len(capture.packets) <= 7 for capture in captures)
    assert_same_table(PacketTable.concat([capture.packets for capture in captures]), whole, ("ts_ns", *TABLE_FIELDS))
    assert report.tcp_segments == len(whole)


def test_excerpt_without_the_base_segment_keeps_relative_numbers() -> None:
    lines = packet_lines(SMALL_PCAP, "-nn")
    excerpt = lines[3:]  # from the first data segment: tcpdump's base segment (the SYN-ACK) is not pasted
    table, report = read_text("\n".join(excerpt).encode())
    assert int(table["seq"][0]) == 1  # "seq 1:8" stays relative
    assert int(table["ack"][0]) == 1
    assert any("kept relative" in limit for limit in report.limits)


def test_absolute_numbers_are_recognised() -> None:
    relative, _ = read_text("\n".join(packet_lines(MEDIUM_PCAP, "-nn")).encode())
    absolute, report = read_text("\n".join(packet_lines(MEDIUM_PCAP, "-nn", "-S")).encode())
    assert_same_table(absolute, relative)
    assert any("-S" in limit for limit in report.limits)


def test_names_become_stable_synthetic_addresses_and_ports() -> None:
    text = (
        "23:34:31.893798 IP bong.server.52986 > db-1.internal.postgresql: Flags [S], seq 1479370850, "
        "win 14600, "
        "options [mss 1460,sackOK,TS val 3970205077 ecr 0,nop,wscale 7], length 0\n"
        "23:34:31.896765 IP db-1.internal.postgresql > bong.server.52986: Flags [S.], seq 3196372313, "
        "ack 1479370851, win 14480, length 0\n"
        "23:34:31.896900 IP bong.server.52987 > localhost.no-such-service: Flags [S], seq 5, win 100, "
        "length 0\n"
    )
    table, report = read_text(text.encode())
    again, _ = read_text(text.encode())
    assert_same_table(table, again)
    assert list(table["dport"][:2]) == [5432, 52986]
    assert table["src_lo"][0] == table["dst_lo"][1] != table["src_lo"][1]
    assert (int(table["src_lo"][0]) & 0xF0000000) == 0xF0000000  # 240.0.0.0/4
    assert int(table["dst_lo"][2]) & 0xFFFFFFFF == 0x7F000001  # localhost is 127.0.0.1
    assert 49152 <= int(table["dport"][2]) <= 65535
    limits = "\n".join(report.limits)
    assert "'bong.server'" in limits and "'db-1.internal'" in limits and "'no-such-service'" in limits


def test_flag_forms_and_options() -> None:
    text = (
        "10:00:00.000001 IP 10.0.0.1.1000 > 10.0.0.2.80: Flags [SEW], seq 3000000000, win 1000, "
        "options [mss 1400,nop,wscale 14,sackOK,eol], length 0\n"
        "10:00:00.000002 IP 10.0.0.1.1000 > 10.0.0.2.80: Flags [none], seq 3000000001, win 1000, length 0\n"
        "10:00:00.000003 IP 10.0.0.1.1000 > 10.0.0.2.80: Flags [U.], seq 3000000001:3000000002, "
        "ack 700000007, "
        "win 9, urg 1, options [nop,nop,sack 2 {10:20}{30:40},unknown-99 0x0102], length 1\n"
        "10:00:00.000004 IP 10.0.0.1.1000 > 10.0.0.2.80: Flags [FP.], seq 1:4, ack 1, win 9, length 3\n"
        "10:00:00.000005 IP 10.0.0.2.80 > 10.0.0.1.1000: Flags [R], seq 700000007, win 0, length 0\n"
    )
    table, report = read_text(text.encode())
    assert report.bad_lines == []
    assert [int(flags) for flags in table["flags"]] == [0x0C2, 0x000, 0x030, 0x019, 0x004]
    assert (int(table["opt_mss"][0]), int(table["opt_wscale"][0]), bool(table["opt_sack_perm"][0])) == (
        1400,
        14,
        True,
    )
    # The third line is tcpdump's base segment (the first with ACK): printed absolute, but its SACK blocks are
    # already relative to the other side's base (ack - 1).
    assert int(table["sack_count"][2]) == 2
    assert table["sack_blocks"][2][:2].tolist() == [[700000016, 700000026], [700000036, 700000046]]
    # The next one is printed relative to those bases.
    assert (int(table["seq"][3]), int(table["ack"][3])) == (3000000002, 700000007)
    assert int(table["seq"][4]) == 700000007


def test_tcpdump3_one_line_format() -> None:
    text = (
        "22:15:16.348064 127.0.0.1.32803 > 127.0.0.1.9999: S 3357881819:3357881819(0) win 32767 "
        "<mss 16396,sackOK,timestamp 1 0,nop,wscale 0> (DF)\n"
        "22:15:16.348105 127.0.0.1.9999 > 127.0.0.1.32803: R 0:0(0) ack 3357881820 win 0 (DF)\n"
    )
    table, report = read_text(text.encode())
    assert report.bad_lines == []
    assert [int(flags) for flags in table["flags"]] == [0x002, 0x014]
    assert (int(table["opt_mss"][0]), int(table["opt_wscale"][0]), int(table["opt_ts_val"][0])) == (
        16396,
        0,
        1,
    )
    assert list(table["ip_df"]) == [True, True]


def test_tcpdump4_0_verbose_format() -> None:
    """tcpdump 4.0 put the IP header before the addresses on one line and kept 3.x's TCP numbers."""
    text = (
        "12:00:00.000001 IP (tos 0x0, ttl  64, id 35898, offset 0, flags [DF], proto: TCP (6), length: 60) "
        "192.168.1.2.50862 > 192.168.1.1.80: S, cksum 0x2c4f (correct), 1683484183:1683484183(0) win 5840 "
        "<mss 1460,sackOK,timestamp 1234 0,nop,wscale 6>\n"
        "12:00:00.000002 IP (tos 0x0, ttl  63, id 0, offset 0, flags [DF], proto: TCP (6), length: 60) "
        "192.168.1.1.80 > 192.168.1.2.50862: S, cksum 0x1111 (incorrect (-> 0x2222)), 99:99(0) "
        "ack 1683484184 win 5792 <mss 1460>\n"
    )
    table, report = read_text(text.encode())
    assert report.bad_lines == []
    assert [int(flags) for flags in table["flags"]] == [0x002, 0x012]
    assert [int(ttl) for ttl in table["ttl"]] == [64, 63]
    assert [int(seq) for seq in table["seq"]] == [1683484183, 99]
    assert (int(table["opt_wscale"][0]), int(table["opt_ts_val"][0]), int(table["frame_len"][0])) == (
        6,
        1234,
        60,
    )
    assert any("checksum offload" in limit for limit in report.limits)


def test_sniffer_recognises_text_and_nothing_else(tmp_path: Path) -> None:
    for options in ((), ("-nn", "-vv"), ("-e",), ("-t",)):
        head = "\n".join(packet_lines(SMALL_PCAP, *options)).encode()[:4096]
        assert looks_like_tcpdump_text(head), options
    assert not looks_like_tcpdump_text(SMALL_PCAP.read_bytes()[:4096])
    assert not looks_like_tcpdump_text(b"Connection reset by peer: the server sent RST.\n" * 20)


def test_quiet_output_is_reported_not_guessed() -> None:
    lines = packet_lines(SMALL_PCAP, "-nn", "-q")
    table, report = read_text("\n".join(lines).encode())
    assert len(table) == 0
    assert len(report.bad_lines) == report.records == len(lines)
    assert "-q" in report.bad_lines[0][1]


def test_no_break_spaces_and_hex_dumps() -> None:
    clean, _ = read_text("\n".join(packet_lines(SMALL_PCAP, "-nn")).encode())
    pasted = "\n".join(line.replace(" ", "\xa0") for line in packet_lines(SMALL_PCAP, "-nn"))
    table, report = read_text(pasted.encode())
    assert report.bad_lines == []
    assert_same_table(table, clean)
    table, report = read_text("\n".join(packet_lines(SMALL_PCAP, "-nn", "-X")).encode())
    assert report.bad_lines == []
    assert_same_table(table, clean)


def test_reading_speed_is_linear_and_sane() -> None:
    """A loose floor (the machine is shared): catches a quadratic slip, not a few percent."""
    lines = packet_lines(MEDIUM_PCAP, "-nn")
    text = ("\n".join(lines) + "\n").encode()
    timings = []
    for copies in (40, 160):
        started = time.process_time()
        table, _ = read_text(text * copies, chunk_records=5000)
        timings.append(time.process_time() - started)
        assert len(table) == len(lines) * copies
    assert len(lines) * 160 / timings[1] > 10_000  # lines per second of CPU time
    assert timings[1] < 8 * timings[0]  # 4x the input, well under 8x the time


def test_each_tcpdump_run_restarts_relative_numbers() -> None:
    """Two pastes of tcpdump output, each under its banner: the second run prints its base segments again."""
    require_tools("tcpdump")
    text = tcpdump_text(MEDIUM_PCAP, "-nn")  # starts with tcpdump's "reading from file" banner
    once, _ = read_text(text)
    twice, report = read_text(text + text)
    assert len(twice) == 2 * len(once)
    second = twice.take(slice(len(once), None))
    for name in ("seq", "ack", "sport", "dport", "flags"):
        assert np.array_equal(second[name], once[name]), name
    assert report.bad_lines == []
