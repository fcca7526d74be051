"""`max_age`: schedule-style freshness, Production older than the allowed age (in data time).

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


def max_age(trained_at: datetime | None, *, as_of: datetime, max_age: timedelta, unit: str = DAY) -> TriggerResult:
    """Schedule-style freshness: Production older than the allowed age (both spans in `unit`)."""
    kind = "max_age"
    if trained_at is None:
        return TriggerResult(False, kind, "no Production model")
    age = as_of - trained_at
    fired = age > max_age
    return TriggerResult(fired, kind, f"Production trained {span_in(age, unit)} before {moment(as_of, unit)}, "
                                      f"{'more' if fired else 'no more'} than max_age {span_in(max_age, unit)}",
                         {"age_seconds": age.total_seconds(), "max_age_seconds": max_age.total_seconds()})


@dataclass(frozen=True)
class MaxAge(Trigger):
    name: ClassVar[str] = "max_age"
    rank: ClassVar[int] = 40
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
        return max_age(trained_at, as_of=seen.as_of.to_pydatetime(), max_age=self.span, unit=seen.unit)
