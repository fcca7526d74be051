"""Where a fleet's policies come from: folders of policy files and fleet files with a `models:` list.

Why it is built this way: docs/design.md#fleet-policies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_retrain.policy.config import Config
from mlflow_retrain.policy.parse import parse_config
from mlflow_retrain.policy.load import read_yaml
from mlflow_retrain.base.errors import ConfigError, FleetError
from mlflow_retrain.fleet.rules import merge

FLEET_KEYS = ("defaults", "models")
SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Member:
    """One model's policy as read: plain data (picklable, sent to a worker) or the error reading it."""

    label: str  # where it is written: `policies/north.yaml`, or `fleet.yaml models[2]`
    source: Path  # the file, resolved: the policy's relative paths and its default store hang off it
    raw: Mapping[str, Any] | None = None
    error: str | None = None

    @property
    def model_name(self) -> str | None:
        """The registered model it names, when that much is readable (a broken policy may still name
        one, and then still counts for the one-policy-per-model rule)."""
        name = self.raw.get("model_name") if isinstance(self.raw, Mapping) else None
        return name if isinstance(name, str) else None

    def config(self) -> Config:
        """The validated policy; a ConfigError naming the file (and entry) and the key."""
        if self.error is not None:
            raise ConfigError(self.error)
        return parse_config(self.raw, origin=self.label, source=self.source)


def read_members(paths: Sequence[Path]) -> list[Member]:
    """Every policy under `paths` (files, or folders of files, not recursive), each file once, in the
    order given and by name within a folder."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
            if not found:
                raise FleetError(f"--policies {path}: no policy files (*.yaml, *.yml) in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FleetError(f"--policies {path}: no such file or folder")
    seen: set[Path] = set()
    members: list[Member] = []
    for file in files:
        if file.resolve() not in seen:
            seen.add(file.resolve())
            members += _read_file(file)
    return members


def _read_file(path: Path) -> list[Member]:
    source = path.resolve()
    try:
        raw = read_yaml(path)
    except ConfigError as exc:
        return [Member(str(path), source, error=str(exc))]
    if not (isinstance(raw, Mapping) and "models" in raw):
        return [Member(str(path), source, raw=raw if isinstance(raw, Mapping) else None,
                       error=None if isinstance(raw, Mapping) else
                       f"{path}: the file must be a mapping of policy keys, got {type(raw).__name__}")]
    if unknown := [str(k) for k in raw if k not in FLEET_KEYS]:
        return [Member(str(path), source, error=f"{path}: {unknown[0]} is not a fleet file key; a fleet file "
                                                "holds defaults: (policy keys) and models: (a list), nothing else")]
    defaults, models = raw.get("defaults") or {}, raw.get("models")
    if not isinstance(defaults, Mapping):
        return [Member(str(path), source, error=f"{path}: defaults must be a mapping of policy keys")]
    if not isinstance(models, list) or not models:
        return [Member(str(path), source, error=f"{path}: models must be a non-empty list of policies")]
    return [Member(f"{path} models[{i}]", source, raw=merge(defaults, entry)) if isinstance(entry, Mapping)
            else Member(f"{path} models[{i}]", source, error=f"{path}: models[{i}] must be a mapping of policy keys")
            for i, entry in enumerate(models)]
