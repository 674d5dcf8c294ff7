"""The keep-alive race where the request really crosses the server's FIN in flight.

On loopback the FIN always arrives before the client's next request leaves (``keepalive_race.http_reuse``). Here
the router holds the server's FIN back (a DROP rule for FINs from the server's port) for the moment the pooled
client reuses the connection: the request reaches a server whose application has closed the socket (FIN_WAIT1,
its FIN lost on the path), and the server's kernel answers RST (TCP_ABORT_ON_DATA). The client never sees the FIN;
``http.client`` fails with ConnectionResetError instead of RemoteDisconnected.

What each vantage point can tell: the server's capture shows FIN, then the request, then RST — the race itself.
The client's capture shows only idle, request, RST (a reply-shaped RST, as from a host that lost its state), so
from there keep-alive race and peer_lost_state cannot be told apart without the server's side.
"""

from __future__ import annotations

import http.client
import socket
import time
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from whyreset.ids import CauseId, Outcome, Side, TcpState
from whyreset.lab import nsenter
from whyreset.lab.netns import Role
from whyreset.lab.scenario import ConnectionTruth
from whyreset.lab.scenarios import register
from whyreset.lab.scenarios.keepalive import _IdleTimeoutHandler
from whyreset.lab.scenarios.path_base import PathScenario, declare_rst_views, endpoint, open_path

if TYPE_CHECKING:
    from whyreset.lab.runner import LabContext


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class KeepaliveRaceCrossing(PathScenario):
    name = "keepalive_race.crossing"
    cause = CauseId.KEEPALIVE_RACE
    duration_s = 2.0
    summary = "the pooled client's request crosses the server's idle-timeout FIN in flight (FIN held on the path)"

    def run(self, lab: LabContext) -> None:
        family = lab.rng.choice((socket.AF_INET, socket.AF_INET6))
        v6 = family == socket.AF_INET6
        with open_path(lab, family) as path:
            port, client_port = lab.port(), lab.port()
            idle_timeout = lab.duration(0.25, 0.45)
            body = lab.payload(lab.size(40, 900), "page")
            handler = type("Handler", (_IdleTimeoutHandler,), {"timeout": idle_timeout, "lab": lab, "body": body})
            server_class = type("Server", (_Server,), {"address_family": family})
            with nsenter.entered(path.topo.server.netns):
                server: Any = server_class((path.server_addr, port), handler)
            lab.track(server.socket)
            lab.spawn("server", lambda: server.serve_forever(poll_interval=0.05))
            try:
                local = endpoint(path.client_addr, client_port)
                remote = path.endpoint_of_server(port)
                conn = http.client.HTTPConnection(
                    path.server_addr, port, timeout=3, source_address=(path.client_addr, client_port)
                )
                with nsenter.entered(path.topo.client.netns):
                    conn.connect()
                assert conn.sock is not None
                lab.track(conn.sock)
                self._get(lab, conn, local, remote, "/first")
                hold = path.topo.add_rule(
                    Role.ROUTER, "FORWARD", "-p", "tcp", "--sport", str(port), "--tcp-flags", "FIN", "FIN",
                    "-j", "DROP", v6=v6,
                )  # fmt: skip
                time.sleep(idle_timeout + lab.duration(0.05, 0.12))  # the server times out; its FIN is held
                self._get(lab, conn, local, remote, "/reused")
                path.topo.delete_rule(hold)
                conn.close()
                lab.record_app("client", Side.ORIG, "close", "ok", local=local, remote=remote)
            finally:
                server.shutdown()
                server.server_close()
            lab.note(f"server idle timeout {idle_timeout} s; FINs from port {port} dropped while the client reused")
            declare_rst_views(lab, client=["resp"], server=["resp"])
            lab.expect(
                ConnectionTruth(local, remote, self.cause, Outcome.RESET, ("resp",), {Side.ORIG: TcpState.CLOSED})
            )

    @staticmethod
    def _get(lab: LabContext, conn: http.client.HTTPConnection, local: str, remote: str, path: str) -> None:
        where = {"local": local, "remote": remote}
        try:
            conn.request("GET", path, headers={"Host": "lab"})
            lab.record_app("client", Side.ORIG, "send_request", "ok", note=f"GET {path}", **where)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            lab.record_app("client", Side.ORIG, "get_response", exc, **where)
            return
        lab.record_app("client", Side.ORIG, "get_response", "ok", nbytes=len(body), note=f"{response.status}", **where)


register(KeepaliveRaceCrossing())
