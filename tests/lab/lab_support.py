"""Helpers of the lab tests: a tshark view of a capture's resets (independent of whyreset's own readers)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "corpus"


def tshark_rsts(pcap: Path) -> list[tuple[str, str]]:
    """(source ``addr:port``, destination ``addr:port``) of every RST in the capture, in order (tshark)."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    fields = ["-e", "ip.src", "-e", "tcp.srcport", "-e", "ip.dst", "-e", "tcp.dstport"]
    done = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-Y", "tcp.flags.reset == 1", "-T", "fields", *fields],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [line.split("\t") for line in done.stdout.splitlines() if line.strip()]
    return [(f"{src}:{sport}", f"{dst}:{dport}") for src, sport, dst, dport in rows]


def rst_senders_by_tshark(pcap: Path, orig: str, resp: str) -> tuple[str, ...]:
    """``orig``/``resp`` for each RST between the two endpoints, by source address and port."""
    senders: list[str] = []
    for src, dst in tshark_rsts(pcap):
        if (src, dst) == (orig, resp):
            senders.append("orig")
        elif (src, dst) == (resp, orig):
            senders.append("resp")
    return tuple(senders)
