"""Kernel ground truth for the lab: reset and drop tracepoints from a private tracefs instance, TcpExt
counters.

Why a private instance: the global trace buffer belongs to whoever else is tracing on this machine (perf,
bpftrace, another whyreset). An instance (``instances/whyreset-<pid>``) has its own buffer, event switches and
clock, and disappears with ``rmdir``. Events are read from the instance's ``trace`` file after the run (not
``trace_pipe``: no reader thread, no lost-wakeup races, and the buffer of a short scenario is small).

The instance clock is set to ``boot`` (CLOCK_BOOTTIME; ``mono`` when missing) and mapped to the wall clock
with an offset measured when the instance starts, so kernel events line up with capture timestamps.

Tracepoints carry no network namespace: each event is tagged with the host that owns its local address, and
events for addresses the lab does not own (other traffic on the machine) are discarded.

Kernel versions: ``tcp_send_reset`` has a ``reason`` from 6.10 (``enum sk_rst_reason``); active-close reasons
(TCP_ABORT_ON_CLOSE, TCP_STATE, ...) exist from 6.12, 6.10-6.11 print NOT_SPECIFIED for them, and older
kernels print no reason at all: the TcpExt ``TCPAbortOn*`` counter deltas are then the only kernel-side
evidence.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from whyreset.errors import LabError
from whyreset.lab import nsenter
from whyreset.lab.scenario import KernelDrop, KernelReset

TRACEFS_ROOTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
RESET_EVENTS = ("tcp/tcp_send_reset", "tcp/tcp_receive_reset")
DROP_EVENT = "skb/kfree_skb"
INSTANCE_PREFIX = "whyreset-"

# Drop reasons worth recording: every TCP_* reason plus the generic ones a TCP segment can hit. NO_SOCKET is
# also used by UDP, so drops are additionally kept only when freed by a tcp_* function (see `parse_trace`).
GENERIC_TCP_DROP_REASONS = frozenset(
    {"NO_SOCKET", "SOCKET_BACKLOG", "SOCKET_RCVBUFF", "PROTO_MEM", "SOCKET_FILTER"}
)

# TcpExt/Tcp counters that tell a reset story; a run reports every counter that moved, these are shown first.
KEY_COUNTERS = (
    "ListenOverflows",
    "ListenDrops",
    "TCPAbortOnClose",
    "TCPAbortOnData",
    "TCPAbortOnLinger",
    "TCPAbortOnTimeout",
    "TCPAbortOnMemory",
    "TCPAbortFailed",
    "EmbryonicRsts",
    "TCPChallengeACK",
    "TCPSYNChallenge",
    "PAWSEstab",
    "OutRsts",
    "EstabResets",
    "AttemptFails",
)

_LINE = re.compile(
    r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>\S{4,5})\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s(?P<body>.*)$"
)
_FIELD = re.compile(r"(\w+)(?:=|: )(\S+)")
_SYMBOL = re.compile(r'\{\s*(\d+),\s*"(\w+)"\s*\}')


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One parsed line of a trace buffer."""

    event: str
    """Tracepoint name (``tcp_send_reset``...)."""
    ts_ns: int
    """Timestamp in the instance's trace clock, integer ns."""
    fields: dict[str, str]
    """The ``key=value`` (and ``reason: X``) fields of the event body."""


def parse_line(line: str) -> TraceRecord | None:
    """Parse one line of a ``trace`` file; None for headers, comments and lines of other formats."""
    match = _LINE.match(line)
    if match is None:
        return None
    seconds, _, fraction = match["ts"].partition(".")
    ts_ns = int(seconds) * 1_000_000_000 + int(fraction.ljust(9, "0")[:9])
    return TraceRecord(match["event"], ts_ns, dict(_FIELD.findall(match["body"])))


def _join(addr: str, port: str) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _address_of(endpoint: str) -> str:
    """``127.0.0.1:80`` -> ``127.0.0.1``; ``[::1]:80`` -> ``::1``."""
    addr = endpoint.rsplit(":", 1)[0]
    return addr[1:-1] if addr.startswith("[") else addr


