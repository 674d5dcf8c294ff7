"""The seed posts: blog pages around pasted dumps, read whole (prose is noise, dumps are packets).

Seed 000 pastes three dumps: two in tcpdump 3.x's format as TCP/IP Illustrated prints it (header line, then
the flags, options and ``(DF) (ttl ..)`` on indented lines, numbered ``1 `` and ``4. ``), and one ``-v`` dump
of tcpdump 4.x with a resolved host name. The other seeds quote no dump: nothing in them may read as a packet.
"""

from __future__ import annotations

import pytest
from test_text_formats import read_text
from text_captures import SEEDS

from whyreset.model import ACK, FIN, PSH, RST, SYN, PacketTable, format_addr

SEED_WITH_DUMPS = "000_b6e2d74d265227c8.txt"


def _seed(name: str) -> bytes:
    path = SEEDS / name
    if not path.exists():
        pytest.skip(f"{path} is not here")
    return path.read_bytes()


def _row(table: PacketTable, index: int) -> tuple[object, ...]:
    return (
        format_addr(table["src_hi"][index], table["src_lo"][index]),
        int(table["sport"][index]),
        format_addr(table["dst_hi"][index], table["dst_lo"][index]),
        int(table["dport"][index]),
        int(table["flags"][index]),
        int(table["seq"][index]),
        int(table["ack"][index]),
        int(table["window"][index]),
        int(table["payload_len"][index]),
    )


def test_seed_dumps_parse_to_the_expected_packets() -> None:
    table, report = read_text(_seed(SEED_WITH_DUMPS))
    assert report.bad_lines == []
    assert len(table) == report.records == 23
    assert list(table["frame"]) == list(range(1, 24))
    # Refused: the kernel's RST answers the SYN with seq 0 and ack ISN + 1.
    assert _row(table, 0) == ("127.0.0.1", 32803, "127.0.0.1", 9999, SYN, 3357881819, 0, 32767, 0)
    assert _row(table, 1) == ("127.0.0.1", 9999, "127.0.0.1", 32803, RST | ACK, 0, 3357881820, 0, 0)
    # Abortive close of ssh: relative "1343:1343(0) ack 132929" restored from the handshake's ISNs.
    assert _row(table, 2)[4:] == (SYN, 1520364313, 0, 65535, 0)
    assert _row(table, 3)[3:] == (2788, SYN | ACK, 181637276, 1520364314, 5840, 0)
    assert _row(table, 4)[4:] == (ACK, 1520364314, 181637277, 65535, 0)
    assert _row(table, 5) == (
        "192.168.10.140",
        2788,
        "192.168.10.14",
        22,
        RST | ACK,
        1520365656,
        181770205,
        0,
        0,
    )
    assert [int(ttl) for ttl in table["ttl"][2:6]] == [128, 64, 128, 128]
    assert [int(ip_id) for ip_id in table["ip_id"][2:6]] == [43922, 0, 43923, 44004]
    assert all(table["ip_df"][2:6])
    assert [int(mss) for mss in table["opt_mss"][2:6]] == [1460, 1460, 0, 0]
    assert all(table["opt_sack_perm"][2:4])
    # The -v dump: 'bong.server' has a synthetic address; data segments and both FINs restored to absolute.
    client = format_addr(table["src_hi"][6], table["src_lo"][6])
    assert client.startswith(("24", "25")) and int(client.split(".")[0]) >= 240
    assert _row(table, 6)[1:] == (52986, "1.1.1.1", 3001, SYN, 1479370850, 0, 14600, 0)
    assert _row(table, 9)[4:] == (ACK, 1479370851, 3196372314, 115, 4344)
    assert _row(table, 17)[4:] == (PSH | ACK, 3196381002, 1479376758, 136, 1005)
    assert _row(table, 19)[4:] == (FIN | ACK, 1479376758, 3196382007, 182, 0)
    assert _row(table, 22)[4:] == (ACK, 3196382008, 1479376759, 136, 0)
    assert int(table["opt_ts_val"][6]) == 3970205077
    assert int(table["opt_wscale"][7]) == 7
    assert [int(ttl) for ttl in table["ttl"][6:9]] == [64, 54, 64]
    assert [int(length) for length in table["frame_len"][6:10]] == [60, 60, 52, 4396]
    limits = "\n".join(report.limits)
    assert "'bong.server'" in limits
    assert "checksum offload" in limits
    assert "no TTL" in limits  # the refused dump has no -v


@pytest.mark.parametrize("name", sorted(path.name for path in SEEDS.glob("*.txt")) if SEEDS.is_dir() else [])
def test_every_seed_reads_without_bad_lines(name: str) -> None:
    data = _seed(name)
    table, report = read_text(data)
    assert report.bad_lines == []
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    assert report.skipped_lines + report.records <= lines
    if name != SEED_WITH_DUMPS:
        assert len(table) == report.records == 0
        assert report.skipped_lines == lines
