"""A capture that missed segments must not turn a genuine RST into an "injected" one.

The core judges an RST's acceptability against the numbers the capture shows. When the capture missed part of
the exchange (a pasted dump with "..." in the middle, tcpdump dropping packets, a capture started late on a
busy link), an RST sent with its sender's real SND.NXT sits beyond anything captured and looks "in window but
not exact". Two things in the RST itself prove the capture is incomplete: its sequence number is beyond what
its sender was seen sending, and its ACK acknowledges data of the receiver that never appeared. Then the
receiver's real RCV.NXT is unknown; if the receiver sends nothing afterwards (no RFC 5961 challenge ACK, no more
data), the RST ended the connection, and its TTL and IP ID continuing the sender's own sequence say who sent it.

Seed 000 quotes exactly this: TCP/IP Illustrated's ``ssh linux cat /usr/share/dict/words`` interrupted with ^C,
three handshake packets, the bulk transfer elided, then the client's RST (seq 1343, ack 132929, IP ID 44004
after 43923, TTL 128 like the client's other packets).
"""

from __future__ import annotations

from pathlib import Path as FsPath

import pytest

from diagnose.script import CLIENT, MS, SERVER, Path, S
from whyreset import ingest
from whyreset.core.tracker import build_connections
from whyreset.diagnose import build_context, diagnose
from whyreset.diagnose.finding import Finding
from whyreset.ids import CauseId, Side
from whyreset.model import ACK, RST

SEEDS = FsPath("/work/shared/seeds")
SEED000_SSH_DUMP = """\
1 22:33:06.386747 192.168.10.140.2788 > 192.168.10.14.ssh:
    S [tcp sum ok] 1520364313:1520364313(0) win 65535
    <mss 1460, nop, nop, sackOK>
    (DF) (ttl 128, id 43922, len 48)

2 22:33:06.386855 192.168.10.14.ssh > 192.168.10.140.2788:
    S [tcp sum ok] 181637276:181637276(0) ack 1520364314 win 5840
    <mss 1460, nop, nop, sackOK>
    (DF) (ttl 64, id 0, len 48)

3 22:33:06.387676 192.168.10.140.2788 > 192.168.10.14.ssh:
    . [tcp sum ok] 1:1(0) ack 1 win 65535
    (DF) (ttl 128, id 43923, len 40)

(... ssh authentication exchange and bulk data transfer ...)

4. 22:33:13.648247 192.168.10.140.2788 > 192.168.10.14.ssh:
    R [tcp sum ok] 1343:1343(0) ack 132929 win 0
    (DF) (ttl 128, id 44004, len 40)
"""
ABORT_CAUSES = {CauseId.CLOSE_WITH_UNREAD_DATA, CauseId.ABORTIVE_CLOSE, CauseId.BENIGN_RESET}
"""An RST without FIN from an endpoint that had received data: which of these it was is the subject of the
wire-identical analysis (catalogue); any of them, by the right host, is the truth here."""


def diagnose_file(path: FsPath) -> list[Finding | None]:
    capture = ingest.read_capture(str(path))
    connections = build_connections(capture.packets, capture.icmp_errors, capture.rst_payloads)
    context = build_context(connections, capture.icmp_errors)
    return [diagnose(conn, context) for conn in connections]


def assert_abort_by_client_not_injection(finding: Finding | None) -> None:
    assert finding is not None
    assert finding.cause in ABORT_CAUSES, (finding.cause, finding.summary)
    assert finding.actor is Side.ORIG
    assert CauseId.INJECTED_RESET not in {a.cause for a in finding.alternatives}
    gap = [e for e in finding.evidence if "capture missed segments" in e.text]
    assert gap, [e.text for e in finding.evidence]


def test_seed000_ssh_dump_read_as_tcpdump_text_is_the_clients_abort(tmp_path: FsPath) -> None:
    dump = tmp_path / "seed000_ssh.txt"
    dump.write_text(SEED000_SSH_DUMP)
    (finding,) = diagnose_file(dump)
    assert_abort_by_client_not_injection(finding)
    assert finding is not None
    gap = next(e.text for e in finding.evidence if "capture missed segments" in e.text)
    assert "IP ID 44004 continues its sequence after 43923" in gap
    assert finding.impact.resp_unacked_bytes == 0


