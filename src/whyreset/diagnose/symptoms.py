"""What each application saw: the kernel's errno rule, and how each runtime words the resulting error.

The kernel decides the errno; runtimes only dress it. On Linux (``tcp_reset()`` in net/ipv4/tcp_input.c) an
accepted RST sets the socket error from the state the socket was in when the RST arrived:

* SYN_SENT   -> ECONNREFUSED (``connect()`` fails: "Connection refused");
* CLOSE_WAIT -> EPIPE (the application already read EOF; its next write fails with "Broken pipe");
* any other  -> ECONNRESET (the next read or write fails with "Connection reset by peer").

Once the socket is reset, a further write gets EPIPE (the socket is closed for sending) and raises SIGPIPE
unless the runtime ignores it (every runtime listed here does). Timeouts (SYN or data retransmitted until the
kernel gives up, keep-alive probes unanswered) give ETIMEDOUT; an ICMP destination unreachable during
``connect()`` gives ECONNREFUSED (port unreachable) or EHOSTUNREACH / ENETUNREACH (``icmp_err_convert`` in
net/ipv4/icmp.c).

Each `RuntimeMessage` is the text a runtime prints for one (errno, operation) pair, with a regex that
recognises the line when a user pastes it into ``whyreset explain``. The wording comes from each project's
sources (OpenJDK's ``NioSocketImpl`` and ``SocketInputStream``, CPython's ``OSError`` subclasses, Go's
``net.OpError``, libuv's error names, curl's ``curl_easy_strerror`` table, nginx's upstream module), not from
memory of blog posts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from whyreset.diagnose.finding import fast_init
from whyreset.ids import TcpState


class Errno(StrEnum):
    """The errors a socket call can end with when a connection breaks (plus EOF, which is not an error)."""

    ECONNRESET = "ECONNRESET"
    EPIPE = "EPIPE"
    ECONNREFUSED = "ECONNREFUSED"
    ETIMEDOUT = "ETIMEDOUT"
    EHOSTUNREACH = "EHOSTUNREACH"
    ENETUNREACH = "ENETUNREACH"
    EOF = "EOF"
    """``read()`` returned 0: the peer's FIN, an orderly end that the application may not expect."""


class Operation(StrEnum):
    """The socket call that reports the error."""

    CONNECT = "connect"
    READ = "read"
    WRITE = "write"


ERRNO_NUMBERS: dict[Errno, int] = {
    Errno.ECONNRESET: 104,
    Errno.EPIPE: 32,
    Errno.ECONNREFUSED: 111,
    Errno.ETIMEDOUT: 110,
    Errno.EHOSTUNREACH: 113,
    Errno.ENETUNREACH: 101,
}
"""Linux errno values (asm-generic/errno.h), as nginx and Python print them."""


def errno_for_reset(receiver_state: TcpState) -> Errno:
    """The errno the kernel stores when an RST is accepted by a socket in ``receiver_state`` (tcp_reset())."""
    if receiver_state is TcpState.SYN_SENT:
        return Errno.ECONNREFUSED
    if receiver_state is TcpState.CLOSE_WAIT:
        return Errno.EPIPE
    return Errno.ECONNRESET


def errno_for_icmp(ip_version: int, icmp_type: int, icmp_code: int) -> Errno:
    """The errno ``connect()`` gets from an ICMP destination unreachable (icmp_err_convert /
    icmpv6_err_convert)."""
    if ip_version == 4 and icmp_type == 3:
        if icmp_code == 3:  # port unreachable
            return Errno.ECONNREFUSED
        if icmp_code in (0, 6, 9, 11):  # net unreachable / unknown / prohibited / unreachable for TOS
            return Errno.ENETUNREACH
        return Errno.EHOSTUNREACH
    if ip_version == 6 and icmp_type == 1:
        if icmp_code == 4:  # port unreachable
            return Errno.ECONNREFUSED
        if icmp_code == 0:  # no route to destination
            return Errno.ENETUNREACH
        return Errno.EHOSTUNREACH
    return Errno.EHOSTUNREACH


