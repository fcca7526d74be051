"""`new_data`: enough labelled rows arrived since Production was trained.

```yaml
triggers:
  new_data: {min_rows: 1000}
```
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from mlflow_retrain.decide.observations import Observations
from mlflow_retrain.decide.triggers import PolicyContext, Trigger
from mlflow_retrain.decide.verdicts import TriggerResult


def new_data(rows: int, *, min_rows: int, since: datetime | None = None) -> TriggerResult:
    kind = "new_data"
    fired = rows >= min_rows
    after = f" since {since.isoformat()}" if since else ""
    return TriggerResult(fired, kind, f"{rows} new labelled rows{after} {'>=' if fired else '<'} {min_rows}",
                         {"rows": rows, "min_rows": min_rows})


@dataclass(frozen=True)
class NewData(Trigger):
    name: ClassVar[str] = "new_data"
    rank: ClassVar[int] = 50
    advice: ClassVar[str] = "min_rows is fewer than a window brings: raise it"
    min_rows: int = 1000

    @classmethod
    def read(cls, options, policy: PolicyContext) -> "NewData":
        return cls(min_rows=options.get("min_rows", int, cls.min_rows))

    def validate(self, options, policy: PolicyContext) -> None:
        options.positive("min_rows", self.min_rows)

    def check(self, seen: Observations) -> TriggerResult:
        since = None if seen.trained_at is None else seen.trained_at.to_pydatetime()
        return new_data(seen.rows_since, min_rows=self.min_rows, since=since)
