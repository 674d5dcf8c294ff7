"""A genuine simultaneous close (FINs held back by the router, then retransmitted): the kernels agree that both
sides closed actively (both in TIME_WAIT), and the analysis of either capture finds a clean connection with no
fault, the near endpoint in TIME_WAIT, and CLOSING for the side that received the other's FIN in FIN_WAIT1 (both
when the two retransmissions cross; when one side's timer fires first, only the other: see the test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from whyreset.analysis import analyze_path
from whyreset.ids import Outcome, Side, TcpState
from whyreset.lab.runner import missing_needs, run_scenario
from whyreset.lab.scenarios.path_base import PATH_NEEDS

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(missing_needs(PATH_NEEDS)), reason="; ".join(missing_needs(PATH_NEEDS)) or "ok"),
]


@pytest.mark.parametrize("seed", [2, 5])
def test_fins_cross_and_the_analysis_calls_it_clean(seed: int, tmp_path: Path) -> None:
    run = run_scenario("negative.simultaneous_close_path", seed=seed, keep_dir=tmp_path)
    assert run.truth.extra["fins_crossed"], run.truth.notes
    closing_seen = False
    for point, pcap in run.pcaps.items():
        analysis = analyze_path(pcap)
        [conn] = analysis.connections
        assert conn.outcome is Outcome.CLEAN and conn.conn_state == "SF"
        assert conn.uid not in analysis.findings
        near = Side.ORIG if point == "client" else Side.RESP  # the host this capture was taken beside
        assert conn.final_state(near) is TcpState.TIME_WAIT, point
        timelines = {side: [change.state for change in conn.states(side)] for side in (Side.ORIG, Side.RESP)}
        # The far side ends in TIME_WAIT when this capture shows its FIN before the ACK of the near side's FIN.
        # When its first FIN was dropped on the path (after the far side's capture, before this one) and the
        # near side's retransmission reached it first, this capture sees its FIN only after its ACK: a passive
        # close (LAST_ACK, CLOSED) is all the packets here can say.
        far = timelines[near.other]
        assert far[-1] is TcpState.TIME_WAIT or far[-2:] == [TcpState.LAST_ACK, TcpState.CLOSED], (point, far)
        closing_seen |= any(TcpState.CLOSING in timeline for timeline in timelines.values())
    # Both kernels closed actively (the truth); whichever received the peer's FIN in FIN_WAIT1 went through
    # CLOSING, and the capture beside it shows both FINs before either ACK.
    assert closing_seen, "no capture shows a side receiving the peer's FIN in FIN_WAIT1"
