"""The cause catalogue: one entry per cause id of design/causes.md, readable top to bottom.

Each entry says what happens (the mechanism, in terms of what the kernel does), how it looks in a capture,
what evidence a finding shows, the kernel's own reset / drop reason, what each application sees (rendered per
runtime from the errno rule in `symptoms`), the fix, and the rule that recognises it (``diagnose/rules``).
``whyreset explain``, ``whyreset rules`` and docs/causes/*.md are all generated from this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from whyreset.diagnose.rules import close, handshake, path, timeout
from whyreset.diagnose.rules.common import Rule
from whyreset.diagnose.symptoms import AppView, Errno, Operation
from whyreset.ids import CauseId

R, W, C = Operation.READ, Operation.WRITE, Operation.CONNECT


@dataclass(frozen=True, slots=True)
class Role:
    """One party of a cause, for the catalogue's symptom table."""

    name: str
    """``client``, ``server``, ``closer``, ``peer``, ``prober``..."""
    is_client: bool
    """Whether this party is usually the connecting side (selects nginx's upstream vs client messages)."""
    view: AppView
    """What its application sees."""


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """Everything whyreset knows about one cause."""

    cause: CauseId
    title: str
    family: str
    """``handshake``, ``close``, ``path`` or ``timeout`` (the rules module)."""
    what_happens: str
    """The mechanism, with the kernel's behaviour."""
    signature: str
    """How it typically looks in a capture."""
    evidence: tuple[str, ...]
    """What a finding shows to support it."""
    kernel_reasons: tuple[str, ...]
    """Linux ``sk_rst_reason`` / ``skb_drop_reason`` names and TcpExt counters observed when it happens."""
    roles: tuple[Role, ...]
    """Who sees what."""
    fix: tuple[str, ...]
    """Concrete remedies, most useful first."""
    decisive_capture: str
    """Which capture or host observation separates it from its look-alikes."""
    look_alikes: tuple[CauseId, ...]
    """Causes it is most often confused with."""
    seeds: tuple[str, ...]
    """Seed write-ups (design/seeds) that describe it."""
    rule: Rule
    """Recognises it in a connection (see diagnose/rules)."""
    wire_limit: str = ""
    """What a capture cannot show about this cause (look-alikes with the same packets), and what decides
    instead; empty when the capture suffices."""

    @property
    def produces(self) -> tuple[tuple[Errno, Operation], ...]:
        """The (errno, operation) pairs its parties can see: how a pasted error line maps back to causes."""
        return tuple((r.view.errno, r.view.operation) for r in self.roles if r.view.errno and r.view.operation)


def _see(errno: Errno | None, op: Operation | None, why: str) -> AppView:
    return AppView(errno, op, why)


NOTHING_CLOSED = _see(None, None, "nothing: its application had closed the socket; the kernel acted alone")
RESET_READ = _see(
    Errno.ECONNRESET,
    R,
    "RST accepted while established: the blocked or next read fails with "
    "ECONNRESET (Java 'Connection reset'); a write after that gets EPIPE",
)
RESET_WRITE = _see(
    Errno.ECONNRESET,
    W,
    "RST accepted while it was sending: the next write fails with ECONNRESET, later ones with EPIPE",
)
CLOSE_WAIT_EOF = _see(
    Errno.EOF,
    R,
    "it had received the FIN: the read returns EOF (no response), and the RST "
    "accepted in CLOSE_WAIT makes its next write fail with EPIPE",
)
CLOSE_WAIT_PIPE = _see(Errno.EPIPE, W, "RST accepted in CLOSE_WAIT: the next write fails with EPIPE")


