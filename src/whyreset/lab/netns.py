"""A three-host lab network: client — router — server, each a Linux network namespace, joined by veth pairs.

Theory of operation
-------------------
Path causes (a firewall that rejects, a middlebox that forgets or forges, a host that reboots) need a device
*between* the endpoints, so the lab builds one: three namespaces named ``wrlab<pid><n>-c|r|s`` joined by two
veth pairs created directly inside them (nothing ever appears in the root namespace). Addresses come from
10.0.0.0/8 and the IPv6 documentation prefix 2001:db8::/32, picked from the seed; they exist only inside these
namespaces, so no packet can reach a real network. Each host has its own default TTL / hop limit (client 64,
server a few hops less, the router a very different value) so that who put a packet on the wire is visible in
a capture: the router forwards (decrementing the TTL) and, when it forges a reset or an ICMP error, uses its
own.

Code runs inside a namespace in a forked child that calls ``setns(2)``, so no thread of the caller ever
changes namespace (other threads, the tracer's for one, keep working where they are). Sockets are the
exception that makes scenarios easy: a child creates the socket inside the namespace and hands the descriptor
back over a Unix socket (SCM_RIGHTS); a socket stays in the namespace it was created in, so the parent's
threads then make ordinary socket calls on it. Commands (tcpdump, iptables, sysctl) run under ``ip netns
exec``.

Cleanup always runs: ``Topology`` is a context manager, live topologies are also torn down at interpreter exit
and on SIGTERM/SIGHUP, and ``cleanup_stale()`` removes what a killed run left behind (namespaces whose owner
pid is dead). Deleting a namespace removes its veths, addresses, routes and iptables rules with it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import os
import pickle
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

from whyreset.errors import LabError

NAME_PREFIX = "wrlab"
"""Every namespace the lab creates starts with this (``cleanup_stale`` relies on it)."""
NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
CHILD_TIMEOUT_S = 10.0
"""Upper bound for a function run inside a namespace (they are short: sysctl writes, socket creation)."""

T = TypeVar("T")

_NAME_RE = re.compile(rf"^{NAME_PREFIX}(?P<pid>\d+)n(?P<serial>\d+)-(?P<role>[crs])$")
_libc = ctypes.CDLL(None, use_errno=True)


class Role(StrEnum):
    """A host's place in the topology."""

    CLIENT = "client"
    ROUTER = "router"
    SERVER = "server"


# ------------------------------------------------------------------------------------------------------------
# Addressing plan (pure: derived from the seed)


@dataclass(frozen=True, slots=True)
class Interface:
    """One end of a veth pair, inside a host's namespace."""

    name: str
    """Interface name (unique per run: contains the pid)."""
    v4: ipaddress.IPv4Interface
    """IPv4 address with its /24."""
    v6: ipaddress.IPv6Interface
    """IPv6 address with its /64."""


@dataclass(frozen=True, slots=True)
class Host:
    """A namespace playing one role."""

    role: Role
    netns: str
    """Namespace name (``ip netns`` name)."""
    ttl: int
    """Default IPv4 TTL and IPv6 hop limit of packets this host originates."""
    interfaces: tuple[Interface, ...]
    """Client and server have one; the router has two (client side first)."""

    @property
    def v4(self) -> str:
        """The host's IPv4 address (the router: its client-side address)."""
        return str(self.interfaces[0].v4.ip)

    @property
    def v6(self) -> str:
        """The host's IPv6 address (the router: its client-side address)."""
        return str(self.interfaces[0].v6.ip)

    def addr(self, family: socket.AddressFamily) -> str:
        """The host's address in ``family`` (AF_INET or AF_INET6)."""
        return self.v6 if family == socket.AF_INET6 else self.v4

    @property
    def iface(self) -> str:
        """The first (for client and server: the only) interface name."""
        return self.interfaces[0].name


