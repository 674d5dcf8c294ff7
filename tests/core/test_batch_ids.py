"""The batch forms of the per-connection identifiers equal the one-by-one reference functions."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from whyreset.core.zeek import community_id, community_ids, zeek_uid, zeek_uids
from whyreset.model import format_addr, parse_addr

ADDRESSES = st.sampled_from(
    ["10.0.0.1", "10.0.0.2", "0.0.0.0", "255.255.255.255", "192.0.2.7", "::1", "2001:db8::1", "fe80::ffff:1", "::"]
) | st.ip_addresses().map(str)
PORT = st.integers(0, 65535)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(ADDRESSES, ADDRESSES, PORT, PORT), max_size=30))
def test_community_ids_equal_the_reference(rows: list[tuple[str, str, int, int]]) -> None:
    """Same addresses both ways, equal ports, either family, and mixed families (one by one)."""
    halves = [(*parse_addr(src), *parse_addr(dst)) for src, dst, _, _ in rows]
    columns = [np.array([h[i] for h in halves], np.uint64) for i in range(4)]
    ports = [np.array([row[i] for row in rows], np.int64) for i in (2, 3)]
    expected = [
        community_id(format_addr(*parse_addr(src)), format_addr(*parse_addr(dst)), sport, dport)
        for src, dst, sport, dport in rows
    ]
    assert community_ids(*columns, *ports) == expected


def test_community_id_matches_the_spec_example() -> None:
    """corelight community-id-spec baseline: 128.232.110.120:34855 -> 66.35.250.204:80 (TCP, seed 0)."""
    halves = [np.array([v], np.uint64) for v in (*parse_addr("128.232.110.120"), *parse_addr("66.35.250.204"))]
    ids = community_ids(*halves, np.array([34855]), np.array([80]))
    assert ids == ["1:LQU9qZlK+B5F3KDmev6m5PMibrg="]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**63 - 1), st.integers(0, 2**32 - 1)), max_size=30))
def test_zeek_uids_equal_the_reference(rows: list[tuple[int, int]]) -> None:
    communities = [f"1:{index}" for index in range(len(rows))]
    uids = zeek_uids(communities, [ts for ts, _ in rows], [frame for _, frame in rows])
    assert uids == [zeek_uid(cid, ts, frame) for cid, (ts, frame) in zip(communities, rows, strict=True)]
    assert all(len(uid) == 18 and uid.startswith("C") for uid in uids)
