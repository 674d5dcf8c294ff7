"""The tracefs parser on real lines and format files captured on this kernel (6.18)."""

from __future__ import annotations

from pathlib import Path

import pytest

from whyreset.lab.tracer import (
    counter_deltas,
    drop_filter,
    kernel_reset_of,
    parse_line,
    parse_trace,
    symbols_of,
)

DATA = Path(__file__).parent / "data"
TRACE = (DATA / "trace-6.18.txt").read_text()
HOSTS = {"127.20.0.1": "server", "127.20.0.2": "client"}
OFFSET = 1_795_292_966_334_694_818


def test_header_and_comment_lines_are_not_records() -> None:
    assert parse_line("# tracer: nop") is None
    assert parse_line("#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION") is None
    assert parse_line("") is None


def test_send_reset_line_fields_and_timestamp() -> None:
    line = next(line for line in TRACE.splitlines() if "TCP_ABORT_ON_CLOSE" in line)
    record = parse_line(line)
    assert record is not None
    assert record.event == "tcp_send_reset"
    assert record.ts_ns == 567_996_228_000
    assert record.fields["src"] == "127.20.0.1:8080"
    assert record.fields["dest"] == "127.20.0.2:40002"
    assert record.fields["state"] == "TCP_CLOSE"
    assert record.fields["reason"] == "TCP_ABORT_ON_CLOSE"


def test_line_without_the_irq_flags_column_still_parses() -> None:
    # Older kernels / the irq-info option off: no "..s1." column.
    line = "  python-1 [000]  12.000001: tcp_send_reset: src=10.0.0.1:80 dest=10.0.0.2:5000 state=TCP_CLOSE"
    record = parse_line(line)
    assert record is not None and record.ts_ns == 12_000_001_000 and record.fields["state"] == "TCP_CLOSE"


def test_whole_buffer_gives_resets_in_time_order_tagged_by_host() -> None:
    resets, drops = parse_trace(TRACE, OFFSET, HOSTS)
    sent = [(r.src, r.reason, r.netns) for r in resets if r.event == "tcp_send_reset"]
    assert sent == [
        ("127.20.0.1:9", "NO_SOCKET", "server"),
        ("127.20.0.1:8080", "TCP_ABORT_ON_CLOSE", "server"),
        ("127.20.0.1:8081", "INVALID_SYN", "server"),
    ]
    received = [(r.src, r.dst, r.netns) for r in resets if r.event == "tcp_receive_reset"]
    assert received[0] == ("127.20.0.2:40001", "127.20.0.1:9", "client")
    assert all(r.reason is None for r in resets if r.event == "tcp_receive_reset")
    assert [r.t_ns for r in resets] == sorted(r.t_ns for r in resets)
    assert resets[0].t_ns == 567_945_963_000 + OFFSET
    assert [d.reason for d in drops] == ["NO_SOCKET", "TCP_LISTEN_OVERFLOW"]


def test_events_of_addresses_the_lab_does_not_own_are_dropped() -> None:
    resets, _ = parse_trace(TRACE, 0, {"127.99.0.1": "elsewhere"})
    assert resets == []


def test_receive_reset_of_an_ipv6_socket_uses_the_v6_fields() -> None:
    line = (
        "  curl-7 [001] ..s1. 5.5: tcp_receive_reset: family=AF_INET6 sport=5000 dport=443 saddr=0.0.0.0 "
        "daddr=0.0.0.0 saddrv6=2001:db8::2 daddrv6=2001:db8::1 sock_cookie=3"
    )
    record = parse_line(line)
    assert record is not None
    reset = kernel_reset_of(record, 0, {"2001:db8::2": "client"})
    assert reset is not None
    assert (reset.src, reset.dst, reset.netns) == ("[2001:db8::2]:5000", "[2001:db8::1]:443", "client")


def test_drops_freed_outside_tcp_are_ignored() -> None:
    udp = (
        "  dig-9 [000] ..s1. 1.0: kfree_skb: skbaddr=0 rx_sk=0 protocol=2048 "
        "location=__udp4_lib_rcv+0x5/0x9 reason: NO_SOCKET"
    )
    assert parse_trace(udp, 0, {}) == ([], [])


def test_drop_filter_keeps_tcp_reasons_with_this_kernels_values() -> None:
    format_text = (DATA / "kfree_skb-6.18.format").read_text()
    symbols = symbols_of(format_text)
    assert symbols["TCP_LISTEN_OVERFLOW"] == 40 and symbols["NO_SOCKET"] == 3
    condition = drop_filter(format_text)
    assert condition is not None
    assert "reason == 40" in condition.split(" || ")
    assert "reason == 3" in condition.split(" || ")
    assert f"reason == {symbols['NOT_SPECIFIED']}" not in condition.split(" || ")
    assert f"reason == {symbols['NETFILTER_DROP']}" not in condition.split(" || ")


def test_reset_reason_names_come_from_the_format_file() -> None:
    names = symbols_of((DATA / "tcp_send_reset-6.18.format").read_text())
    assert names["TCP_ABORT_ON_CLOSE"] == 11 and names["TCP_KEEPALIVE_TIMEOUT"] == 15


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({"ListenOverflows": 2, "InSegs": 10}, {"ListenOverflows": 5, "InSegs": 10}, {"ListenOverflows": 3}),
        (
            {"InSegs": 1, "TCPAbortOnClose": 0},
            {"InSegs": 4, "TCPAbortOnClose": 1},
            {"TCPAbortOnClose": 1, "InSegs": 3},
        ),
    ],
)
def test_counter_deltas_keep_moved_counters_key_ones_first(
    before: dict[str, int], after: dict[str, int], expected: dict[str, int]
) -> None:
    deltas = counter_deltas(before, after)
    assert deltas == expected
    assert list(deltas) == list(expected)
