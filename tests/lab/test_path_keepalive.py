"""The keep-alive race with the request crossing the server's FIN in flight, on real namespaces: the server's
kernel resets with TCP_ABORT_ON_DATA, the client's http.client gets ECONNRESET, and the analysis names the race
from the server's capture and ranks it first among the alternatives from the client's, which cannot see the FIN."""

from __future__ import annotations

from pathlib import Path

import pytest

from whyreset.analysis import analyze_path
from whyreset.ids import CauseId, Outcome, Side, TcpState
from whyreset.lab.runner import missing_needs, run_scenario
from whyreset.lab.scenarios.path_base import PATH_NEEDS

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(missing_needs(PATH_NEEDS)), reason="; ".join(missing_needs(PATH_NEEDS)) or "ok"),
]


@pytest.mark.parametrize("seed", [3, 7])
def test_request_crossing_the_fin(seed: int, tmp_path: Path) -> None:
    run = run_scenario("keepalive_race.crossing", seed=seed, keep_dir=tmp_path)
    sent = [event for event in run.truth.kernel_resets if event.event == "tcp_send_reset"]
    assert [event.reason for event in sent] == ["TCP_ABORT_ON_DATA"]
    failed = [call for call in run.truth.socket_calls if call.app == "client" and call.errno]
    assert [call.errno for call in failed] == ["ECONNRESET"]

    server_view = analyze_path(run.pcaps["server"])
    [conn] = server_view.connections
    assert conn.outcome is Outcome.RESET and conn.final_state(Side.ORIG) is TcpState.CLOSED
    assert server_view.findings[conn.uid].cause is CauseId.KEEPALIVE_RACE

    client_view = analyze_path(run.pcaps["client"])
    [conn] = client_view.connections
    assert conn.outcome is Outcome.RESET and conn.resp.fin_frame is None  # the FIN never reached the client
    finding = client_view.findings[conn.uid]
    ranked = [finding.cause, *(alternative.cause for alternative in finding.alternatives)]
    assert CauseId.KEEPALIVE_RACE in ranked[:2], ranked
