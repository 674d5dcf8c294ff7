"""Read the lab corpus (tests/lab/corpus: pcaps recorded with real kernel sockets + truth JSON) and diagnose
it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from whyreset import ingest
from whyreset.core.connection import Connection
from whyreset.core.tracker import build_connections
from whyreset.diagnose import build_context, diagnose
from whyreset.diagnose.finding import Finding
from whyreset.model import Capture, IcmpError

CORPUS = Path(__file__).resolve().parents[1] / "lab" / "corpus"


@dataclass(frozen=True)
class Case:
    """One connection of one capture of one scenario, with the truth and what whyreset said."""

    scenario: str
    capture_point: str
    orig: str
    resp: str
    truth_cause: str | None
    connection: Connection | None
    finding: Finding | None
    rst_senders_seen: tuple[str, ...] | None = None
    """The RST senders this capture point shows, when the truth says (a capture sees only the RSTs that cross
    its link: the lab's ``rst_senders_seen_at``)."""

    @property
    def got(self) -> str | None:
        if self.finding is None:
            return None
        return self.finding.cause.value if self.finding.cause is not None else "undetermined"


def read_capture(path: Path) -> Capture:
    """The whole capture as one `Capture` (pcap or pcapng), through the project's readers."""
    return ingest.read_capture(str(path))


def diagnose_capture(path: Path) -> tuple[list[Connection], dict[str, Finding], list[IcmpError]]:
    capture = read_capture(path)
    connections = build_connections(capture.packets, capture.icmp_errors, capture.rst_payloads)
    context = build_context(connections, capture.icmp_errors)
    findings = {c.uid: f for c in connections if (f := diagnose(c, context)) is not None}
    return connections, findings, capture.icmp_errors


def endpoint(host: str, port: int) -> str:
    """``addr:port`` as the lab writes it (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def truth_files() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*.truth.json"))


def cases_of(truth_path: Path) -> list[Case]:
    truth = json.loads(truth_path.read_text())
    out: list[Case] = []
    views = truth.get("extra", {}).get("rst_senders_seen_at", {})
    for point, name in truth["captures"].items():
        seen = tuple(views[point]) if point in views else None
        connections, findings, _ = diagnose_capture(CORPUS / name)
        by_tuple = {(endpoint(c.orig_h, c.orig_p), endpoint(c.resp_h, c.resp_p)): c for c in connections}
        for conn_truth in truth["connections"]:
            key = (conn_truth["orig"], conn_truth["resp"])
            conn = by_tuple.get(key)
            finding = findings.get(conn.uid) if conn is not None else None
            out.append(Case(truth["scenario"], point, key[0], key[1], conn_truth["cause"], conn, finding, seen))
    return out


if __name__ == "__main__":
    total = good = 0
    for path in truth_files():
        for case in cases_of(path):
            total += 1
            ok = case.got == case.truth_cause
            good += ok
            alts = [a.cause.value for a in case.finding.alternatives] if case.finding else []
            conf = case.finding.confidence if case.finding else None
            print(
                f"{'OK ' if ok else 'BAD'} {case.scenario:45s} {case.capture_point:8s} "
                f"truth={case.truth_cause} "
                f"got={case.got} conf={conf} alts={alts} "
                f"outcome={case.connection.outcome if case.connection else None}"
            )
    print(f"{good}/{total}")
