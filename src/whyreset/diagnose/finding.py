"""A diagnosis is a claim: the cause, the evidence for it, how sure we are, and what else it could be."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from whyreset.ids import CauseId, Side

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """Give a frozen slots dataclass an ``__init__`` that stores each field through its slot directly.

    A frozen dataclass's generated ``__init__`` goes through ``object.__setattr__`` once per field, about twice
    the cost of a direct slot store; a diagnosis makes several of these objects per connection (evidence,
    alternatives, the finding). Same parameters, defaults and default factories; equality, hashing and repr
    still come from the dataclass."""
    if hasattr(cls, "__post_init__") or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"fast_init is for frozen dataclasses without __post_init__ ({cls.__qualname__})")
    scope: dict[str, Any] = {}
    params: list[str] = []
    body: list[str] = []
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = item.name
        scope[f"set_{name}"] = cls.__dict__[name].__set__
        if item.default is not dataclasses.MISSING:
            scope[f"default_{name}"] = item.default
            params.append(f"{name}=default_{name}")
            body.append(f"    set_{name}(self, {name})\n")
        elif item.default_factory is not dataclasses.MISSING:
            scope[f"factory_{name}"] = item.default_factory
            scope["unset"] = _UNSET
            params.append(f"{name}=unset")
            body.append(f"    set_{name}(self, factory_{name}() if {name} is unset else {name})\n")
        else:
            params.append(name)
            body.append(f"    set_{name}(self, {name})\n")
    exec(f"def __init__(self, {', '.join(params)}):\n{''.join(body)}", scope)  # from the class's own fields only
    init: Callable[..., None] = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    type.__setattr__(cls, "__init__", init)
    return cls


_UNSET = object()
"""Default of a field with a default factory in a `fast_init` constructor."""


@fast_init
@dataclass(frozen=True, slots=True)
class EvidenceItem:
    """One fact supporting (or weakening) a diagnosis, anchored on a packet when there is one."""

    text: str
    """The fact in one sentence, e.g. ``RST from resp 1.2.3.4 seq=1001 ack=2049 TTL 57 (its own packets:
    64)``."""
    frame: int | None = None
    """Capture record number the fact is about."""
    ts_ns: int | None = None
    """Its capture timestamp."""
    side: Side | None = None
    """Endpoint that sent that packet."""
    data: dict[str, Any] = field(default_factory=dict)
    """Machine-readable values behind the text (seq, ack, ttl, gap_ns...)."""


@fast_init
@dataclass(frozen=True, slots=True)
class Alternative:
    """A cause the capture cannot rule out, and what would tell it apart from the primary one."""

    cause: CauseId
    """The other candidate."""
    confidence: float
    """0..1, lower than the primary's."""
    how_to_tell: str
    """What observation would decide (e.g. ``a server-side capture would show whether the RST left the
    server``)."""


@fast_init
@dataclass(frozen=True, slots=True)
class Impact:
    """What was lost."""

    orig_unacked_bytes: int
    """Bytes the originator sent that were never acknowledged."""
    resp_unacked_bytes: int
    """Bytes the responder sent that were never acknowledged."""
    request_unanswered: bool
    """The last data from the side that spoke first got no data in reply before the end."""
    summary: str
    """One sentence for people."""


@fast_init
@dataclass(frozen=True, slots=True)
class Finding:
    """The diagnosis of one connection that ended badly (or an explicit ``undetermined``)."""

    uid: str
    """The connection's uid (joins conn.log)."""
    cause: CauseId | None
    """Primary cause; None means undetermined (see `undetermined_reason`)."""
    confidence: float
    """0..1."""
    actor: Side | None
    """Who did it: the endpoint that acted, or None when it was the path (middlebox) or unknown."""
    summary: str
    """One line: who, what, why."""
    evidence: tuple[EvidenceItem, ...]
    """The packets and measurements that support the claim."""
    alternatives: tuple[Alternative, ...]
    """Ranked other causes the capture cannot exclude."""
    impact: Impact
    """Bytes lost, unanswered request."""
    symptoms: dict[str, dict[str, str]]
    """runtime -> side (``orig``/``resp``) -> what that application saw."""
    fix: tuple[str, ...]
    """Concrete remedies, most useful first."""
    vantage: str
    """Where the capture was likely taken and how that limits the conclusion."""
    undetermined_reason: str | None = None
    """Why no cause could be named (only when `cause` is None)."""