RUNTIMES: tuple[str, ...] = ("java", "python", "go", "node", "curl", "nginx")
"""Runtimes whose messages whyreset knows, in display order."""

CLIENT_ONLY_RUNTIMES = frozenset({"curl"})
"""Runtimes that only ever play the connecting side."""


@dataclass(frozen=True, slots=True)
class RuntimeMessage:
    """How one runtime reports one (errno, operation) pair."""

    runtime: str
    """``java``, ``python``, ``go``, ``node``, ``curl`` or ``nginx``."""
    errno: Errno
    """The kernel error behind the message."""
    operation: Operation
    """The socket call that fails."""
    text: str
    """A representative line, as the runtime prints it."""
    pattern: str
    """Regex (case-insensitive, searched anywhere in a pasted line) that recognises the message."""
    note: str = ""
    """Which API / version prints it, when that matters."""
    client_side: bool | None = None
    """True when only the connecting side prints it (nginx's upstream messages), False for the accepting
    side."""

    def matches(self, line: str) -> bool:
        return re.search(self.pattern, line, re.IGNORECASE) is not None


def _m(
    runtime: str,
    errno: Errno,
    operation: Operation,
    text: str,
    pattern: str,
    note: str = "",
    client_side: bool | None = None,
) -> RuntimeMessage:
    return RuntimeMessage(runtime, errno, operation, text, pattern, note, client_side)


R, W, C = Operation.READ, Operation.WRITE, Operation.CONNECT
RESET, PIPE, REFUSED, TIMEDOUT = Errno.ECONNRESET, Errno.EPIPE, Errno.ECONNREFUSED, Errno.ETIMEDOUT
HOSTUNREACH, NETUNREACH, EOF = Errno.EHOSTUNREACH, Errno.ENETUNREACH, Errno.EOF

