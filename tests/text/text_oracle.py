"""The oracle for the text reader's tests: tcpdump's text of a capture, and tshark's decode of it per frame.

Only the fields text can carry are compared. tshark is asked for raw (absolute) sequence numbers and SACK
edges, and only frames whose single IP layer carries TCP are kept (tunnels and ICMP quotes print differently
in text).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from whyreset.model import ACK, FIN, RST, SYN, PacketTable, format_addr, parse_addr

TSHARK_FIELDS = (
    "frame.number",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "ip.ttl",
    "ipv6.hlim",
    "ip.id",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.flags",
    "tcp.window_size_value",
    "tcp.len",
    "tcp.options.mss_val",
    "tcp.options.wscale.shift",
    "tcp.options.sack_perm",
    "tcp.options.timestamp.tsval",
    "tcp.options.timestamp.tsecr",
    "tcp.options.sack_le",
    "tcp.options.sack_re",
    "frame.len",
)


@dataclass(frozen=True, slots=True)
class OracleRow:
    """What tshark says about one TCP frame, in the packet table's terms."""

    frame: int
    src: str
    dst: str
    ttl: int
    ip_id: int
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    payload_len: int
    mss: int
    wscale: int
    sack_perm: bool
    ts_val: int | None
    ts_ecr: int | None
    sack: tuple[tuple[int, int], ...]
    frame_len: int


def require_tools(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} on PATH")


def tcpdump_text(pcap: Path, *options: str) -> bytes:
    """What ``tcpdump <options> -r pcap`` prints, its stderr banner first as a user would paste it."""
    done = subprocess.run(
        ["tcpdump", *options, "-r", str(pcap)],
        capture_output=True,
        timeout=120,
        check=True,
        env={**os.environ, "TZ": "UTC"},
    )
    return done.stderr + done.stdout


def tshark_rows(pcap: Path) -> dict[int, OracleRow]:
    """Frame number -> oracle row, for frames with exactly one IP layer and a TCP header."""
    command = [
        "tshark",
        "-r",
        str(pcap),
        "-n",
        "-o",
        "tcp.relative_sequence_numbers:FALSE",
        "-o",
        "tcp.analyze_sequence_numbers:FALSE",
        "-Y",
        "tcp and not icmp and not icmpv6",
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=|",
    ]
    for name in TSHARK_FIELDS:
        command += ["-e", name]
    done = subprocess.run(command, capture_output=True, timeout=300, check=True, text=True)
    rows: dict[int, OracleRow] = {}
    for line in done.stdout.splitlines():
        values = dict(zip(TSHARK_FIELDS, line.split("\t"), strict=True))
        row = _row(values)
        if row is not None:
            rows[row.frame] = row
    return rows


def _row(v: dict[str, str]) -> OracleRow | None:
    src = v["ip.src"] or v["ipv6.src"]
    dst = v["ip.dst"] or v["ipv6.dst"]
    if "|" in src or "|" in v["tcp.srcport"] or "|" in (v["ip.src"] + v["ipv6.src"]) or (v["ip.src"] and v["ipv6.src"]):
        return None  # tunnelled or nested: not one plain TCP/IP packet
    ttl = v["ip.ttl"] or v["ipv6.hlim"]
    lefts = [int(x) for x in v["tcp.options.sack_le"].split("|") if x]
    rights = [int(x) for x in v["tcp.options.sack_re"].split("|") if x]
    return OracleRow(
        frame=int(v["frame.number"]),
        src=format_addr(*parse_addr(src)),
        dst=format_addr(*parse_addr(dst)),
        ttl=int(ttl) if ttl else 0,
        ip_id=int(v["ip.id"], 16) if v["ip.id"] else 0,
        sport=int(v["tcp.srcport"]),
        dport=int(v["tcp.dstport"]),
        seq=int(v["tcp.seq_raw"]),
        ack=int(v["tcp.ack_raw"] or 0),
        flags=int(v["tcp.flags"], 16) & 0x1FF,
        window=int(v["tcp.window_size_value"]),
        payload_len=int(v["tcp.len"]),
        mss=int(v["tcp.options.mss_val"].split("|")[0] or 0),
        wscale=int(v["tcp.options.wscale.shift"].split("|")[0]) if v["tcp.options.wscale.shift"] else -1,
        sack_perm=bool(v["tcp.options.sack_perm"]),
        ts_val=int(v["tcp.options.timestamp.tsval"].split("|")[0]) if v["tcp.options.timestamp.tsval"] else None,
        ts_ecr=int(v["tcp.options.timestamp.tsecr"].split("|")[0]) if v["tcp.options.timestamp.tsecr"] else None,
        sack=tuple(zip(lefts, rights, strict=False)),
        frame_len=int(v["frame.len"]),
    )


