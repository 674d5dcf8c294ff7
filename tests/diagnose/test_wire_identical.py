"""close() with unread data, an SO_LINGER {1, 0} close and an abort after reading everything, on the wire.

Linux __tcp_close(): unread data in the receive queue -> tcp_send_active_reset (TCPAbortOnClose, reset reason
TCP_ABORT_ON_CLOSE); otherwise zero linger -> tcp_disconnect -> tcp_send_active_reset (TCPAbortOnData, reason
TCP_STATE). Both send RST+ACK with seq = SND.NXT and ack = RCV.NXT and no FIN. The lab recorded all three with
real sockets (tests/lab/corpus): the packets are the same, only the kernel's reason differs. The diagnosis must
say the capture cannot separate them, keep them at close confidences, and use the one wire sign there is: a
receive window that narrowed while bytes sat unread.
"""

from __future__ import annotations

import json

import pytest

from diagnose.corpus import CORPUS, diagnose_capture
from diagnose.script import CLIENT, MS, SERVER, Path
from whyreset.diagnose.finding import Finding
from whyreset.ids import CauseId, Side

TRIO = {CauseId.CLOSE_WITH_UNREAD_DATA, CauseId.ABORTIVE_CLOSE, CauseId.BENIGN_RESET}
WIRE_IDENTICAL_SCENARIOS = [
    "abortive_close.linger0",
    "benign_reset.client_abort",
    "close_with_unread_data.client",
    "close_with_unread_data.server",
]


def lab_finding(scenario: str) -> tuple[Finding, CauseId, dict[str, object]]:
    truth_path = CORPUS / f"{scenario}.truth.json"
    if not truth_path.exists():
        pytest.skip(f"{scenario} is not in the lab corpus here")
    truth = json.loads(truth_path.read_text())
    connections, findings, _ = diagnose_capture(CORPUS / truth["captures"]["loopback"])
    (conn,) = connections
    finding = findings[conn.uid]
    return finding, CauseId(truth["cause"]), truth


@pytest.mark.parametrize("scenario", WIRE_IDENTICAL_SCENARIOS)
def test_the_finding_says_the_capture_cannot_tell_them_apart(scenario: str) -> None:
    finding, truth_cause, truth = lab_finding(scenario)
    reasons = {e["reason"] for e in truth["kernel_resets"] if e["event"] == "tcp_send_reset"}
    assert reasons <= {"TCP_ABORT_ON_CLOSE", "TCP_STATE"}, reasons  # the two __tcp_close paths, nothing else
    assert finding.cause in TRIO
    assert "cannot tell" in finding.summary
    for what_would_tell in ("TCPAbortOnClose", "TCPAbortOnData", "TCP_ABORT_ON_CLOSE", "TCP_STATE"):
        assert what_would_tell in finding.summary
    assert finding.confidence <= 0.5
    ranked = [finding.cause, *(a.cause for a in finding.alternatives)]
    assert truth_cause in ranked[:2], ranked
    if truth_cause is not finding.cause:
        other = next(a for a in finding.alternatives if a.cause is truth_cause)
        assert finding.confidence - other.confidence <= 0.1


def test_the_lab_pair_is_really_identical_on_the_wire() -> None:
    """Guard for the claim: the unread-data close and the abort after a full read differ in no field the
    diagnosis reads, besides addresses, sizes and timing."""
    unread, _, _ = lab_finding("close_with_unread_data.client")
    aborted, _, _ = lab_finding("benign_reset.client_abort")
    assert unread.cause is aborted.cause
    assert unread.confidence == aborted.confidence
    assert [a.cause for a in unread.alternatives][:2] == [a.cause for a in aborted.alternatives][:2]


def test_a_deliberate_abort_that_discards_its_own_data_is_told_apart() -> None:
    finding, truth_cause, _ = lab_finding("abortive_close.linger0_unsent")
    assert truth_cause is CauseId.ABORTIVE_CLOSE
    assert finding.cause is CauseId.ABORTIVE_CLOSE
    assert "cannot tell" not in finding.summary


def bulk_then_client_reset(path: Path, windows: list[int]) -> None:
    """The server streams a response; the client ACKs each segment with the given window fields, then resets."""
    c = path.conn()
    t = c.handshake(0)
    t = c.send(CLIENT, 200, t + MS)
    for window in windows:
        t = c.send(SERVER, 1448, t + MS)
        c.ack(CLIENT, t)
        path.rows[-1]["window"] = window
    c.rst(CLIENT, t + 30 * MS)


def test_a_window_that_narrowed_before_the_reset_shows_unread_bytes() -> None:
    path = Path(one_way_ms=1.0, capture_at=0.0)
    bulk_then_client_reset(path, [502, 460, 410, 0])
    finding = path.only_finding()
    assert finding is not None
    assert finding.cause is CauseId.CLOSE_WITH_UNREAD_DATA and finding.actor is Side.ORIG
    assert "cannot tell" not in finding.summary
    assert any("receive window of 0" in e.text for e in finding.evidence)
    steady = Path(one_way_ms=1.0, capture_at=0.0)
    bulk_then_client_reset(steady, [502, 502, 502, 502])
    same_packets_no_sign = steady.only_finding()
    assert same_packets_no_sign is not None
    assert finding.confidence > same_packets_no_sign.confidence
    alternatives = {a.cause: a.confidence for a in finding.alternatives}
    assert all(finding.confidence - alternatives.get(c, 0.0) >= 0.1 for c in TRIO - {finding.cause})