# Order matters for display only: the first message of a (runtime, errno, operation) is the one shown in
# findings.
MESSAGES: tuple[RuntimeMessage, ...] = (
    # ---- Java. Reads: SocketInputStream (JDK <= 12, PlainSocketImpl) and NioSocketImpl.implRead (JDK 13+)
    # both turn ConnectionResetException into SocketException("Connection reset"). Writes: the native strerror
    # text, "Broken pipe" / "Connection reset by peer" (JDK 9-12 append " (Write failed)"; Windows says
    # "Connection reset by peer: socket write error").
    _m(
        "java",
        RESET,
        R,
        "java.net.SocketException: Connection reset",
        r"SocketException: Connection reset(?! by peer)",
        "read; JDK <= 12 SocketInputStream and JDK 13+ NioSocketImpl",
    ),
    _m(
        "java",
        RESET,
        W,
        "java.net.SocketException: Connection reset by peer",
        r"SocketException: Connection reset by peer",
        "write (JDK 9-12: '... (Write failed)'; Windows: 'Connection reset by peer: socket write error')",
    ),
    _m(
        "java",
        PIPE,
        W,
        "java.net.SocketException: Broken pipe",
        r"SocketException: Broken pipe",
        "write after the reset, or to a peer that sent FIN then RST (JDK 9-12: 'Broken pipe (Write failed)')",
    ),
    _m(
        "java",
        REFUSED,
        C,
        "java.net.ConnectException: Connection refused",
        r"ConnectException: Connection refused",
        "JDK 8-12 append ' (Connection refused)'",
    ),
    _m(
        "java",
        TIMEDOUT,
        C,
        "java.net.ConnectException: Connection timed out",
        r"ConnectException: Connection timed out",
        "kernel gave up on the SYN (tcp_syn_retries); a connect timeout "
        "set by the application gives 'java.net.SocketTimeoutException: Connect timed out' instead",
    ),
    _m(
        "java",
        TIMEDOUT,
        R,
        "java.net.SocketException: Connection timed out",
        r"SocketException: Connection timed out|SocketTimeoutException: Read timed out",
        "kernel gave up (retransmissions or keep-alive); SO_TIMEOUT gives 'SocketTimeoutException: Read timed out'",
    ),
    _m("java", HOSTUNREACH, C, "java.net.NoRouteToHostException: No route to host", r"NoRouteToHostException"),
    _m(
        "java",
        EOF,
        R,
        "read() returns -1 (EOF); HTTP clients: org.apache.http.NoHttpResponseException: <host> failed to respond",
        r"NoHttpResponseException|failed to respond",
    ),
    # ---- Python: OSError subclasses (str() is '[Errno N] text') and the HTTP libraries that wrap them.
    _m(
        "python",
        RESET,
        R,
        "ConnectionResetError: [Errno 104] Connection reset by peer",
        r"ConnectionResetError|\[Errno 104\]|Connection reset by peer'?\)",
        "requests: ConnectionError(('Connection aborted.', ConnectionResetError(104, 'Connection reset by "
        "peer'))) "
        "or ChunkedEncodingError mid-body; httpx: ReadError; aiohttp: ClientOSError",
    ),
    _m("python", RESET, R, "httpx.ReadError: [Errno 104] Connection reset by peer", r"httpx\.ReadError"),
    _m(
        "python",
        RESET,
        R,
        "aiohttp.client_exceptions.ClientOSError: [Errno 104] Connection reset by peer",
        r"ClientOSError",
    ),
    _m(
        "python",
        RESET,
        R,
        "requests.exceptions.ChunkedEncodingError: ('Connection broken: ConnectionResetError(104, "
        "\\'Connection reset by peer\\')', ...)",
        r"ChunkedEncodingError|Connection broken",
    ),
    _m(
        "python",
        RESET,
        W,
        "ConnectionResetError: [Errno 104] Connection reset by peer",
        r"ConnectionResetError|\[Errno 104\]",
        "send()/sendall()",
    ),
    _m("python", PIPE, W, "BrokenPipeError: [Errno 32] Broken pipe", r"BrokenPipeError|\[Errno 32\]"),
    _m(
        "python",
        REFUSED,
        C,
        "ConnectionRefusedError: [Errno 111] Connection refused",
        r"ConnectionRefusedError|\[Errno 111\]|NewConnectionError|httpx\.ConnectError|ClientConnectorError",
        "requests: ConnectionError(... NewConnectionError(... [Errno 111] Connection refused)); httpx: "
        "ConnectError;"
        " aiohttp: ClientConnectorError",
    ),
    _m(
        "python",
        TIMEDOUT,
        C,
        "TimeoutError: [Errno 110] Connection timed out",
        r"TimeoutError: \[Errno 110\]|\[Errno 110\]|ConnectTimeout",
        "kernel timeout; a library timeout gives requests ConnectTimeout / httpx ConnectTimeout",
    ),
    _m(
        "python",
        TIMEDOUT,
        R,
        "TimeoutError: [Errno 110] Connection timed out",
        r"\[Errno 110\]|ReadTimeout|timed out",
        "kernel gave up; library timeouts: socket.timeout / ReadTimeout",
    ),
    _m("python", HOSTUNREACH, C, "OSError: [Errno 113] No route to host", r"\[Errno 113\]"),
    _m("python", NETUNREACH, C, "OSError: [Errno 101] Network is unreachable", r"\[Errno 101\]"),
    _m(
        "python",
        EOF,
        R,
        "http.client.RemoteDisconnected: Remote end closed connection without response",
        r"RemoteDisconnected|Remote end closed connection|ServerDisconnectedError|RemoteProtocolError|"
        r"Server disconnected",
        "requests wraps it in ConnectionError(('Connection aborted.', RemoteDisconnected(...)));"
        " httpx: RemoteProtocolError: Server disconnected without sending a response; aiohttp: "
        "ServerDisconnectedError",
    ),
    # ---- Go: net.OpError "<op> <net> <local>-><remote>: <syscall>: <strerror>".
    _m(
        "go",
        RESET,
        R,
        "read tcp 10.0.0.1:41234->10.0.0.2:80: read: connection reset by peer",
        r"read: connection reset by peer",
    ),
    _m(
        "go",
        RESET,
        W,
        "write tcp 10.0.0.1:41234->10.0.0.2:80: write: connection reset by peer",
        r"write: connection reset by peer",
    ),
    _m("go", PIPE, W, "write tcp 10.0.0.1:41234->10.0.0.2:80: write: broken pipe", r"write: broken pipe"),
    _m("go", REFUSED, C, "dial tcp 10.0.0.2:80: connect: connection refused", r"connect: connection refused"),
    _m(
        "go",
        TIMEDOUT,
        C,
        "dial tcp 10.0.0.2:80: connect: connection timed out",
        r"connect: connection timed out|dial tcp .*i/o timeout",
        "kernel timeout; a Dialer.Timeout gives 'dial tcp ...: i/o timeout'",
    ),
    _m(
        "go",
        TIMEDOUT,
        R,
        "read tcp 10.0.0.1:41234->10.0.0.2:80: read: connection timed out",
        r"read: connection timed out|read tcp .*i/o timeout",
        "kernel gave up; a deadline gives 'read tcp ...: i/o timeout'",
    ),
    _m("go", HOSTUNREACH, C, "dial tcp 10.0.0.2:80: connect: no route to host", r"connect: no route to host"),
    _m(
        "go",
        NETUNREACH,
        C,
        "dial tcp 10.0.0.2:80: connect: network is unreachable",
        r"connect: network is unreachable",
    ),
    _m(
        "go",
        EOF,
        R,
        'Get "http://10.0.0.2/": EOF  (net/http: the server closed a reused connection)',
        r"\": EOF$|: EOF\b|unexpected EOF|server closed idle connection",
    ),
    # ---- Node.js: libuv error names in err.code, message "<syscall> <CODE>".
    _m("node", RESET, R, "Error: read ECONNRESET", r"read ECONNRESET|ECONNRESET"),
    _m(
        "node",
        RESET,
        R,
        "Error: socket hang up (code: 'ECONNRESET')",
        r"socket hang up",
        "http client: the connection ended before a response",
    ),
    _m("node", RESET, W, "Error: write ECONNRESET", r"write ECONNRESET"),
    _m("node", PIPE, W, "Error: write EPIPE", r"write EPIPE|EPIPE"),
    _m("node", REFUSED, C, "Error: connect ECONNREFUSED 10.0.0.2:80", r"connect ECONNREFUSED|ECONNREFUSED"),
    _m("node", TIMEDOUT, C, "Error: connect ETIMEDOUT 10.0.0.2:80", r"connect ETIMEDOUT|ETIMEDOUT"),
    _m("node", TIMEDOUT, R, "Error: read ETIMEDOUT", r"read ETIMEDOUT|ETIMEDOUT"),
    _m("node", HOSTUNREACH, C, "Error: connect EHOSTUNREACH 10.0.0.2:80", r"EHOSTUNREACH"),
    _m("node", NETUNREACH, C, "Error: connect ENETUNREACH 10.0.0.2:80", r"ENETUNREACH"),
    _m(
        "node",
        EOF,
        R,
        "Error: socket hang up (code: 'ECONNRESET')",
        r"socket hang up",
        "http client: the server closed the connection before a response (FIN, not an RST)",
    ),
    # ---- curl: exit status and curl_easy_strerror text.
    _m("curl", RESET, R, "curl: (56) Recv failure: Connection reset by peer", r"\(56\)|Recv failure"),
    _m("curl", RESET, W, "curl: (55) Send failure: Connection reset by peer", r"\(55\)|Send failure"),
    _m("curl", PIPE, W, "curl: (55) Send failure: Broken pipe", r"\(55\)|Send failure: Broken pipe"),
    _m(
        "curl",
        REFUSED,
        C,
        "curl: (7) Failed to connect to 10.0.0.2 port 80 after 0 ms: Connection refused",
        r"\(7\)|Failed to connect.*Connection refused|Couldn't connect to server",
    ),
    _m(
        "curl",
        TIMEDOUT,
        C,
        "curl: (28) Failed to connect to 10.0.0.2 port 80 after 129000 ms: Connection timed out",
        r"\(28\)|Connection timed out after|Operation timed out|Failed to connect.*timed out",
        "--connect-timeout gives 'curl: (28) Connection timed out after N milliseconds'",
    ),
    _m(
        "curl",
        TIMEDOUT,
        R,
        "curl: (28) Operation timed out after 30000 milliseconds with 0 bytes received",
        r"\(28\)|Operation timed out",
    ),
    _m(
        "curl",
        HOSTUNREACH,
        C,
        "curl: (7) Failed to connect to 10.0.0.2 port 80 after 3 ms: No route to host",
        r"\(7\)|No route to host",
    ),
    _m(
        "curl",
        NETUNREACH,
        C,
        "curl: (7) Failed to connect to 10.0.0.2 port 80 after 0 ms: Network is unreachable",
        r"\(7\)|Network is unreachable",
    ),
    _m(
        "curl",
        EOF,
        R,
        "curl: (52) Empty reply from server",
        r"\(52\)|Empty reply from server",
        "the server closed (FIN) without sending a byte of response",
    ),
    # ---- nginx: as a proxy (client of an upstream) and as a server (of its clients).
    _m(
        "nginx",
        RESET,
        R,
        "recv() failed (104: Connection reset by peer) while reading response header from upstream",
        r"recv\(\) failed \(104",
        client_side=True,
    ),
    _m(
        "nginx",
        RESET,
        W,
        "writev() failed (104: Connection reset by peer) while sending request to upstream",
        r"(writev|send|write)\(\) failed \(104",
        client_side=True,
    ),
    _m(
        "nginx",
        PIPE,
        W,
        "writev() failed (32: Broken pipe) while sending request to upstream",
        r"(writev|send|write)\(\) failed \(32",
        client_side=True,
    ),
    _m(
        "nginx",
        REFUSED,
        C,
        "connect() failed (111: Connection refused) while connecting to upstream",
        r"connect\(\) failed \(111",
        client_side=True,
    ),
    _m(
        "nginx",
        TIMEDOUT,
        C,
        "upstream timed out (110: Connection timed out) while connecting to upstream",
        r"timed out \(110.*connecting to upstream|connect\(\) failed \(110",
        client_side=True,
    ),
    _m(
        "nginx",
        TIMEDOUT,
        R,
        "upstream timed out (110: Connection timed out) while reading response header from upstream",
        r"upstream timed out \(110",
        client_side=True,
    ),
    _m(
        "nginx",
        HOSTUNREACH,
        C,
        "connect() failed (113: No route to host) while connecting to upstream",
        r"connect\(\) failed \(113",
        client_side=True,
    ),
    _m(
        "nginx",
        NETUNREACH,
        C,
        "connect() failed (101: Network is unreachable) while connecting to upstream",
        r"connect\(\) failed \(101",
        client_side=True,
    ),
    _m(
        "nginx",
        EOF,
        R,
        "upstream prematurely closed connection while reading response header from upstream",
        r"upstream prematurely closed connection",
        client_side=True,
    ),
    _m(
        "nginx",
        RESET,
        R,
        "recv() failed (104: Connection reset by peer) while reading client request line",
        r"recv\(\) failed \(104.*client",
        "info level in error_log",
        client_side=False,
    ),
    _m(
        "nginx",
        PIPE,
        W,
        "writev() failed (32: Broken pipe) while sending to client",
        r"failed \(32.*client",
        "info level in error_log",
        client_side=False,
    ),
    _m(
        "nginx",
        RESET,
        W,
        "writev() failed (104: Connection reset by peer) while sending to client",
        r"failed \(104.*client",
        "info level in error_log",
        client_side=False,
    ),
    _m(
        "nginx",
        EOF,
        R,
        "client prematurely closed connection",
        r"client prematurely closed connection",
        client_side=False,
    ),
)


