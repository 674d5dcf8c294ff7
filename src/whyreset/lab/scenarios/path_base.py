"""What the path scenarios share: the client-router-server topology, captures at each host, recorded sockets.

Every path scenario runs on ``LabContext.topology()`` (``whyreset.lab.netns``): the client and the server talk
through a router namespace that filters, forgets or forges. Captures run inside the namespaces: ``client`` on
the client's interface, ``server`` on the server's, ``router`` on the router's client-side interface where the
forged packets matter. Each host has its own TTL (client 64, server a few less, router a very different value,
all chosen from the seed), recorded in the truth's ``extra["hosts"]`` so that tests and the catalogue can tell
who put a packet on the wire.

Timers are shrunk per namespace or per socket (TCP_SYNCNT, TCP_USER_TIMEOUT, keepalive options, conntrack
timeouts) so that each scenario takes a few seconds.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from whyreset.ids import Side
from whyreset.lab.compare import RST_VIEWS_KEY
from whyreset.lab.scenario import Need, Scenario

if TYPE_CHECKING:
    from whyreset.lab.netns import Host, Topology
    from whyreset.lab.runner import AppSocket, LabContext

PATH_NEEDS = frozenset({Need.ROOT, Need.NETNS, Need.IPTABLES, Need.TCPDUMP, Need.TRACEFS})
CAPTURE_FILTER = "tcp or icmp or (icmp6 and ip6[40] < 128)"
"""TCP and ICMP/ICMPv6 *errors* (types below 128): neighbour discovery and MLD chatter stay out of the
pcaps."""
SAFETY_TIMEOUT_S = 8.0
"""Socket timeout of every application socket: a scenario never blocks longer, whatever the kernel does."""


def endpoint(addr: str, port: int) -> str:
    """``addr:port`` / ``[v6]:port``, the form the truth and the tracer use."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def any_address(family: socket.AddressFamily) -> str:
    return "::" if family == socket.AF_INET6 else "0.0.0.0"


class PathScenario(Scenario):
    """Base of the scenarios that need the three-host topology."""

    needs = PATH_NEEDS


@dataclass(frozen=True, slots=True)
class Connected:
    """An established connection of a scenario."""

    listener: AppSocket
    client: AppSocket
    accepted: AppSocket
    """The server's socket of this connection."""
    orig: str
    """``addr:port`` of the client."""
    resp: str
    """``addr:port`` of the server."""


@dataclass(slots=True)
class PathRun:
    """A scenario's topology with its captures running (see `open_path`)."""

    lab: LabContext
    topo: Topology
    family: socket.AddressFamily

    @property
    def client_addr(self) -> str:
        return self.topo.client.addr(self.family)

    @property
    def server_addr(self) -> str:
        return self.topo.server.addr(self.family)

    def endpoint_of_server(self, port: int) -> str:
        return endpoint(self.server_addr, port)

    def app_socket(self, host: Host, app: str, side: Side) -> AppSocket:
        """A recorded TCP socket living in ``host``'s namespace."""
        sock = self.topo.socket(host, self.family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.settimeout(SAFETY_TIMEOUT_S)
        return self.lab.wrap(sock, app, side)

    def listener(self, port: int, app: str = "server") -> AppSocket:
        server = self.app_socket(self.topo.server, app, Side.RESP)
        server.bind(any_address(self.family), port)
        server.listen(8)
        return server

    def client(self, app: str = "client") -> tuple[AppSocket, str]:
        """A client socket bound to a seeded port (so its address is known even when connect fails), and that
        address as ``addr:port``."""
        client = self.app_socket(self.topo.client, app, Side.ORIG)
        port = self.lab.port()
        client.bind(self.client_addr, port)
        return client, endpoint(self.client_addr, port)

    def connected_pair(self, port: int) -> Connected:
        """An established connection through the router, with its listener."""
        listener = self.listener(port)
        client, orig = self.client()
        client.connect(self.server_addr, port)
        accepted = listener.accept("server")
        return Connected(listener, client, accepted, orig, endpoint(self.server_addr, port))

    def exchange(self, conn: Connected, label: str) -> None:
        """One request and its response, so both sides have sent and acknowledged data."""
        request = self.lab.payload(self.lab.size(40, 200), f"{label}-request")
        conn.client.sendall(request)
        conn.accepted.recv_exactly(len(request))
        response = self.lab.payload(self.lab.size(100, 900), f"{label}-response")
        conn.accepted.sendall(response)
        conn.client.recv_exactly(len(response))


def declare_rst_views(lab: LabContext, **views: list[str]) -> None:
    """Record, per capture point, the senders (``orig``/``resp``/``path``, in order) of the RSTs it must show.

    ``ConnectionTruth.rst_senders`` lists every RST of the connection, but a capture on one link sees only
    those that cross it: a black hole eats the client's RST before the server's link, a middlebox resets each
    end on its own link. Checking a capture point against the whole list would be wrong; against this, exact.
    """
    lab.extra(RST_VIEWS_KEY, views)


def describe_hosts(topo: Topology) -> dict[str, dict[str, object]]:
    """Role -> namespace, addresses, TTL: written to the truth's ``extra["hosts"]``."""
    return {
        str(host.role): {
            "netns": host.netns,
            "ttl": host.ttl,
            "v4": [str(iface.v4.ip) for iface in host.interfaces],
            "v6": [str(iface.v6.ip) for iface in host.interfaces],
        }
        for host in topo.hosts
    }


@contextlib.contextmanager
def open_path(
    lab: LabContext, family: socket.AddressFamily = socket.AF_INET, *, router_capture: bool = False
) -> Iterator[PathRun]:
    """Bring the topology up (torn down by the lab's cleanup) and capture at the client and the server (and
    the router's client-side interface) while the body runs."""
    topo = lab.topology()
    lab.extra("hosts", describe_hosts(topo))
    lab.note(
        f"topology: client TTL {topo.client.ttl}, server TTL {topo.server.ttl}, router (forging) TTL "
        f"{topo.router.ttl}; IPv{6 if family == socket.AF_INET6 else 4}"
    )
    with contextlib.ExitStack() as captures:
        captures.enter_context(lab.capture("client", topo.client.iface, topo.client.netns, CAPTURE_FILTER))
        captures.enter_context(lab.capture("server", topo.server.iface, topo.server.netns, CAPTURE_FILTER))
        if router_capture:
            captures.enter_context(
                lab.capture("router", topo.router.iface, topo.router.netns, CAPTURE_FILTER)
            )
        yield PathRun(lab, topo, family)
