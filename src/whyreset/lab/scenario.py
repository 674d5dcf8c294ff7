"""The lab's contract: a scenario reproduces one cause with real kernel sockets and records the truth.

A scenario declares what it needs, builds its topology, runs real applications (threads or processes doing real
socket calls), while the runner captures packets with tcpdump and records the kernel's own reset events from a
private tracefs instance. The result is a pcap per capture point and a `Truth` that the catalogue is checked against.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from whyreset.ids import CauseId, Outcome, Side, TcpState


class Need(StrEnum):
    """What a scenario needs from the machine."""

    ROOT = "root"
    LOOPBACK = "loopback"
    NETNS = "netns"
    IPTABLES = "iptables"
    TRACEFS = "tracefs"
    TCPDUMP = "tcpdump"


@dataclass(frozen=True, slots=True)
class SocketCall:
    """One socket call made by a lab application, and what it returned."""

    app: str
    """Which application made it (``client``, ``server``, ``client2``...)."""
    side: Side
    """Its endpoint in the connection (originator = the connecting side)."""
    call: str
    """``connect``, ``send``, ``recv``, ``close``, ``shutdown``, ``setsockopt``, ``accept``..."""
    t_ns: int
    """time.time_ns() when the call returned (same clock as the capture timestamps)."""
    result: str
    """``ok``, ``eof``, ``timeout`` or an exception name such as ``ConnectionResetError``."""
    errno: str | None = None
    """errno name (``ECONNRESET``, ``EPIPE``, ``ECONNREFUSED``, ``ETIMEDOUT``...) when the call failed."""
    nbytes: int | None = None
    """Bytes sent or received."""
    local: str | None = None
    """``addr:port`` of the socket, when known (joins the call to a connection)."""
    remote: str | None = None
    """Peer ``addr:port``."""
    note: str = ""
    """Free text (the option set, the request sent...)."""


@dataclass(frozen=True, slots=True)
class KernelReset:
    """A ``tcp:tcp_send_reset`` / ``tcp:tcp_receive_reset`` event from tracefs."""

    event: str
    """``tcp_send_reset`` or ``tcp_receive_reset``."""
    t_ns: int
    """Event time converted to the wall clock (ns)."""
    src: str
    """``addr:port`` the RST was sent from (send) / the socket's local address (receive)."""
    dst: str
    """``addr:port`` of the other end."""
    state: str
    """Socket state as the kernel printed it (``TCP_ESTABLISHED``...)."""
    reason: str | None
    """``enum sk_rst_reason`` name (send_reset only, kernel 6.10+)."""
    netns: str
    """Which host (namespace name, or ``host`` for the root namespace) the event came from."""


@dataclass(frozen=True, slots=True)
class KernelDrop:
    """A TCP-related ``skb:kfree_skb`` event (a segment the kernel dropped, with its ``skb_drop_reason``)."""

    t_ns: int
    """Event time converted to the wall clock (ns)."""
    reason: str
    """``enum skb_drop_reason`` name without the ``SKB_DROP_REASON_`` prefix (``TCP_LISTEN_OVERFLOW``...)."""
    location: str
    """Kernel function that freed the packet (``tcp_v4_rcv+0x91/0x13f0``)."""


@dataclass(frozen=True, slots=True)
class ConnectionTruth:
    """What the scenario knows about one connection it made."""

    orig: str
    """``addr:port`` of the connecting side."""
    resp: str
    """``addr:port`` of the accepting side."""
    cause: CauseId | None
    """The cause the scenario produced on this connection (None for a negative: must not be diagnosed as a fault)."""
    outcome: Outcome
    """The outcome the analysis must find."""
    rst_senders: tuple[str, ...]
    """Who put each RST on the wire, in order: ``orig``, ``resp`` or ``path`` (a middlebox forging it)."""
    final_states: dict[Side, TcpState] = field(default_factory=dict)
    """Expected final state of each endpoint as the capture shows it (only those the scenario is sure of)."""


@dataclass(slots=True)
class Truth:
    """Everything the lab recorded about one scenario run (written as ``<scenario>.truth.json``)."""

    scenario: str
    cause: CauseId | None
    seed: int
    kernel: str
    """``uname -r``."""
    captures: dict[str, str]
    """capture point (``client``, ``server``, ``router``...) -> pcap file name."""
    connections: list[ConnectionTruth]
    kernel_resets: list[KernelReset]
    socket_calls: list[SocketCall]
    counters: dict[str, dict[str, int]]
    """host -> TcpExt/Tcp counter deltas (``ListenOverflows``, ``TCPAbortOnClose``...) over the run."""
    kernel_drops: list[KernelDrop] = field(default_factory=list)
    """TCP-related packet drops seen by the tracer during the capture (no addresses: not per host)."""
    notes: list[str] = field(default_factory=list)
    """What differs on older kernels, what could not be observed, snapshots such as ``ss`` output."""
    extra: dict[str, Any] = field(default_factory=dict)


class Scenario(ABC):
    """One reproducible situation. Subclasses are registered in ``whyreset.lab.scenarios``."""

    name: str
    """Unique scenario name (starts with the cause id, e.g. ``abortive_close.linger0_unsent``)."""
    cause: CauseId | None
    """The cause it produces; None for negatives."""
    needs: frozenset[Need]
    """What the machine must provide."""
    duration_s: float
    """Typical wall-clock time."""
    summary: str
    """One line for ``whyreset lab list``."""

    @abstractmethod
    def run(self, lab: Any) -> None:
        """Run the scenario against a lab context (``whyreset.lab.runner.LabContext``) that provides hosts,
        captures, the tracer, the seeded random generator and the recorder of socket calls and truths."""