def message_for(runtime: str, errno: Errno, operation: Operation, *, client: bool | None = None) -> str | None:
    """The first known message of ``runtime`` for (errno, operation), honouring nginx's client/server
    split."""
    for candidate in _candidates(runtime, errno, operation, client):
        return candidate.text
    # A read that fails after a reset and a write that fails look alike in some runtimes: fall back to any op.
    for op in Operation:
        for candidate in _candidates(runtime, errno, op, client):
            return candidate.text
    return None


def _candidates(runtime: str, errno: Errno, operation: Operation, client: bool | None) -> list[RuntimeMessage]:
    found = [m for m in MESSAGES if m.runtime == runtime and m.errno is errno and m.operation is operation]
    if client is not None:
        found = [m for m in found if m.client_side is None or m.client_side is client]
    return found


def match_error_line(line: str) -> list[RuntimeMessage]:
    """Every known message that the pasted line looks like, most specific (longest pattern hit) first."""
    hits: list[tuple[int, int, RuntimeMessage]] = []
    for order, message in enumerate(MESSAGES):
        found = re.search(message.pattern, line, re.IGNORECASE)
        if found is not None:
            hits.append((-(found.end() - found.start()), order, message))
    hits.sort(key=lambda hit: (hit[0], hit[1]))
    return [message for _, _, message in hits]


