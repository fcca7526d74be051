"""What the decision core reads of the policy: protocols the policy's parser and `Config` implement,
so the core never imports the policy.

A trigger's class parses its own key of `retrain.yaml` (`Trigger.read`, `GateCheck.parse`): it is
handed one mapping of the file as `Options`, whose errors name the file and the key. `assess` and
`gate.judge` read the parsed policy through `Scored` and what each adds to it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol

from mlflow_retrain.base.errors import ConfigError


class Options(Protocol):
    """One mapping of the policy file (`policy.section.Section`)."""

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        """The value of `name`, checked to be of `kind`; `default` when unset."""

    def span(self, name: str, default: timedelta | None = None) -> timedelta | None:
        """The span (`30d`, `12h`) under `name`; `default` when unset."""

    def sub(self, name: str) -> Options | None:
        """The mapping under `name`; None when unset."""

    def positive(self, name: str, value: float | None) -> None:
        """Refuse a value of `name` that is zero or less."""

    def fail(self, name: str, message: str) -> ConfigError:
        """The error to raise about `name`: one line naming the file and the key."""

    def done(self) -> None:
        """Refuse the keys nobody read (a typo), listing the known ones."""


class Scored(Protocol):
    """The metric a policy monitors, and which way is better."""

    @property
    def metric(self) -> str: ...

    @property
    def higher_is_better(self) -> bool: ...
