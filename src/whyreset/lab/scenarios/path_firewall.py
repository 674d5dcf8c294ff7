"""A firewall on the path refuses the connection: with an ICMP error (``icmp_unreachable``) or by dropping the
SYN (``syn_unanswered``). The server has a listener on the port each time, so the endpoint is never the one
refusing.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from typing import TYPE_CHECKING

from whyreset.ids import CauseId, Outcome
from whyreset.lab.netns import Verdict, counter_deltas
from whyreset.lab.scenario import ConnectionTruth
from whyreset.lab.scenarios import register
from whyreset.lab.scenarios.path_base import PathRun, PathScenario, declare_rst_views, open_path

if TYPE_CHECKING:
    from whyreset.lab.runner import LabContext

TCP_SYNCNT = getattr(socket, "TCP_SYNCNT", 7)
SYN_RETRIES = 2
"""TCP_SYNCNT. In SYN_SENT the kernel allows syn_retries + tcp_syn_linear_timeouts (4) retransmissions within
a matching time budget: 5 SYNs one second apart and ETIMEDOUT about 7 s after the first (observed on 6.18)."""

# What connect() returns for each (family, ICMP error) on Linux (net/ipv4/icmp.c icmp_err_convert,
# net/ipv6/icmp.c tab_unreach): both errors are "fatal" in SYN_SENT, so connect() fails at once.
EXPECTED_ERRNO = {
    (socket.AF_INET, Verdict.PORT_UNREACHABLE): "ECONNREFUSED",
    (socket.AF_INET, Verdict.ADMIN_PROHIBITED): "EHOSTUNREACH",
    (socket.AF_INET6, Verdict.PORT_UNREACHABLE): "ECONNREFUSED",
    (socket.AF_INET6, Verdict.ADMIN_PROHIBITED): "EACCES",
}


def _refused_connect(path: PathRun, verdict: Verdict) -> None:
    """One connection attempt through a REJECT rule; records the truth of the attempt."""
    lab, family = path.lab, path.family
    port = lab.port()
    path.topo.filter_port(verdict, port, v6=family == socket.AF_INET6)
    path.listener(port)
    client, orig = path.client()
    try:
        client.connect(path.server_addr, port)
    except OSError:
        client.close("after the failed connect, as applications do")
    else:
        raise AssertionError(f"connect through a REJECT {verdict} rule succeeded")
    lab.expect(
        ConnectionTruth(
            orig=orig,
            resp=path.endpoint_of_server(port),
            cause=CauseId.ICMP_UNREACHABLE,
            outcome=Outcome.NOT_ESTABLISHED,
            rst_senders=(),
        )
    )
    lab.note(f"{verdict} over IPv{6 if family == socket.AF_INET6 else 4}: expected errno "
             f"{EXPECTED_ERRNO[(family, verdict)]}")  # fmt: skip


class IcmpUnreachable(PathScenario):
    name = "icmp_unreachable.router_reject"
    cause = CauseId.ICMP_UNREACHABLE
    duration_s = 3.0
    summary = "the router REJECTs the SYN with ICMP port-unreachable / admin-prohibited, IPv4 and IPv6"

    def run(self, lab: LabContext) -> None:
        with open_path(lab, router_capture=True) as path:
            hosts = (path.topo.client, path.topo.router)
            before = {host.role: path.topo.counters(host) for host in hosts}
            for family in (socket.AF_INET, socket.AF_INET6):
                for verdict in (Verdict.PORT_UNREACHABLE, Verdict.ADMIN_PROHIBITED):
                    _refused_connect(replace(path, family=family), verdict)
            # The runner's counters are TcpExt/Tcp only; the ICMP side of the story is in Icmp/Icmp6 counters.
            lab.extra("icmp_counters", {
                str(host.role): {name: delta for name, delta in counter_deltas(before[host.role],
                                 path.topo.counters(host)).items() if "Icmp" in name and "Dest" in name}
                for host in hosts
            })  # fmt: skip
            declare_rst_views(lab, client=[], server=[], router=[])
            lab.extra("expected_errno", {f"{f.name}/{v}": e for (f, v), e in EXPECTED_ERRNO.items()})


class SynUnanswered(PathScenario):
    name = "syn_unanswered.router_drop"
    cause = CauseId.SYN_UNANSWERED
    duration_s = 7.5
    summary = (
        f"the router DROPs the SYN; TCP_SYNCNT={SYN_RETRIES} (+ linear timeouts): ETIMEDOUT after about 7 s"
    )

    def run(self, lab: LabContext) -> None:
        family = lab.rng.choice((socket.AF_INET, socket.AF_INET6))
        with open_path(lab, family) as path:
            port = lab.port()
            path.topo.filter_port(Verdict.DROP, port, v6=family == socket.AF_INET6)
            path.listener(port)
            declare_rst_views(lab, client=[], server=[])
            client, orig = path.client()
            client.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, SYN_RETRIES, f"TCP_SYNCNT={SYN_RETRIES}")
            linear = path.topo.sysctls(path.topo.client, ["net.ipv4.tcp_syn_linear_timeouts"])
            lab.note(f"client tcp_syn_linear_timeouts={linear['net.ipv4.tcp_syn_linear_timeouts']}")
            try:
                client.connect(path.server_addr, port)
            except OSError:
                client.close("after the failed connect")
            else:
                raise AssertionError("connect through a DROP rule succeeded")
            lab.expect(
                ConnectionTruth(
                    orig=orig,
                    resp=path.endpoint_of_server(port),
                    cause=CauseId.SYN_UNANSWERED,
                    outcome=Outcome.TIMEOUT,
                    rst_senders=(),
                )
            )


register(IcmpUnreachable())
register(SynUnanswered())
