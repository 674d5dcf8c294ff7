"""One RFC 9293 state machine for both endpoints of a connection, written as a table.

Theory of operation
-------------------
A capture is taken somewhere between the two endpoints, so neither endpoint's state is observed directly: it
is
*inferred* from the segments each endpoint sent and from the evidence that segments reached it. The same
machine
(`TRANSITIONS`) models both endpoints; it does not know which role it plays (h11's rule). The connection
builder
translates control segments into `Input` values for each endpoint, with these evidence rules:

* **Sending is certain.** A segment captured from A was sent by A, so A's machine takes the ``SEND_*`` input
  at the
  segment's capture time (SYN, SYN-ACK, FIN, RST, the ACK that completes A's side of the handshake).
* **Receiving sequence space needs proof.** A SYN or FIN from A reached B only when B's later segment
  acknowledges it
  (B's SYN-ACK proves B got the SYN; B's ACK covering the FIN proves B got the FIN). B's machine takes
  ``RECV_SYN`` /
  ``RECV_SYNACK`` / ``RECV_FIN`` at that acknowledging segment, not at A's segment. A FIN that B never
  acknowledges
  never moves B out of ESTABLISHED.
* **Pure ACKs are assumed delivered.** An ACK carries no sequence space, so nothing can prove its arrival; A's
  FIN is
  taken as acknowledged (``FIN_ACKED``) and a listener's handshake as complete (``RECV_ACK_OF_SYN``) when
  B's ACK is
  captured. When later evidence contradicts this (a server retransmits its SYN-ACK after the client's ACK:
  the ACK was
  dropped, e.g. by a full accept queue), the table moves the endpoint back (``ESTABLISHED + SEND_SYNACK``)
  and says so
  in the action.
* **RSTs are judged, not assumed.** An RST changes its receiver only when RFC 5961 says the receiver accepts
  it
  (exact sequence number, or a SYN_SENT receiver whose SYN it acknowledges); that verdict comes from the
  builder.
* **Mid-stream starts.** Without the handshake both endpoints start in UNKNOWN and become ESTABLISHED as soon
  as data
  has flowed in both directions (``DATA_BOTH_WAYS``); a FIN or RST seen earlier moves them directly.

Only control segments reach the machine (SYN, FIN, RST, and the ACKs that acknowledge a SYN or FIN), so the
bulk data
path stays in numpy. A pair missing from the table is an input the state does not expect: the state is kept
and the
action is `Action.UNEXPECTED`, which the builder records rather than hides.

`render_mermaid` and `render_graphviz` draw the table; ``docs/state-machine.md`` is generated from it
(`state_machine_markdown`), and a test checks that the file matches the table.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from whyreset.ids import TcpState


class Input(StrEnum):
    """What can happen to one endpoint, as far as its state is concerned."""

    SEND_SYN = "send_syn"
    RECV_SYN = "recv_syn"
    SEND_SYNACK = "send_synack"
    RECV_SYNACK = "recv_synack"
    SEND_ACK_OF_SYN = "send_ack_of_syn"
    """The endpoint acknowledged the peer's SYN (third handshake segment, active opener)."""
    RECV_ACK_OF_SYN = "recv_ack_of_syn"
    """The peer acknowledged this endpoint's SYN (a listener's handshake completes)."""
    SEND_FIN = "send_fin"
    RECV_FIN = "recv_fin"
    FIN_ACKED = "fin_acked"
    """The peer acknowledged this endpoint's FIN."""
    SEND_RST = "send_rst"
    RECV_RST_ACCEPTED = "recv_rst_accepted"
    """An RST reached the endpoint and passed the RFC 5961 checks."""
    DATA_BOTH_WAYS = "data_both_ways"
    """Mid-stream capture: data has now flowed in both directions, so the connection is synchronised."""


class Action(StrEnum):
    """What a transition means for the connection (for events and for the diagnosis)."""

    NONE = "none"
    ACTIVE_OPEN = "active_open"
    PASSIVE_OPEN = "passive_open"
    RETRANSMIT = "retransmit"
    SIMULTANEOUS_OPEN = "simultaneous_open"
    ESTABLISH = "establish"
    HANDSHAKE_ACK_LOST = "handshake_ack_lost"
    """A SYN-ACK was retransmitted after the peer's ACK: that ACK never arrived (accept queue full?)."""
    HALF_CLOSE = "half_close"
    CLOSE = "close"
    TIME_WAIT = "time_wait"
    ABORT = "abort"
    """This endpoint sent an RST and dropped the connection."""
    RESET = "reset"
    """An accepted RST dropped the connection at this endpoint."""
    REJECT = "reject"
    """An RST sent by an endpoint with no connection (no listener, a TIME_WAIT remnant)."""
    BACK_TO_LISTEN = "back_to_listen"
    UNEXPECTED = "unexpected"


