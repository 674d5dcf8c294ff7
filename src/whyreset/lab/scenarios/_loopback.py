"""Shared shape of the loopback scenarios: one private namespace, a client and a server address, one capture.

A loopback scenario only writes `exercise`: the base class creates the host, starts the capture on its ``lo``
before any traffic and stops it once the applications are done.
"""

from __future__ import annotations

import socket
import struct
from abc import abstractmethod
from dataclasses import dataclass

from whyreset.ids import CauseId, Outcome, Side, TcpState
from whyreset.lab.runner import AppSocket, LabContext, LabHost
from whyreset.lab.scenario import ConnectionTruth, Need, Scenario

LOOPBACK_NEEDS = frozenset({Need.ROOT, Need.LOOPBACK, Need.NETNS, Need.TCPDUMP, Need.TRACEFS})
LINGER_ABORT = struct.pack("ii", 1, 0)
"""SO_LINGER {on, 0}: close() sends RST and discards unsent data."""


def endpoint(address: str, port: int) -> str:
    return f"{address}:{port}"


@dataclass(frozen=True, slots=True)
class Stage:
    """The addresses a loopback scenario plays with."""

    lab: LabContext
    host: LabHost
    client_addr: str
    server_addr: str
    server_port: int

    @property
    def server(self) -> str:
        return endpoint(self.server_addr, self.server_port)

    def listen(self, app: str = "server", backlog: int = 8) -> AppSocket:
        listener = self.lab.socket(self.host, app, Side.RESP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1, "SO_REUSEADDR=1")
        listener.bind(self.server_addr, self.server_port)
        listener.listen(backlog)
        return listener

    def client_socket(self, app: str = "client") -> tuple[AppSocket, str]:
        """A client socket bound to a seeded port; returns it with its ``addr:port``."""
        client = self.lab.socket(self.host, app, Side.ORIG)
        port = self.lab.port()
        client.bind(self.client_addr, port)
        return client, endpoint(self.client_addr, port)

    def dial(self, app: str = "client") -> tuple[AppSocket, str]:
        client, local = self.client_socket(app)
        client.connect(self.server_addr, self.server_port)
        return client, local

    def expect(
        self,
        orig: str,
        cause: CauseId | None,
        outcome: Outcome,
        rst_senders: tuple[str, ...] = (),
        orig_state: TcpState | None = None,
        resp_state: TcpState | None = None,
        resp: str | None = None,
    ) -> None:
        states: dict[Side, TcpState] = {}
        if orig_state is not None:
            states[Side.ORIG] = orig_state
        if resp_state is not None:
            states[Side.RESP] = resp_state
        self.lab.expect(ConnectionTruth(orig, resp or self.server, cause, outcome, rst_senders, states))


class LoopbackScenario(Scenario):
    """A scenario on a private loopback: subclasses implement `exercise`."""

    needs = LOOPBACK_NEEDS
    duration_s = 1.0

    def run(self, lab: LabContext) -> None:
        host = lab.loopback_host()
        client_addr, server_addr = host.addresses[:2]
        stage = Stage(lab, host, client_addr, server_addr, lab.port())
        with lab.capture("loopback", "lo", host.netns):
            self.exercise(stage)
            lab.join_apps()
        self.after_capture(stage)

    @abstractmethod
    def exercise(self, stage: Stage) -> None:
        """Make the connections and declare their truth; the capture runs meanwhile."""

    def after_capture(self, stage: Stage) -> None:
        """Hook for what must not be captured (nothing by default)."""