@dataclass(frozen=True, slots=True)
class TopologyPlan:
    """Names, addresses and TTLs of one topology; a pure function of (seed, pid, serial)."""

    client: Host
    router: Host
    server: Host
    router_server_side: Interface
    """The router's interface toward the server (``router.interfaces[1]``)."""

    @property
    def hosts(self) -> tuple[Host, Host, Host]:
        return (self.client, self.router, self.server)


def plan_topology(seed: int, *, pid: int | None = None, serial: int = 0) -> TopologyPlan:
    """Choose names, subnets, host numbers and TTLs from ``seed`` (same seed, same addresses)."""
    rng = random.Random(seed)
    pid = os.getpid() if pid is None else pid
    octet2 = rng.randrange(16, 250)
    octet3 = rng.randrange(0, 254, 2)  # client net .octet3, server net .octet3+1
    net6 = rng.randrange(0x100, 0xFFFF)
    client_no, router_no, server_no = rng.sample(range(2, 250), 3)
    server_ttl = 64 - rng.randint(2, 5)  # a few hops "further away" than the client
    router_ttl = rng.choice((128, 200, 255))  # forged packets stand out from both endpoints
    stem = f"{NAME_PREFIX}{pid}n{serial}"
    short = f"w{pid:x}{serial:x}"  # interface names are at most 15 characters

    def iface(side: str, subnet: int, host_no: int) -> Interface:
        return Interface(
            name=f"{short}-{side}",
            v4=ipaddress.IPv4Interface(f"10.{octet2}.{octet3 + subnet}.{host_no}/24"),
            v6=ipaddress.IPv6Interface(f"2001:db8:{net6:x}:{subnet + 1}::{host_no:x}/64"),
        )

    client = Host(Role.CLIENT, f"{stem}-c", 64, (iface("cr", 0, client_no),))
    router_client_side = iface("rc", 0, router_no)
    router_server_side = iface("rs", 1, router_no)
    router = Host(Role.ROUTER, f"{stem}-r", router_ttl, (router_client_side, router_server_side))
    server = Host(Role.SERVER, f"{stem}-s", server_ttl, (iface("sr", 1, server_no),))
    return TopologyPlan(client, router, server, router_server_side)


# ------------------------------------------------------------------------------------------------------------
# Running things inside a namespace


def run_cmd(
    argv: list[str], *, timeout: float = 10.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output, raise ``LabError`` with its stderr when it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(argv)}: {exc}") from exc
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done


def netns_exec_argv(netns: str, argv: list[str]) -> list[str]:
    """``argv`` prefixed to run inside ``netns``."""
    return ["ip", "netns", "exec", netns, *argv]


