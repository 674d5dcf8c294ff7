"""Connections and findings built by hand, so the report modules are tested without the reader and tracker.

(A uniquely named module, not a conftest: test modules import these helpers directly.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from whyreset.core.connection import Connection, DirectionStats, ResetInfo, RstAcceptability, StateChange
from whyreset.diagnose.finding import Alternative, EvidenceItem, Finding, Impact
from whyreset.ids import CauseId, Outcome, Side, TcpState
from whyreset.model import PacketTable

T0 = 1_700_000_000_123_456_789


def direction(**overrides: Any) -> DirectionStats:
    values: dict[str, Any] = {
        "packets": 4,
        "payload_bytes": 100,
        "frame_bytes": 400,
        "ip_bytes": 260,
        "isn": 1000,
        "data_bytes": 100,
        "bytes_acked": 100,
        "unacked_bytes": 0,
        "retransmissions": 0,
        "out_of_order": 0,
        "lost_segments": 0,
        "dup_acks": 0,
        "zero_windows": 0,
        "keepalive_probes": 0,
        "max_idle_ns": 1_000_000,
        "wscale": 7,
        "mss": 1460,
        "ttls": (64,),
        "fin_frame": None,
        "rst_frames": (),
    }
    values.update(overrides)
    return DirectionStats(**values)


def reset_info(**overrides: Any) -> ResetInfo:
    values: dict[str, Any] = {
        "sender": Side.RESP,
        "frame": 7,
        "ts_ns": T0 + 2_000_000,
        "seq": 2001,
        "ack": 1101,
        "rel_seq": 1001,
        "ttl": 57,
        "ip_id": 0,
        "acceptability": RstAcceptability.EXACT,
        "receiver_state": TcpState.ESTABLISHED,
        "sender_state": TcpState.ESTABLISHED,
        "payload_text": None,
    }
    values.update(overrides)
    return ResetInfo(**values)


def connection(**overrides: Any) -> Connection:
    values: dict[str, Any] = {
        "index": 0,
        "uid": "CAbCdEfGhIjKlMnOp1",
        "community_id": "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
        "ip_version": 4,
        "orig_h": "10.0.0.1",
        "orig_p": 40000,
        "resp_h": "10.0.0.2",
        "resp_p": 80,
        "orig_inferred_by": "syn",
        "ts_first_ns": T0,
        "ts_last_ns": T0 + 2_500_000,
        "first_frame": 1,
        "last_frame": 8,
        "orig": direction(),
        "resp": direction(isn=2000, rst_frames=(7,)),
        "orig_states": (
            StateChange(TcpState.SYN_SENT, 1, T0),
            StateChange(TcpState.CLOSED, 7, T0 + 2_000_000),
        ),
        "resp_states": (StateChange(TcpState.LISTEN, 1, T0), StateChange(TcpState.CLOSED, 7, T0 + 2_000_000)),
        "outcome": Outcome.RESET,
        "conn_state": "RSTR",
        "history": "ShADadR",
        "resets": (reset_info(),),
        "events": (),
        "established": True,
        "midstream": False,
        "port_reuse": False,
        "truncated_packets": 0,
        "packets": PacketTable.empty(0),
        "from_orig": np.zeros(0, bool),
    }
    values.update(overrides)
    return Connection(**values)


def finding(conn: Connection, **overrides: Any) -> Finding:
    values: dict[str, Any] = {
        "uid": conn.uid,
        "cause": CauseId.CLOSE_WITH_UNREAD_DATA,
        "confidence": 0.8,
        "actor": Side.RESP,
        "summary": "the server closed its socket with the request unread",
        "evidence": (EvidenceItem("RST from resp right after the request", frame=7, ts_ns=T0, side=Side.RESP),),
        "alternatives": (Alternative(CauseId.ABORTIVE_CLOSE, 0.2, "a server-side trace would show"),),
        "impact": Impact(0, 0, True, "the request got no answer"),
        "symptoms": {"python": {"orig": "ConnectionResetError(104)"}},
        "fix": ("read the whole request before closing",),
        "vantage": "client side",
    }
    values.update(overrides)
    return Finding(**values)
