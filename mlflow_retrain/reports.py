"""Thin wrappers over Evidently 0.7: a report in, (headline numbers, self-contained HTML) out.

Evidently is imported lazily (about 3.5 s) so the CLI starts fast and commands that need no report
never pay for it.
"""

from __future__ import annotations

import dataclasses

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning

from mlflow_retrain.config import DataConfig
from mlflow_retrain.decide.observations import DriftNumbers

log = logging.getLogger(__name__)

PREDICTION = "prediction"


@dataclass(frozen=True)
class ReportFile:
    kind: str
    path: Path


def _definition(spec: DataConfig, extra_numeric: tuple[str, ...] = (), **kwargs: Any):
    from evidently import DataDefinition

    numeric = [c for c in spec.features if c not in spec.categorical]
    return DataDefinition(numerical_columns=numeric + list(extra_numeric),
                          categorical_columns=list(spec.categorical), **kwargs)


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def for_evidently(frame: pd.DataFrame, spec: DataConfig) -> tuple[pd.DataFrame, DataConfig]:
    """True/false features as labels: Evidently 0.7's numeric tests subtract values (numpy refuses
    for booleans) and bin them (a window where the flag never changes has no range to bin)."""
    flags = [c for c in spec.features if c in frame.columns and pd.api.types.is_bool_dtype(frame[c])]
    if not flags:
        return frame, spec
    labels = tuple(dict.fromkeys([*(spec.categorical or ()), *flags]))
    return frame.astype({c: str for c in flags}), dataclasses.replace(spec, categorical=labels)


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, spec: DataConfig,
                 html_path: Path | None = None) -> DriftNumbers:
    """Feature drift of `current` against the model's training rows (`reference`)."""
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = list(spec.features)
    current, _ = for_evidently(current[columns], spec)
    reference, spec = for_evidently(reference[columns], spec)
    definition = _definition(spec)
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    numbers = parse_drift(snapshot.dict(), len(columns))
    if html_path is not None:
        snapshot.save_html(str(html_path))
    return numbers


def parse_drift(snapshot: dict[str, Any], total_columns: int) -> DriftNumbers:
    """Read the DriftedColumnsCount and per-column ValueDrift entries of a snapshot dict."""
    share, count, scores = math.nan, 0, {}
    for metric in snapshot.get("metrics", []):
        name = metric.get("metric_name", "")
        value = metric.get("value")
        if name.startswith("DriftedColumnsCount") and isinstance(value, dict):
            share, count = _as_float(value.get("share")), int(_as_float(value.get("count")))
        elif name.startswith("ValueDrift"):
            column = metric.get("config", {}).get("column")
            if column is not None:
                scores[str(column)] = _as_float(value)
    return DriftNumbers(share, count, total_columns, scores)


def quality_report(scored: pd.DataFrame, spec: DataConfig, task: str, html_path: Path) -> None:
    """Evidently's model quality preset on a window that carries target and `prediction` columns."""
    from evidently import BinaryClassification, Dataset, MulticlassClassification, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    columns = [*spec.features, spec.target, PREDICTION]
    scored, spec = for_evidently(scored[columns], spec)
    if task == "regression":
        definition = _definition(spec, (spec.target, PREDICTION),
                                 regression=[Regression(target=spec.target, prediction=PREDICTION)])
        preset = RegressionPreset()
    else:
        if scored[spec.target].nunique() < 2:
            # Evidently's classification metrics raise on one class ("Cannot compute TPR"); the cycle's
            # own numbers already say "undefined" for such a window
            html_path.write_text(f"<html><body><p>Model quality is undefined on this window: every row has "
                                 f"{spec.target} = {scored[spec.target].iloc[0]!r} (one class).</p></body></html>")
            return
        kind = BinaryClassification if scored[spec.target].nunique() <= 2 else MulticlassClassification
        definition = _definition(spec, classification=[kind(target=spec.target, prediction_labels=PREDICTION)])
        definition.categorical_columns = [*definition.categorical_columns, spec.target, PREDICTION]
        preset = ClassificationPreset()
    with warnings.catch_warnings():
        # the preset's error-distribution panels score tiny slices; an undefined r2 there is expected
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        snapshot = Report([preset]).run(Dataset.from_pandas(scored, data_definition=definition), None)
    snapshot.save_html(str(html_path))