def _receive_endpoints(fields: Mapping[str, str]) -> tuple[str, str]:
    """(local, remote) of a ``tcp_receive_reset`` event (the socket's own view: s* is local)."""
    if fields.get("family") == "AF_INET6":
        local, remote = fields.get("saddrv6", "?"), fields.get("daddrv6", "?")
        # A v4 socket also prints its v4-mapped v6 addresses; the v4 fields are the ones to use then.
        if not local.startswith("::ffff:"):
            return _join(local, fields.get("sport", "?")), _join(remote, fields.get("dport", "?"))
    return _join(fields.get("saddr", "?"), fields.get("sport", "?")), _join(
        fields.get("daddr", "?"), fields.get("dport", "?")
    )


def kernel_reset_of(record: TraceRecord, offset_ns: int, host_of: Mapping[str, str]) -> KernelReset | None:
    """Turn a reset record into a `KernelReset` tagged with its host; None when no lab host owns the
    address."""
    if record.event == "tcp_send_reset":
        src, dst = record.fields.get("src", "?"), record.fields.get("dest", "?")
        state, reason = record.fields.get("state", ""), record.fields.get("reason")
    elif record.event == "tcp_receive_reset":
        src, dst = _receive_endpoints(record.fields)
        state, reason = "", None
    else:
        return None
    host = host_of.get(_address_of(src))
    if host is None:
        return None
    return KernelReset(record.event, record.ts_ns + offset_ns, src, dst, state, reason, host)


def kernel_drop_of(record: TraceRecord, offset_ns: int) -> KernelDrop | None:
    """Turn a ``kfree_skb`` record into a `KernelDrop` when a TCP function freed it; None otherwise."""
    if record.event != "kfree_skb":
        return None
    location = record.fields.get("location", "")
    reason = record.fields.get("reason", "")
    if "tcp" not in location and not reason.startswith("TCP_"):
        return None
    return KernelDrop(record.ts_ns + offset_ns, reason, location)


def parse_trace(
    text: str, offset_ns: int, host_of: Mapping[str, str]
) -> tuple[list[KernelReset], list[KernelDrop]]:
    """Parse a whole ``trace`` buffer into resets (for the lab's addresses) and TCP drops, in time order."""
    resets: list[KernelReset] = []
    drops: list[KernelDrop] = []
    for line in text.splitlines():
        record = parse_line(line)
        if record is None:
            continue
        reset = kernel_reset_of(record, offset_ns, host_of)
        if reset is not None:
            resets.append(reset)
            continue
        drop = kernel_drop_of(record, offset_ns)
        if drop is not None:
            drops.append(drop)
    resets.sort(key=lambda event: event.t_ns)
    drops.sort(key=lambda event: event.t_ns)
    return resets, drops


def symbols_of(format_text: str, field_name: str = "reason") -> dict[str, int]:
    """Name -> value of the ``__print_symbolic(REC->field, ...)`` table in an event's ``format`` file."""
    marker = f"__print_symbolic(REC->{field_name},"
    start = format_text.find(marker)
    if start < 0:
        return {}
    end = format_text.find(")", start + len(marker))
    return {name: int(value) for value, name in _SYMBOL.findall(format_text[start:end])}


def drop_filter(format_text: str) -> str | None:
    """A tracefs filter keeping TCP-related drop reasons (values differ between kernels: read them from
    format)."""
    values = sorted(
        value
        for name, value in symbols_of(format_text).items()
        if name.startswith("TCP_") or name in GENERIC_TCP_DROP_REASONS
    )
    return " || ".join(f"reason == {value}" for value in values) or None


