"""Whether to retrain: every configured trigger over the observations, then cooldown and force.

Pure: the cycle and `check` feed it from the registry, the backtest from its replay, so both decide
with exactly the same logic (a replay test holds them to it).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Protocol, Sequence

import pandas as pd

from mlflow_retrain.decide.observations import Observations, WindowScore
from mlflow_retrain.decide.settings import Scored
from mlflow_retrain.decide.triggers import Trigger
from mlflow_retrain.decide.verdicts import RetrainDecision, TriggerResult, cooldown, debounce, decide, on_demand
from mlflow_retrain.decide.window import Window
from mlflow_retrain.decide.words import unit_for
from mlflow_retrain.measure.columns import DriftNumbers


class Debounce(Protocol):
    """`triggers.debounce`: a per-window trigger must hold in `k` of the last `n` windows."""

    @property
    def k(self) -> int: ...

    @property
    def n(self) -> int: ...


class TriggerSettings(Protocol):
    """`triggers:` the configured triggers, in rank order, and the settings that apply to them all."""

    @property
    def configured(self) -> Sequence[Trigger]: ...

    @property
    def cooldown(self) -> timedelta | None: ...

    @property
    def debounce(self) -> Debounce | None: ...


class Monitoring(Protocol):
    @property
    def window(self) -> timedelta: ...


class Policy(Scored, Protocol):
    """What deciding whether to retrain reads of the policy (`policy.config.Config`)."""

    @property
    def monitoring(self) -> Monitoring: ...

    @property
    def triggers(self) -> TriggerSettings: ...


def recent_windows(as_of: pd.Timestamp, config: Policy, count: int) -> list[Window]:
    """The `count` monitoring windows ending at `as_of`, oldest first."""
    return Window.recent(as_of, config.monitoring.window, count)


def monitoring_depth(config: Policy) -> int:
    """How many recent windows the triggers look at (the longest trigger, the debounce span)."""
    tc = config.triggers
    return max([t.depth for t in tc.configured] + [tc.debounce.n if tc.debounce else 1])


def out_of_sample(scores: list[WindowScore], seen_until: pd.Timestamp | None) -> list[WindowScore]:
    """The scores with every window that overlaps Production's training rows blanked (a gap).

    On rows it was fitted on a model looks better than it is, so a trend from such a window to a
    later one measures the train/test gap, not decay: counted, it fired the trend trigger after
    almost every retrain of a daily replay. The audit run still logs those windows' metrics.
    """
    if seen_until is None:
        return scores
    return [s if Window.parse(s.window).start >= seen_until else WindowScore(s.window, s.rows, None) for s in scores]


def assess(config: Policy, *, as_of: pd.Timestamp, scores: list[WindowScore], drift: DriftNumbers | None,
           trained_at: pd.Timestamp, seen_until: pd.Timestamp | None, rows_since: int,
           last_retrain_at: pd.Timestamp | None, force: bool, reason: str | None,
           event: str | None = None, estimate: float | None = None,
           last_rejected_at: pd.Timestamp | None = None) -> RetrainDecision:
    """Every configured trigger over plain numbers, then the decision (cooldown, force).

    `seen_until` is the end of Production's training window: the metric triggers only look at
    windows after it.
    """
    tc = config.triggers
    unit = unit_for(config.monitoring.window)
    seen = Observations(metric=config.metric, higher_is_better=config.higher_is_better, as_of=as_of,
                        scores=tuple(out_of_sample(scores, seen_until)), drift=drift, trained_at=trained_at,
                        seen_until=seen_until, rows_since=rows_since, estimate=estimate, unit=unit,
                        rejected_at=last_rejected_at)
    results = [_debounced(trigger, trigger.check(seen), seen, tc.debounce) for trigger in tc.configured]
    if force:
        results.append(on_demand(True, reason, event))
    blocker = None
    if tc.cooldown is not None:
        blocker = cooldown(None if last_retrain_at is None else last_retrain_at.to_pydatetime(),
                           as_of=as_of.to_pydatetime(), span=tc.cooldown, unit=unit)
    return decide(results, cooldown=blocker, forced=force)


def _debounced(trigger: Trigger, result: TriggerResult, seen: Observations, policy: Debounce | None) -> TriggerResult:
    """A per-window trigger that fired must have held in k of the last n windows (`triggers.debounce`)."""
    if policy is None or not trigger.debounced or not result.fired:
        return result
    history = [trigger.mark(dataclasses.replace(seen, scores=(score,))) for score in seen.scores]
    if debounce(history, k=policy.k, n=policy.n):
        return result
    return TriggerResult(False, result.kind, f"{result.reason}, but it held in fewer than {policy.k} of the last "
                                             f"{policy.n} windows (debounce)",
                         {**result.evidence, "debounce_history": history})
