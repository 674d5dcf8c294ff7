"""Run one lab scenario: hosts, captures, kernel tracer, recorded socket calls, truth, and a cleanup that
always runs.

A scenario gets a `LabContext`. Everything a scenario could vary is drawn from the context's seeded generator
(addresses, ports, sizes, delays, the hosts' TTL), so no cause can be read from a constant and the same seed
gives the same run. Loopback scenarios run in a private network namespace with its own ``lo``: other traffic
on the machine's loopback never enters their captures, and the sysctls they change
(``tcp_abort_on_overflow``...) are that namespace's own. Path scenarios get a client-router-server topology
from ``whyreset.lab.netns``.

Everything a run creates is registered on a cleanup stack that unwinds on success, errors, the time bound and
KeyboardInterrupt: application sockets (shut down so blocked threads wake up), tcpdump processes, the tracefs
instance, sysctls (restored), namespaces (deleted).
"""

from __future__ import annotations

import contextlib
import errno as errno_names
import fcntl
import itertools
import os
import platform
import random
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from whyreset.errors import LabError
from whyreset.ids import Side
from whyreset.lab import nsenter
from whyreset.lab.scenario import ConnectionTruth, KernelDrop, KernelReset, Need, Scenario, SocketCall, Truth
from whyreset.lab.tracer import KernelTracer, counter_deltas, find_tracefs, read_counters
from whyreset.model import endpoint_text

if TYPE_CHECKING:
    from whyreset.lab.netns import Topology

LOOPBACK_NETNS_PREFIX = "wrlo"
DEFAULT_TIME_LIMIT_S = 30.0
CAPTURE_SETTLE_S = 0.05
"""Pause before stopping tcpdump, so the last packets reach its ring buffer."""
APP_JOIN_S = 5.0
_serials = itertools.count()
RawSocket = socket.socket
"""Alias: inside `LabContext` the name ``socket`` is a method."""


class ScenarioTimeout(LabError):
    """The scenario ran past its hard time bound."""


@dataclass(frozen=True, slots=True)
class LabHost:
    """A machine of the lab: a network namespace (None: the root namespace) and the addresses it owns."""

    name: str
    """Logical name used in the truth (``loopback``, ``client``, ``server``, ``router``)."""
    netns: str | None
    """``ip netns`` name, None for the root namespace."""
    addresses: tuple[str, ...]
    """Addresses owned by the host (used to tag kernel events, which carry no namespace)."""


@dataclass(slots=True)
class CaptureWindow:
    """One running or finished tcpdump."""

    point: str
    path: Path
    start_ns: int
    end_ns: int | None = None
    stats: str = ""
    """tcpdump's closing statistics (packets captured / dropped by kernel)."""


