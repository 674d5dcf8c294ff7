"""A client that gives up mid-handshake for real: its connect() times out, then the late SYN-ACK draws an RST.

Loopback answers a SYN at once, so the lab holds the server's SYN-ACK back on the router (a DROP rule for
segments with SYN and ACK set) until the client's connect() timeout (from the seed, well under the initial 1 s
RTO) has expired and the application has closed the socket. Closing a SYN_SENT socket sends nothing; when the rule
goes, the server's retransmitted SYN-ACK reaches a host with no such socket, whose kernel answers RST (NO_SOCKET).
The server sees its half-open connection reset mid-handshake: the signature of ``handshake_aborted``.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import TYPE_CHECKING

from whyreset.ids import CauseId, Outcome
from whyreset.lab.netns import Role
from whyreset.lab.scenario import ConnectionTruth
from whyreset.lab.scenarios import register
from whyreset.lab.scenarios.path_base import PathScenario, declare_rst_views, open_path

if TYPE_CHECKING:
    from whyreset.lab.runner import LabContext

SYNACK_RETRANSMIT_WAIT_S = 1.6
"""The server retransmits its SYN-ACK after its initial RTO (1 s); wait past it for the client's RST."""


class ConnectTimeout(PathScenario):
    name = "handshake_aborted.connect_timeout"
    cause = CauseId.HANDSHAKE_ABORTED
    duration_s = 2.5
    summary = "SYN-ACK held back on the path; the client's connect() times out and the late SYN-ACK draws an RST"

    def run(self, lab: LabContext) -> None:
        family = lab.rng.choice((socket.AF_INET, socket.AF_INET6))
        v6 = family == socket.AF_INET6
        with open_path(lab, family) as path:
            port = lab.port()
            path.listener(port)
            hold = path.topo.add_rule(
                Role.ROUTER, "FORWARD", "-p", "tcp", "--tcp-flags", "SYN,ACK", "SYN,ACK", "-j", "DROP", v6=v6
            )
            client, orig = path.client()
            client.settimeout(lab.rng.uniform(0.25, 0.6))
            with contextlib.suppress(OSError):  # the timeout is the observation; it is recorded
                client.connect(path.server_addr, port)
            client.close("connect() timed out: the application gives up")
            path.topo.delete_rule(hold)
            time.sleep(SYNACK_RETRANSMIT_WAIT_S)
            declare_rst_views(lab, client=["orig"], server=["orig"])
            lab.expect(
                ConnectionTruth(
                    orig, path.endpoint_of_server(port), CauseId.HANDSHAKE_ABORTED, Outcome.NOT_ESTABLISHED, ("orig",)
                )
            )


register(ConnectTimeout())