S = TcpState
I = Input  # noqa: E741 - a short alias keeps the table readable
A = Action

_ANY_SYNCHRONISED = (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK)

TRANSITIONS: dict[tuple[TcpState, Input], tuple[TcpState, Action]] = {
    # Opening (RFC 9293 3.5).
    (S.CLOSED, I.SEND_SYN): (S.SYN_SENT, A.ACTIVE_OPEN),
    (S.UNKNOWN, I.SEND_SYN): (S.SYN_SENT, A.ACTIVE_OPEN),
    (S.SYN_SENT, I.SEND_SYN): (S.SYN_SENT, A.RETRANSMIT),
    (S.SYN_SENT, I.RECV_SYNACK): (S.ESTABLISHED, A.ESTABLISH),
    (S.SYN_SENT, I.RECV_SYN): (S.SYN_RECEIVED, A.SIMULTANEOUS_OPEN),
    (S.LISTEN, I.RECV_SYN): (S.SYN_RECEIVED, A.PASSIVE_OPEN),
    (S.UNKNOWN, I.RECV_SYN): (S.SYN_RECEIVED, A.PASSIVE_OPEN),
    (S.SYN_RECEIVED, I.RECV_SYN): (S.SYN_RECEIVED, A.RETRANSMIT),
    (S.SYN_RECEIVED, I.SEND_SYNACK): (S.SYN_RECEIVED, A.NONE),
    (S.SYN_RECEIVED, I.RECV_ACK_OF_SYN): (S.ESTABLISHED, A.ESTABLISH),
    (S.SYN_RECEIVED, I.RECV_SYNACK): (S.ESTABLISHED, A.ESTABLISH),
    (S.SYN_RECEIVED, I.SEND_ACK_OF_SYN): (S.SYN_RECEIVED, A.NONE),
    (S.ESTABLISHED, I.SEND_ACK_OF_SYN): (S.ESTABLISHED, A.NONE),
    (S.ESTABLISHED, I.RECV_ACK_OF_SYN): (S.ESTABLISHED, A.NONE),
    (S.ESTABLISHED, I.RECV_SYNACK): (S.ESTABLISHED, A.NONE),
    (S.UNKNOWN, I.RECV_SYNACK): (S.ESTABLISHED, A.ESTABLISH),
    (S.UNKNOWN, I.SEND_SYNACK): (S.SYN_RECEIVED, A.PASSIVE_OPEN),
    (S.LISTEN, I.SEND_SYNACK): (S.SYN_RECEIVED, A.PASSIVE_OPEN),
    (S.ESTABLISHED, I.SEND_SYNACK): (S.SYN_RECEIVED, A.HANDSHAKE_ACK_LOST),
    (S.UNKNOWN, I.DATA_BOTH_WAYS): (S.ESTABLISHED, A.ESTABLISH),
    # Closing (RFC 9293 3.6).
    (S.SYN_RECEIVED, I.SEND_FIN): (S.FIN_WAIT_1, A.HALF_CLOSE),
    (S.SYN_RECEIVED, I.RECV_FIN): (S.CLOSE_WAIT, A.HALF_CLOSE),
    (S.ESTABLISHED, I.SEND_FIN): (S.FIN_WAIT_1, A.HALF_CLOSE),
    (S.UNKNOWN, I.SEND_FIN): (S.FIN_WAIT_1, A.HALF_CLOSE),
    (S.ESTABLISHED, I.RECV_FIN): (S.CLOSE_WAIT, A.HALF_CLOSE),
    (S.UNKNOWN, I.RECV_FIN): (S.CLOSE_WAIT, A.HALF_CLOSE),
    (S.FIN_WAIT_1, I.SEND_FIN): (S.FIN_WAIT_1, A.RETRANSMIT),
    (S.FIN_WAIT_1, I.FIN_ACKED): (S.FIN_WAIT_2, A.NONE),
    (S.FIN_WAIT_1, I.RECV_FIN): (S.CLOSING, A.NONE),
    (S.FIN_WAIT_2, I.RECV_FIN): (S.TIME_WAIT, A.TIME_WAIT),
    (S.CLOSING, I.FIN_ACKED): (S.TIME_WAIT, A.TIME_WAIT),
    (S.CLOSING, I.RECV_FIN): (S.CLOSING, A.RETRANSMIT),
    (S.CLOSE_WAIT, I.RECV_FIN): (S.CLOSE_WAIT, A.RETRANSMIT),
    (S.CLOSE_WAIT, I.SEND_FIN): (S.LAST_ACK, A.NONE),
    (S.LAST_ACK, I.SEND_FIN): (S.LAST_ACK, A.RETRANSMIT),
    (S.LAST_ACK, I.RECV_FIN): (S.LAST_ACK, A.RETRANSMIT),
    (S.LAST_ACK, I.FIN_ACKED): (S.CLOSED, A.CLOSE),
    (S.TIME_WAIT, I.RECV_FIN): (S.TIME_WAIT, A.RETRANSMIT),
    (S.TIME_WAIT, I.FIN_ACKED): (S.TIME_WAIT, A.NONE),
    # Resets (RFC 9293 3.10.7.4 with RFC 5961 acceptance decided by the caller).
    (S.CLOSED, I.SEND_RST): (S.CLOSED, A.REJECT),
    (S.LISTEN, I.SEND_RST): (S.LISTEN, A.REJECT),
    (S.UNKNOWN, I.SEND_RST): (S.CLOSED, A.ABORT),
    (S.SYN_SENT, I.SEND_RST): (S.CLOSED, A.ABORT),
    (S.SYN_RECEIVED, I.SEND_RST): (S.CLOSED, A.ABORT),
    (S.TIME_WAIT, I.SEND_RST): (S.CLOSED, A.REJECT),
    (S.UNKNOWN, I.RECV_RST_ACCEPTED): (S.CLOSED, A.RESET),
    (S.SYN_SENT, I.RECV_RST_ACCEPTED): (S.CLOSED, A.RESET),
    (S.SYN_RECEIVED, I.RECV_RST_ACCEPTED): (S.LISTEN, A.BACK_TO_LISTEN),
    (S.TIME_WAIT, I.RECV_RST_ACCEPTED): (S.CLOSED, A.RESET),
    **{(state, I.SEND_RST): (S.CLOSED, A.ABORT) for state in _ANY_SYNCHRONISED},
    **{(state, I.RECV_RST_ACCEPTED): (S.CLOSED, A.RESET) for state in _ANY_SYNCHRONISED},
}
"""(state, input) -> (next state, action). Pairs not listed keep the state and yield `Action.UNEXPECTED`."""