def _comparable_address(text: str) -> bool:
    """False for the synthetic addresses of host names (240.0.0.0/4, fd00::/8): tshark has the real ones."""
    address = ipaddress.ip_address(text)
    synthetic = ipaddress.ip_network("240.0.0.0/4" if address.version == 4 else "fd00::/8")
    return address not in synthetic


@dataclass(slots=True)
class Comparison:
    """Field-by-field differences between the text reader's table and the oracle."""

    rows: int = 0
    mismatches: list[tuple[int, str, object, object]] | None = None
    inferred_seq: int = 0
    inferred_seq_wrong: int = 0
    missing_frames: list[int] | None = None


def compare(table: PacketTable, oracle: dict[int, OracleRow], options: tuple[str, ...]) -> Comparison:
    """Compare every row the text carries with tshark's decode of the same frame."""
    verbose = any(option.startswith("-v") for option in options)
    very_verbose = any(option.startswith("-vv") for option in options)
    link = "-e" in options
    result = Comparison(mismatches=[])
    assert result.mismatches is not None
    seen = set()
    for index in range(len(table)):
        frame = int(table["frame"][index])
        seen.add(frame)
        expected = oracle.get(frame)
        if expected is None:
            result.mismatches.append((frame, "frame", "in text", "not a TCP frame for tshark"))
            continue
        result.rows += 1
        got = _row_fields(table, index)
        pure_ack = expected.payload_len == 0 and not expected.flags & (SYN | FIN | RST)
        for name, value in got.items():
            want = getattr(expected, name)
            if name in ("src", "dst") and not _comparable_address(str(value)):
                continue
            if name == "ack" and not expected.flags & ACK:
                continue
            if name in ("ttl", "ip_id") and not verbose:
                continue
            if name == "frame_len" and not link:
                continue
            if name == "seq" and pure_ack and not very_verbose:
                result.inferred_seq += 1
                result.inferred_seq_wrong += value != want
                continue
            if value != want:
                result.mismatches.append((frame, name, value, want))
    result.missing_frames = sorted(set(oracle) - seen)
    return result


def _row_fields(table: PacketTable, index: int) -> dict[str, object]:
    count = int(table["sack_count"][index])
    has_ts = bool(table["opt_has_ts"][index])
    return {
        "src": format_addr(table["src_hi"][index], table["src_lo"][index]),
        "dst": format_addr(table["dst_hi"][index], table["dst_lo"][index]),
        "sport": int(table["sport"][index]),
        "dport": int(table["dport"][index]),
        "seq": int(table["seq"][index]),
        "ack": int(table["ack"][index]),
        "flags": int(table["flags"][index]),
        "window": int(table["window"][index]),
        "payload_len": int(table["payload_len"][index]),
        "mss": int(table["opt_mss"][index]),
        "wscale": int(table["opt_wscale"][index]),
        "sack_perm": bool(table["opt_sack_perm"][index]),
        "ts_val": int(table["opt_ts_val"][index]) if has_ts else None,
        "ts_ecr": int(table["opt_ts_ecr"][index]) if has_ts else None,
        "sack": tuple((int(left), int(right)) for left, right in table["sack_blocks"][index][:count]),
        "ttl": int(table["ttl"][index]),
        "ip_id": int(table["ip_id"][index]),
        "frame_len": int(table["frame_len"][index]),
    }
