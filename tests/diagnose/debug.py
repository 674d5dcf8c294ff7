"""Print a capture's connections segment by segment with every rule's candidate (a tool for rule authors)."""

from __future__ import annotations

import sys
from pathlib import Path

from diagnose.corpus import read_capture
from whyreset.core.tracker import build_connections
from whyreset.diagnose import build_context
from whyreset.diagnose.facts import compute_facts
from whyreset.diagnose.vantage import infer_vantage
from whyreset.diagnose.verdict import rank


def flags_text(flags: int) -> str:
    return "".join(letter for bit, letter in ((2, "S"), (1, "F"), (4, "R"), (8, "P"), (16, ".")) if flags & bit)


def main(path: str) -> None:
    capture = read_capture(Path(path))
    conns = build_connections(capture.packets, capture.icmp_errors, capture.rst_payloads)
    ctx = build_context(conns, capture.icmp_errors)
    for conn in conns:
        facts = compute_facts(conn)
        print(
            f"== {conn.uid} {conn.orig_h}:{conn.orig_p} > {conn.resp_h}:{conn.resp_p} outcome={conn.outcome} "
            f"history={conn.history} inferred={conn.orig_inferred_by}"
        )
        t0 = facts.segs[0].ts_ns if facts.segs else 0
        for s in facts.segs:
            print(
                f"  {s.frame:4d} {(s.ts_ns - t0) / 1e6:10.3f}ms {s.side.value:4s} {flags_text(s.flags):4s} "
                f"seq={s.rel_seq} ack={s.rel_ack} len={s.length} ttl={s.ttl} id={s.ip_id}"
            )
        for r in facts.resets:
            print(
                f"  RST frame={r.seg.frame} acc={r.info.acceptability} accepted={r.accepted} "
                f"rcv_state={r.info.receiver_state} snd_state={r.info.sender_state} "
                f"answers={r.answers_trigger}"
            )
        for c in rank(facts, ctx, infer_vantage(facts)):
            print(f"  -> {c.cause.value:24s} {c.score:.2f} {c.summary}")


if __name__ == "__main__":
    main(sys.argv[1])