@fast_init
@dataclass(frozen=True, slots=True)
class AppView:
    """What one application saw at the end of a connection, independent of the runtime."""

    errno: Errno | None
    """The error its socket call returned; None when it saw nothing (it had closed, crashed, or never
    knew)."""
    operation: Operation | None
    """The call that failed (or returned EOF)."""
    explanation: str
    """Why, in terms of the kernel (e.g. ``RST accepted in CLOSE_WAIT: EPIPE on the next write``)."""

    def render(self, runtime: str, *, client: bool, local: str | None = None, remote: str | None = None) -> str:
        """The runtime's message for this view, or the plain explanation when the application saw no error.

        ``local`` / ``remote`` (``addr:port`` of the viewing application's socket and of its peer) replace the
        example addresses of the message, so it reads as the application printed it."""
        if self.errno is None or self.operation is None:
            return self.explanation
        if runtime in CLIENT_ONLY_RUNTIMES and not client:
            return f"(not applicable: {runtime} is a client) {self.explanation}"
        text = message_for(runtime, self.errno, self.operation, client=client)
        if text is None:
            return f"{self.errno.value} on {self.operation.value}: {self.explanation}"
        if local is not None and remote is not None:
            text = with_addresses(text, local, remote)
        return f"{text}  [{self.errno.value} on {self.operation.value}]"