def _enter_netns(netns: str) -> None:
    fd = os.open(NETNS_RUN_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _read_all(fd: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise TimeoutError("child inside the namespace did not answer in time")
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap(pid: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.005)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def call_in_netns(netns: str, fn: Callable[..., T], *args: Any, timeout: float = CHILD_TIMEOUT_S) -> T:
    """Run ``fn(*args)`` in a forked child that has entered ``netns``; return its (picklable) result.

    Exceptions raised by ``fn`` are re-raised here. Keep ``fn`` short and free of threads: it runs in a fork
    of a possibly multi-threaded process.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        os.close(read_fd)
        try:
            _enter_netns(netns)
            payload = pickle.dumps((True, fn(*args)))
        except BaseException as exc:  # everything goes back to the parent
            payload = pickle.dumps((False, LabError(f"in {netns}: {type(exc).__name__}: {exc}")))
        with contextlib.suppress(OSError):
            os.write(write_fd, payload)
        os._exit(0)
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    try:
        data = _read_all(read_fd, deadline)
    finally:
        os.close(read_fd)
        _reap(pid, deadline + 1.0)
    if not data:
        raise LabError(f"child in {netns} died without an answer")
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def socket_in_netns(
    netns: str, family: socket.AddressFamily, kind: socket.SocketKind = socket.SOCK_STREAM, proto: int = 0
) -> socket.socket:
    """A socket created inside ``netns`` (by a forked child, passed back with SCM_RIGHTS).

    The socket belongs to that namespace for its whole life: bind, connect, routing and sysctls are the
    namespace's, whichever thread of this process uses it.
    """
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        parent_end.close()
        status = 1
        try:
            _enter_netns(netns)
            made = socket.socket(family, kind, proto)
            socket.send_fds(child_end, [b"fd"], [made.fileno()])
            status = 0
        except BaseException as exc:
            with contextlib.suppress(OSError):
                child_end.sendall(f"error: {type(exc).__name__}: {exc}".encode())
        os._exit(status)
    child_end.close()
    try:
        parent_end.settimeout(CHILD_TIMEOUT_S)
        message, fds, _flags, _addr = socket.recv_fds(parent_end, 1024, 1)
    finally:
        parent_end.close()
        _reap(pid, time.monotonic() + CHILD_TIMEOUT_S)
    if not fds:
        raise LabError(f"socket in {netns}: {message.decode(errors='replace') or 'child died'}")
    return socket.socket(family, kind, proto, fileno=fds[0])


def _write_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        Path("/proc/sys", key.replace(".", "/")).write_text(value)


def _read_sysctls(keys: list[str]) -> dict[str, str]:
    return {key: Path("/proc/sys", key.replace(".", "/")).read_text().strip() for key in keys}


def _read_proc_net_counters() -> dict[str, int]:
    counters: dict[str, int] = {}
    for table in ("netstat", "snmp", "snmp6"):
        path = Path("/proc/net", table)
        if path.exists():
            counters.update(parse_net_counters(path.read_text(), snmp6=table == "snmp6"))
    return counters


def parse_net_counters(text: str, *, snmp6: bool = False) -> dict[str, int]:
    """Parse /proc/net/netstat or /proc/net/snmp (header/value line pairs) or /proc/net/snmp6 (name value
    lines).

    TcpExt and Tcp counters keep their bare names (``ListenOverflows``, ``OutRsts``); the others are prefixed
    with their group (``Icmp.InDestUnreachs``, ``IpExt.InOctets``, ``Icmp6InDestUnreachs`` stays as snmp6
    prints it).
    """
    counters: dict[str, int] = {}
    if snmp6:
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                counters[parts[0]] = int(parts[1])
        return counters
    lines = text.splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        group, _, names = header.partition(":")
        numbers = values.partition(":")[2].split()
        prefix = "" if group in ("TcpExt", "Tcp") else f"{group}."
        for name, number in zip(names.split(), numbers, strict=False):
            counters[prefix + name] = int(number)
    return counters


def counter_deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Counters that changed between two snapshots (after - before), for a truth file."""
    return {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}


# ------------------------------------------------------------------------------------------------------------
# Packet capture inside a namespace


class NetnsCapture:
    """tcpdump on one interface inside a namespace, writing a pcap with nanosecond timestamps.

    ``start()`` returns once tcpdump says it is listening, so nothing sent afterwards is missed; ``stop()``
    sends SIGINT and waits for the file to be complete.
    """

    def __init__(self, netns: str, iface: str, path: Path, bpf: str = "") -> None:
        self.netns = netns
        self.iface = iface
        self.path = path
        self.bpf = bpf
        self._proc: subprocess.Popen[bytes] | None = None
        self.stderr = ""

    def start(self, timeout: float = 5.0) -> NetnsCapture:
        argv = ["tcpdump", "-i", self.iface, "-w", str(self.path), "-U", "-n", "-s", "0"]
        argv += ["--time-stamp-precision=nano", "-Z", "root", "--immediate-mode"]
        if self.bpf:
            argv.append(self.bpf)
        self._proc = subprocess.Popen(
            netns_exec_argv(self.netns, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert self._proc.stderr is not None
        deadline = time.monotonic() + timeout
        seen = b""
        while b"listening on" not in seen:
            remaining = deadline - time.monotonic()
            ready = select.select([self._proc.stderr], [], [], max(remaining, 0))[0]
            line = self._proc.stderr.readline() if ready else b""
            if not line:
                self.stop()
                raise LabError(f"tcpdump in {self.netns} on {self.iface} did not start: {seen.decode()!r}")
            seen += line
        self.stderr = seen.decode(errors="replace")
        return self

    def stop(self) -> Path:
        proc, self._proc = self._proc, None
        if proc is None:
            return self.path
        if proc.poll() is None:
            time.sleep(0.05)  # let the last packets reach the ring before asking tcpdump to flush
            proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        self.stderr += err.decode(errors="replace")
        return self.path

    def __enter__(self) -> NetnsCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------------------------
# Firewall rules on the router


class Verdict(StrEnum):
    """What the router does with matching packets (iptables target and options)."""

    DROP = "drop"
    PORT_UNREACHABLE = "port_unreachable"
    ADMIN_PROHIBITED = "admin_prohibited"
    TCP_RESET = "tcp_reset"

    def target(self, v6: bool) -> list[str]:
        """The iptables/ip6tables target arguments."""
        if self is Verdict.DROP:
            return ["-j", "DROP"]
        reject_with = {
            Verdict.PORT_UNREACHABLE: ("icmp-port-unreachable", "icmp6-port-unreachable"),
            Verdict.ADMIN_PROHIBITED: ("icmp-admin-prohibited", "icmp6-adm-prohibited"),
            Verdict.TCP_RESET: ("tcp-reset", "tcp-reset"),
        }[self][int(v6)]
        return ["-j", "REJECT", "--reject-with", reject_with]


@dataclass(frozen=True, slots=True)
class Rule:
    """One iptables rule installed in a namespace (enough to delete it again)."""

    netns: str
    v6: bool
    table: str
    chain: str
    spec: tuple[str, ...]

    def command(self, op: str) -> list[str]:
        tool = "ip6tables" if self.v6 else "iptables"
        return netns_exec_argv(self.netns, [tool, "-w", "-t", self.table, op, self.chain, *self.spec])


# ------------------------------------------------------------------------------------------------------------
# The topology


_live_topologies: set[Topology] = set()
_live_lock = threading.Lock()
_serials = iter(range(1_000_000))
_signals_installed = False


def _cleanup_live_topologies() -> None:
    with _live_lock:
        live = list(_live_topologies)
    for topology in live:
        topology.down()


def _raise_system_exit(signum: int, _frame: FrameType | None) -> None:
    # Unwind through the context managers (which tear the namespaces down) instead of dying on the spot.
    raise SystemExit(128 + signum)


def _install_exit_cleanup() -> None:
    global _signals_installed
    if _signals_installed:
        return
    _signals_installed = True
    atexit.register(_cleanup_live_topologies)
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) in (signal.SIG_DFL, None):
            signal.signal(signum, _raise_system_exit)


def missing_tools() -> list[str]:
    """Commands the topology needs that are not installed (empty when it can run)."""
    return [tool for tool in ("ip", "iptables", "ip6tables", "tcpdump") if shutil.which(tool) is None]


class Topology:
    """client — router — server as namespaces; use as a context manager (``with Topology(seed) as topo:``)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.plan = plan_topology(seed, serial=next(_serials))
        self.rules: list[Rule] = []
        self._captures: list[NetnsCapture] = []
        self._up = False
        self._owner_pid = os.getpid()

    # hosts --------------------------------------------------------------------------------------------------
    @property
    def client(self) -> Host:
        return self.plan.client

    @property
    def router(self) -> Host:
        return self.plan.router

    @property
    def server(self) -> Host:
        return self.plan.server

    @property
    def hosts(self) -> tuple[Host, Host, Host]:
        return self.plan.hosts

    def host(self, role: Role | str) -> Host:
        return {host.role: host for host in self.hosts}[Role(role)]

    # lifecycle ----------------------------------------------------------------------------------------------
    def up(self) -> Topology:
        """Create the namespaces, links, addresses, routes and per-host sysctls."""
        if os.geteuid() != 0:
            raise LabError("network namespaces need root")
        _install_exit_cleanup()
        self._owner_pid = os.getpid()
        with _live_lock:
            _live_topologies.add(self)
        self._up = True
        try:
            for host in self.hosts:
                self._create_namespace(host)
            self._link(self.client, self.router.interfaces[0])
            self._link(self.server, self.plan.router_server_side)
            for host in self.hosts:
                self._configure_host(host)
            for end_host, router_side in (
                (self.client, self.router.interfaces[0]),
                (self.server, self.plan.router_server_side),
            ):
                self._pin_neighbours(end_host, router_side)
                self._add_routes(end_host, router_side)
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop captures and delete the namespaces (with their links, rules and routes). Idempotent."""
        if os.getpid() != self._owner_pid:
            return  # a forked child exiting normally must never tear down its parent's lab
        for capture in self._captures:
            with contextlib.suppress(Exception):
                capture.stop()
        self._captures.clear()
        for host in self.hosts:
            remove_namespace(host.netns)
        self.rules.clear()
        self._up = False
        with _live_lock:
            _live_topologies.discard(self)

    def __enter__(self) -> Topology:
        return self.up()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def reboot(self, role: Role | str) -> None:
        """Simulate a crash and reboot of ``role``: its namespace (with every socket's state) is cut off the
        network and replaced by a fresh one with the same name, addresses, routes and TTL. Nothing is sent on
        the way down.

        Sockets that this process still holds in the old namespace keep it alive but isolated, like a dead
        host's memory; close them afterwards (their FIN/RST goes nowhere).
        """
        host = self.host(role)
        if host.role is Role.ROUTER:
            raise LabError("rebooting the router is not supported (it would cut both links)")
        router_side = self.router.interfaces[0] if host.role is Role.CLIENT else self.plan.router_server_side
        # Deleting the router's end destroys the pair: from now on the old host can neither send nor receive.
        run_cmd(["ip", "-n", self.router.netns, "link", "del", router_side.name])
        for capture in [c for c in self._captures if c.netns == host.netns]:
            capture.stop()
            self._captures.remove(capture)
        remove_namespace(host.netns)
        self._create_namespace(host)
        self._link(host, router_side)
        self._configure_host(host)
        self._configure_interface(self.router, router_side)
        self._pin_neighbours(host, router_side)
        self._add_routes(host, router_side)

    # building blocks ----------------------------------------------------------------------------------------
    def _create_namespace(self, host: Host) -> None:
        run_cmd(["ip", "netns", "add", host.netns])
        run_cmd(["ip", "-n", host.netns, "link", "set", "lo", "up"])
        # Defaults first, so that interfaces created afterwards inherit them (no DAD delay, our hop limit).
        defaults = {"net.ipv6.conf.default.accept_dad": "0", "net.ipv6.conf.default.hop_limit": str(host.ttl)}
        self.set_sysctls(host, defaults)

    def _link(self, end_host: Host, router_side: Interface) -> None:
        run_cmd(
            [
                *("ip", "link", "add", "name", end_host.iface, "netns", end_host.netns, "type", "veth"),
                *("peer", "name", router_side.name, "netns", self.router.netns),
            ]
        )

    def _configure_interface(self, host: Host, iface: Interface) -> None:
        ns = ["ip", "-n", host.netns]
        run_cmd([*ns, "addr", "add", str(iface.v4), "dev", iface.name])
        run_cmd([*ns, "-6", "addr", "add", str(iface.v6), "dev", iface.name, "nodad"])
        run_cmd([*ns, "link", "set", iface.name, "up"])
        self.set_sysctls(host, {f"net.ipv6.conf.{iface.name}.hop_limit": str(host.ttl)})

    def _configure_host(self, host: Host) -> None:
        values = {
            "net.ipv4.ip_default_ttl": str(host.ttl),
            "net.ipv6.conf.all.hop_limit": str(host.ttl),
        }
        if host.role is Role.ROUTER:
            values |= {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}
        self.set_sysctls(host, values)
        for iface in host.interfaces:
            self._configure_interface(host, iface)

    def _pin_neighbours(self, end_host: Host, router_side: Interface) -> None:
        # Permanent ARP/ND entries on both ends of the link. Without them the first IPv6 packet of a scenario
        # waits about a second: the router joins the solicited-node multicast group some time after its
        # address is added, so the first neighbour solicitation goes unanswered and TCP sees its SYN
        # "retransmitted" (and then uses the 3 s fallback RTO). Pinning also keeps ARP/ND out of the timings.
        ends = ((end_host, end_host.interfaces[0]), (self.router, router_side))
        macs = {host.netns: _mac_address(host.netns, iface.name) for host, iface in ends}
        for (host, iface), (peer, peer_iface) in zip(ends, reversed(ends), strict=True):
            for address in (peer_iface.v4.ip, peer_iface.v6.ip):
                run_cmd(
                    [
                        *("ip", "-n", host.netns, "neigh", "replace", str(address)),
                        *("lladdr", macs[peer.netns], "dev", iface.name, "nud", "permanent"),
                    ]
                )

    def _add_routes(self, host: Host, gateway: Interface) -> None:
        run_cmd(["ip", "-n", host.netns, "route", "add", "default", "via", str(gateway.v4.ip)])
        run_cmd(["ip", "-n", host.netns, "-6", "route", "add", "default", "via", str(gateway.v6.ip)])

    # running things -----------------------------------------------------------------------------------------
    def call(
        self, host: Host | Role | str, fn: Callable[..., T], *args: Any, timeout: float = CHILD_TIMEOUT_S
    ) -> T:
        """Run ``fn(*args)`` inside ``host`` in a forked child and return its result."""
        return call_in_netns(self._host(host).netns, fn, *args, timeout=timeout)

    def socket(
        self,
        host: Host | Role | str,
        family: socket.AddressFamily = socket.AF_INET,
        kind: socket.SocketKind = socket.SOCK_STREAM,
        proto: int = 0,
    ) -> socket.socket:
        """A socket that lives in ``host``'s namespace."""
        return socket_in_netns(self._host(host).netns, family, kind, proto)

    def run(
        self, host: Host | Role | str, argv: list[str], *, timeout: float = 10.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside ``host`` (``ip netns exec``)."""
        return run_cmd(netns_exec_argv(self._host(host).netns, argv), timeout=timeout, check=check)

    def popen(self, host: Host | Role | str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a command inside ``host``; the caller owns the process."""
        return subprocess.Popen(netns_exec_argv(self._host(host).netns, argv), **kwargs)

    def set_sysctls(self, host: Host | Role | str, values: dict[str, str]) -> None:
        """Write ``net.*`` sysctls of ``host``'s namespace (dotted names, e.g. ``net.ipv4.tcp_retries2``)."""
        self.call(host, _write_sysctls, values)

    def sysctls(self, host: Host | Role | str, keys: list[str]) -> dict[str, str]:
        return self.call(host, _read_sysctls, keys)

    def counters(self, host: Host | Role | str) -> dict[str, int]:
        """Snapshot of the namespace's /proc/net/{netstat,snmp,snmp6} counters."""
        return self.call(host, _read_proc_net_counters)

    def capture(
        self, host: Host | Role | str, path: Path, iface: str | None = None, bpf: str = ""
    ) -> NetnsCapture:
        """Start tcpdump inside ``host`` on ``iface`` (default: its first interface); stopped by ``down()``
        too."""
        resolved = self._host(host)
        capture = NetnsCapture(resolved.netns, iface or resolved.iface, path, bpf).start()
        self._captures.append(capture)
        return capture

    def add_rule(
        self, host: Host | Role | str, chain: str, *spec: str, v6: bool = False, table: str = "filter"
    ) -> Rule:
        """Append an iptables (``v6``: ip6tables) rule in ``host``'s namespace."""
        rule = Rule(self._host(host).netns, v6, table, chain, tuple(spec))
        run_cmd(rule.command("-A"))
        self.rules.append(rule)
        return rule

    def delete_rule(self, rule: Rule) -> None:
        run_cmd(rule.command("-D"))
        self.rules.remove(rule)

    def filter_port(self, verdict: Verdict, port: int, *, v6: bool = False) -> Rule:
        """On the router, apply ``verdict`` to TCP segments toward the server's ``port`` (a firewall rule)."""
        return self.add_rule(
            Role.ROUTER, "FORWARD", "-p", "tcp", "--dport", str(port), *verdict.target(v6), v6=v6
        )

    def black_hole(self, *, v6: bool = False) -> Rule:
        """From now on the router silently drops every forwarded TCP segment of the family, both ways."""
        return self.add_rule(Role.ROUTER, "FORWARD", "-p", "tcp", *Verdict.DROP.target(v6), v6=v6)

    def expire_idle_connections(self, idle_s: int, verdict: Verdict, *, v6: bool = False) -> list[Rule]:
        """Make the router a stateful middlebox that forgets TCP connections idle for ``idle_s`` seconds and
        then applies ``verdict`` (DROP: black hole; TCP_RESET: resets the sender) to their packets.

        Conntrack entries of established connections expire after ``nf_conntrack_tcp_timeout_established``;
        with
        ``nf_conntrack_tcp_loose=0`` a mid-stream segment cannot re-create the entry, so it is INVALID. Both
        sysctls are per namespace.
        """
        self.set_sysctls(
            Role.ROUTER,
            {
                "net.netfilter.nf_conntrack_tcp_timeout_established": str(idle_s),
                "net.netfilter.nf_conntrack_tcp_loose": "0",
            },
        )
        return [self.add_rule(Role.ROUTER, "FORWARD", "-p", "tcp", "-m", "conntrack", "--ctstate", "INVALID",
                              *verdict.target(v6), v6=v6)]  # fmt: skip

    def _host(self, host: Host | Role | str) -> Host:
        return host if isinstance(host, Host) else self.host(host)


# ------------------------------------------------------------------------------------------------------------
# Cleanup


def _mac_address(netns: str, iface: str) -> str:
    # ``ip -o link show`` prints "... link/ether aa:bb:cc:dd:ee:ff brd ...": /sys shows the caller's namespace
    # only.
    words = run_cmd(["ip", "-n", netns, "-o", "link", "show", "dev", iface]).stdout.split()
    try:
        return words[words.index("link/ether") + 1]
    except (ValueError, IndexError):
        raise LabError(f"no MAC address for {iface} in {netns}") from None


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    done = run_cmd(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def remove_namespace(netns: str) -> None:
    """Kill the processes inside ``netns`` (our tcpdumps) and delete it. Missing namespaces are fine."""
    if not (NETNS_RUN_DIR / netns).exists():
        return
    pids = run_cmd(["ip", "netns", "pids", netns], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    run_cmd(["ip", "netns", "del", netns], check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(*, include_own: bool = False) -> list[str]:
    """Remove lab namespaces left by runs that were killed (owner pid gone); returns the names removed.

    ``include_own`` also removes this process's own namespaces (use when no topology of ours is live).
    """
    removed: list[str] = []
    for name in list_namespaces():
        match = _NAME_RE.match(name)
        if not match:
            continue
        pid = int(match["pid"])
        if _pid_alive(pid) and not (include_own and pid == os.getpid()):
            continue
        remove_namespace(name)
        removed.append(name)
    return removed


@contextlib.contextmanager
def topology(seed: int) -> Iterator[Topology]:
    """``with topology(seed) as topo:`` — a Topology that is up inside the block and gone after it."""
    built = Topology(seed)
    with built:
        yield built
