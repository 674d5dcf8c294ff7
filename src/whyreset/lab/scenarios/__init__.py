"""The registry of lab scenarios: every module in this package registers its scenarios on import.

A module defines `Scenario` subclasses and registers instances with `register`; modules written by others
(``path_*.py``) are found the same way, by importing every module of the package.
"""

from __future__ import annotations

import importlib
import pkgutil

from whyreset.errors import LabError
from whyreset.lab.scenario import Scenario

_REGISTRY: dict[str, Scenario] = {}
_loaded = False


def register(scenario: Scenario) -> Scenario:
    """Add a scenario to the registry (names are unique)."""
    if scenario.name in _REGISTRY and _REGISTRY[scenario.name] is not scenario:
        raise LabError(f"two scenarios are named {scenario.name!r}")
    _REGISTRY[scenario.name] = scenario
    return scenario


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def all_scenarios() -> list[Scenario]:
    """Every registered scenario, by name."""
    _load_all()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_scenario(name: str) -> Scenario:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise LabError(f"no scenario named {name!r} (known: {known})") from None