EXAMPLE_LOCAL = "10.0.0.1:41234"
EXAMPLE_REMOTE = "10.0.0.2:80"


def with_addresses(text: str, local: str, remote: str) -> str:
    """Put a connection's real endpoints in place of the example ones of a message."""
    host, _, port = remote.rpartition(":")
    return (
        text.replace(EXAMPLE_LOCAL, local)
        .replace(EXAMPLE_REMOTE, remote)
        .replace("10.0.0.2 port 80", f"{host.strip('[]')} port {port}")
        .replace("http://10.0.0.2/", f"http://{remote}/")
    )


def render_views(
    views: dict[str, AppView], client_side: str = "orig", endpoints: dict[str, str] | None = None
) -> dict[str, dict[str, str]]:
    """runtime -> side -> message, for a mapping side -> `AppView` (``client_side`` names the connecting side;
    ``endpoints`` maps each side to its ``addr:port`` to show real addresses in the messages).

    Every connection with the same views gets the same messages but its own addresses: the messages are
    rendered once per (views, client side) as templates (`_templates`), and only the address slots are filled
    per connection."""
    if endpoints is None or len(endpoints) != 2 or not endpoints.keys() >= views.keys():
        return _render_each(views, client_side, endpoints)
    (side_a, address_a), (_, address_b) = endpoints.items()
    slots: dict[str, dict[str, str]] = {}
    out: dict[str, dict[str, str]] = {}
    for runtime, fixed, messages in _plan(tuple(views.items()), client_side):
        if fixed is not None:
            out[runtime] = fixed.copy()  # no address in any message: a fresh copy of the rendered texts
            continue
        inner: dict[str, str] = {}
        for side, text, has_slots in messages:
            if has_slots:
                side_slots = slots.get(side)
                if side_slots is None:
                    local, remote = (address_a, address_b) if side == side_a else (address_b, address_a)
                    side_slots = slots[side] = _address_slots(local, remote)
                text = text.format_map(side_slots)
            inner[side] = text
        out[runtime] = inner
    return out


