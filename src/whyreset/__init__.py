"""whyreset: why did my TCP connection reset?

Rebuild every TCP connection from a packet capture, tell how each one ended and, for those that ended badly,
who reset it and why, with the packets as evidence. The public entry point is `analyze`::

    import whyreset
    result = whyreset.analyze("capture.pcap")
    for record in result.records():
        print(record["uid"], record["outcome"], record["cause"])

Importing the package stays cheap: `analyze` (and numpy behind it) is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from whyreset.analysis import Analysis, analyze

__all__ = ["Analysis", "__version__", "analyze"]


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attributes: `import whyreset` must not pay for numpy and the pipeline until they are used.
    if name in ("analyze", "Analysis"):
        from whyreset import analysis

        return getattr(analysis, name)
    raise AttributeError(f"module 'whyreset' has no attribute {name!r}")
