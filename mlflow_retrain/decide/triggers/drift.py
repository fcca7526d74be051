"""`data_drift`: the share of feature columns that drifted from Production's training rows.

```yaml
triggers:
  data_drift: {max_drift_share: 0.7}   # Evidently's DataDriftPreset share, 0..1
```
Needs drift observed on the latest window; the dashboard marks each window over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlflow_retrain.decide.observations import Observations
from mlflow_retrain.decide.triggers import PolicyContext, Trigger
from mlflow_retrain.decide.verdicts import TriggerResult, number


def data_drift(drift_share: float | None, *, max_drift_share: float, drifted_columns: int | None = None,
               total_columns: int | None = None) -> TriggerResult:
    kind = "data_drift"
    if drift_share is None or np.isnan(drift_share):
        return TriggerResult(False, kind, "no drift measured: no labelled rows in the window")
    fired = drift_share > max_drift_share
    columns = f" ({drifted_columns} of {total_columns} columns)" if drifted_columns is not None else ""
    return TriggerResult(fired, kind, f"drift share {number(drift_share)}{columns} {'>' if fired else '<='} max "
                                      f"{number(max_drift_share)}",
                         {"drift_share": drift_share, "drifted_columns": drifted_columns,
                          "total_columns": total_columns, "limit": max_drift_share})


@dataclass(frozen=True)
class DataDrift(Trigger):
    name: ClassVar[str] = "data_drift"
    rank: ClassVar[int] = 30
    advice: ClassVar[str] = ("exclude the derived, calendar or seasonal columns that differ from the training "
                             "rows by construction (monitoring.drift.exclude), or raise max_drift_share")
    needs: ClassVar[frozenset[str]] = frozenset({"drift"})
    max_drift_share: float = 0.5

    @classmethod
    def read(cls, options, policy: PolicyContext) -> "DataDrift":
        return cls(max_drift_share=options.get("max_drift_share", float, cls.max_drift_share))

    def validate(self, options, policy: PolicyContext) -> None:
        if not 0 <= self.max_drift_share <= 1:
            raise options.fail("max_drift_share", f"must be between 0 and 1, got {self.max_drift_share}")

    def check(self, seen: Observations) -> TriggerResult:
        drift = seen.drift
        return data_drift(None if drift is None else drift.drift_share, max_drift_share=self.max_drift_share,
                          drifted_columns=None if drift is None else drift.drifted_columns,
                          total_columns=None if drift is None else drift.total_columns)

    def mark(self, seen: Observations) -> bool:
        return seen.drift is not None and seen.drift.drift_share > self.max_drift_share
