"""Network namespaces for the lab, from Python threads: create, enter (per thread), run commands in, delete.

Linux keeps the network namespace per *thread*: ``setns(fd, CLONE_NEWNET)`` moves only the calling thread, and
a socket stays in the namespace it was created in. So an application thread can enter a namespace, create its
sockets and come back, while other threads keep working elsewhere. Python 3.11 has no ``os.setns``: call libc.
Named namespaces are the ``ip netns`` kind (a bind mount under /run/netns), so ``ip netns exec`` and tcpdump
see them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from whyreset.errors import LabError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LabError(f"setns(CLONE_NEWNET) failed: {os.strerror(err)}")


@contextmanager
def entered(netns: str | None) -> Iterator[None]:
    """Run the body with the *current thread* in network namespace ``netns`` (None: stay where we are)."""
    if netns is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY)
    except OSError as exc:
        os.close(own)
        raise LabError(f"network namespace {netns!r} does not exist: {exc.strerror}") from None
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def command(netns: str | None, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` inside ``netns`` (unchanged for the root namespace)."""
    return list(argv) if netns is None else ["ip", "netns", "exec", netns, *argv]


def run(netns: str | None, argv: Sequence[str], timeout: float = 10.0) -> str:
    """Run a short command in a namespace and return its stdout; LabError with its stderr when it fails."""
    try:
        done = subprocess.run(
            command(netns, argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)} did not finish within {timeout} s") from None
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def create(netns: str) -> None:
    """Create a named namespace with its loopback up (127.0.0.0/8 is then local, every 127.x address
    usable)."""
    run(None, ["ip", "netns", "add", netns])
    try:
        run(netns, ["ip", "link", "set", "lo", "up"])
    except LabError:
        delete(netns)
        raise


def delete(netns: str) -> None:
    """Delete a named namespace; sockets still open in it die with it. Never raises (used in cleanups)."""
    subprocess.run(["ip", "netns", "delete", netns], capture_output=True, check=False, timeout=10)


def read_file(netns: str | None, path: str) -> str:
    """Read a per-namespace /proc file (``/proc/net/...``) as seen from ``netns``."""
    # /proc/thread-self/net follows the reading thread's namespace, /proc/net follows the process's.
    per_thread = path.replace("/proc/net/", "/proc/thread-self/net/", 1)
    with entered(netns), open(per_thread, encoding="ascii") as handle:
        return handle.read()