def test_the_quoted_dump_is_the_seeds_own() -> None:
    seed = next(iter(sorted(SEEDS.glob("000_*.txt"))), None)
    if seed is None:
        pytest.skip("the shared seeds are not on this machine")
    text = seed.read_text()
    for line in ("R [tcp sum ok] 1343:1343(0) ack 132929 win 0", "(DF) (ttl 128, id 44004, len 40)"):
        assert line in text


def ssh_abort(path: Path, *, capture_drops_transfer: bool) -> None:
    """The seed's exchange played by both kernels: handshake, 1342 bytes from the client, 132928 from the
    server, ^C on the client (RST+ACK at its SND.NXT / RCV.NXT). The capture optionally loses the transfer."""
    c = path.conn(
        client=("192.168.10.140", 2788),
        server=("192.168.10.14", 22),
        client_isn=1520364313,
        server_isn=181637276,
    )
    t = c.handshake(0)
    kept = len(path.rows)
    t = c.exchange(t + 10 * MS, request=1342, response=1448)
    for i in range(90):
        t = c.send(SERVER, 1448, t + 50_000) if i % 2 else c.send(CLIENT, 0, t + 50_000)
    c.send(SERVER, 132928 - 1448 - 45 * 1448, t + 50_000)
    t += 7 * S
    if capture_drops_transfer:
        del path.rows[kept:]
    c.rst(CLIENT, t)


def test_crafted_pcap_with_the_transfer_missing_is_the_clients_abort(tmp_path: FsPath) -> None:
    path = Path(one_way_ms=0.4, hops=0, capture_at=1.0, client_ttl=128)
    ssh_abort(path, capture_drops_transfer=True)
    pcap = tmp_path / "ssh_abort_gap.pcap"
    path.write_pcap(pcap)
    (finding,) = diagnose_file(pcap)
    assert_abort_by_client_not_injection(finding)


def test_the_same_abort_fully_captured_needs_no_gap() -> None:
    path = Path(one_way_ms=0.4, hops=0, capture_at=1.0, client_ttl=128)
    ssh_abort(path, capture_drops_transfer=False)
    finding = path.only_finding()
    assert finding is not None and finding.cause in ABORT_CAUSES and finding.actor is Side.ORIG
    assert not [e for e in finding.evidence if "capture missed segments" in e.text]


def test_an_rst_the_receiver_answers_stays_rejected_despite_a_gap() -> None:
    """A gap does not excuse an RST the receiver visibly refused: after it, the receiver keeps talking."""
    path = Path(one_way_ms=5.0, capture_at=0.0)
    c = path.conn()
    t = c.exchange(c.handshake(0))
    kept = len(path.rows)
    t = c.exchange(t + 10 * MS, request=500, response=3000)
    del path.rows[kept:]  # the capture lost that exchange
    # Blind RST: in the server's name, ahead of everything captured, the client ignores it and goes on.
    c.send(SERVER, 0, t + 10 * MS, flags=RST | ACK, seq=c.server.snd_nxt + 40_000, ttl=200)
    t = c.exchange(t + 30 * MS)
    finding = path.only_finding()
    assert finding is not None
    assert finding.cause in (CauseId.INJECTED_RESET, CauseId.MIDDLEBOX_RESET), finding.cause
    assert finding.cause is not CauseId.CLOSE_WITH_UNREAD_DATA


def test_the_seed_reading_does_not_depend_on_the_clients_ttl(tmp_path: FsPath) -> None:
    """Same dump with Linux TTLs (64): the mechanism, not the numbers, decides."""
    dump = tmp_path / "seed000_ssh_linux.txt"
    dump.write_text(SEED000_SSH_DUMP.replace("ttl 128", "ttl 64"))
    (finding,) = diagnose_file(dump)
    assert_abort_by_client_not_injection(finding)