def find_tracefs() -> Path:
    """The tracefs mount, or LabError saying what is missing."""
    for root in TRACEFS_ROOTS:
        if (root / "instances").is_dir() and (root / "events" / "tcp").is_dir():
            return root
    raise LabError(
        "tracefs is not available (need /sys/kernel/tracing with tcp events; "
        "mount it with: mount -t tracefs nodev /sys/kernel/tracing)"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_instances(root: Path) -> None:
    """Remove ``whyreset-<pid>`` instances left by lab processes that died without cleaning up."""
    for path in (root / "instances").glob(f"{INSTANCE_PREFIX}*"):
        pid_text = path.name[len(INSTANCE_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            with contextlib.suppress(OSError):
                path.rmdir()


class KernelTracer:
    """A private tracefs instance recording resets and TCP drops while it is open (a context manager)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else find_tracefs()
        self.instance: Path | None = None
        self.clock = "boot"
        self.offset_ns = 0
        """Wall clock minus trace clock, measured at start."""

    def __enter__(self) -> KernelTracer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        remove_stale_instances(self.root)
        self.instance = self._make_instance()
        try:
            self._configure(self.instance)
        except OSError as exc:
            self.stop()
            raise LabError(f"cannot configure tracefs instance {self.instance}: {exc.strerror}") from None

    def _make_instance(self) -> Path:
        base = self.root / "instances" / f"{INSTANCE_PREFIX}{os.getpid()}"
        for attempt in range(100):
            path = base if attempt == 0 else base.with_name(f"{base.name}-{attempt}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise LabError(f"cannot create tracefs instance {path}: {exc.strerror}") from None
            return path
        raise LabError(f"too many tracefs instances named {base.name}-*")

    def _configure(self, instance: Path) -> None:
        clocks = (instance / "trace_clock").read_text()
        self.clock = "boot" if "boot" in clocks.split() or "[boot]" in clocks else "mono"
        (instance / "trace_clock").write_text(self.clock)
        for event in RESET_EVENTS:
            (instance / "events" / event / "enable").write_text("1")
        drop_dir = instance / "events" / DROP_EVENT
        if drop_dir.is_dir():
            condition = drop_filter((drop_dir / "format").read_text())
            if condition is not None:
                (drop_dir / "filter").write_text(condition)
                (drop_dir / "enable").write_text("1")
        self.offset_ns = self._measure_offset()

    def _measure_offset(self) -> int:
        clock_id = time.CLOCK_BOOTTIME if self.clock == "boot" else time.CLOCK_MONOTONIC
        before = time.time_ns()
        trace_now = time.clock_gettime_ns(clock_id)
        after = time.time_ns()
        return (before + after) // 2 - trace_now

    def read(self) -> str:
        """The instance's buffer so far (non-consuming)."""
        if self.instance is None:
            return ""
        return (self.instance / "trace").read_text(errors="replace")

    def collect(self, host_of: Mapping[str, str]) -> tuple[list[KernelReset], list[KernelDrop]]:
        """Resets for the lab's addresses (``address -> host``) and TCP drops recorded so far."""
        return parse_trace(self.read(), self.offset_ns, host_of)

    def stop(self) -> None:
        """Disable the events and remove the instance (idempotent, never raises)."""
        if self.instance is None:
            return
        for event in (*RESET_EVENTS, DROP_EVENT):
            with contextlib.suppress(OSError):
                (self.instance / "events" / event / "enable").write_text("0")
        with contextlib.suppress(OSError):
            self.instance.rmdir()
        self.instance = None


def read_counters(netns: str | None) -> dict[str, int]:
    """TcpExt and Tcp counters of a namespace (``/proc/net/netstat`` and ``/proc/net/snmp``), bare names."""
    counters: dict[str, int] = {}
    for path in ("/proc/net/netstat", "/proc/net/snmp"):
        lines = nsenter.read_file(netns, path).splitlines()
        for header, values in zip(lines[::2], lines[1::2], strict=False):
            group, _, names = header.partition(":")
            if group not in ("TcpExt", "Tcp"):
                continue
            for name, value in zip(names.split(), values.partition(":")[2].split(), strict=False):
                counters[name] = int(value)
    return counters


def counter_deltas(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Counters that moved, key counters first (``MaxConn`` and other constants drop out)."""
    moved = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    ordered = {name: moved[name] for name in KEY_COUNTERS if name in moved}
    ordered.update((name, value) for name, value in sorted(moved.items()) if name not in ordered)
    return ordered
