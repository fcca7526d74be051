"""The backtest's choice beyond triggers: training window, holdout and gate kind as dimensions.

Why it is built this way: docs/design.md#usecases-search.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable, Sequence

import pandas as pd

from mlflow_retrain.base.errors import ConfigError
from mlflow_retrain.decide import format_span
from mlflow_retrain.policy.config import Config
from mlflow_retrain.usecases.replay import Policy, PolicyState

DIMENSIONS = ("window", "holdout", "gate")
# the gate kinds beside the configured one, as the `validation:` keys that select them; a kind the
# installed version does not know (no such field) is not offered
GATE_KINDS: dict[str, dict[str, Any]] = {"not-worse": {"compare": "not_worse"}}


@dataclass(frozen=True)
class Variant:
    """One value of one dimension: the `training:` or `validation:` keys it sets in the policy file."""

    dimension: str
    label: str  # 7d, all, not-worse
    training: tuple[tuple[str, Any], ...] = ()
    validation: tuple[tuple[str, Any], ...] = ()
    note: str = ""  # where the value comes from

    def apply(self, config: Config) -> Config:
        return dataclasses.replace(
            config, training=dataclasses.replace(config.training, **dict(self.training)),
            validation=dataclasses.replace(config.validation, **dict(self.validation)))

    def policy(self, policy: Policy, config: Config) -> Policy:
        """`policy` under this value; the variant of a schedule keeps its cadence."""
        return dataclasses.replace(policy, name=f"{policy.name}/{self.dimension}-{self.label}",
                                   config=self.apply(policy.config), equal_budget=False)

    def keys(self) -> dict[str, dict[str, Any]]:
        """The policy file's keys, by section, as `retrain.yaml` writes them."""
        def written(value: Any) -> Any:
            return format_span(value) if isinstance(value, timedelta) else value

        return {section: {k: written(v) for k, v in pairs}
                for section, pairs in (("training", self.training), ("validation", self.validation)) if pairs}

    def describe(self) -> str:
        return f"{self.dimension} {self.label}" + (f" ({self.note})" if self.note else "")


def parse_search(text: str | None) -> list[str]:
    """`--search window,holdout,gate`: the dimensions to search beside the triggers."""
    names = [n.strip() for n in text.split(",")] if text else []
    unknown = [n for n in names if n not in DIMENSIONS]
    if unknown:
        raise ConfigError(f"--search {unknown[0]!r}: choose from {', '.join(DIMENSIONS)}")
    return list(dict.fromkeys(names))


def _days(span: timedelta, floor: timedelta) -> timedelta:
    """A span in whole days (a step if shorter), at least `floor`."""
    whole = timedelta(days=round(span / timedelta(days=1))) if span >= timedelta(days=1) else span
    return max(whole, floor)


def variants(config: Config, first: pd.Timestamp, last: pd.Timestamp, every: timedelta,
             dimensions: Iterable[str]) -> list[Variant]:
    """The values tried beside the configured ones, one dimension at a time: the training window
    as all the history there is and half the configured one; the holdout a half and a quarter of
    the configured one (at least a step); each gate kind the installed version knows."""
    training = config.training
    out: list[Variant] = []
    for dimension in dimensions:
        if dimension == "window":
            everything = timedelta(days=math.ceil((last - first) / timedelta(days=1)))
            if everything > training.window:
                out.append(Variant("window", "all", (("window", everything),),
                                   note=f"{format_span(everything)}: all the history there was"))
            half = _days(training.window / 2, every)
            if half < training.window:
                out.append(Variant("window", format_span(half), (("window", half),)))
        elif dimension == "holdout":
            tried = {training.holdout}
            for share in (2, 4):
                value = _days(training.holdout / share, every)
                if value not in tried:
                    tried.add(value)
                    out.append(Variant("holdout", format_span(value), (("holdout", value),)))
        else:
            fields = {f.name for f in dataclasses.fields(config.validation)}
            for label, keys in GATE_KINDS.items():
                if set(keys) <= fields and any(getattr(config.validation, k) != v for k, v in keys.items()):
                    out.append(Variant("gate", label, validation=tuple(keys.items())))
    return out


def shortlist(states: Sequence[PolicyState], budget: float) -> list[Policy]:
    """The policies replayed under each variant: the cheapest first (by the retrains they made
    as configured, about the fits they cost) while their retrains fit in `budget`."""
    chosen, spent = [], 0
    for state in sorted(states, key=lambda s: s.retrains):
        if spent + state.retrains + 1 > budget:
            break
        chosen.append(state.policy)
        spent += state.retrains + 1
    return chosen


@dataclass
class Search:
    """What the search replayed: the variants, the policies under each, their fits and the budget."""

    dimensions: list[str]
    variants: dict[str, Variant]  # variant policy name -> its value
    policies: list[str]
    fits: int
    budget: float

    def to_dict(self) -> dict[str, Any]:
        values = list(dict.fromkeys(v.describe() for v in self.variants.values()))
        return {"dimensions": self.dimensions, "values": values, "policies": self.policies, "fits": self.fits,
                "budget": round(self.budget)}


def search(config: Config, data: Any, states: Sequence[PolicyState], steps: list[pd.Timestamp], every: timedelta,
           dimensions: Sequence[str], budget: float, **replay: Any) -> tuple[list[PolicyState], Search]:
    """Replay the shortlist under each variant, one replay (its own fits) per variant; `budget`
    fits in all, shared evenly (the variants' states, and what was replayed)."""
    from contextlib import closing

    from mlflow_retrain.usecases.replay import Replay, replay_policies

    values = variants(config, data.first, steps[-1], every, dimensions)
    chosen = shortlist(states, budget / len(values)) if values else []
    out: list[PolicyState] = []
    names: dict[str, Variant] = {}
    fits = 0
    for value in values if chosen else []:
        policies = [value.policy(p, config) for p in chosen]
        with closing(Replay(value.apply(config), data, **replay)) as run:
            out += replay_policies(run, policies, steps, every)
        fits += run.fit_count
        names.update({p.name: value for p in policies})
    return out, Search(list(dimensions), names, [p.name for p in chosen], fits, budget)
