"""JSON records: one object per connection, versioned (docs/json-schema.md is the reference).

The same objects are returned by the Python API (`whyreset.analysis.Analysis.records`) and printed by
``whyreset analyze --json`` (one per line). Field names follow Zeek's conn.log where the concept is the same
(``orig_h``, ``conn_state``, ``history``, ``orig_ip_bytes``...), so people who know Zeek read them without a
manual.

Bump `SCHEMA_VERSION` when a field changes meaning or disappears; adding a field does not bump it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import IO, Any

from whyreset.core.connection import Connection, DirectionStats, ResetInfo
from whyreset.diagnose.finding import Finding
from whyreset.ids import Outcome, TcpState

try:
    import orjson
except ImportError:  # a dependency, but the standard library gives the same lines, only slower
    orjson = None  # type: ignore[assignment]

SCHEMA_VERSION = 1

ABNORMAL_OUTCOMES = frozenset({Outcome.RESET, Outcome.TIMEOUT, Outcome.NOT_ESTABLISHED})
"""Outcomes that are abnormal whatever the diagnosis says (a clean, open or half-closed connection is abnormal
only when the diagnosis names a cause, e.g. ``close_wait_leak``)."""

JsonRecord = dict[str, Any]

PAYLOAD_HIDDEN = "<RST payload hidden: --show-payload>"
MIN_SECRET_LENGTH = 3
"""Shorter payload texts are not scrubbed from free text (they would hit ordinary words); they are still never
printed as the RST's own field."""


