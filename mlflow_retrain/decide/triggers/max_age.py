"""`max_age`: schedule-style freshness, Production older than the allowed age (in data time). A
rejected candidate is as fresh as a retrain: the trigger then waits one max age after it, as a
schedule waits for its next due time, instead of retraining every cycle until one passes.

```yaml
triggers:
  max_age: 120d
```
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from mlflow_retrain.decide.observations import Observations
from mlflow_retrain.decide.triggers import PolicyContext, Trigger
from mlflow_retrain.decide.verdicts import TriggerResult
from mlflow_retrain.decide.words import DAY, moment, span_in


def max_age(trained_at: datetime | None, *, as_of: datetime, max_age: timedelta, unit: str = DAY,
            rejected_at: datetime | None = None) -> TriggerResult:
    """Schedule-style freshness: Production older than the allowed age (both spans in `unit`), and no
    candidate rejected within the last max age (its next due time is one max age after that rejection)."""
    kind = "max_age"
    if trained_at is None:
        return TriggerResult(False, kind, "no Production model")
    age = as_of - trained_at
    fired = age > max_age
    reason = (f"Production trained {span_in(age, unit)} before {moment(as_of, unit)}, "
              f"{'more' if fired else 'no more'} than max_age {span_in(max_age, unit)}")
    evidence = {"age_seconds": age.total_seconds(), "max_age_seconds": max_age.total_seconds()}
    if fired and rejected_at is not None and rejected_at > trained_at and as_of - rejected_at <= max_age:
        due = rejected_at + max_age
        return TriggerResult(False, kind, f"{reason}, but a candidate trained {span_in(as_of - rejected_at, unit)} "
                                          f"before was rejected: next due {moment(due, unit)}",
                             {**evidence, "rejected_at": rejected_at.isoformat(), "next_due": due.isoformat()})
    return TriggerResult(fired, kind, reason, evidence)


@dataclass(frozen=True)
class MaxAge(Trigger):
    name: ClassVar[str] = "max_age"
    rank: ClassVar[int] = 40
    advice: ClassVar[str] = "max_age is not longer than the windows: lengthen it"
    span: timedelta

    @classmethod
    def parse(cls, triggers, policy: PolicyContext) -> "MaxAge | None":
        span = triggers.span(cls.name)
        return None if span is None else cls(span)

    @property
    def options(self) -> timedelta:
        return self.span

    def to_dict(self) -> float:
        return self.span.total_seconds()

    def check(self, seen: Observations) -> TriggerResult:
        trained_at = None if seen.trained_at is None else seen.trained_at.to_pydatetime()
        rejected_at = None if seen.rejected_at is None else seen.rejected_at.to_pydatetime()
        return max_age(trained_at, as_of=seen.as_of.to_pydatetime(), max_age=self.span, unit=seen.unit,
                       rejected_at=rejected_at)
