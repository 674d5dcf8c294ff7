"""The catalogue against the lab corpus: pcaps recorded with real kernel sockets, and the truth the lab knows.

For every connection of every scenario, from every capture point that saw it, the primary cause must be the
truth's cause, and negatives must give no finding.

Three honest exceptions, both physical limits of a capture rather than tuning targets:

* **blind vantage points**: a capture next to the server of a black-holed path sees a healthy connection that
  simply goes quiet (the client's retransmissions and probes never reach it), and a SYN dropped or rejected by
  a router never reaches the server's capture at all. There the finding must be None (no false cause);
* **links no RST crosses**: the lab records which RST senders each capture point shows
  (``rst_senders_seen_at``); a capture that shows none of them and no RST at all has nothing to diagnose;
* **wire-identical pairs**: close() with unread data, SO_LINGER {1, 0} and a client abort after a full
  response put byte-for-byte the same RST on the wire (tcp_send_active_reset, seq = SND.NXT, ack = RCV.NXT);
  only the kernel's reset reason differs. Likewise a capture that begins with a segment its receiver has no
  socket for (lost by a reboot, or never there). There the truth must be the primary cause or the first
  alternative.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diagnose.corpus import Case, cases_of, truth_files
from whyreset.diagnose.catalogue import causes_for_kernel_reason
from whyreset.ids import CauseId

TIMEOUT_CAUSES = {"retransmission_timeout", "keepalive_timeout", "idle_state_dropped"}
WIRE_IDENTICAL = {
    frozenset({"close_with_unread_data", "abortive_close"}),
    frozenset({"close_with_unread_data", "benign_reset"}),
    # A capture that starts with an ordinary segment (ACK, no SYN) answered by a bare RST: its receiver had no
    # socket for it. Whether it lost one (reboot: peer_lost_state) or never had one (a stray or crafted segment
    # to a listener: invalid_segment) is not in that capture.
    frozenset({"peer_lost_state", "invalid_segment"}),
    # Next to the client, a request that crossed the server's idle-timeout FIN in flight draws the same reply RST
    # (no FIN seen, no ACK bit) as a server that lost the connection; the server's side shows the FIN.
    frozenset({"peer_lost_state", "keepalive_race"}),
}

TRUTHS = truth_files()
pytestmark = pytest.mark.skipif(not TRUTHS, reason="the lab corpus (tests/lab/corpus) is not recorded here")


@pytest.mark.parametrize("truth_path", TRUTHS, ids=[p.name.removesuffix(".truth.json") for p in TRUTHS])
def test_lab_scenario(truth_path: Path) -> None:
    cases = cases_of(truth_path)
    assert cases, "truth lists no connection"
    for case in cases:
        check_case(case)


def check_case(case: Case) -> None:
    where = f"{case.scenario} [{case.capture_point}] {case.orig} > {case.resp}"
    if case.connection is None:
        # Never reached this capture point (dropped or rejected on the path before it).
        assert case.capture_point != "loopback", f"{where}: connection missing from the capture"
        return
    finding = case.finding
    if case.truth_cause is None:
        assert finding is None, f"{where}: negative diagnosed as {finding.cause if finding else None}"
        return
    if finding is None and blind(case):
        return
    assert finding is not None, f"{where}: no finding for {case.truth_cause}"
    got = finding.cause.value if finding.cause is not None else None
    if got == case.truth_cause:
        return
    pair = frozenset({got or "", case.truth_cause})
    first_alternative = finding.alternatives[0].cause.value if finding.alternatives else None
    assert pair in WIRE_IDENTICAL and first_alternative == case.truth_cause, (
        f"{where}: got {got} ({finding.confidence}), truth {case.truth_cause}; "
        f"alternatives {[a.cause.value for a in finding.alternatives]}; {finding.summary}"
    )


def blind(case: Case) -> bool:
    """A server-side capture of a path that black-holed the client's packets shows a quiet, healthy
    connection."""
    conn = case.connection
    assert conn is not None
    if case.rst_senders_seen == () and not conn.resets:
        # The truth says no RST of the fault crosses this capture's link (the rebooted host's old capture, the
        # far side of a black hole that ate a forged RST): the capture holds nothing to diagnose.
        return True
    return (
        case.capture_point == "server"
        and case.truth_cause in TIMEOUT_CAUSES
        and not conn.resets
        and conn.outcome.value == "open"
    )


def test_every_cause_has_a_lab_scenario_or_is_listed_missing() -> None:
    covered = {case.truth_cause for path in TRUTHS for case in cases_of(path)}
    missing = {c.value for c in CauseId} - covered
    # Causes that need a path the loopback lab cannot build yet (forged RSTs, lost state): covered by
    # test_rules.
    assert missing <= {"peer_lost_state", "middlebox_reset", "injected_reset"}, missing


@pytest.mark.parametrize("truth_path", TRUTHS, ids=[p.name.removesuffix(".truth.json") for p in TRUTHS])
def test_kernel_reasons_recorded_by_the_lab_map_back_to_the_cause(truth_path: Path) -> None:
    """The kernel's own sk_rst_reason (tcp:tcp_send_reset) is ground truth: the catalogue must list it."""
    truth = json.loads(truth_path.read_text())
    if truth["cause"] is None:
        return
    reasons = {
        event["reason"]
        for event in truth["kernel_resets"]
        if event["event"] == "tcp_send_reset" and event["reason"] not in (None, "NOT_SPECIFIED")
    }
    for reason in reasons:
        assert CauseId(truth["cause"]) in causes_for_kernel_reason(reason), (truth["scenario"], reason)
