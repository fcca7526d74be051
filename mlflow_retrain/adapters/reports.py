"""Thin wrappers over Evidently 0.7: a report in, (headline numbers, self-contained HTML) out.

Why it is built this way: docs/design.md#adapters-reports.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning

from mlflow_retrain.base import tags as T
from mlflow_retrain.measure.columns import DriftConfig, DriftNumbers
from mlflow_retrain.measure.drift import drift_columns, for_evidently
from mlflow_retrain.policy.config import DataConfig

if TYPE_CHECKING:
    from mlflow_retrain.policy.config import Config
    from mlflow_retrain.adapters.registry import VersionInfo

log = logging.getLogger(__name__)

PREDICTION = "prediction"
DEFAULT_DRIFT_SHARE = 0.5  # DataDriftPreset's own, and the `data_drift` trigger's default max_drift_share


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


@contextmanager
def expected_nans() -> Iterator[None]:
    """Evidently's statistics where NaN is the right answer, not a fault: the correlation of a column
    constant in the window (a flag, a site id) is 0/0, a window of one row has no covariance nor
    error distribution, a column with no values has no share of infinite ones. Those numbers are
    blank in the report; numpy's and scipy's warnings for exactly these are not printed."""
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Degrees of freedom <= 0", RuntimeWarning)
        warnings.filterwarnings("ignore", "One or more sample arguments is too small", RuntimeWarning)
        yield


def _no_values(values: pd.Series) -> bool:
    present = values.replace([np.inf, -np.inf], np.nan) if pd.api.types.is_numeric_dtype(values) else values
    return not present.notna().any()


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, spec: DataConfig,
                 html_path: Path | None = None, *, config: "Config | None" = None,
                 version: "VersionInfo | str | None" = None, window: Any = None,
                 drift_share: float | None = None) -> DriftNumbers:
    """Feature drift of `current` against the model's training rows (`reference`).

    The dataset verdict uses `drift_share`, else the policy's `data_drift.max_drift_share` (`config`),
    else Evidently's 0.5; `config`, `version` and `window` (the current window) make the heading."""
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    rules = spec.drift.columns
    current, _ = drift_columns(current, spec)
    reference, spec = drift_columns(reference, spec)
    # a column with no value on one side has no drift statistic: Evidently refuses the whole report
    # ("An empty column ... was provided"); it is left out of the count, as DriftMeter does
    empty = [c for c in spec.features if _no_values(current[c]) or _no_values(reference[c])]
    if empty:
        log.info("drift report: %s left out (no values in the window or the reference)", ", ".join(empty))
        spec = dataclasses.replace(spec, features=tuple(c for c in spec.features if c not in empty),
                                   categorical=tuple(c for c in spec.categorical or () if c not in empty))
        current, reference = current[list(spec.features)], reference[list(spec.features)]
        rules = tuple(r for r in rules if r.column not in empty)
    columns = list(spec.features)
    if not columns:
        return DriftNumbers(math.nan, 0, 0, {})
    definition = _definition(spec)
    limit = policy_drift_share(config) if drift_share is None else drift_share
    share = evidently_drift_share(limit, len(columns))
    heading = drift_heading(config, version, window, limit, share, spec.drift)
    methods = {r.column: r.method for r in rules if r.method is not None}
    thresholds = {r.column: r.threshold for r in rules if r.threshold is not None}
    report = Report([DataDriftPreset(drift_share=share, per_column_method=methods or None,
                                     per_column_threshold=thresholds or None)],
                    metadata=heading.metadata, tags=heading.tags)
    with expected_nans():
        snapshot = report.run(Dataset.from_pandas(current, data_definition=definition),
                              Dataset.from_pandas(reference, data_definition=definition), name=heading.title)
    numbers = parse_drift(snapshot.dict(), len(columns))
    if html_path is not None:
        save_html(snapshot, heading, html_path)
    return numbers


