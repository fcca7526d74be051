"""What drift is measured on and how, and what it gives: plain values, no data frame.

The policy's `monitoring.drift` (parsed in `policy/`) becomes a `DriftConfig` here, below the policy,
because every drift measure (`drift.DriftMeter`, Evidently's report, the cycle, the monitor, the
backtest) is handed it, and a window's result is `DriftNumbers`, the value the decision core reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from mlflow_retrain.base.errors import ConfigError

# Evidently's stattest names a column may be given (`monitoring.drift.columns.<col>.method`); the
# p-value tests drift when the p-value is below the threshold, the distances when at or above it
P_VALUE_METHODS = ("ks", "chisquare", "z")
DRIFT_METHODS = (*P_VALUE_METHODS, "wasserstein", "jensenshannon")
NUMERIC_METHODS = ("ks", "wasserstein")  # Evidently refuses them on labels
LABEL_METHODS = ("chisquare", "z")  # ... and these on numbers


@dataclass(frozen=True)
class ColumnDriftRule:
    """`monitoring.drift.columns.<column>`: the test and/or threshold replacing Evidently's default choice."""

    column: str
    method: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class DriftConfig:
    """`monitoring.drift`: which features drift is measured on, and how.

    `exclude` leaves features out of every drift number (trigger, monitor, dashboard, backtest, the
    cycle's report): a calendar column (hour, weekday, a working-day flag) differs between a short
    window and a long training window by construction, so it would "drift" in every window.
    """

    exclude: tuple[str, ...] = ()
    columns: tuple[ColumnDriftRule, ...] = ()

    def rule(self, column: str) -> ColumnDriftRule | None:
        return next((r for r in self.columns if r.column == column), None)

    def measured(self, features: tuple[str, ...] | list[str]) -> list[str]:
        """The features drift is measured on, in their order."""
        return [c for c in features if c not in self.exclude]

    def check(self, features: tuple[str, ...] | list[str], categorical: tuple[str, ...] | list[str]) -> None:
        """Refuse what the policy file alone could not show: a column that is not a feature (the data
        resolves the features when `data.features` is left out) and a method that does not fit its
        column's kind (true/false columns are labels, `drift.for_evidently`)."""
        named = [*self.exclude, *(r.column for r in self.columns)]
        if unknown := [c for c in dict.fromkeys(named) if c not in features]:
            raise ConfigError(f"monitoring.drift names {unknown}, which are not features "
                              f"(features: {', '.join(map(str, features))})")
        if not self.measured(features):
            raise ConfigError(ALL_EXCLUDED)
        for rule in self.columns:
            if wrong := unfit_method(rule, rule.column in categorical):
                raise ConfigError(f"monitoring.drift.columns.{rule.column}.method {wrong}")


ALL_EXCLUDED = ("monitoring.drift.exclude leaves out every feature, so drift would measure nothing; "
                "remove the data_drift trigger instead")


def unfit_method(rule: ColumnDriftRule, labels: bool) -> str | None:
    """Why `rule.method` cannot test this kind of column (Evidently refuses it), or None if it can."""
    if rule.method not in (NUMERIC_METHODS if labels else LABEL_METHODS):
        return None
    kind, fits = ("labels", LABEL_METHODS) if labels else ("numbers", NUMERIC_METHODS)
    return (f"{rule.method} does not test {kind} ({rule.column} holds {kind}); use one of "
            f"{', '.join((*fits, 'jensenshannon'))}")


class Columns(Protocol):
    """The data's columns as a drift measure reads them (the policy's `DataConfig`, resolved against
    the data: `features` and `categorical` are set)."""

    @property
    def features(self) -> tuple[str, ...] | None: ...

    @property
    def categorical(self) -> tuple[str, ...] | None: ...

    @property
    def drift(self) -> DriftConfig: ...


@dataclass(frozen=True)
class DriftNumbers:
    """Feature drift of a window against the model's training rows (Evidently's DataDriftPreset headline)."""

    drift_share: float
    drifted_columns: int
    total_columns: int
    column_scores: dict[str, float] = field(default_factory=dict)
