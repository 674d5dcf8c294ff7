"""``<scenario>.truth.json``: write a `Truth` and read it back with its types (enums, dataclasses)
restored."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from whyreset.ids import CauseId, Outcome, Side, TcpState
from whyreset.lab.scenario import ConnectionTruth, KernelDrop, KernelReset, SocketCall, Truth

FORMAT_VERSION = 1


def truth_to_dict(truth: Truth) -> dict[str, Any]:
    """A JSON-ready dict (enums become their string values)."""
    data = dataclasses.asdict(truth)
    data["format"] = FORMAT_VERSION
    return data


def write_truth(truth: Truth, path: Path) -> Path:
    path.write_text(json.dumps(truth_to_dict(truth), indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return path


def _connection(data: dict[str, Any]) -> ConnectionTruth:
    return ConnectionTruth(
        orig=data["orig"],
        resp=data["resp"],
        cause=CauseId(data["cause"]) if data["cause"] else None,
        outcome=Outcome(data["outcome"]),
        rst_senders=tuple(data["rst_senders"]),
        final_states={Side(side): TcpState(state) for side, state in data["final_states"].items()},
    )


def _socket_call(data: dict[str, Any]) -> SocketCall:
    return SocketCall(**{**data, "side": Side(data["side"])})


def truth_from_dict(data: dict[str, Any]) -> Truth:
    return Truth(
        scenario=data["scenario"],
        cause=CauseId(data["cause"]) if data["cause"] else None,
        seed=data["seed"],
        kernel=data["kernel"],
        captures=dict(data["captures"]),
        connections=[_connection(item) for item in data["connections"]],
        kernel_resets=[KernelReset(**item) for item in data["kernel_resets"]],
        socket_calls=[_socket_call(item) for item in data["socket_calls"]],
        counters={host: dict(values) for host, values in data["counters"].items()},
        kernel_drops=[KernelDrop(**item) for item in data.get("kernel_drops", [])],
        notes=list(data.get("notes", [])),
        extra=dict(data.get("extra", {})),
    )


def read_truth(path: Path) -> Truth:
    return truth_from_dict(json.loads(path.read_text(encoding="utf-8")))