def policy_drift_share(config: "Config | None") -> float:
    """The `data_drift` trigger's max_drift_share when the policy configures it, else Evidently's 0.5."""
    trigger = None if config is None else config.triggers.data_drift
    return DEFAULT_DRIFT_SHARE if trigger is None else float(trigger.max_drift_share)


def evidently_drift_share(limit: float, columns: int) -> float:
    """DataDriftPreset's `drift_share` that gives the trigger's verdict. Evidently says "detected" when
    share >= drift_share, the trigger fires when share > max_drift_share; they differ only when some
    k of `columns` equals the limit exactly (7 of 10 at 0.7), and then the next float up agrees
    (`x >= nextafter(m)` is `x > m` for floats)."""
    if any(k / columns == limit for k in range(columns + 1)):
        return math.nextafter(limit, math.inf)
    return limit


@dataclass(frozen=True)
class Heading:
    """What a report is about: its title, the lines under it, and the same as snapshot metadata/tags."""

    title: str
    lines: tuple[str, ...]
    metadata: dict[str, str]
    tags: list[str]


def _about(config: "Config | None", version: "VersionInfo | str | None", window: Any) -> tuple[str, dict[str, str]]:
    number = getattr(version, "version", version)
    model = config.model_name if config is not None else None
    name = " ".join(p for p in (model, f"v{number}" if number else None) if p) or "model"
    meta = {"model": model or "", "model_version": str(number or "")}
    if window is not None:
        meta["current_window"] = window.iso() if hasattr(window, "iso") else str(window)
    trained = getattr(version, "tags", {}).get(T.TRAIN_WINDOW) if version is not None else None
    if trained:
        meta["reference_window"] = trained
    return name, {k: v for k, v in meta.items() if v}


def _windows(meta: dict[str, str], reference: bool) -> list[str]:
    lines = []
    if reference:
        trained = meta.get("reference_window")
        lines.append(f"Reference: the version's training window {trained}" if trained else
                     "Reference: the version's training rows")
    if "current_window" in meta:
        lines.append(f"Current: the monitoring window {meta['current_window']}")
    return lines


def drift_heading(config: "Config | None", version: "VersionInfo | str | None", window: Any, limit: float,
                  share: float | None = None, drift: DriftConfig | None = None) -> Heading:
    name, meta = _about(config, version, window)
    configured = config is not None and config.triggers.data_drift is not None
    if configured:
        policy = (f"Policy: data_drift fires when the share of drifted columns > {limit:g} (max_drift_share); "
                  f"Evidently's dataset verdict below uses the same rule")
    else:
        policy = (f"{'Policy: no data_drift trigger; d' if config is not None else 'D'}ataset drift threshold "
                  f"{limit:g} (Evidently's verdict: drift share >= threshold)")
    if share is not None and share != limit:
        policy += (f" (Evidently shows {share!r}, the next number above {limit:g}: a share of exactly {limit:g} "
                   f"is no drift, as for the trigger)")
    tests = _tests_line(drift or DriftConfig())
    meta.update(kind="data_drift", max_drift_share=f"{limit:g}")
    title = f"Data drift: {name}" + (f", {meta['current_window']}" if "current_window" in meta else "")
    return Heading(title, (*_windows(meta, True), policy, tests), meta,
                   ["data_drift", *([f"v{meta['model_version']}"] if "model_version" in meta else [])])


def _tests_line(drift: DriftConfig) -> str:
    """The heading's line on the per-column choices: Evidently's defaults, less what the policy sets."""
    line = "Per-column tests and thresholds: Evidently's defaults"
    chosen = [f"{r.column}: {' '.join(p for p in (r.method, None if r.threshold is None else f'threshold {r.threshold:g}') if p)}"
              for r in drift.columns]
    if chosen:
        line += f", except {'; '.join(chosen)} (monitoring.drift.columns)"
    if drift.exclude:
        line += f"; not measured: {', '.join(drift.exclude)} (monitoring.drift.exclude)"
    return line


