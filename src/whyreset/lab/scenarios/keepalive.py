"""The keep-alive race with a real HTTP/1.1 server and a real pooling client.

The server is ``http.server.ThreadingHTTPServer`` whose handlers time out idle keep-alive connections; the
client is
``http.client.HTTPConnection``, which reuses its connection without checking whether the server closed it (as
every pool does between a FIN's arrival and its next read). The client's second request goes out after the
server's idle timeout: the server's socket is already gone (FIN_WAIT2 turned into a TIME_WAIT-like orphan) and
answers with RST; http.client reports ``RemoteDisconnected``.

On loopback a FIN is delivered within the ``close()`` call, so the request cannot literally cross the FIN in
flight (that needs a path with delay: a netns path scenario). What remains is the common production form: the
FIN arrived, nobody looked. The race is verified from the kernel's reset events; a missed attempt (the second
request answered: the server had not timed out yet) is recorded and retried with a longer idle time.
"""

from __future__ import annotations

import http.client
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from whyreset.ids import CauseId, Outcome, Side, TcpState
from whyreset.lab import nsenter
from whyreset.lab.runner import LabContext
from whyreset.lab.scenario import Scenario
from whyreset.lab.scenarios import register
from whyreset.lab.scenarios._loopback import LoopbackScenario, Stage, endpoint

MAX_ATTEMPTS = 3


class _IdleTimeoutHandler(BaseHTTPRequestHandler):
    """Answers every GET with a seeded body; the class attribute ``timeout`` is the keep-alive idle
    timeout."""

    protocol_version = "HTTP/1.1"
    lab: ClassVar[LabContext]
    body: ClassVar[bytes]

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)
        self._record("send_response", "ok", f"200 for {self.path}", len(self.body))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self._record("recv_request", "ok", f"{self.requestline} -> {code}", None)

    def log_error(self, format: str, *args: Any) -> None:
        # http.server reports its idle timeout here ("Request timed out"), then closes the connection.
        self._record("idle_close", "ok", format % args, None)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def _record(self, call: str, result: str, note: str, nbytes: int | None) -> None:
        local = endpoint(*self.connection.getsockname()[:2])
        remote = endpoint(*self.client_address[:2])
        self.lab.record_app(
            "server", Side.RESP, call, result, note=note, nbytes=nbytes, local=local, remote=remote
        )


class KeepaliveRace(LoopbackScenario):
    """http.client reuses a keep-alive connection that ThreadingHTTPServer just closed for idleness."""

    name = "keepalive_race.http_reuse"
    cause = CauseId.KEEPALIVE_RACE
    summary = (
        "HTTP/1.1 server idle timeout vs pooled client reuse: request after FIN, RST, RemoteDisconnected"
    )
    duration_s = 2.5

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        idle_timeout = lab.duration(0.25, 0.45)
        body = lab.payload(lab.size(40, 900), "page")
        handler = type("Handler", (_IdleTimeoutHandler,), {"timeout": idle_timeout, "lab": lab, "body": body})
        with nsenter.entered(stage.host.netns):
            server = ThreadingHTTPServer((stage.server_addr, stage.server_port), handler)
        server.daemon_threads = True
        lab.track(server.socket)
        lab.spawn("server", lambda: server.serve_forever(poll_interval=0.05))
        lab.note(f"server idle timeout {idle_timeout} s (BaseHTTPRequestHandler.timeout)")
        try:
            self._attempts(stage, idle_timeout)
        finally:
            server.shutdown()
            server.server_close()

    def _attempts(self, stage: Stage, idle_timeout: float) -> None:
        lab = stage.lab
        extra_idle = lab.duration(0.02, 0.06)
        history: list[dict[str, Any]] = []
        for attempt in range(1, MAX_ATTEMPTS + 1):
            local, error = self._one_connection(stage, idle_timeout + extra_idle)
            reset = any(
                event.event == "tcp_send_reset" and event.dst == local and event.src == stage.server
                for event in lab.kernel_resets_so_far()
            )
            history.append(
                {"attempt": attempt, "idle_s": idle_timeout + extra_idle, "error": error, "rst": reset}
            )
            if reset:
                stage.expect(local, self.cause, Outcome.RESET, ("resp",), TcpState.CLOSED, TcpState.CLOSED)
                break
            # Missed: the server had not closed yet and answered; the client then closed first, cleanly.
            stage.expect(local, None, Outcome.CLEAN, ())
            extra_idle *= 3
        lab.extra("attempts", history)
        lab.note(f"keep-alive race: {len(history)} attempt(s); hit={history[-1]['rst']}")

    def _one_connection(self, stage: Stage, idle_s: float) -> tuple[str, str | None]:
        lab = stage.lab
        port = lab.port()
        local = endpoint(stage.client_addr, port)
        conn = http.client.HTTPConnection(
            stage.server_addr, stage.server_port, timeout=3, source_address=(stage.client_addr, port)
        )
        with nsenter.entered(stage.host.netns):
            conn.connect()
        assert conn.sock is not None
        lab.track(conn.sock)
        first = self._get(stage, conn, local, "/first")
        if first is not None:
            raise RuntimeError(f"first request failed: {first}")
        time.sleep(idle_s)
        error = self._get(stage, conn, local, "/reused")
        conn.close()
        lab.record_app("client", Side.ORIG, "close", "ok", local=local, remote=stage.server)
        return local, error

    @staticmethod
    def _get(stage: Stage, conn: http.client.HTTPConnection, local: str, path: str) -> str | None:
        """One GET on the pooled connection, recorded; returns the exception's name when it failed."""
        lab = stage.lab
        where = {"local": local, "remote": stage.server}
        try:
            conn.request("GET", path, headers={"Host": "lab"})
            lab.record_app("client", Side.ORIG, "send_request", "ok", note=f"GET {path}", **where)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            lab.record_app("client", Side.ORIG, "get_response", exc, **where)
            return type(exc).__name__
        lab.record_app(
            "client", Side.ORIG, "get_response", "ok", nbytes=len(body), note=f"{response.status}", **where
        )
        return None


SCENARIOS: tuple[Scenario, ...] = (KeepaliveRace(),)
for _scenario in SCENARIOS:
    register(_scenario)