def errno_name(exc: BaseException) -> str | None:
    """``ECONNRESET`` for an OSError with errno 104; None for exceptions without errno."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        return errno_names.errorcode.get(code, str(code))
    if isinstance(exc, TimeoutError):
        return "ETIMEDOUT"
    return None


def _endpoint(address: Any) -> str | None:
    if isinstance(address, tuple) and len(address) >= 2:
        return endpoint_text(str(address[0]), address[1])
    return None


class AppSocket:
    """A real socket whose every call is recorded as a `SocketCall` (result, errno, bytes), then returned or
    raised."""

    def __init__(self, lab: LabContext, sock: socket.socket, app: str, side: Side) -> None:
        self.lab = lab
        self.sock = sock
        self.app = app
        self.side = side
        self.local: str | None = None
        self.remote: str | None = None
        lab.track(sock)

    def _record(self, call: str, result: str, exc: BaseException | None = None, **extra: Any) -> None:
        with contextlib.suppress(OSError):
            self.local = _endpoint(self.sock.getsockname()) or self.local
        self.lab.record(
            SocketCall(
                app=self.app,
                side=self.side,
                call=call,
                t_ns=time.time_ns(),
                result=result,
                errno=errno_name(exc) if exc is not None else None,
                local=self.local,
                remote=self.remote,
                **extra,
            )
        )

    def _call(
        self,
        call: str,
        action: Callable[[], Any],
        note: str = "",
        outcome: Callable[[Any], tuple[str, int | None]] = lambda _value: ("ok", None),
    ) -> Any:
        """Run one socket call, record what it returned (``outcome`` names it) or raised, and pass it on."""
        try:
            value = action()
        except (OSError, TimeoutError) as exc:
            result = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            self._record(call, result, exc, note=note)
            raise
        result, nbytes = outcome(value)
        self._record(call, result, note=note, nbytes=nbytes)
        return value

    def bind(self, address: str, port: int) -> None:
        self._call("bind", lambda: self.sock.bind((address, port)))

    def setsockopt(self, level: int, option: int, value: int | bytes, note: str) -> None:
        self._call("setsockopt", lambda: self.sock.setsockopt(level, option, value), note)

    def settimeout(self, seconds: float | None) -> None:
        self.sock.settimeout(seconds)

    def listen(self, backlog: int) -> None:
        self._call("listen", lambda: self.sock.listen(backlog), f"backlog={backlog}")

    def connect(self, address: str, port: int) -> None:
        self.remote = _endpoint((address, port))
        self._call("connect", lambda: self.sock.connect((address, port)))

    def accept(self, app: str) -> AppSocket:
        try:
            conn, peer = self.sock.accept()
        except (OSError, TimeoutError) as exc:
            self._record("accept", "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__, exc)
            raise
        accepted = AppSocket(self.lab, conn, app, Side.RESP)
        accepted.remote = _endpoint(peer)
        accepted._record("accept", "ok")
        return accepted

    def send(self, data: bytes, note: str = "") -> int:
        return int(self._call("send", lambda: self.sock.send(data), note, lambda sent: ("ok", sent)))

    def sendall(self, data: bytes, note: str = "") -> None:
        self._call("send", lambda: self.sock.sendall(data), note, lambda _none: ("ok", len(data)))

    def recv(self, size: int, note: str = "") -> bytes:
        received = self._call(
            "recv", lambda: self.sock.recv(size), note, lambda data: ("ok" if data else "eof", len(data))
        )
        return bytes(received)

    def recv_exactly(self, size: int, note: str = "") -> bytes:
        """Read until ``size`` bytes or EOF, recording each read."""
        chunks: list[bytes] = []
        remaining = size
        while remaining > 0:
            chunk = self.recv(remaining, note)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def shutdown(self, how: int) -> None:
        name = {socket.SHUT_RD: "SHUT_RD", socket.SHUT_WR: "SHUT_WR", socket.SHUT_RDWR: "SHUT_RDWR"}[how]
        self._call("shutdown", lambda: self.sock.shutdown(how), name)

    def close(self, note: str = "") -> None:
        with contextlib.suppress(OSError):
            self.local = _endpoint(self.sock.getsockname()) or self.local
        self._call("close", self.sock.close, note)

    def pending(self) -> int:
        """Bytes waiting in the receive queue (FIONREAD), without reading them."""
        buffer = bytearray(4)
        fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, buffer)
        return int.from_bytes(buffer, "little")


@dataclass(slots=True)
class _Recorded:
    calls: list[SocketCall] = field(default_factory=list)
    connections: list[ConnectionTruth] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class LabContext:
    """What a scenario works with: seeded choices, hosts, captures, applications, and the recorder of the
    truth."""

    def __init__(self, scenario: Scenario, seed: int, workdir: Path, cleanup: contextlib.ExitStack) -> None:
        self.scenario = scenario
        self.seed = seed
        self.rng = random.Random(f"{scenario.name}/{seed}")
        self.workdir = workdir
        self.kernel = platform.release()
        self.hosts: dict[str, LabHost] = {}
        self.captures: list[CaptureWindow] = []
        self._cleanup = cleanup
        self._lock = threading.Lock()
        self._recorded = _Recorded()
        self._counters_before: dict[str, dict[str, int]] = {}
        self._sockets: list[RawSocket] = []
        self._threads: list[tuple[threading.Thread, list[BaseException]]] = []
        self._used_addresses: set[str] = set()
        self._used_ports: set[int] = set()
        self.tracer: KernelTracer | None = None
        """The run's kernel tracer (None when the scenario does not need tracefs)."""

    # --- seeded choices
    # --------------------------------------------------------------------------------------------
    def loopback_address(self) -> str:
        """A fresh 127.x.y.z address (never 127.0.0.x, which the machine's own services use)."""
        while True:
            address = f"127.{self.rng.randint(1, 254)}.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"
            if address not in self._used_addresses:
                self._used_addresses.add(address)
                return address

    def port(self) -> int:
        """A fresh port outside the usual ephemeral range start, so a bound client port is never a guess."""
        while True:
            port = self.rng.randint(2000, 32000)
            if port not in self._used_ports:
                self._used_ports.add(port)
                return port

    def size(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def payload(self, size: int, label: str = "data") -> bytes:
        """``size`` printable bytes starting with ``label`` (readable in a capture)."""
        body = f"{label}:" + "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(size))
        return body.encode()[:size]

    def duration(self, low_s: float, high_s: float) -> float:
        return round(self.rng.uniform(low_s, high_s), 4)

    def pause(self, low_s: float, high_s: float) -> None:
        time.sleep(self.duration(low_s, high_s))

    # --- hosts
    # -----------------------------------------------------------------------------------------------------
    def add_host(self, host: LabHost) -> LabHost:
        """Register a host: its addresses tag kernel events, its counters are diffed over the run."""
        self.hosts[host.name] = host
        self._counters_before[host.name] = read_counters(host.netns)
        return host

    def loopback_host(self, addresses: int = 2) -> LabHost:
        """A private namespace with ``lo`` up, a seeded default TTL, and ``addresses`` fresh 127.x
        addresses."""
        if "loopback" in self.hosts:
            return self.hosts["loopback"]
        netns = f"{LOOPBACK_NETNS_PREFIX}{os.getpid()}n{next(_serials)}"
        nsenter.create(netns)
        self.defer(lambda: nsenter.delete(netns))
        ttl = self.rng.choice((32, 48, 60, 64, 100, 128, 200, 255))
        self.set_sysctl(netns, "net.ipv4.ip_default_ttl", str(ttl), restore=False)
        owned = tuple(self.loopback_address() for _ in range(addresses))
        self.note(f"loopback host: private namespace, default TTL {ttl}")
        return self.add_host(LabHost("loopback", netns, owned))

    def topology(self) -> Topology:
        """A client-router-server topology (``whyreset.lab.netns``), up, registered and torn down at
        cleanup."""
        from whyreset.lab.netns import Topology

        topo = Topology(self.seed).up()
        self.defer(topo.down)
        for host in topo.hosts:
            addresses = tuple(str(iface.v4.ip) for iface in host.interfaces)
            addresses += tuple(str(iface.v6.ip) for iface in host.interfaces)
            self.add_host(LabHost(str(host.role), host.netns, addresses))
        return topo

    def host_of_address(self) -> dict[str, str]:
        return {address: host.name for host in self.hosts.values() for address in host.addresses}

    def run(self, host: LabHost, argv: list[str], timeout: float = 10.0) -> str:
        return nsenter.run(host.netns, argv, timeout)

    def set_sysctl(self, netns: str | None, key: str, value: str, *, restore: bool = True) -> None:
        """Write a ``net.*`` sysctl in a namespace; the old value comes back at cleanup (unless the namespace
        dies)."""
        path = Path("/proc/sys", key.replace(".", "/"))
        with nsenter.entered(netns):
            old = path.read_text().strip()
            path.write_text(value)
        if restore:

            def put_back() -> None:
                with nsenter.entered(netns):
                    path.write_text(old)

            self.defer(put_back)
        self.note(f"sysctl {key}={value} (was {old})")

    # --- applications
    # ----------------------------------------------------------------------------------------------
    def socket(
        self, host: LabHost, app: str, side: Side, family: socket.AddressFamily = socket.AF_INET
    ) -> AppSocket:
        """A TCP socket created inside ``host``'s namespace, recorded, with a safety timeout."""
        with nsenter.entered(host.netns):
            sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(APP_JOIN_S)
        return AppSocket(self, sock, app, side)

    def wrap(self, sock: RawSocket, app: str, side: Side) -> AppSocket:
        """Record the calls on a socket made elsewhere (e.g. ``Topology.socket``)."""
        return AppSocket(self, sock, app, side)

    def track(self, sock: RawSocket) -> None:
        """Shut this socket down at cleanup (wakes any thread blocked on it)."""
        with self._lock:
            self._sockets.append(sock)

    def spawn(self, name: str, target: Callable[[], None]) -> threading.Thread:
        """Start an application thread; its exception (if any) is raised by `join_apps`."""
        errors: list[BaseException] = []

        def body() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=body, name=f"lab-{name}", daemon=True)
        self._threads.append((thread, errors))
        thread.start()
        return thread

    def join_apps(self, timeout: float = APP_JOIN_S) -> None:
        deadline = time.monotonic() + timeout
        for thread, errors in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise LabError(f"application thread {thread.name} did not finish within {timeout} s")
            if errors:
                raise LabError(f"application thread {thread.name} failed: {errors[0]!r}") from errors[0]
        self._threads.clear()

    # --- recorder
    # --------------------------------------------------------------------------------------------------
    def record(self, call: SocketCall) -> None:
        with self._lock:
            self._recorded.calls.append(call)

    def record_app(self, app: str, side: Side, call: str, outcome: BaseException | str, **extra: Any) -> None:
        """Record a call made through a library (http.client...): ``outcome`` is ``ok``/``eof`` or the
        exception."""
        if isinstance(outcome, BaseException):
            result = "timeout" if isinstance(outcome, TimeoutError) else type(outcome).__name__
            extra.setdefault("note", str(outcome)[:200])
            self.record(SocketCall(app, side, call, time.time_ns(), result, errno_name(outcome), **extra))
        else:
            self.record(SocketCall(app, side, call, time.time_ns(), outcome, None, **extra))

    def expect(self, connection: ConnectionTruth) -> None:
        """Declare what the analysis of the capture must find for one connection."""
        with self._lock:
            self._recorded.connections.append(connection)

    def kernel_resets_so_far(self) -> list[KernelReset]:
        """Reset events recorded until now for the lab's hosts (a scenario checks whether its race
        happened)."""
        if self.tracer is None:
            return []
        return self.tracer.collect(self.host_of_address())[0]

    def note(self, text: str) -> None:
        with self._lock:
            self._recorded.notes.append(text)

    def extra(self, key: str, value: Any) -> None:
        with self._lock:
            self._recorded.extra[key] = value

    def socket_table(self, host: LabHost) -> str:
        """``ss -tanp`` inside the host (kept in the truth's notes by the scenarios that need it)."""
        return self.run(host, ["ss", "-tanp"])

    # --- captures
    # --------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def capture(
        self, point: str, iface: str = "lo", netns: str | None = None, filter: str = "tcp"
    ) -> Iterator[Path]:
        """tcpdump -U -w on ``iface`` in ``netns`` while the body runs; yields the pcap path."""
        path = self.workdir / f"{self.scenario.name}.{point}.pcap"
        argv = ["tcpdump", "-i", iface, "-w", str(path), "-U", "-n", "-s", "0", "-Z", "root"]
        argv += ["--time-stamp-precision=nano", "--immediate-mode", *filter.split()]
        proc = subprocess.Popen(
            nsenter.command(netns, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        window = CaptureWindow(point, path, 0)
        stop = self._stopper(proc, window)
        self.defer(stop)
        self._wait_listening(proc, point)
        window.start_ns = time.time_ns()
        self.captures.append(window)
        try:
            yield path
        finally:
            stop()

    @staticmethod
    def _wait_listening(proc: subprocess.Popen[bytes], point: str, timeout: float = 5.0) -> None:
        # tcpdump prints "listening on ..." once the filter is installed on an active handle: from then on
        # every packet is captured. Without waiting, the first SYN of a fast scenario is lost.
        assert proc.stderr is not None
        deadline = time.monotonic() + timeout
        seen = b""
        while b"listening on" not in seen:
            ready = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))[0]
            line = proc.stderr.readline() if ready else b""
            if not line:
                raise LabError(
                    f"tcpdump for {point} did not start: {seen.decode(errors='replace').strip()!r}"
                )
            seen += line

    @staticmethod
    def _stopper(proc: subprocess.Popen[bytes], window: CaptureWindow) -> Callable[[], None]:
        def stop() -> None:
            if proc.returncode is not None:
                return
            if proc.poll() is None:
                time.sleep(CAPTURE_SETTLE_S)
                window.end_ns = time.time_ns()
                proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            window.stats = " ".join(
                line.strip() for line in err.decode(errors="replace").splitlines() if "packets" in line
            )

        return stop

    # --- cleanup
    # ---------------------------------------------------------------------------------------------------
    def defer(self, action: Callable[[], Any]) -> None:
        """Run ``action`` at cleanup (last registered, first run); its failure never hides the run's own."""

        def guarded() -> None:
            with contextlib.suppress(Exception):
                action()

        self._cleanup.callback(guarded)

    def close_sockets(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    # --- truth
    # -----------------------------------------------------------------------------------------------------
    def counters_now(self) -> dict[str, dict[str, int]]:
        deltas: dict[str, dict[str, int]] = {}
        for name, before in self._counters_before.items():
            with contextlib.suppress(LabError, OSError):
                deltas[name] = counter_deltas(before, read_counters(self.hosts[name].netns))
        return deltas

    def in_capture(self, t_ns: int) -> bool:
        return any(w.start_ns <= t_ns <= (w.end_ns or time.time_ns()) for w in self.captures)

    def truth(
        self, resets: list[KernelReset], drops: list[KernelDrop], counters: dict[str, dict[str, int]]
    ) -> Truth:
        recorded = self._recorded
        notes = list(recorded.notes)
        notes += [f"capture {w.point}: {w.stats}" for w in self.captures if w.stats]
        return Truth(
            scenario=self.scenario.name,
            cause=self.scenario.cause,
            seed=self.seed,
            kernel=self.kernel,
            captures={w.point: w.path.name for w in self.captures},
            connections=list(recorded.connections),
            kernel_resets=[event for event in resets if self.in_capture(event.t_ns)],
            socket_calls=sorted(recorded.calls, key=lambda call: call.t_ns),
            counters=counters,
            kernel_drops=[drop for drop in drops if self.in_capture(drop.t_ns)],
            notes=notes,
            extra=dict(recorded.extra),
        )


@dataclass(frozen=True, slots=True)
class LabRun:
    """A finished scenario run."""

    truth: Truth
    """What was recorded."""
    directory: Path
    """Where the pcaps and the truth file are."""
    truth_path: Path
    """``<scenario>.truth.json``."""

    @property
    def pcaps(self) -> dict[str, Path]:
        return {point: self.directory / name for point, name in self.truth.captures.items()}


def missing_needs(needs: frozenset[Need]) -> list[str]:
    """Human-readable reasons why scenarios with these needs cannot run here (empty: they can)."""
    missing: list[str] = []
    if os.geteuid() != 0 and needs & {Need.ROOT, Need.NETNS, Need.IPTABLES, Need.TRACEFS, Need.TCPDUMP}:
        missing.append("root (run as root: namespaces, tcpdump and tracefs need it)")
    for need, tool in ((Need.TCPDUMP, "tcpdump"), (Need.NETNS, "ip"), (Need.IPTABLES, "iptables")):
        if need in needs and shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {'iproute2' if tool == 'ip' else tool})")
    if Need.TRACEFS in needs:
        try:
            find_tracefs()
        except LabError as exc:
            missing.append(str(exc))
    return missing


