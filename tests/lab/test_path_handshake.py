"""A real client connect() timeout: the late SYN-ACK draws the client kernel's RST (NO_SOCKET), and the analysis
of either side's capture names handshake_aborted with the client as the RST's sender."""

from __future__ import annotations

from pathlib import Path

import pytest

from whyreset.analysis import analyze_path
from whyreset.ids import CauseId, Outcome, Side
from whyreset.lab.runner import missing_needs, run_scenario
from whyreset.lab.scenarios.path_base import PATH_NEEDS

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(missing_needs(PATH_NEEDS)), reason="; ".join(missing_needs(PATH_NEEDS)) or "ok"),
]


@pytest.mark.parametrize("seed", [4, 9])
def test_connect_timeout_then_late_syn_ack_is_a_handshake_aborted(seed: int, tmp_path: Path) -> None:
    run = run_scenario("handshake_aborted.connect_timeout", seed=seed, keep_dir=tmp_path)
    sent = [event for event in run.truth.kernel_resets if event.event == "tcp_send_reset"]
    assert [event.reason for event in sent] == ["NO_SOCKET"]
    connects = [call for call in run.truth.socket_calls if call.call == "connect"]
    assert [call.errno for call in connects] == ["ETIMEDOUT"]
    for pcap in run.pcaps.values():
        analysis = analyze_path(pcap)
        [conn] = analysis.connections
        assert conn.outcome is Outcome.NOT_ESTABLISHED
        assert [reset.sender for reset in conn.resets] == [Side.ORIG]
        finding = analysis.findings[conn.uid]
        assert finding.cause is CauseId.HANDSHAKE_ABORTED, (pcap.name, finding.summary)
