"""A genuine simultaneous close (FINs held back by the router, then crossing): the kernels agree that both sides
went through CLOSING to TIME_WAIT, and the analysis of either capture finds a clean connection, both endpoints in
TIME_WAIT, both via CLOSING, and no fault."""

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
    for point, pcap in run.pcaps.items():
        analysis = analyze_path(pcap)
        [conn] = analysis.connections
        assert conn.outcome is Outcome.CLEAN and conn.conn_state == "SF"
        assert conn.final_state(Side.ORIG) is TcpState.TIME_WAIT
        assert conn.final_state(Side.RESP) is TcpState.TIME_WAIT
        for side in (Side.ORIG, Side.RESP):  # the far side too: its FIN arrived before the ACK of its own (FIFO)
            timeline = [change.state for change in conn.states(side)]
            assert TcpState.CLOSING in timeline, (point, side, timeline)
        assert conn.uid not in analysis.findings