def step(state: TcpState, event: Input) -> tuple[TcpState, Action]:
    """Apply one input to one endpoint's state."""
    return TRANSITIONS.get((state, event), (state, Action.UNEXPECTED))


class Transition(NamedTuple):
    """One applied input: where the endpoint was, what happened, where it went."""

    before: TcpState
    event: Input
    after: TcpState
    action: Action


class EndpointMachine:
    """The mutable state of one endpoint while a connection is being rebuilt (internal to the core)."""

    __slots__ = ("history", "state")

    def __init__(self, initial: TcpState) -> None:
        self.state = initial
        self.history: list[Transition] = []

    def feed(self, event: Input) -> Transition:
        after, action = TRANSITIONS.get((self.state, event), (self.state, Action.UNEXPECTED))
        transition = Transition(self.state, event, after, action)
        self.history.append(transition)
        self.state = after
        return transition


def _mermaid_id(state: TcpState) -> str:
    return state.name


def render_mermaid() -> str:
    """The transition table as a Mermaid ``stateDiagram-v2`` (self-loops included)."""
    lines = ["stateDiagram-v2"]
    for (before, event), (after, action) in TRANSITIONS.items():
        label = event.value if action is Action.NONE else f"{event.value} / {action.value}"
        lines.append(f"    {_mermaid_id(before)} --> {_mermaid_id(after)}: {label}")
    return "\n".join(lines) + "\n"


def render_graphviz() -> str:
    """The transition table as a Graphviz ``digraph``."""
    lines = ["digraph tcp_state {", "    rankdir=TB;", "    node [shape=box, style=rounded];"]
    for (before, event), (after, action) in TRANSITIONS.items():
        label = event.value if action is Action.NONE else f"{event.value} / {action.value}"
        lines.append(f'    {before.name} -> {after.name} [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def state_machine_markdown() -> str:
    """The text of ``docs/state-machine.md``: theory, diagram and table from this module."""
    doc = (__doc__ or "").strip()
    rows = "\n".join(
        f"| {before.value} | {event.value} | {after.value} | {action.value} |"
        for (before, event), (after, action) in TRANSITIONS.items()
    )
    return (
        "# The endpoint state machine\n\n"
        "<!-- Generated from whyreset.core.tcpstate by tests/core/test_tcpstate.py; do not edit. -->\n\n"
        f"{doc}\n\n"
        "## Diagram\n\n"
        f"```mermaid\n{render_mermaid()}```\n\n"
        "## Table\n\n"
        "| state | input | next state | action |\n|---|---|---|---|\n"
        f"{rows}\n"
    )
