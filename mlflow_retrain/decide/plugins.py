"""Which triggers and gate checks are installed: the built-in ones, then other packages' plugins.

Why it is built this way: docs/design.md#decide-plugins.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from mlflow_retrain.base.errors import ConfigError

TRIGGERS = "mlflow_retrain.triggers"
GATES = "mlflow_retrain.gates"


def _base(group: str) -> type:
    if group == TRIGGERS:
        from mlflow_retrain.decide.triggers import Trigger
        return Trigger
    from mlflow_retrain.decide.gate import GateCheck
    return GateCheck


@lru_cache(maxsize=None)
def builtin_triggers() -> dict[str, type]:
    """Every `Trigger` subclass defined in a module of `decide/triggers/`, by name."""
    from mlflow_retrain.decide import triggers

    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(triggers.__path__):
        module = importlib.import_module(f"{triggers.__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, triggers.Trigger) and value.__module__ == module.__name__:
                found[value.name] = value
    return found


def _builtin(group: str) -> dict[str, type]:
    return builtin_triggers() if group == TRIGGERS else {}  # the gate's own checks live in decide.gate


def _plugins(group: str) -> dict[str, type]:
    base = _base(group)
    found: dict[str, type] = {}
    for point in entry_points(group=group):
        try:
            value = point.load()
        except Exception as exc:  # a broken plugin is the user's to fix: name it, whatever it raised
            raise ConfigError(f"plugin {point.name} = {point.value} ({group}) cannot be loaded: "
                              f"{type(exc).__name__}: {exc}") from None
        if not (isinstance(value, type) and issubclass(value, base)):
            raise ConfigError(f"plugin {point.name} = {point.value} ({group}) is not a {base.__name__} subclass")
        if getattr(value, "name", None) != point.name:
            raise ConfigError(f"plugin {point.name} = {point.value} ({group}): its class's name is "
                              f"{getattr(value, 'name', None)!r}; it must be the entry point's name")
        found[point.name] = value
    return found


def installed(group: str) -> dict[str, type]:
    """name -> class for the group: built-ins, then plugins (a plugin never shadows a built-in)."""
    return {**_plugins(group), **_builtin(group)}


def lookup(group: str, name: str, where: Any) -> type:
    """The class a policy key names; unknown is one ConfigError at that key listing what is installed.

    `where` is the config section holding the key (its `fail` names the file and the key)."""
    builtin = _builtin(group)
    if name in builtin:
        return builtin[name]
    known = installed(group)
    if name not in known:
        what = "triggers" if group == TRIGGERS else "gate checks"
        listed = ", ".join(sorted(known)) or "none"
        raise where.fail(name, f"is not a known key (installed {what}: {listed}; more through the {group} "
                               "entry point group)")
    return known[name]