def _raise_timeout(limit: float) -> Callable[[int, FrameType | None], None]:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise ScenarioTimeout(f"scenario exceeded its time bound of {limit:.0f} s")

    return handler


@contextlib.contextmanager
def _time_bound(limit: float) -> Iterator[None]:
    """SIGALRM-based hard bound (main thread only; elsewhere the apps' own socket timeouts bound the run)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _raise_timeout(limit))
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_scenario(
    name: str, seed: int = 1, keep_dir: Path | str | None = None, time_limit: float | None = None
) -> LabRun:
    """Run scenario ``name`` with ``seed``; pcaps and ``<name>.truth.json`` go to ``keep_dir`` (else a temp
    dir)."""
    from whyreset.lab.scenarios import get_scenario
    from whyreset.lab.truthfile import write_truth

    scenario = get_scenario(name)
    missing = missing_needs(scenario.needs)
    if missing:
        raise LabError(f"cannot run {name}: missing " + "; ".join(missing))
    directory = Path(keep_dir) if keep_dir is not None else Path(tempfile.mkdtemp(prefix="whyreset-lab-"))
    directory.mkdir(parents=True, exist_ok=True)
    limit = time_limit if time_limit is not None else max(DEFAULT_TIME_LIMIT_S, 4 * scenario.duration_s)
    with contextlib.ExitStack() as cleanup:
        tracer = KernelTracer() if Need.TRACEFS in scenario.needs else None
        if tracer is not None:
            tracer.start()
            cleanup.callback(tracer.stop)
        lab = LabContext(scenario, seed, directory, cleanup)
        lab.tracer = tracer
        cleanup.callback(lab.close_sockets)
        with _time_bound(limit):
            scenario.run(lab)
            lab.join_apps()
        resets, drops = tracer.collect(lab.host_of_address()) if tracer is not None else ([], [])
        truth = lab.truth(resets, drops, lab.counters_now())
    truth_path = write_truth(truth, directory / f"{name}.truth.json")
    return LabRun(truth, directory, truth_path)
