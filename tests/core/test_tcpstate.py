"""The endpoint state machine: table coverage, documented diagram, unexpected inputs."""

from __future__ import annotations

from pathlib import Path

from whyreset.core.tcpstate import (
    TRANSITIONS,
    Action,
    EndpointMachine,
    Input,
    render_graphviz,
    render_mermaid,
    state_machine_markdown,
    step,
)
from whyreset.ids import TcpState

DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"


def _reachable(start: TcpState) -> set[TcpState]:
    seen = {start}
    frontier = [start]
    while frontier:
        state = frontier.pop()
        for (before, _), (after, _) in TRANSITIONS.items():
            if before is state and after not in seen:
                seen.add(after)
                frontier.append(after)
    return seen


def test_every_state_reachable_from_an_opening_state() -> None:
    reachable = _reachable(TcpState.CLOSED) | _reachable(TcpState.LISTEN) | _reachable(TcpState.UNKNOWN)
    assert reachable == set(TcpState)


def test_every_input_is_used() -> None:
    assert {event for _, event in TRANSITIONS} == set(Input)


def test_rfc9293_main_paths() -> None:
    active = EndpointMachine(TcpState.CLOSED)
    for event in (Input.SEND_SYN, Input.RECV_SYNACK, Input.SEND_FIN, Input.FIN_ACKED, Input.RECV_FIN):
        active.feed(event)
    assert [t.after for t in active.history] == [
        TcpState.SYN_SENT,
        TcpState.ESTABLISHED,
        TcpState.FIN_WAIT_1,
        TcpState.FIN_WAIT_2,
        TcpState.TIME_WAIT,
    ]
    passive = EndpointMachine(TcpState.LISTEN)
    for event in (Input.RECV_SYN, Input.SEND_SYNACK, Input.RECV_ACK_OF_SYN, Input.RECV_FIN, Input.SEND_FIN):
        passive.feed(event)
    passive.feed(Input.FIN_ACKED)
    assert passive.state is TcpState.CLOSED
    assert [t.after for t in passive.history][-3:] == [
        TcpState.CLOSE_WAIT,
        TcpState.LAST_ACK,
        TcpState.CLOSED,
    ]


def test_simultaneous_close_goes_through_closing() -> None:
    machine = EndpointMachine(TcpState.ESTABLISHED)
    machine.feed(Input.SEND_FIN)
    machine.feed(Input.RECV_FIN)
    assert machine.state is TcpState.CLOSING
    machine.feed(Input.FIN_ACKED)
    assert machine.state is TcpState.TIME_WAIT


def test_resets() -> None:
    assert step(TcpState.SYN_SENT, Input.RECV_RST_ACCEPTED) == (TcpState.CLOSED, Action.RESET)
    assert step(TcpState.CLOSE_WAIT, Input.SEND_RST) == (TcpState.CLOSED, Action.ABORT)
    assert step(TcpState.CLOSED, Input.SEND_RST) == (TcpState.CLOSED, Action.REJECT)
    assert step(TcpState.SYN_RECEIVED, Input.RECV_RST_ACCEPTED) == (TcpState.LISTEN, Action.BACK_TO_LISTEN)


def test_lost_handshake_ack_moves_back() -> None:
    assert step(TcpState.ESTABLISHED, Input.SEND_SYNACK) == (TcpState.SYN_RECEIVED, Action.HANDSHAKE_ACK_LOST)


def test_unexpected_input_keeps_state() -> None:
    assert step(TcpState.TIME_WAIT, Input.SEND_SYN) == (TcpState.TIME_WAIT, Action.UNEXPECTED)
    machine = EndpointMachine(TcpState.LISTEN)
    transition = machine.feed(Input.FIN_ACKED)
    assert transition.action is Action.UNEXPECTED and machine.state is TcpState.LISTEN


def test_diagrams_draw_every_transition() -> None:
    mermaid = render_mermaid()
    graphviz = render_graphviz()
    assert mermaid.count("-->") == len(TRANSITIONS)
    assert graphviz.count("->") == len(TRANSITIONS)


def test_docs_match_the_table() -> None:
    """docs/state-machine.md is generated from the table; regenerate it when the table changes."""
    text = state_machine_markdown()
    if not DOC.exists() or DOC.read_text() != text:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(text)
        raise AssertionError(f"{DOC} was stale and has been regenerated; commit it")