ENTRIES: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        cause=CauseId.REFUSED,
        title="Connection refused: nothing listens on the port",
        family="handshake",
        what_happens="The SYN reached a host where no socket listens on the destination port. The kernel "
        "answers "
        "every segment that matches no socket with a reply reset (tcp_v4_send_reset, reason NO_SOCKET): for "
        "a SYN "
        "that is RST+ACK with seq 0 and ack = ISN+1. The client socket in SYN_SENT accepts it and connect() "
        "fails "
        "with ECONNREFUSED. A host firewall rule `REJECT --reject-with tcp-reset` produces the same packet "
        "from "
        "netfilter, with the firewall's TTL.",
        signature="SYN answered by RST+ACK, ack = ISN+1, seq 0, no SYN-ACK",
        evidence=(
            "the SYN and the RST (seq, ack, TTL)",
            "the RST's TTL against the host's other packets (firewall vs host)",
            "whether the port answered other handshakes in the capture",
        ),
        kernel_reasons=("NO_SOCKET",),
        roles=(Role("client", True, _see(Errno.ECONNREFUSED, C, "connect() fails at once")),),
        fix=(
            "Start the service, or point the client at the right host:port (check `ss -ltnp` on the server).",
            "If the port answered before: the listener was restarting; retry connect with backoff, and drain "
            "deploys behind a load balancer.",
            "If a firewall REJECTs: fix the rule or the client's allowed source.",
        ),
        decisive_capture="a capture on the server host shows whether its kernel or a firewall sent the RST",
        look_alikes=(CauseId.ICMP_UNREACHABLE, CauseId.LISTENER_CLOSED),
        seeds=("000", "002"),
        rule=handshake.refused,
    ),
    CatalogueEntry(
        cause=CauseId.ICMP_UNREACHABLE,
        title="Destination unreachable (ICMP): a REJECT without a reset",
        family="handshake",
        what_happens="A router or the destination's firewall rejected the segment with ICMP destination "
        "unreachable (port unreachable, administratively prohibited, host/net unreachable) instead of a TCP "
        "RST. "
        "During connect() Linux turns it into an error (icmp_err_convert: port unreachable -> ECONNREFUSED, "
        "prohibited/host -> EHOSTUNREACH, net -> ENETUNREACH); on an established connection it is a soft "
        "error "
        "and the kernel keeps retransmitting.",
        signature="ICMP type 3 (ICMPv6 type 1) quoting the connection's SYN or data",
        evidence=(
            "the ICMP error: reporter, type/code, the quoted 4-tuple",
            "whether the reporter is the server itself or a router",
        ),
        kernel_reasons=("none (the reject happens before TCP)",),
        roles=(
            Role(
                "client",
                True,
                _see(
                    Errno.EHOSTUNREACH,
                    C,
                    "connect() fails with EHOSTUNREACH ('No route to host'), or ECONNREFUSED for port unreachable",
                ),
            ),
        ),
        fix=(
            "Fix the firewall rule (REJECT with icmp-admin-prohibited / icmp-port-unreachable) or the route.",
            "If the reporter is a router, check the route to the server and its ACLs.",
        ),
        decisive_capture="the ICMP reporter's address names the device that rejected",
        look_alikes=(CauseId.REFUSED, CauseId.SYN_UNANSWERED),
        seeds=("002",),
        rule=handshake.icmp_unreachable,
    ),
    CatalogueEntry(
        cause=CauseId.SYN_UNANSWERED,
        title="SYN never answered: host down, filtered, or queue full",
        family="handshake",
        what_happens="Nothing came back for the SYN: the host is down or unreachable, a firewall DROPs it, "
        "or "
        "the listener drops SYNs because its SYN queue or accept queue is full (tcp_conn_request counts "
        "ListenOverflows/ListenDrops and drops, it does not reset). The client kernel retransmits the SYN "
        "(1 s, 2 s, 4 s... or linear 1 s with tcp_syn_linear_timeouts) up to tcp_syn_retries, then connect() "
        "fails with ETIMEDOUT, unless the application's connect timeout fires first.",
        signature="SYN retransmitted at growing intervals, no SYN-ACK, no RST, no ICMP",
        evidence=(
            "the SYN transmissions and their intervals",
            "whether the port answered other handshakes in the capture (then: drops, not absence)",
            "the vantage point (did the SYNs reach the server?)",
        ),
        kernel_reasons=(
            "drops seen by skb:kfree_skb (e.g. TCP_LISTEN_OVERFLOW, NETFILTER_DROP)",
            "TcpExt ListenOverflows / ListenDrops",
        ),
        roles=(
            Role(
                "client",
                True,
                _see(
                    Errno.ETIMEDOUT,
                    C,
                    "connect() times out (kernel ETIMEDOUT, or the library's own connect timeout)",
                ),
            ),
        ),
        fix=(
            "Check that the host is up and routable and that no firewall drops the SYNs (tcpdump on the server).",
            "If the port is overloaded: raise the backlog (net.core.somaxconn and the listen() backlog) and "
            "accept faster.",
            "Use a connect timeout well below the kernel's ~2 minutes, and retry with backoff.",
        ),
        decisive_capture="a capture next to the server shows whether the SYNs arrive; ListenDrops on the server",
        look_alikes=(CauseId.BACKLOG_OVERFLOW, CauseId.ICMP_UNREACHABLE),
        seeds=("001",),
        rule=handshake.syn_unanswered,
    ),
    CatalogueEntry(
        cause=CauseId.BACKLOG_OVERFLOW,
        title="Accept queue full: the handshake's last ACK dropped (or reset)",
        family="handshake",
        what_happens="The application does not accept() fast enough and the listener's accept queue "
        "(min(backlog, "
        "somaxconn)) is full. When the client's final ACK arrives the kernel cannot create the child socket: "
        "it "
        "drops the ACK (ListenOverflows) and keeps the request in SYN_RECV, retransmitting its SYN-ACK; the "
        "client "
        "believes it is connected and its first request stalls. With net.ipv4.tcp_abort_on_overflow=1 the "
        "listener answers the ACK with a reset instead.",
        signature="SYN-ACK retransmitted by the server although the client ACKed; or a reply RST right after "
        "the "
        "handshake (abort_on_overflow)",
        evidence=(
            "the client's handshake ACK and the later SYN-ACK retransmissions",
            "the client's first data unacknowledged",
            "for abort_on_overflow: the reply-shaped RST to the handshake ACK",
        ),
        kernel_reasons=(
            "drop TCP_LISTEN_OVERFLOW (kfree_skb)",
            "INVALID_SYN (tcp_abort_on_overflow=1)",
            "TcpExt ListenOverflows / ListenDrops",
        ),
        roles=(
            Role(
                "client",
                True,
                _see(Errno.ETIMEDOUT, R, "connect() succeeds but the first request is slow or times out"),
            ),
            Role("client (abort_on_overflow)", True, RESET_READ),
        ),
        fix=(
            "Raise the backlog: net.core.somaxconn and the listen() backlog argument (e.g. nginx `listen ... "
            "backlog=`), and accept() faster (more workers, no blocking in the accept loop).",
            "Keep tcp_abort_on_overflow=0 so that short bursts only delay clients.",
            "Watch `ss -ltn` (Recv-Q vs Send-Q) and ListenOverflows.",
        ),
        decisive_capture="ListenOverflows on the server; a server-side capture rules out the ACK being lost "
        "on "
        "the path",
        look_alikes=(CauseId.SYN_UNANSWERED, CauseId.LISTENER_CLOSED),
        seeds=("001", "002"),
        rule=handshake.backlog_overflow,
    ),
    CatalogueEntry(
        cause=CauseId.HANDSHAKE_ABORTED,
        title="Handshake abandoned by the client",
        family="handshake",
        what_happens="The SYN sender gave up in the middle of the handshake: its connect timeout fired and "
        "it "
        "closed the SYN_SENT socket (no packet), so the late SYN-ACK found no socket and its kernel answered "
        "with "
        "a reply reset; or a scanner sent a raw SYN and let its kernel reset the SYN-ACK.",
        signature="RST from the SYN sender after the SYN-ACK, instead of the final ACK",
        evidence=("the SYN(s), the SYN-ACK and its delay", "the client's RST (seq = the SYN-ACK's ack)"),
        kernel_reasons=("NO_SOCKET (on the client)",),
        roles=(
            Role(
                "client",
                True,
                _see(
                    Errno.ETIMEDOUT,
                    C,
                    "its connect() had already failed with its own timeout (or it was a scanner)",
                ),
            ),
            Role("server", False, _see(None, None, "nothing: accept() never sees the connection")),
        ),
        fix=(
            "If the SYN-ACK was late: the server or path is slow; raise the client's connect timeout above "
            "the "
            "real handshake time, or fix the server's SYN backlog.",
            "If it is a scanner: nothing to fix; rate-limit or filter it.",
        ),
        decisive_capture="the client's connect timeout against the SYN-ACK delay",
        look_alikes=(CauseId.INVALID_SEGMENT,),
        seeds=("001",),
        rule=handshake.handshake_aborted,
    ),
    CatalogueEntry(
        cause=CauseId.CLOSE_WITH_UNREAD_DATA,
        title="Closed with unread data: RST instead of FIN",
        family="close",
        what_happens="An application called close() (or exited) while bytes it had received were still "
        "unread in "
        "its socket's receive queue. Linux (__tcp_close) then sends RST+ACK instead of FIN (RFC 2525 2.17) "
        "and "
        "discards its own unsent data; this takes precedence over SO_LINGER. Typical: a server reads one "
        "request "
        "of two and closes, or rejects a request without reading its body.",
        signature="peer data acknowledged by the closer, then an RST+ACK from the closer with no FIN before it; "
        "byte-for-byte the same as abortive_close and benign_reset unless the closer's advertised window shrank "
        "(unread bytes) or its own data was in flight (deliberate abort)",
        wire_limit="Capture limit (checked on the lab's recordings with real sockets): close() with unread data, a "
        "close() with SO_LINGER {1, 0} and a zero-linger abort after the application read everything put the "
        "same packets on the wire. Linux __tcp_close() sends the same RST+ACK (tcp_send_active_reset, seq = "
        "SND.NXT, ack = RCV.NXT, no FIN) on both paths; only its counter (TCPAbortOnClose vs TCPAbortOnData) "
        "and reset reason (TCP_ABORT_ON_CLOSE vs TCP_STATE) differ. The finding then names "
        "close_with_unread_data with the other two as close alternatives and says so; a receive window the "
        "closer advertised narrower before its RST (bytes sitting unread) and its own data discarded in "
        "flight (a deliberate abort) are the only wire signs that separate them.",
        evidence=(
            "the RST (seq = its SND.NXT, ack covering the unread data)",
            "the peer's data that the closer received after it last sent anything",
            "no FIN from the closer",
        ),
        kernel_reasons=("TCP_ABORT_ON_CLOSE", "TcpExt TCPAbortOnClose"),
        roles=(Role("peer (client)", True, RESET_READ), Role("closer (server)", False, NOTHING_CLOSED)),
        fix=(
            "Read the request completely (to the end of its body) before closing, or send "
            "`Connection: close` and read to EOF.",
            "To end a connection gracefully: shutdown(SHUT_WR), then read until EOF, then close().",
            "Clients: retry only idempotent requests on ECONNRESET.",
        ),
        decisive_capture="none: no capture separates it from an SO_LINGER {1, 0} close or an abort after reading "
        "everything (same RST+ACK); a receive window that narrowed before the RST hints at unread bytes. On the "
        "closer's host: TCPAbortOnClose (unread data) vs TCPAbortOnData (zero linger) in /proc/net/netstat, the "
        "kernel's reset reason in `whyreset live` (TCP_ABORT_ON_CLOSE vs TCP_STATE), or the application's code",
        look_alikes=(
            CauseId.ABORTIVE_CLOSE,
            CauseId.BENIGN_RESET,
            CauseId.LISTENER_CLOSED,
            CauseId.PEER_LOST_STATE,
        ),
        seeds=("001", "004"),
        rule=close.close_with_unread_data,
    ),
    CatalogueEntry(
        cause=CauseId.ABORTIVE_CLOSE,
        title="Abortive close: SO_LINGER 0, forced abort",
        family="close",
        what_happens="The application aborted on purpose: close() with SO_LINGER {on, 0}, "
        "connect(AF_UNSPEC), "
        "`ss -K`, or an orphan whose linger / FIN_WAIT2 timer expired (TCP_LINGER2 < 0). The kernel sends "
        "RST+ACK "
        "(seq = SND.NXT) instead of FIN and throws away everything not yet acknowledged.",
        signature="RST+ACK with no FIN first and no unread peer data; the closer's unacknowledged data is lost",
        evidence=("the RST and what was pending (unacknowledged bytes each way)", "no FIN from the closer"),
        kernel_reasons=(
            "TCP_STATE (SO_LINGER 0 close)",
            "TCP_DISCONNECT_WITH_DATA",
            "TCP_ABORT_ON_LINGER (orphan in FIN_WAIT2 with TCP_LINGER2 < 0)",
            "TCP_ABORT_ON_DATA (orphan in FIN_WAIT1 with TCP_LINGER2 < 0, answering the ACK of its FIN)",
            "TcpExt TCPAbortOnLinger / TCPAbortOnData",
        ),
        roles=(Role("peer", True, RESET_READ), Role("closer", False, NOTHING_CLOSED)),
        fix=(
            "Do not set SO_LINGER {1, 0} unless losing in-flight data is intended; close with "
            "shutdown(SHUT_WR), "
            "read to EOF, then close().",
            "If a proxy or load balancer is configured to reset (e.g. HAProxy `option nolinger`), make sure "
            "it "
            "only does so after the response is delivered.",
        ),
        decisive_capture="its own unacknowledged data discarded by the RST is the one wire sign; otherwise the "
        "closer's code (SO_LINGER {1, 0}), TCPAbortOnData vs TCPAbortOnClose on its host, or its reset reason "
        "TCP_STATE in `whyreset live`: without them it is indistinguishable from close_with_unread_data",
        look_alikes=(CauseId.CLOSE_WITH_UNREAD_DATA, CauseId.BENIGN_RESET),
        wire_limit="Capture limit (checked on the lab's recordings with real sockets): close() with unread data, a "
        "close() with SO_LINGER {1, 0} and a zero-linger abort after the application read everything put the "
        "same packets on the wire. Linux __tcp_close() sends the same RST+ACK (tcp_send_active_reset, seq = "
        "SND.NXT, ack = RCV.NXT, no FIN) on both paths; only its counter (TCPAbortOnClose vs TCPAbortOnData) "
        "and reset reason (TCP_ABORT_ON_CLOSE vs TCP_STATE) differ. The finding then names "
        "close_with_unread_data with the other two as close alternatives and says so; a receive window the "
        "closer advertised narrower before its RST (bytes sitting unread) and its own data discarded in "
        "flight (a deliberate abort) are the only wire signs that separate them.",
        seeds=("000", "001", "003"),
        rule=close.abortive_close,
    ),
    CatalogueEntry(
        cause=CauseId.DATA_AFTER_CLOSE,
        title="Data sent to a side that had closed",
        family="close",
        what_happens="One side's application called close() (its FIN went out); the other side, in "
        "CLOSE_WAIT, "
        "kept writing. A fully closed socket accepts no more data: Linux answers it with a reply reset "
        "(TCP_ABORT_ON_DATA in FIN_WAIT, TCP_TIMEWAIT_SOCKET once the orphan became a timewait socket). The "
        "writer "
        "reads EOF and its next write fails with EPIPE (RST accepted in CLOSE_WAIT).",
        signature="FIN from A, then data from B, answered by RST from A (seq = B's ACK, no ACK bit)",
        evidence=("A's FIN", "B's data after it (and how long after)", "A's reply RST"),
        kernel_reasons=("TCP_ABORT_ON_DATA", "TCP_TIMEWAIT_SOCKET", "TcpExt TCPAbortOnData"),
        roles=(
            Role("writer", True, CLOSE_WAIT_EOF),
            Role("writer (next write)", True, CLOSE_WAIT_PIPE),
            Role("closer", False, NOTHING_CLOSED),
        ),
        fix=(
            "Treat EOF (read() == 0) as the end: stop writing and close the socket.",
            "Protocols where both sides may write must agree on who closes (e.g. HTTP `Connection: close`).",
            "A side that only wants to stop sending should use shutdown(SHUT_WR), not close().",
        ),
        decisive_capture="TCPAbortOnData on the closer's host; the writer's code path after read() == 0",
        look_alikes=(CauseId.KEEPALIVE_RACE, CauseId.CLOSE_WAIT_LEAK),
        seeds=("001", "004"),
        rule=close.data_after_close,
    ),
    CatalogueEntry(
        cause=CauseId.KEEPALIVE_RACE,
        title="Keep-alive race: the server closed an idle connection as the client reused it",
        family="close",
        what_happens="A server closes idle keep-alive connections after its timeout (nginx "
        "keepalive_timeout, "
        "Node 5 s, Apache 5 s, Tomcat connectionTimeout...). If the client's pool picks that connection at "
        "the "
        "same moment, the request crosses the FIN or is written before the client noticed it; the closed "
        "socket "
        "answers with a reply reset. The client sees an empty response (EOF) or ECONNRESET and, being unable "
        "to "
        "know whether the request was processed, reports an error.",
        signature="after an idle gap A sends FIN; B's new request crosses it; A answers RST",
        evidence=(
            "the idle time before the server's FIN",
            "the request sent before or just after the FIN arrived",
            "the server's reply RST",
        ),
        kernel_reasons=("TCP_ABORT_ON_DATA or TCP_TIMEWAIT_SOCKET (timing)",),
        roles=(Role("client", True, CLOSE_WAIT_EOF), Role("server", False, NOTHING_CLOSED)),
        fix=(
            "Make the client's idle timeout for pooled connections shorter than the server's keep-alive "
            "timeout "
            "(e.g. server 75 s, client 60 s; Node/Express 5 s -> client 4 s).",
            "Retry idempotent requests once on a reused connection (what browsers and Go's net/http do).",
            "Or have the server send `Connection: close`/`Keep-Alive: timeout=N` so the client knows when it ends.",
        ),
        decisive_capture="the two timeouts' values; the idle time before the FIN matches the server's timeout",
        look_alikes=(CauseId.DATA_AFTER_CLOSE, CauseId.PEER_LOST_STATE),
        seeds=("001",),
        rule=close.keepalive_race,
    ),
    CatalogueEntry(
        cause=CauseId.PEER_LOST_STATE,
        title="Peer lost the connection's state (half-open)",
        family="path",
        what_happens="The peer no longer knows the connection: its process or host crashed or rebooted "
        "without "
        "sending a FIN, a VIP moved to another machine (keepalived failover), or a NAT rebinding sends the "
        "packets "
        "elsewhere. While nobody talks nothing happens; the next segment reaches a stack with no socket for "
        "the "
        "4-tuple, which answers with a reply reset (RST, seq = the segment's ACK, no ACK bit; reason "
        "NO_SOCKET).",
        signature="data (often after idle) answered by RST from the peer's address, TTL consistent with the "
        "peer, "
        "no FIN from it before",
        evidence=(
            "the segment and the reply RST",
            "the idle time before",
            "RST TTL equal to the peer's own packets (not a middlebox)",
        ),
        kernel_reasons=("NO_SOCKET",),
        roles=(
            Role("client", True, RESET_READ),
            Role("peer", False, _see(None, None, "nothing: the process or host that had it was gone")),
        ),
        fix=(
            "Enable TCP keep-alive (or application heartbeats) so half-open connections are found while idle.",
            "On failover (VIP move), make clients reconnect; retry only idempotent requests.",
            "Investigate the peer's restarts (uptime, OOM kills, deploys).",
        ),
        decisive_capture="a capture next to the peer shows the RST leaving it; the peer's uptime or restarts",
        look_alikes=(CauseId.MIDDLEBOX_RESET, CauseId.CLOSE_WITH_UNREAD_DATA),
        seeds=("000", "001", "002"),
        rule=path.peer_lost_state,
    ),
    CatalogueEntry(
        cause=CauseId.LISTENER_CLOSED,
        title="Listener closed with connections still in its accept queue",
        family="handshake",
        what_happens="Handshakes completed in the kernel, but before the application accept()ed them the "
        "listening socket was closed (service stop, restart, crash). inet_csk_listen_stop() disconnects "
        "every "
        "queued child: each gets an RST+ACK (TCP_STATE). The clients had connected and may have sent a "
        "request; "
        "they see ECONNRESET, often many at the same instant.",
        signature="handshake completed, maybe a request, then RST from the server with no server data; "
        "several "
        "connections to the same port at once; later SYNs refused",
        evidence=(
            "the RST with no server data before it",
            "other connections reset the same way within a moment",
            "later refusals on the port",
        ),
        kernel_reasons=("TCP_STATE",),
        roles=(Role("client", True, RESET_READ), Role("server", False, NOTHING_CLOSED)),
        fix=(
            "Drain before stopping: stop accepting at the load balancer, then accept and serve what is "
            "queued "
            "before closing the listener (graceful shutdown).",
            "Hand the listening socket over on restart (systemd socket activation, SO_REUSEPORT with overlap).",
            "Clients: retry idempotent requests on connection reset.",
        ),
        decisive_capture="the server's restart time; several connections reset within the same millisecond",
        look_alikes=(CauseId.CLOSE_WITH_UNREAD_DATA, CauseId.BACKLOG_OVERFLOW),
        seeds=("002",),
        rule=handshake.listener_closed,
    ),
    CatalogueEntry(
        cause=CauseId.KEEPALIVE_TIMEOUT,
        title="Keep-alive probes unanswered: the kernel gave up",
        family="timeout",
        what_happens="SO_KEEPALIVE was on and the connection stayed idle for tcp_keepalive_time; the kernel "
        "sent "
        "probes (a segment at SND.UNA-1 with no data) every tcp_keepalive_intvl, and after "
        "tcp_keepalive_probes "
        "unanswered ones it reset the connection (RST+ACK, TCP_KEEPALIVE_TIMEOUT) and reported ETIMEDOUT.",
        signature="idle, probes (seq = snd.nxt-1, 0/1 byte) repeated, no answer, then RST",
        evidence=("the probes and their interval", "no answer from the peer", "the prober's RST"),
        kernel_reasons=("TCP_KEEPALIVE_TIMEOUT", "TcpExt TCPKeepAlive, TCPAbortOnTimeout"),
        roles=(
            Role("prober", True, _see(Errno.ETIMEDOUT, R, "the pending read fails with ETIMEDOUT")),
            Role("peer", False, _see(None, None, "nothing: it was unreachable or gone")),
        ),
        fix=(
            "Find why the peer stopped answering (host down, path cut, middlebox dropped the state).",
            "If a middlebox drops idle state, set keep-alive time below its idle timeout so it never expires.",
        ),
        decisive_capture="a capture next to the peer shows whether the probes arrive",
        look_alikes=(CauseId.IDLE_STATE_DROPPED, CauseId.RETRANSMISSION_TIMEOUT),
        seeds=("001",),
        rule=timeout.keepalive_timeout,
    ),
    CatalogueEntry(
        cause=CauseId.RETRANSMISSION_TIMEOUT,
        title="Data never acknowledged: retransmission timeout",
        family="timeout",
        what_happens="Data was sent and never acknowledged. The kernel retransmitted with exponential "
        "backoff "
        "until tcp_retries2 (about 15 minutes) or TCP_USER_TIMEOUT expired, then dropped the connection "
        "without an "
        "RST and reported ETIMEDOUT. The peer or the path was gone (crash, power off, cable, route).",
        signature="retransmissions of the same bytes at doubling intervals, no ACK, then silence (or RST)",
        evidence=("the retransmissions and intervals", "silence from the peer"),
        kernel_reasons=("none (tcp_write_timeout, no RST)", "TcpExt TCPAbortOnTimeout"),
        roles=(
            Role(
                "sender",
                True,
                _see(Errno.ETIMEDOUT, R, "the pending call fails with ETIMEDOUT, often after minutes"),
            ),
            Role("peer", False, _see(None, None, "nothing: the data never reached it")),
        ),
        fix=(
            "Set TCP_USER_TIMEOUT (or application timeouts) to detect a dead peer in seconds, not 15 minutes.",
            "Find the break: peer down, route or firewall change, MTU black hole (large segments only).",
        ),
        decisive_capture="a capture next to the peer shows whether the data arrives",
        look_alikes=(CauseId.IDLE_STATE_DROPPED, CauseId.ICMP_UNREACHABLE),
        seeds=("001",),
        rule=timeout.retransmission_timeout,
    ),
    CatalogueEntry(
        cause=CauseId.IDLE_STATE_DROPPED,
        title="Idle connection silently dropped by a middlebox",
        family="path",
        what_happens="A stateful device on the path (NAT, firewall, load balancer, mobile carrier) expired "
        "the "
        "idle connection from its table without telling either end. The next packet after the idle period is "
        "dropped (or would be answered by RST, see middlebox_reset); the sender retransmits into the void "
        "until "
        "it times out.",
        signature="long idle, then data retransmitted with no answer (usually ends in a retransmission timeout)",
        evidence=(
            "the idle time before the unanswered data",
            "the peer had answered before the idle period",
            "the retransmissions",
        ),
        kernel_reasons=(
            "none on the endpoints while the middlebox drops",
            "NO_SOCKET later, when a late segment reaches a side that already gave up",
        ),
        roles=(
            Role("sender", True, _see(Errno.ETIMEDOUT, R, "the call eventually fails with ETIMEDOUT")),
            Role("peer", False, _see(None, None, "nothing: the data never reaches it")),
        ),
        fix=(
            "Enable TCP keep-alive with tcp_keepalive_time below the middlebox's idle timeout (e.g. 60 s for "
            "a "
            "350 s load balancer, < 5 min on mobile networks).",
            "Or raise the middlebox's idle timeout; pool clients: drop connections idle longer than it.",
        ),
        decisive_capture="a capture beyond the middlebox shows the data never arriving",
        look_alikes=(CauseId.RETRANSMISSION_TIMEOUT, CauseId.MIDDLEBOX_RESET),
        seeds=("001", "002"),
        rule=timeout.idle_state_dropped,
    ),
    CatalogueEntry(
        cause=CauseId.MIDDLEBOX_RESET,
        title="RST forged by a middlebox",
        family="path",
        what_happens="A device on the path (load balancer or firewall idle timeout, NAT, IPS) sent an RST in "
        "the "
        "name of an endpoint, often toward both ends at once. It is not made by the endpoint's kernel: its "
        "TTL "
        "(initial value minus hops) and IP ID do not match that endpoint's own packets, and it can arrive "
        "faster "
        "than a round trip to that endpoint allows.",
        signature="RST whose TTL/hop limit or IP ID pattern differs from that endpoint's packets; often "
        "after "
        "idle; often RSTs toward both ends",
        evidence=(
            "the RST's TTL against the endpoint's own TTL (and the host's other connections)",
            "RST timing against the RTT",
            "RSTs in both directions",
        ),
        kernel_reasons=("none on the endpoints",),
        roles=(Role("client", True, RESET_READ), Role("server", False, RESET_READ)),
        fix=(
            "Keep connections alive below the device's idle timeout (TCP keep-alive, heartbeats), or raise "
            "the "
            "timeout.",
            "For an IPS: check its logs for the rule that fired.",
        ),
        decisive_capture="a capture next to the supposed sender shows that the RST never left it",
        look_alikes=(CauseId.PEER_LOST_STATE, CauseId.INJECTED_RESET),
        seeds=("001", "002"),
        rule=path.middlebox_reset,
    ),
    CatalogueEntry(
        cause=CauseId.INVALID_SEGMENT,
        title="Reset in reply to a segment that did not fit",
        family="path",
        what_happens="A side received a segment that made no sense for the connection: a SYN-ACK "
        "acknowledging "
        "another SYN (an old duplicate, RFC 9293 figure 9), an ACK for data never sent, a bad SYN in "
        "SYN_RECV, a "
        "PAWS failure. The kernel answers with a reply reset whose seq is the offending segment's ACK.",
        signature="RST with seq = the offending ACK, right after an unexpected segment",
        evidence=("the offending segment and why it does not fit", "the reply RST"),
        kernel_reasons=(
            "TCP_INVALID_ACK_SEQUENCE",
            "TCP_FLAGS",
            "TCP_OLD_ACK",
            "INVALID_SYN",
            "TCP_RFC7323_PAWS",
        ),
        roles=(Role("other side", True, RESET_READ),),
        fix=(
            "Look for a stale peer (old duplicate segments, a reused 4-tuple, tcp_tw_recycle-era NAT "
            "timestamp "
            "issues) or a middlebox rewriting sequence numbers.",
        ),
        decisive_capture="the offending segment's ACK against what the RST's sender had sent",
        look_alikes=(CauseId.HANDSHAKE_ABORTED, CauseId.INJECTED_RESET),
        seeds=("000", "001"),
        rule=path.invalid_segment,
    ),
    CatalogueEntry(
        cause=CauseId.INJECTED_RESET,
        title="Unacceptable RST (spoofed or broken middlebox)",
        family="path",
        what_happens="An RST arrived whose sequence number the receiver could not accept: outside the window "
        "(dropped) or inside but not exact (RFC 5961: answered with a challenge ACK). Spoofed resets and "
        "broken "
        "middleboxes produce them; the connection survives on RFC 5961 stacks.",
        signature="RST with seq outside / not at the receiver's RCV.NXT; the receiver continues or sends a "
        "challenge ACK",
        evidence=(
            "the RST and the receiver's window",
            "the receiver's continued traffic / challenge ACK",
            "the RST's TTL against the sender's",
        ),
        kernel_reasons=("none (TcpExt TCPChallengeACK on the receiver)",),
        roles=(Role("receiver", True, _see(None, None, "nothing on RFC 5961 stacks (the RST is ignored)")),),
        fix=(
            "Identify the injector (TTL, IP ID, location); on-path censorship or IPS devices are typical.",
            "Keep RFC 5961 protection on (Linux default).",
        ),
        decisive_capture="a capture next to the supposed sender shows it never sent the RST",
        look_alikes=(CauseId.MIDDLEBOX_RESET,),
        seeds=("002",),
        rule=path.injected_reset,
    ),
    CatalogueEntry(
        cause=CauseId.CLOSE_WAIT_LEAK,
        title="CLOSE_WAIT leak: the peer's FIN was never followed by close()",
        family="close",
        what_happens="A side received the FIN (its kernel acknowledged it, the socket went to CLOSE_WAIT) "
        "but its "
        "application never called close(): the descriptor leaks, and the connection stays half-open until "
        "the "
        "process exits. The closer waits in FIN_WAIT2 (tcp_fin_timeout for orphans). If the leaker writes "
        "later "
        "it gets an RST and EPIPE, not ECONNRESET.",
        signature="FIN from A acknowledged, no FIN from B for the rest of the capture (B may keep sending)",
        evidence=("A's FIN and B's ACK of it", "how long B stayed without a FIN while the capture continued"),
        kernel_reasons=("none (`ss -tan state close-wait`)",),
        roles=(
            Role("leaker", False, _see(Errno.EOF, R, "reads return EOF; the socket is never closed")),
            Role("closer", True, _see(None, None, "nothing: waits in FIN_WAIT2")),
        ),
        fix=(
            "Close the socket when read() returns 0 (EOF), in every code path (try/finally, with-statements).",
            "Return HTTP client connections to the pool / release response bodies so the library can close them.",
            "Monitor `ss -tan state close-wait | wc -l`.",
        ),
        decisive_capture="`ss -tanp state close-wait` on the leaking host names the process",
        look_alikes=(CauseId.DATA_AFTER_CLOSE,),
        seeds=("003", "004"),
        rule=close.close_wait_leak,
    ),
    CatalogueEntry(
        cause=CauseId.BENIGN_RESET,
        title="Harmless reset after a complete exchange",
        family="close",
        what_happens="An RST closed a connection on which everything had been delivered and acknowledged: a "
        "client aborting after reading the full response, a load balancer configured to close with RST "
        "(nolinger), a health check that connects and resets, Windows clients racing two connections and "
        "dropping one. Nothing was lost.",
        signature="RST with nothing outstanding in either direction and no request pending",
        evidence=("the RST", "every byte in both directions acknowledged"),
        kernel_reasons=("TCP_STATE (SO_LINGER 0) or NOT_SPECIFIED",),
        roles=(
            Role(
                "peer",
                False,
                _see(None, None, "usually nothing; a read at the very end may get ECONNRESET instead of EOF"),
            ),
            Role("closer", True, NOTHING_CLOSED),
        ),
        fix=("Nothing to fix; silence the peer's ECONNRESET log line if it is noisy.",),
        decisive_capture="the capture shows nothing was pending, but not whether the application had read it "
        "all: the same RST+ACK ends a close() with unread data; TCPAbortOnData vs TCPAbortOnClose on the "
        "closer's host, or its reset reason (TCP_STATE vs TCP_ABORT_ON_CLOSE) in `whyreset live`, tell",
        look_alikes=(CauseId.ABORTIVE_CLOSE, CauseId.CLOSE_WITH_UNREAD_DATA),
        wire_limit="Capture limit (checked on the lab's recordings with real sockets): close() with unread data, a "
        "close() with SO_LINGER {1, 0} and a zero-linger abort after the application read everything put the "
        "same packets on the wire. Linux __tcp_close() sends the same RST+ACK (tcp_send_active_reset, seq = "
        "SND.NXT, ack = RCV.NXT, no FIN) on both paths; only its counter (TCPAbortOnClose vs TCPAbortOnData) "
        "and reset reason (TCP_ABORT_ON_CLOSE vs TCP_STATE) differ. The finding then names "
        "close_with_unread_data with the other two as close alternatives and says so; a receive window the "
        "closer advertised narrower before its RST (bytes sitting unread) and its own data discarded in "
        "flight (a deliberate abort) are the only wire signs that separate them.",
        seeds=("001",),
        rule=close.benign_reset,
    ),
)

CATALOGUE: dict[CauseId, CatalogueEntry] = {entry.cause: entry for entry in ENTRIES}
"""cause id -> entry; every `CauseId` has exactly one (checked by the tests)."""


def entry(cause: CauseId | str) -> CatalogueEntry:
    return CATALOGUE[CauseId(cause)]


def causes_for_kernel_reason(reason: str) -> tuple[CauseId, ...]:
    """Causes whose entry lists a Linux reset/drop reason (``TCP_ABORT_ON_CLOSE``, ``NO_SOCKET``...): what the
    live mode can propose when a tracepoint reports that reason. Several causes share some reasons."""
    wanted = reason.strip().upper()
    return tuple(
        entry.cause for entry in ENTRIES if any(wanted in _reason_names(text) for text in entry.kernel_reasons)
    )


def _reason_names(text: str) -> set[str]:
    return {word.strip("(),.;") for word in text.replace("/", " ").split() if word.strip("(),.;").isupper()}
