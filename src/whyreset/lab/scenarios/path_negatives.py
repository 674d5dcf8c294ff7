"""A genuine simultaneous close, which loopback cannot produce (a FIN there is delivered before the other
side's shutdown() returns) and this kernel has no netem to delay.

The router holds the FINs back instead: while a DROP rule for segments with FIN set is in place, both sides shut
down their sending side (each enters FIN_WAIT1, its FIN lost on the path); then the rule goes and the two FIN
retransmissions meet. Usually they cross on the wire: each kernel receives the peer's FIN while in FIN_WAIT1 and
enters CLOSING (RFC 9293 3.6, case 2), then TIME_WAIT when its own FIN is acknowledged. When one side's
retransmission timer fires a few milliseconds first, its FIN is acknowledged before the other's retransmission
leaves: only the other side goes through CLOSING (both still close actively, both end in TIME_WAIT), and the
capture beside the first side never sees the other's dropped FIN. The connection is clean either way: a negative
that must not be diagnosed as a fault, and a test of the state machine's rarest path.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from whyreset.ids import Outcome, Side, TcpState
from whyreset.lab.netns import Role
from whyreset.lab.scenario import ConnectionTruth
from whyreset.lab.scenarios import register
from whyreset.lab.scenarios.close import read_until_error
from whyreset.lab.scenarios.path_base import PathScenario, declare_rst_views, open_path

if TYPE_CHECKING:
    from whyreset.lab.runner import LabContext


class SimultaneousCloseOnPath(PathScenario):
    name = "negative.simultaneous_close_path"
    cause = None
    duration_s = 2.0
    summary = "the router holds both FINs back, then lets their retransmissions meet: both close actively, via CLOSING"

    def run(self, lab: LabContext) -> None:
        family = lab.rng.choice((socket.AF_INET, socket.AF_INET6))
        v6 = family == socket.AF_INET6
        with open_path(lab, family) as path:
            conn = path.connected_pair(lab.port())
            path.exchange(conn, "simultaneous")
            hold = path.topo.add_rule(
                Role.ROUTER, "FORWARD", "-p", "tcp", "--tcp-flags", "FIN", "FIN", "-j", "DROP", v6=v6
            )
            conn.client.shutdown(socket.SHUT_WR)
            conn.accepted.shutdown(socket.SHUT_WR)
            lab.pause(0.02, 0.08)  # both FINs sent and dropped; the retransmissions (RTO >= 200 ms) will cross
            path.topo.delete_rule(hold)
            read_until_error(conn.client, "until the server's FIN")
            read_until_error(conn.accepted, "until the client's FIN")
            tables = {role: path.topo.run(role, ["ss", "-tan"]).stdout for role in (Role.CLIENT, Role.SERVER)}
            conn.client.close()
            conn.accepted.close()
            crossed = all("TIME-WAIT" in table for table in tables.values())
            lab.note("ss -tan after both FINs were acknowledged:\n" + "\n".join(tables.values()))
            lab.extra("fins_crossed", crossed)
            declare_rst_views(lab, client=[], server=[])
            lab.expect(
                ConnectionTruth(
                    conn.orig,
                    conn.resp,
                    None,
                    Outcome.CLEAN,
                    (),
                    {Side.ORIG: TcpState.TIME_WAIT, Side.RESP: TcpState.TIME_WAIT},
                )
            )


register(SimultaneousCloseOnPath())
