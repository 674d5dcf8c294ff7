"""Diagnosis: the cause catalogue, its rules and the verdict for each connection.

``build_context(connections, icmp_errors)`` gathers capture-wide facts in a first pass; ``diagnose(connection,
context)`` returns a `Finding` (or None for a healthy connection). The catalogue (``diagnose.catalogue``)
holds one entry per cause id; ``diagnose.cli`` renders it (``whyreset explain``, ``whyreset rules``).
"""

from whyreset.diagnose.context import DiagnosisContext, build_context
from whyreset.diagnose.finding import Alternative, EvidenceItem, Finding, Impact
from whyreset.diagnose.verdict import diagnose

__all__ = [
    "Alternative",
    "DiagnosisContext",
    "EvidenceItem",
    "Finding",
    "Impact",
    "build_context",
    "diagnose",
]