def ns_to_epoch(ts_ns: int) -> float:
    """Integer nanoseconds to epoch seconds rounded to the microsecond, as Zeek's ``ts`` shows it."""
    # Integer rounding to the microsecond first, then one float division: exact to the microsecond and several
    # times cheaper than round() on a float (this runs for every timestamp of every record).
    return ((ts_ns + 500) // 1000) / 1e6


def is_abnormal(connection: Connection, finding: Finding | None) -> bool:
    """A connection that ended badly: an abnormal outcome, or a diagnosis that names a cause."""
    if connection.outcome in ABNORMAL_OUTCOMES:
        return True
    return finding is not None and finding.cause is not None


def connection_record(
    connection: Connection,
    finding: Finding | None,
    *,
    source: str = "",
    show_payload: bool = False,
) -> JsonRecord:
    """The schema-v1 object of one connection (with its diagnosis when there is one)."""
    # This runs once per connection of the capture (~10 us without a diagnosis): fields are read once into
    # locals, timestamps converted inline (see ns_to_epoch), enum members written as their `_value_` (the
    # string str() returns, without the call; `.value` is a slower property), the sub-objects built inline.
    orig, resp = connection.orig, connection.resp
    orig_states, resp_states = connection.orig_states, connection.resp_states
    resets = connection.resets
    outcome = connection.outcome
    ts_first, ts_last = connection.ts_first_ns, connection.ts_last_ns
    cause = finding.cause if finding is not None else None
    record = _RECORD.copy()  # the schema's keys in order, presized: filled below, in place
    record["schema_version"] = SCHEMA_VERSION
    record["source"] = source
    record["uid"] = connection.uid
    record["community_id"] = connection.community_id
    record["index"] = connection.index
    record["ip_version"] = connection.ip_version
    record["orig_h"] = connection.orig_h
    record["orig_p"] = connection.orig_p
    record["resp_h"] = connection.resp_h
    record["resp_p"] = connection.resp_p
    record["proto"] = "tcp"
    record["ts"] = ((ts_first + 500) // 1000) / 1e6
    record["ts_ns"] = ts_first
    record["ts_last_ns"] = ts_last
    record["duration"] = (ts_last - ts_first) / 1e9
    record["first_frame"] = connection.first_frame
    record["last_frame"] = connection.last_frame
    record["outcome"] = outcome._value_
    record["cause"] = cause._value_ if cause is not None else None
    record["abnormal"] = cause is not None or outcome in ABNORMAL_OUTCOMES
    record["conn_state"] = connection.conn_state
    record["history"] = connection.history
    record["orig_pkts"] = orig.packets
    record["resp_pkts"] = resp.packets
    record["orig_bytes"] = orig.data_bytes
    record["resp_bytes"] = resp.data_bytes
    record["orig_ip_bytes"] = orig.ip_bytes
    record["resp_ip_bytes"] = resp.ip_bytes
    record["orig_inferred_by"] = connection.orig_inferred_by
    record["midstream"] = connection.midstream
    record["established"] = connection.established
    record["port_reuse"] = connection.port_reuse
    record["truncated_packets"] = connection.truncated_packets
    record["orig_final_state"] = orig_states[-1].state._value_ if orig_states else _UNKNOWN_STATE
    record["resp_final_state"] = resp_states[-1].state._value_ if resp_states else _UNKNOWN_STATE
    record["orig_states"] = [
        {"state": change.state._value_, "frame": change.frame, "ts": ((change.ts_ns + 500) // 1000) / 1e6}
        for change in orig_states
    ]
    record["resp_states"] = [
        {"state": change.state._value_, "frame": change.frame, "ts": ((change.ts_ns + 500) // 1000) / 1e6}
        for change in resp_states
    ]
    record["rst_count"] = len(resets)
    record["rst"] = _reset_record(resets[0], show_payload) if resets else None
    record["orig"] = _direction_record(orig)
    record["resp"] = _direction_record(resp)
    record["diagnosis"] = None
    if finding is not None:
        diagnosis = finding_record(finding)
        if not show_payload and any(reset.payload_text for reset in resets):  # nothing to scrub otherwise
            diagnosis = redact_payload(diagnosis, payload_secrets(connection))
        record["diagnosis"] = diagnosis
    return record


_UNKNOWN_STATE: str = TcpState.UNKNOWN.value

# A dict literal of more than 16 keys is built key by key, resizing as it grows; copying a dict that already
# holds the keys (in the schema's order) and storing the values into it is ~20 % cheaper.
_RECORD: JsonRecord = dict.fromkeys(
    (
        "schema_version",
        "source",
        "uid",
        "community_id",
        "index",
        "ip_version",
        "orig_h",
        "orig_p",
        "resp_h",
        "resp_p",
        "proto",
        "ts",
        "ts_ns",
        "ts_last_ns",
        "duration",
        "first_frame",
        "last_frame",
        "outcome",
        "cause",
        "abnormal",
        "conn_state",
        "history",
        "orig_pkts",
        "resp_pkts",
        "orig_bytes",
        "resp_bytes",
        "orig_ip_bytes",
        "resp_ip_bytes",
        "orig_inferred_by",
        "midstream",
        "established",
        "port_reuse",
        "truncated_packets",
        "orig_final_state",
        "resp_final_state",
        "orig_states",
        "resp_states",
        "rst_count",
        "rst",
        "orig",
        "resp",
        "diagnosis",
    )
)


def _reset_record(reset: ResetInfo, show_payload: bool) -> JsonRecord:
    # The RST's payload is capture data: shown only when asked (--show-payload); its presence is always told.
    payload_text = reset.payload_text
    return {
        "sender": reset.sender._value_,
        "frame": reset.frame,
        "ts": ((reset.ts_ns + 500) // 1000) / 1e6,
        "seq": reset.seq,
        "ack": reset.ack,
        "rel_seq": reset.rel_seq,
        "ttl": reset.ttl,
        "ip_id": reset.ip_id,
        "acceptability": reset.acceptability._value_,
        "receiver_state": reset.receiver_state._value_,
        "sender_state": reset.sender_state._value_,
        "has_payload_text": payload_text is not None,
        "payload_text": payload_text if show_payload else None,
    }


_DIRECTION: JsonRecord = dict.fromkeys(
    (
        "packets",
        "payload_bytes",
        "frame_bytes",
        "ip_bytes",
        "isn",
        "data_bytes",
        "bytes_acked",
        "unacked_bytes",
        "retransmissions",
        "out_of_order",
        "lost_segments",
        "dup_acks",
        "zero_windows",
        "keepalive_probes",
        "max_idle",
        "wscale",
        "mss",
        "ttls",
        "fin_frame",
        "rst_frames",
    )
)


def _direction_record(stats: DirectionStats) -> JsonRecord:
    record = _DIRECTION.copy()  # as _RECORD: cheaper than a literal of more than 16 keys
    record["packets"] = stats.packets
    record["payload_bytes"] = stats.payload_bytes
    record["frame_bytes"] = stats.frame_bytes
    record["ip_bytes"] = stats.ip_bytes
    record["isn"] = stats.isn
    record["data_bytes"] = stats.data_bytes
    record["bytes_acked"] = stats.bytes_acked
    record["unacked_bytes"] = stats.unacked_bytes
    record["retransmissions"] = stats.retransmissions
    record["out_of_order"] = stats.out_of_order
    record["lost_segments"] = stats.lost_segments
    record["dup_acks"] = stats.dup_acks
    record["zero_windows"] = stats.zero_windows
    record["keepalive_probes"] = stats.keepalive_probes
    record["max_idle"] = stats.max_idle_ns / 1e9
    record["wscale"] = stats.wscale
    record["mss"] = stats.mss
    record["ttls"] = list(stats.ttls)
    record["fin_frame"] = stats.fin_frame
    record["rst_frames"] = list(stats.rst_frames)
    return record


def finding_record(finding: Finding) -> JsonRecord:
    """The diagnosis part of a record."""
    impact = finding.impact
    cause, actor = finding.cause, finding.actor
    return {
        "cause": cause._value_ if cause is not None else None,
        "confidence": finding.confidence,
        "actor": actor._value_ if actor is not None else None,
        "summary": finding.summary,
        "alternatives": [
            {"cause": alt.cause._value_, "confidence": alt.confidence, "how_to_tell": alt.how_to_tell}
            for alt in finding.alternatives
        ],
        "evidence": [
            {
                "text": item.text,
                "frame": item.frame,
                "ts": ((item.ts_ns + 500) // 1000) / 1e6 if item.ts_ns is not None else None,
                "side": item.side._value_ if item.side is not None else None,
                "data": _evidence_data(item.data),
            }
            for item in finding.evidence
        ],
        "impact": {
            "orig_unacked_bytes": impact.orig_unacked_bytes,
            "resp_unacked_bytes": impact.resp_unacked_bytes,
            "request_unanswered": impact.request_unanswered,
            "summary": impact.summary,
        },
        # runtime -> side -> message: plain strings by contract, copied without the generic conversion.
        "symptoms": {str(runtime): dict(sides) for runtime, sides in finding.symptoms.items()},
        "fix": list(finding.fix),
        "vantage": finding.vantage,
        "undetermined_reason": finding.undetermined_reason,
    }


def _evidence_data(data: dict[str, Any]) -> Any:
    """`jsonable` of an evidence item's data, with a plain copy when every key is a str and every value plain
    (nearly always: ints, strings, None), which `jsonable` would return equal, item by item."""
    if type(data) is not dict:
        return jsonable(data)
    plain = _PLAIN
    for key, value in data.items():
        if type(key) is not str or type(value) not in plain:
            return jsonable(data)
    return data.copy()


def payload_secrets(connection: Connection) -> tuple[str, ...]:
    """The RST payload texts of a connection, as they may be quoted in diagnosis text (plain and repr'd)."""
    texts = {reset.payload_text for reset in connection.resets if reset.payload_text}
    secrets = {form for text in texts if len(text) >= MIN_SECRET_LENGTH for form in (repr(text), text)}
    return tuple(sorted(secrets, key=len, reverse=True))  # longest first: the repr'd form before the bare text


def redact_payload(value: Any, secrets: Sequence[str]) -> Any:
    """Replace payload text quoted anywhere in ``value`` (strings inside dicts and lists too)."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, PAYLOAD_HIDDEN)
        return value
    if isinstance(value, dict):
        return {key: redact_payload(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_payload(item, secrets) for item in value]
    return value


_PLAIN = (str, int, bool, type(None))


def jsonable(value: Any) -> Any:
    """Turn evidence data (enums, numpy scalars, tuples, bytes) into plain JSON values."""
    kind = type(value)
    if kind in _PLAIN:  # the common case first: exact builtin types need no conversion
        return value
    if kind is dict:
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool | str):
        return value if kind is bool else str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    item_method = getattr(value, "item", None)  # numpy scalars
    if callable(item_method):
        return jsonable(item_method())
    return str(value)


def encode_json_line(record: JsonRecord) -> bytes:
    """One record as a line of UTF-8 JSON (non-ASCII kept as is, no NaN: strict JSON readers reject it).

    orjson when installed (about 7x faster than the standard library on these records: 5 against 36 us each);
    the standard library otherwise, and for what orjson refuses (an integer beyond 64 bits).
    """
    if orjson is not None:
        try:
            return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
    text = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (text + "\n").encode()


def write_json_line(record: JsonRecord, out: IO[str]) -> None:
    """`encode_json_line` to a text stream."""
    out.write(encode_json_line(record).decode())


def write_json_lines(records: Iterable[JsonRecord], out: IO[bytes]) -> None:
    """`encode_json_line` for each record, to a binary stream."""
    write = out.write
    for record in records:
        write(encode_json_line(record))