def _address_slots(local: str, remote: str) -> dict[str, str]:
    """The values of a side's address slots in the message templates (its own ``addr:port``, its peer's)."""
    host, _, port = remote.rpartition(":")
    return {"local": local, "remote": remote, "remote_host": host.strip("[]"), "remote_port": port}


@lru_cache(maxsize=4096)
def _plan(
    views: tuple[tuple[str, AppView], ...], client_side: str
) -> tuple[tuple[str, dict[str, str] | None, tuple[tuple[str, str, bool], ...]], ...]:
    """Per runtime: (runtime, side -> text when no message of that runtime has address slots (else None), the
    `_templates` messages). Most runtimes' messages carry no address: their texts are copied, not formatted."""
    plan: list[tuple[str, dict[str, str] | None, tuple[tuple[str, str, bool], ...]]] = []
    for runtime, messages in _templates(views, client_side):
        fixed = None if any(has_slots for _, _, has_slots in messages) else {side: text for side, text, _ in messages}
        plan.append((runtime, fixed, messages))
    return tuple(plan)


_LOCAL_MARK = "\x01L\x01"
_HOST_MARK = "\x01H\x01"
_PORT_MARK = "\x01P\x01"


@lru_cache(maxsize=4096)
def _templates(
    views: tuple[tuple[str, AppView], ...], client_side: str
) -> tuple[tuple[str, tuple[tuple[str, str, bool], ...]], ...]:
    """Per runtime, per side: (side, text, whether it has address slots), rendered once with marker addresses
    turned into ``str.format`` slots."""
    remote_mark = f"{_HOST_MARK}:{_PORT_MARK}"
    out: list[tuple[str, tuple[tuple[str, str, bool], ...]]] = []
    for runtime in RUNTIMES:
        messages: list[tuple[str, str, bool]] = []
        for side, view in views:
            text = view.render(runtime, client=side == client_side, local=_LOCAL_MARK, remote=remote_mark)
            has_slots = _LOCAL_MARK in text or _HOST_MARK in text or _PORT_MARK in text
            if has_slots:
                text = (
                    text.replace("{", "{{")
                    .replace("}", "}}")
                    .replace(remote_mark, "{remote}")
                    .replace(_LOCAL_MARK, "{local}")
                    .replace(_HOST_MARK, "{remote_host}")
                    .replace(_PORT_MARK, "{remote_port}")
                )
            messages.append((side, text, has_slots))
        out.append((runtime, tuple(messages)))
    return tuple(out)


def _render_each(
    views: dict[str, AppView], client_side: str, endpoints: dict[str, str] | None
) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for runtime in RUNTIMES:
        out[runtime] = {}
        for side, view in views.items():
            local = endpoints.get(side) if endpoints else None
            remote = next((a for s, a in (endpoints or {}).items() if s != side), None)
            out[runtime][side] = view.render(runtime, client=side == client_side, local=local, remote=remote)
    return out
