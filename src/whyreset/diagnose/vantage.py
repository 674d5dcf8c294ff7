"""Where the capture was taken, relative to the two endpoints, and what that lets us conclude.

Two independent clues:

* the handshake's round trip splits at the capture point: near the client, SYN -> SYN-ACK takes the whole RTT
  and SYN-ACK -> ACK almost nothing; near the server it is the other way round; in the middle both halves
  count;
* TTL / hop limit: stacks start from 64, 128 or 255, so ``initial - observed`` is the number of routers
  between the sender and the capture; the side whose packets arrive with zero hops is on the capture's host or
  segment.

The vantage point matters for what a capture can prove: an RST that arrives at a client-side capture with the
server's address may still have been forged on the path; only a server-side capture shows whether it left the
server. Findings say so.
"""

from __future__ import annotations

from dataclasses import dataclass

from whyreset.diagnose.facts import Facts, hops
from whyreset.diagnose.finding import fast_init
from whyreset.ids import Side

SPLIT_NEAR = 0.8
"""Fraction of the handshake RTT on one half above which the capture sits next to that endpoint."""
MEASURABLE_RTT_NS = 200_000
"""Below 0.2 ms (loopback, same rack) the halves are noise: rely on TTLs."""


@fast_init
@dataclass(frozen=True, slots=True)
class Vantage:
    """The inferred capture point."""

    near: Side | None
    """Endpoint next to the capture, None when in the middle, on loopback, or unknown."""
    local_both: bool
    """Both endpoints are zero hops away (loopback or one host / one L2 segment)."""
    orig_hops: int | None
    resp_hops: int | None
    rtt_ns: int | None
    text: str
    """One sentence for the finding."""

    def can_see_sender(self, sender: Side) -> bool:
        """The capture is next to ``sender``: an RST with its address that the capture saw did leave that host
        (or a device on the same segment)."""
        return self.local_both or self.near is sender


def infer_vantage(facts: Facts) -> Vantage:
    """Combine the handshake split and the TTLs into one statement."""
    orig_ttl, resp_ttl = facts.orig.ttl_usual, facts.resp.ttl_usual
    orig_hops = hops(orig_ttl) if orig_ttl is not None else None
    resp_hops = hops(resp_ttl) if resp_ttl is not None else None
    rtt = facts.rtt_ns
    near_by_split = _near_by_split(facts)
    near_by_ttl = _near_by_ttl(orig_hops, resp_hops)
    local_both = orig_hops == 0 and resp_hops == 0 and (rtt is None or rtt < MEASURABLE_RTT_NS)
    if local_both:
        text = "both endpoints are zero hops from the capture (loopback or the same host/segment)"
        return Vantage(None, True, orig_hops, resp_hops, rtt, text)
    near = near_by_split if near_by_split is not None else near_by_ttl
    hop_text = _hop_text(orig_hops, resp_hops)
    if near is None:
        return Vantage(
            None,
            False,
            orig_hops,
            resp_hops,
            rtt,
            f"capture point between the endpoints or unknown; {hop_text}",
        )
    name = "client (originator)" if near is Side.ORIG else "server (responder)"
    how = "handshake RTT split" if near_by_split is not None else "TTLs"
    return Vantage(near, False, orig_hops, resp_hops, rtt, f"captured next to the {name}, by the {how}; {hop_text}")


def _near_by_split(facts: Facts) -> Side | None:
    first, second = facts.syn_to_synack_ns, facts.synack_to_ack_ns
    if first is None or second is None:
        return None
    total = first + second
    if total < MEASURABLE_RTT_NS:
        return None
    if first / total >= SPLIT_NEAR:
        return Side.ORIG
    if second / total >= SPLIT_NEAR:
        return Side.RESP
    return None


def _near_by_ttl(orig_hops: int | None, resp_hops: int | None) -> Side | None:
    if orig_hops is None or resp_hops is None:
        return None
    if orig_hops == 0 and resp_hops > 0:
        return Side.ORIG
    if resp_hops == 0 and orig_hops > 0:
        return Side.RESP
    return None


def _hop_text(orig_hops: int | None, resp_hops: int | None) -> str:
    def show(value: int | None) -> str:
        return "?" if value is None else str(value)

    return f"hops from the capture: originator {show(orig_hops)}, responder {show(resp_hops)}"
