"""The trigger contract: one reason to retrain is one `Trigger` class in one file of this folder.

A class says everything about its trigger: the key it is configured under in `retrain.yaml`
(`name`) and how its options are read and checked (`read`, `validate`; errors naming the key), what it needs
observed beyond the window scores (`needs`, e.g. `{"drift"}`) and how many recent windows it reads
(`depth`), its verdict over `Observations` (`check`: a `TriggerResult` with reason and evidence), and
whether the monitor's dashboard marks a single window as crossing it (`mark`). The files here are
found by `decide.plugins`; a package of your own registers more through the entry point group
`mlflow_retrain.triggers`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

from mlflow_retrain.decide.observations import Observations
from mlflow_retrain.decide.settings import Options
from mlflow_retrain.decide.verdicts import TriggerResult
from mlflow_retrain.measure.names import higher_is_better


@dataclass(frozen=True)
class PolicyContext:
    """What a trigger's parser may need from the rest of the policy file."""

    task: str
    metric: str

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)


class Trigger:
    """Base of every trigger; subclasses are frozen dataclasses of their options."""

    name: ClassVar[str]
    rank: ClassVar[int] = 100  # where its verdict sits among the others (reason text, retrain.trigger tag)
    needs: ClassVar[frozenset[str]] = frozenset()  # observations beyond the window scores: "drift"
    debounced: ClassVar[bool] = False  # triggers.debounce (k of n windows) applies, through `mark`
    advice: ClassVar[str] = "loosen its options"  # what to change when it fires on every window (`fires_always`)

    @classmethod
    def parse(cls, triggers: Options, policy: PolicyContext) -> "Trigger | None":
        """Read the mapping `triggers.<name>`; None if unset. Unknown keys are refused (`done`) before
        the values are checked against each other (`validate`). A trigger configured by a scalar
        (`max_age: 30d`) overrides this."""
        if (options := triggers.sub(cls.name)) is None:
            return None
        trigger = cls.read(options, policy)
        options.done()
        trigger.validate(options, policy)
        return trigger

    @classmethod
    def read(cls, options: Options, policy: PolicyContext) -> "Trigger":
        """The trigger from its options (`options.get(key, type, default)`, errors naming the key)."""
        raise NotImplementedError

    def validate(self, options: Options, policy: PolicyContext) -> None:
        """Refuse values that are wrong together or for this policy (`raise options.fail(key, why)`)."""

    def check(self, seen: Observations) -> TriggerResult:
        raise NotImplementedError

    def mark(self, seen: Observations) -> bool:
        """Whether the one window in `seen` crosses this trigger (the dashboard's marks, debounce)."""
        return False

    def below_floor(self, own: float | None, *, metric: str, higher_is_better: bool) -> str | None:
        """Why this trigger will fire always, given the model's own metric on its training-time holdout
        (the floor a fresh model reaches); None when that cannot be told from it."""
        return None

    @property
    def depth(self) -> int:
        """How many recent monitoring windows `check` reads."""
        return 1

    @property
    def options(self) -> Any:
        """`config.triggers.<name>`: the trigger itself, or its one value for a scalar key."""
        return self

    def to_dict(self) -> Any:
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else None



MIN_WINDOWS = 4  # fewer windows than this, all fired, are too few to call a trigger "always"


def fires_always(triggers: Sequence[Trigger], history: Mapping[str, Sequence[bool]]) -> list[str]:
    """A sentence per trigger that fired on every window of `history` (by name, oldest first): a trigger
    that always fires is no signal (a derived column's drift, a limit below the model's floor), only a
    retrain every cycle."""
    out = []
    for trigger in triggers:
        fired = history.get(trigger.name, ())
        if len(fired) >= MIN_WINDOWS and all(fired):
            out.append(f"trigger {trigger.name} fired on {len(fired)} of {len(fired)} windows: it fires always; "
                       f"{trigger.advice}")
    return out
