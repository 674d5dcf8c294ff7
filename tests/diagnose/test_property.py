"""Property: whatever packets a capture holds, the diagnosis returns a well-formed finding or None, never
raises.

Captures from other hosts hold things no rule author imagined (mid-stream starts, reordered and duplicated
segments, RSTs with odd flags, wrapped sequence numbers). Hypothesis throws such tables at the core and the
rules.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whyreset.core.tracker import build_connections
from whyreset.diagnose import build_context, diagnose
from whyreset.model import ACK, FIN, PSH, RST, SYN, PacketTable, parse_addr

FLAG_CHOICES = [
    SYN,
    SYN | ACK,
    ACK,
    ACK | PSH,
    FIN | ACK,
    RST,
    RST | ACK,
    FIN,
    RST | ACK | PSH,
    ACK | FIN | PSH,
]

segment = st.fixed_dictionaries(
    {
        "from_client": st.booleans(),
        "flags": st.sampled_from(FLAG_CHOICES),
        "seq": st.one_of(st.integers(0, 2**32 - 1), st.integers(1000, 1300)),
        "ack": st.one_of(st.integers(0, 2**32 - 1), st.integers(5000, 5300)),
        "length": st.sampled_from([0, 0, 1, 100, 1448]),
        "gap_ns": st.sampled_from([0, 1_000, 2_000_000, 3_000_000_000]),
        "ttl": st.sampled_from([64, 63, 128, 250]),
    }
)


def table_of(segments: list[dict[str, int]]) -> PacketTable:
    table = PacketTable.empty(len(segments))
    client, server = parse_addr("10.0.0.1"), parse_addr("10.0.0.2")
    ts = 1_700_000_000_000_000_000
    for i, seg in enumerate(segments):
        ts += seg["gap_ns"]
        src, dst = (client, server) if seg["from_client"] else (server, client)
        ports = (40000, 80) if seg["from_client"] else (80, 40000)
        row = {
            "frame": i + 1,
            "ts_ns": ts,
            "ip_version": 4,
            "src_hi": src[0],
            "src_lo": src[1],
            "dst_hi": dst[0],
            "dst_lo": dst[1],
            "sport": ports[0],
            "dport": ports[1],
            "seq": seg["seq"],
            "ack": seg["ack"] if seg["flags"] & ACK else 0,
            "flags": seg["flags"],
            "payload_len": seg["length"],
            "ttl": seg["ttl"],
            "window": 500,
        }
        for name, value in row.items():
            table[name][i] = value
    return table


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(segment, min_size=1, max_size=14))
def test_diagnosis_never_raises_and_findings_are_well_formed(segments: list[dict[str, int]]) -> None:
    connections = build_connections(table_of(segments))
    context = build_context(connections)
    for conn in connections:
        finding = diagnose(conn, context)
        if conn.resets:
            assert finding is not None
        if finding is None:
            continue
        assert finding.uid == conn.uid
        assert 0.0 <= finding.confidence <= 1.0
        if finding.cause is None:
            assert finding.undetermined_reason
        else:
            assert finding.confidence >= 0.35 and finding.fix
        assert all(0.0 <= a.confidence <= finding.confidence or finding.cause is None for a in finding.alternatives)
