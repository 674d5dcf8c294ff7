"""Truth files round-trip; the comparison with an analysis checks each field and can fail."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from whyreset.ids import CauseId, Outcome, Side, TcpState
from whyreset.lab.compare import check_truth
from whyreset.lab.scenario import ConnectionTruth, KernelDrop, KernelReset, SocketCall, Truth
from whyreset.lab.truthfile import read_truth, write_truth


def _truth(connections: list[ConnectionTruth]) -> Truth:
    return Truth(
        scenario="close_with_unread_data.server",
        cause=CauseId.CLOSE_WITH_UNREAD_DATA,
        seed=7,
        kernel="6.18.0",
        captures={"loopback": "x.loopback.pcap"},
        connections=connections,
        kernel_resets=[
            KernelReset(
                "tcp_send_reset", 5, "127.1.1.1:80", "127.2.2.2:4000", "TCP_CLOSE", "TCP_ABORT_ON_CLOSE", "lo"
            )
        ],
        socket_calls=[SocketCall("client", Side.ORIG, "recv", 6, "ConnectionResetError", "ECONNRESET")],
        counters={"lo": {"TCPAbortOnClose": 1}},
        kernel_drops=[KernelDrop(4, "TCP_LISTEN_OVERFLOW", "tcp_v4_rcv+0x91/0x13f0")],
        notes=["a note"],
        extra={"attempts": [{"attempt": 1}]},
    )


RESET_BY_SERVER = ConnectionTruth(
    "127.2.2.2:4000",
    "127.1.1.1:80",
    CauseId.CLOSE_WITH_UNREAD_DATA,
    Outcome.RESET,
    ("resp",),
    {Side.ORIG: TcpState.CLOSED, Side.RESP: TcpState.CLOSED},
)


def test_truth_file_round_trip_restores_types(tmp_path: Path) -> None:
    truth = _truth([RESET_BY_SERVER])
    again = read_truth(write_truth(truth, tmp_path / "t.truth.json"))
    assert again == truth
    assert isinstance(again.connections[0].outcome, Outcome)
    assert isinstance(next(iter(again.connections[0].final_states)), Side)


@dataclass(frozen=True)
class FakeReset:
    sender: Side


@dataclass(frozen=True)
class FakeConnection:
    uid: str
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    outcome: Outcome
    resets: tuple[FakeReset, ...]
    states: dict[Side, TcpState] = field(default_factory=dict)

    def final_state(self, side: Side) -> TcpState:
        return self.states.get(side, TcpState.UNKNOWN)


@dataclass(frozen=True)
class FakeFinding:
    cause: CauseId | None


CLOSED_BOTH = {Side.ORIG: TcpState.CLOSED, Side.RESP: TcpState.CLOSED}


def test_agreeing_analysis_passes_every_check() -> None:
    conn = FakeConnection(
        "C1", "127.2.2.2", 4000, "127.1.1.1", 80, Outcome.RESET, (FakeReset(Side.RESP),), CLOSED_BOTH
    )
    [check] = check_truth(
        _truth([RESET_BY_SERVER]), [conn], {"C1": FakeFinding(CauseId.CLOSE_WITH_UNREAD_DATA)}
    )
    assert check.found and check.model_ok and check.cause_ok


def test_wrong_rst_sender_or_outcome_or_cause_is_reported() -> None:
    conn = FakeConnection("C1", "127.2.2.2", 4000, "127.1.1.1", 80, Outcome.CLEAN, (FakeReset(Side.ORIG),))
    [check] = check_truth(_truth([RESET_BY_SERVER]), [conn], {"C1": FakeFinding(CauseId.BENIGN_RESET)})
    assert check.found
    assert not check.rst_ok and not check.outcome_ok and not check.states_ok and not check.cause_ok


def test_swapped_roles_are_mapped_back() -> None:
    # The analysis took the server for the originator: its "orig" RST is the truth's "resp".
    conn = FakeConnection(
        "C9", "127.1.1.1", 80, "127.2.2.2", 4000, Outcome.RESET, (FakeReset(Side.ORIG),), CLOSED_BOTH
    )
    [check] = check_truth(_truth([RESET_BY_SERVER]), [conn], {})
    assert check.roles_swapped and check.rst_senders == ("resp",) and check.model_ok
    assert not check.diagnosed and not check.cause_ok


def test_missing_connection_is_not_found() -> None:
    [check] = check_truth(_truth([RESET_BY_SERVER]), [], {})
    assert not check.found and not check.model_ok


def test_path_sender_matches_any_address() -> None:
    forged = ConnectionTruth(
        "127.2.2.2:4000", "127.1.1.1:80", CauseId.MIDDLEBOX_RESET, Outcome.RESET, ("path",)
    )
    conn = FakeConnection("C1", "127.2.2.2", 4000, "127.1.1.1", 80, Outcome.RESET, (FakeReset(Side.RESP),))
    [check] = check_truth(_truth([forged]), [conn], {})
    assert check.rst_ok
