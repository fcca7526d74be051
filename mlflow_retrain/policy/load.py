"""Reading `retrain.yaml`: YAML that refuses a key given twice, then `parse.parse_config`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mlflow_retrain.base.errors import ConfigError
from mlflow_retrain.policy.config import Config
from mlflow_retrain.policy.parse import parse_config


class DuplicateKeyError(yaml.YAMLError):
    """A mapping of the policy file names one key twice (YAML itself keeps the last silently)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping: which one counts is a guess."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # keys merged in (`<<: *base`) may be overridden, as YAML intends
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                where = ".".join(map(str, [*self._path(node), key]))
                raise DuplicateKeyError(f"{where} is given twice (lines {seen[key]} and {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def _path(self, node: yaml.Node) -> list[Any]:
        """The keys leading to `node` from the document's root (for the error message)."""
        return self._parents.get(id(node), [])

    def construct_document(self, node: yaml.Node) -> Any:
        self._parents: dict[int, list[Any]] = {}
        self._walk(node, [])
        return super().construct_document(node)

    def _walk(self, node: yaml.Node, path: list[Any]) -> None:
        if id(node) in self._parents:  # an alias of a node already seen
            return
        self._parents[id(node)] = path
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    self._walk(value_node, [*path, key_node.value])
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, [*path, index])


def load_config(path: str | Path) -> Config:
    """Read and validate `retrain.yaml`; every problem is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: policy file not found; pass --config PATH (see docs/policy.md)")
    return parse_config(read_yaml(path), origin=str(path), source=path.resolve())


def read_yaml(path: Path) -> Any:
    """A policy file's YAML as plain data (a key given twice refused); the fleet reads its files with
    this too, so a policy means the same in a fleet as alone."""
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
