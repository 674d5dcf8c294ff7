"""Stable identifiers: outcomes, cause ids and TCP endpoint states.

The cause and outcome ids come from the design's cause catalogue and never change: they appear in JSON output,
lab scenario names, live events and tests.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """How a connection ended; every connection has exactly one."""

    CLEAN = "clean"
    RESET = "reset"
    TIMEOUT = "timeout"
    HALF_CLOSED = "half_closed"
    OPEN = "open"
    NOT_ESTABLISHED = "not_established"


class CauseId(StrEnum):
    """Root causes of resets and abnormal endings (design/causes.md)."""

    REFUSED = "refused"
    ICMP_UNREACHABLE = "icmp_unreachable"
    SYN_UNANSWERED = "syn_unanswered"
    BACKLOG_OVERFLOW = "backlog_overflow"
    HANDSHAKE_ABORTED = "handshake_aborted"
    CLOSE_WITH_UNREAD_DATA = "close_with_unread_data"
    ABORTIVE_CLOSE = "abortive_close"
    DATA_AFTER_CLOSE = "data_after_close"
    KEEPALIVE_RACE = "keepalive_race"
    PEER_LOST_STATE = "peer_lost_state"
    LISTENER_CLOSED = "listener_closed"
    KEEPALIVE_TIMEOUT = "keepalive_timeout"
    RETRANSMISSION_TIMEOUT = "retransmission_timeout"
    IDLE_STATE_DROPPED = "idle_state_dropped"
    MIDDLEBOX_RESET = "middlebox_reset"
    INVALID_SEGMENT = "invalid_segment"
    INJECTED_RESET = "injected_reset"
    CLOSE_WAIT_LEAK = "close_wait_leak"
    BENIGN_RESET = "benign_reset"


class TcpState(StrEnum):
    """RFC 9293 connection states, named as Linux and `ss` print them."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN_SENT"
    SYN_RECEIVED = "SYN_RECV"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN_WAIT1"
    FIN_WAIT_2 = "FIN_WAIT2"
    CLOSE_WAIT = "CLOSE_WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST_ACK"
    TIME_WAIT = "TIME_WAIT"
    UNKNOWN = "UNKNOWN"
    """Not known from the capture (a connection seen from its middle)."""


class Side(StrEnum):
    """One endpoint of a connection, in Zeek's terms: originator (SYN sender) or responder."""

    ORIG = "orig"
    RESP = "resp"

    @property
    def other(self) -> Side:
        return Side.RESP if self is Side.ORIG else Side.ORIG