def quality_heading(config: "Config | None", version: "VersionInfo | str | None", window: Any) -> Heading:
    name, meta = _about(config, version, window)
    lines = _windows(meta, False)
    if config is not None:
        metric = config.metric
        meta["metric"] = metric
        side = "min" if config.higher_is_better else "max"
        rules = []
        if config.threshold_limit is not None:
            rules.append(f"metric_threshold fires when {metric} {'<' if side == 'min' else '>'} {config.threshold_limit:g}")
            meta["trigger_threshold"] = f"{config.threshold_limit:g}"
        if config.gate_threshold is not None:
            rules.append(f"the gate promotes a candidate only with {metric} {'>=' if side == 'min' else '<='} "
                         f"{config.gate_threshold:g} ({side}_metric)")
            meta["gate_threshold"] = f"{config.gate_threshold:g}"
        lines.append(f"Metric: {metric}" + (f"; policy: {'; '.join(rules)}" if rules else ""))
    meta["kind"] = "model_quality"
    title = f"Model quality: {name}" + (f", {meta['current_window']}" if "current_window" in meta else "")
    return Heading(title, tuple(lines), meta,
                   ["model_quality", *([f"v{meta['model_version']}"] if "model_version" in meta else [])])


def save_html(snapshot: Any, heading: Heading, html_path: Path) -> None:
    """Evidently's self-contained page with our heading above its panels (Evidently 0.7's HTML shows
    neither the snapshot's name nor its metadata)."""
    page = snapshot.get_html_str(as_iframe=False)
    Path(html_path).write_text(with_heading(page, heading), encoding="utf-8")


def with_heading(page: str, heading: Heading) -> str:
    title = html.escape(heading.title)
    lines = "".join(f'<p style="margin:2px 0">{html.escape(line)}</p>' for line in heading.lines)
    block = (f'<header style="font-family:Roboto,Helvetica,Arial,sans-serif;padding:16px 24px 8px;color:#333">'
             f'<h1 style="font-size:22px;font-weight:500;margin:0 0 6px">{title}</h1>{lines}</header>')
    page = page.replace("<head>", f"<head>\n    <title>{title}</title>", 1)
    return page.replace("<body>", f"<body>\n    {block}", 1)


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


def quality_report(scored: pd.DataFrame, spec: DataConfig, task: str, html_path: Path, *,
                   config: "Config | None" = None, version: "VersionInfo | str | None" = None,
                   window: Any = None) -> None:
    """Evidently's model quality preset on a window that carries target and `prediction` columns;
    `config`, `version` and `window` make the heading (metric, trigger and gate thresholds)."""
    from evidently import BinaryClassification, Dataset, MulticlassClassification, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    columns = [*spec.features, spec.target, PREDICTION]
    scored, spec = for_evidently(scored[columns], spec)
    heading = quality_heading(config, version, window)
    if task == "regression":
        definition = _definition(spec, (spec.target, PREDICTION),
                                 regression=[Regression(target=spec.target, prediction=PREDICTION)])
        preset = RegressionPreset()
    else:
        if scored[spec.target].nunique() < 2:
            # Evidently's classification metrics raise on one class ("Cannot compute TPR"); the cycle's
            # own numbers already say "undefined" for such a window
            html_path.write_text(with_heading(
                f"<html><head></head><body><p>Model quality is undefined on this window: every row has "
                f"{html.escape(spec.target)} = {html.escape(repr(scored[spec.target].iloc[0]))} (one class).</p>"
                f"</body></html>", heading), encoding="utf-8")
            return
        kind = BinaryClassification if scored[spec.target].nunique() <= 2 else MulticlassClassification
        definition = _definition(spec, classification=[kind(target=spec.target, prediction_labels=PREDICTION)])
        definition.categorical_columns = [*definition.categorical_columns, spec.target, PREDICTION]
        preset = ClassificationPreset()
    with expected_nans(), warnings.catch_warnings():
        # the preset's error-distribution panels score tiny slices; an undefined r2 there is expected
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        snapshot = Report([preset], metadata=heading.metadata, tags=heading.tags).run(
            Dataset.from_pandas(scored, data_definition=definition), None, name=heading.title)
    save_html(snapshot, heading, html_path)
