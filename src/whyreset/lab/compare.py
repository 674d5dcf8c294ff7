"""Does the capture analysis agree with what the lab knows? One `ConnectionCheck` per connection of the truth.

The analysis is whatever ``whyreset.analysis.analyze_path`` returns (connections + findings by uid); it is
passed in, so this module stays importable and testable without the core. A truth sender ``path`` (a forged
RST) is compared by the diagnosis, not by the address: it matches any sender address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from whyreset.ids import CauseId, Outcome, Side, TcpState
from whyreset.lab.scenario import ConnectionTruth, Truth


class _Reset(Protocol):
    @property
    def sender(self) -> Side: ...


class _Connection(Protocol):
    """What this module reads from a `whyreset.core.connection.Connection`."""

    @property
    def uid(self) -> str: ...
    @property
    def orig_h(self) -> str: ...
    @property
    def orig_p(self) -> int: ...
    @property
    def resp_h(self) -> str: ...
    @property
    def resp_p(self) -> int: ...
    @property
    def outcome(self) -> Outcome: ...
    @property
    def resets(self) -> tuple[_Reset, ...]: ...
    def final_state(self, side: Side) -> TcpState: ...


class _Finding(Protocol):
    @property
    def cause(self) -> CauseId | None: ...


@dataclass(frozen=True, slots=True)
class ConnectionCheck:
    """The analysis of one truth connection, field by field."""

    truth: ConnectionTruth
    """What the lab made."""
    found: bool
    """The capture analysis has a connection with this 4-tuple."""
    uid: str | None = None
    """Its uid in the analysis."""
    roles_swapped: bool = False
    """The analysis took the responder for the originator."""
    outcome: Outcome | None = None
    """Outcome the analysis found."""
    rst_senders: tuple[str, ...] = ()
    """``orig``/``resp`` for each RST the analysis saw, in order."""
    final_states: dict[Side, TcpState] | None = None
    """Each endpoint's final state according to the analysis."""
    cause: CauseId | None = None
    """Diagnosed cause (None: no finding, or a finding without a cause)."""
    diagnosed: bool = False
    """A finding exists for this connection."""
    expected_rst: tuple[str, ...] | None = None
    """RST senders this capture point must show, when the truth says (else every RST of the truth)."""

    @property
    def outcome_ok(self) -> bool:
        return self.found and self.outcome == self.truth.outcome

    @property
    def rst_ok(self) -> bool:
        expected = self.truth.rst_senders if self.expected_rst is None else self.expected_rst
        if not self.found or len(self.rst_senders) != len(expected):
            return False
        return all(want in ("path", seen) for want, seen in zip(expected, self.rst_senders, strict=True))

    @property
    def states_ok(self) -> bool:
        seen = self.final_states or {}
        return self.found and all(seen.get(side) == state for side, state in self.truth.final_states.items())

    @property
    def cause_ok(self) -> bool:
        """The diagnosis names the truth's cause (a negative: no cause at all)."""
        return self.found and self.cause == self.truth.cause

    @property
    def model_ok(self) -> bool:
        """Everything the connection model (not the diagnosis) is responsible for."""
        return self.outcome_ok and self.rst_ok and self.states_ok


def _split(endpoint: str) -> tuple[str, int]:
    address, _, port = endpoint.rpartition(":")
    return address.strip("[]"), int(port)


def check_connection(
    truth: ConnectionTruth, connections: Iterable[_Connection], findings: Mapping[str, _Finding]
) -> ConnectionCheck:
    orig, resp = _split(truth.orig), _split(truth.resp)
    for conn in connections:
        pair = ((conn.orig_h, conn.orig_p), (conn.resp_h, conn.resp_p))
        if pair not in ((orig, resp), (resp, orig)):
            continue
        swapped = pair == (resp, orig)
        flip = {Side.ORIG: "resp", Side.RESP: "orig"} if swapped else {Side.ORIG: "orig", Side.RESP: "resp"}
        states = {Side.ORIG: conn.final_state(Side.ORIG), Side.RESP: conn.final_state(Side.RESP)}
        if swapped:
            states = {Side.ORIG: states[Side.RESP], Side.RESP: states[Side.ORIG]}
        finding = findings.get(conn.uid)
        return ConnectionCheck(
            truth=truth,
            found=True,
            uid=conn.uid,
            roles_swapped=swapped,
            outcome=conn.outcome,
            rst_senders=tuple(flip[reset.sender] for reset in conn.resets),
            final_states=states,
            cause=finding.cause if finding is not None else None,
            diagnosed=finding is not None,
        )
    return ConnectionCheck(truth=truth, found=False)


RST_VIEWS_KEY = "rst_senders_seen_at"
"""Truth ``extra`` key: capture point -> the RST senders that capture shows. A capture on one link sees only the
RSTs that cross it (a middlebox resets each end on its own link; a black hole eats an RST before the far link)."""


def expected_rst_senders(truth: Truth, point: str | None) -> tuple[str, ...] | None:
    """The RST senders a capture point must show for the truth's faulty connection(s), when the truth says."""
    views = truth.extra.get(RST_VIEWS_KEY)
    if point is None or not isinstance(views, dict) or point not in views:
        return None
    return tuple(str(sender) for sender in views[point])


def check_truth(
    truth: Truth,
    connections: Iterable[_Connection],
    findings: Mapping[str, _Finding],
    point: str | None = None,
) -> list[ConnectionCheck]:
    """One check per truth connection, against the analysis of the capture taken at ``point``."""
    listed = list(connections)
    at_point = expected_rst_senders(truth, point)
    checks = []
    for item in truth.connections:
        check = check_connection(item, listed, findings)
        if at_point is not None and item.rst_senders:
            check = replace(check, expected_rst=at_point)
        checks.append(check)
    return checks
