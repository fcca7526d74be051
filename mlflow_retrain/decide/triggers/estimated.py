"""`estimated_metric`: the newest rows' metric estimated without their labels, above its max.

Why it is built this way: docs/design.md#decide-triggers-estimated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mlflow_retrain.decide.observations import Observations
from mlflow_retrain.decide.triggers import PolicyContext, Trigger
from mlflow_retrain.decide.triggers.threshold import crosses
from mlflow_retrain.decide.verdicts import TriggerResult, number


@dataclass(frozen=True)
class EstimatedMetric(Trigger):
    name: ClassVar[str] = "estimated_metric"
    rank: ClassVar[int] = 15
    advice: ClassVar[str] = "its limit is stricter than the model's own estimated error: loosen it past that"
    needs: ClassVar[frozenset[str]] = frozenset({"estimate"})
    max: float | None = None
    min: float | None = None

    @classmethod
    def read(cls, options, policy: PolicyContext) -> EstimatedMetric:
        return cls(max=options.get("max", float), min=options.get("min", float))

    def validate(self, options, policy: PolicyContext) -> None:
        from mlflow_retrain.measure.estimate import ESTIMABLE

        needed = "min" if policy.higher_is_better else "max"
        if policy.metric not in ESTIMABLE[policy.task]:
            raise options.fail(needed, f"needs a metric with a label-free estimate ({', '.join(ESTIMABLE[policy.task])} "
                                       f"for {policy.task}), not {policy.metric}")
        if getattr(self, needed) is None:
            raise options.fail(needed, f"is required for metric {policy.metric}")

    def limit(self, higher_is_better: bool) -> float | None:
        return self.min if higher_is_better else self.max

    def check(self, seen: Observations) -> TriggerResult:
        estimate, limit = seen.estimate, self.limit(seen.higher_is_better)
        if estimate is None:
            return TriggerResult(False, self.name, "no estimate: no rows in the newest window", {"limit": limit})
        fired = crosses(estimate, higher_is_better=seen.higher_is_better, limit=limit)
        sign = ("<" if fired else ">=") if seen.higher_is_better else (">" if fired else "<=")
        bound = "min" if seen.higher_is_better else "max"
        return TriggerResult(fired, self.name, f"estimated {seen.metric} {number(estimate)} (no labels yet) {sign} "
                                               f"{bound} {number(limit)}", {"estimate": estimate, "limit": limit})

    def mark(self, seen: Observations) -> bool:
        return crosses(seen.estimate, higher_is_better=seen.higher_is_better, limit=self.limit(seen.higher_is_better))
