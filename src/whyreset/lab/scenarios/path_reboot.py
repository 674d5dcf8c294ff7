"""``peer_lost_state``: one end reboots (its namespace is cut off and replaced by a fresh one with the same
addresses), the other keeps its connection and later sends on it; the new stack knows nothing and answers with
an RST (kernel reason NO_SOCKET) carrying the rebooted host's own TTL. Nothing is sent while the host
"crashes".
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from whyreset.ids import CauseId, Outcome, Side, TcpState
from whyreset.lab.netns import Role
from whyreset.lab.scenario import ConnectionTruth
from whyreset.lab.scenarios import register
from whyreset.lab.scenarios.path_base import (
    CAPTURE_FILTER,
    PathRun,
    PathScenario,
    declare_rst_views,
    open_path,
)

if TYPE_CHECKING:
    from whyreset.lab.runner import AppSocket, LabContext


def reboot(path: PathRun, role: Role) -> None:
    """Reboot ``role`` and re-register it with the lab (fresh counters baseline: a new namespace counts from
    0)."""
    from whyreset.lab.runner import LabHost

    path.topo.reboot(role)
    host = path.topo.host(role)
    addresses = tuple(str(iface.v4.ip) for iface in host.interfaces)
    addresses += tuple(str(iface.v6.ip) for iface in host.interfaces)
    path.lab.add_host(LabHost(str(role), host.netns, addresses))
    path.lab.note(f"{role} rebooted: namespace replaced, same addresses; its old capture ends here")


def read_reset(sock: AppSocket, what: str) -> None:
    """recv() that must fail with the peer's reset (the error is recorded)."""
    try:
        data = sock.recv(4096, what)
    except ConnectionResetError:
        return
    raise AssertionError(f"recv() returned {data!r} instead of a reset while waiting for {what}")


class PeerLostState(PathScenario):
    """One side reboots; the other side's next segment draws an RST from the new stack."""

    cause = CauseId.PEER_LOST_STATE
    duration_s = 1.5

    def __init__(self, rebooted: Role) -> None:
        self.rebooted = rebooted
        self.name = f"peer_lost_state.{rebooted}_reboot"
        self.summary = {
            Role.SERVER: "the server reboots; the client's next request is answered by an RST (NO_SOCKET)",
            Role.CLIENT: "the client reboots; the server's next push is answered by an RST (NO_SOCKET)",
        }[rebooted]

    def run(self, lab: LabContext) -> None:
        family = lab.rng.choice((socket.AF_INET, socket.AF_INET6))
        with open_path(lab, family, router_capture=True) as path:
            conn = path.connected_pair(lab.port())
            path.exchange(conn, "before-reboot")
            lab.pause(0.2, 0.5)
            reboot(path, self.rebooted)
            rebooted = path.topo.host(self.rebooted)
            with lab.capture(f"{self.rebooted}_rebooted", rebooted.iface, rebooted.netns, CAPTURE_FILTER):
                lab.pause(0.1, 0.3)
                if self.rebooted is Role.SERVER:
                    conn.client.sendall(lab.payload(lab.size(60, 300), "after-reboot-request"))
                    read_reset(conn.client, "the answer from the rebooted server")
                else:
                    conn.accepted.sendall(lab.payload(lab.size(60, 300), "server-push"))
                    read_reset(conn.accepted, "the answer from the rebooted client")
                lab.pause(0.05, 0.1)
            survivor = Side.ORIG if self.rebooted is Role.SERVER else Side.RESP
            sender = "resp" if self.rebooted is Role.SERVER else "orig"
            # The rebooted host's first capture ended with its old namespace, before the RST; so did the
            # router's (on its client-side interface, destroyed with the link) when the client rebooted.
            views = {str(Role.CLIENT): [sender], str(Role.SERVER): [sender], "router": [sender]}
            views[str(self.rebooted)] = []
            if self.rebooted is Role.CLIENT:
                views["router"] = []
            declare_rst_views(lab, **views, **{f"{self.rebooted}_rebooted": [sender]})
            lab.expect(
                ConnectionTruth(
                    orig=conn.orig,
                    resp=conn.resp,
                    cause=CauseId.PEER_LOST_STATE,
                    outcome=Outcome.RESET,
                    rst_senders=(sender,),
                    final_states={survivor: TcpState.CLOSED},
                )
            )


register(PeerLostState(Role.SERVER))
register(PeerLostState(Role.CLIENT))
