"""Choose the retraining policy by replaying history: number of retrains against error.

A sensitive threshold keeps the model fresh but retrains often; a lax one is cheap but leaves a
stale model serving. The backtest measures that trade-off on the user's own data. It replays the
data step by step exactly as the controller would have run at each `--as-of`: the same windows,
`decide.assess` (the same triggers), `evaluate.judge` (the same validation gate) and
`train.fit` (the same training code). The "scratch store" is memory: fitted models live in a cache,
so the real registry is never touched.

Fast without changing results: every policy that retrains at step t needs the same fit (same
window, same parameters), so fits are cached by their `as_of` and shared; window metrics and drift
are cached per (model, window); all policies advance together in one pass; when the
retrain-every-window policy is present every step's fit is known in advance and fitted on all
cores (`jobs`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from tqdm import tqdm

from mlflow_retrain import tags as T
from mlflow_retrain.charts import PolicyPoint, tradeoff_html
from mlflow_retrain.config import Config, TriggersConfig
from mlflow_retrain.data import LabelledData, Window
from mlflow_retrain.decide import DriftNumbers, WindowScore, assess, format_span, monitoring_depth, recent_windows
from mlflow_retrain.decide.triggers.drift import DataDrift
from mlflow_retrain.decide.triggers.max_age import MaxAge
from mlflow_retrain.decide.triggers.threshold import MetricThreshold, crosses
from mlflow_retrain.decide.triggers.trend import MetricTrend
from mlflow_retrain.drift import DriftMeter
from mlflow_retrain.errors import ConfigError, DataError
from mlflow_retrain.evaluate import judge, score_rows
from mlflow_retrain.metrics import worse_tail
from mlflow_retrain.train import FitResult, fit
from mlflow_retrain.trainers import fit_project

log = logging.getLogger(__name__)

# The sweep scales the configured threshold's distance from a perfect score: 0.6 is more
# sensitive, 2.0 laxer, and a score's threshold never passes 1.
THRESHOLD_FACTORS = (0.6, 0.8, 1.0, 1.25, 1.5, 2.0)


def perfect(higher_is_better: bool) -> float:
    """The best value a metric can take: 0 for an error, 1 for a score (accuracy, f1, roc_auc, r2).

    Sweeps and tolerances are taken on the distance from it, so they mean the same for both kinds.
    """
    return 1.0 if higher_is_better else 0.0


@dataclass(frozen=True)
class Policy:
    name: str
    family: str
    config: Config
    every_window: bool = False


def default_policies(config: Config, every: timedelta, thresholds: Iterable[float] | None = None) -> list[Policy]:
    """The comparison set: never, schedules, a threshold sweep, trend, drift, configured, every window."""
    hib = config.higher_is_better

    def with_triggers(*triggers: Any) -> Config:
        return dataclasses.replace(config, triggers=TriggersConfig(configured=triggers))

    base = config.threshold_limit or config.gate_threshold
    if thresholds is None:
        if base is None:
            gate = "validation.min_metric" if hib else "validation.max_metric"
            raise ConfigError(f"the threshold sweep needs triggers.metric_threshold or {gate} in the "
                              "policy file, or --thresholds")
        best = perfect(hib)
        thresholds = [round(best + (base - best) * f, 4) for f in THRESHOLD_FACTORS]
    policies = [Policy("never", "never", with_triggers())]
    for windows in (7, 30):  # named by the cadence they retrain at: `every-7d`, `every-30d` for daily steps
        cadence = every * windows
        # max_age fires once Production is *older* than its span and a replay looks only at its steps,
        # so a span one step short of the cadence replaces Production every `windows` steps (after a
        # rejected candidate, it tries again at the next step)
        policies.append(Policy(f"every-{format_span(cadence)}", "schedule", with_triggers(MaxAge(cadence - every))))
    for value in thresholds:
        limit = MetricThreshold(min=value) if hib else MetricThreshold(max=value)
        policies.append(Policy(f"threshold-{value:g}", "threshold", with_triggers(limit)))
    trend = config.triggers.metric_trend or MetricTrend(windows=7, max_relative_increase=0.25)
    policies.append(Policy("trend", "trend", with_triggers(trend)))
    drift = config.triggers.data_drift or DataDrift(max_drift_share=0.5)
    policies.append(Policy("drift", "drift", with_triggers(drift)))
    policies.append(Policy("configured", "configured", config))
    policies.append(Policy("every-window", "every_window", with_triggers(), every_window=True))
    return policies


def select(policies: list[Policy], names: Iterable[str] | None) -> list[Policy]:
    if not names:
        return policies
    known = {p.name: p for p in policies}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown policy {unknown[0]!r}; choose from {', '.join(known)}")
    return [known[n] for n in names]


@dataclass
class PolicyState:
    policy: Policy
    production: pd.Timestamp  # the as_of of the fit serving now (its cache key)
    last_retrain: pd.Timestamp | None = None
    retrains: int = 0
    promoted: int = 0
    rejected: int = 0
    train_seconds: float = 0.0
    retrain_points: list[tuple[str, str]] = field(default_factory=list)  # (as_of, promoted|rejected)
    series: list[float | None] = field(default_factory=list)


@dataclass
class BacktestResult:
    steps: list[pd.Timestamp]
    states: list[PolicyState]
    recommended: str
    tolerance: float
    threshold: float | None
    metric: str
    higher_is_better: bool
    seconds: float
    fits: int
    run_id: str | None = None
    chart: Path | None = None
    table_path: Path | None = None

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for s in self.states:
            values = np.array([v for v in s.series if v is not None], dtype=float)
            worse = sum(crosses(v, higher_is_better=self.higher_is_better, limit=self.threshold) for v in s.series)
            rows.append({
                "policy": s.policy.name, "family": s.policy.family, "retrains": s.retrains, "promoted": s.promoted,
                "rejected": s.rejected, "mean_metric": float(values.mean()) if len(values) else math.nan,
                # the worse tail in the metric's direction: 90% of windows did at least this well
                "p90_metric": worse_tail(s.series, higher_is_better=self.higher_is_better),
                "windows_worse_than_threshold": worse, "train_seconds": round(s.train_seconds, 2),
                "recommended": s.policy.name == self.recommended,
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"steps": len(self.steps) - 1, "from": self.steps[0].isoformat(), "to": self.steps[-1].isoformat(),
                "policies": self.table(), "recommended": self.recommended, "tolerance": self.tolerance,
                "seconds": round(self.seconds, 2), "fits": self.fits, "run_id": self.run_id,
                "chart": str(self.chart) if self.chart else None,
                "retrain_points": {s.policy.name: s.retrain_points for s in self.states}}


class Replay:
    """Caches shared by every policy: fits by as_of, window metrics and drift by (fit, window)."""

    def __init__(self, config: Config, data: LabelledData, cache: bool = True):
        self.config, self.data, self.cache = config, data, cache
        self.fits: dict[pd.Timestamp, FitResult] = {}
        self.fit_count = 0
        self.metrics: dict[tuple[pd.Timestamp, str], WindowScore] = {}
        self.meters: dict[pd.Timestamp, DriftMeter] = {}

    def fit(self, as_of: pd.Timestamp) -> FitResult:
        if self.cache and as_of in self.fits:
            return self.fits[as_of]
        result = (fit_project if self.config.training.project else fit)(self.config, self.data, as_of)
        self.fit_count += 1
        self.fits[as_of] = result
        return result

    def prefit(self, points: list[pd.Timestamp], jobs: int) -> None:
        """Fit many windows on all cores; results are identical to fitting one by one."""
        todo = [p for p in points if p not in self.fits]
        if not todo:
            return
        if jobs == 1 or self.config.training.project is not None:  # a project's runs go one at a time
            for point in todo:
                self.fit(point)
            return
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=jobs)(delayed(fit)(self.config, self.data, p) for p in todo)
        self.fits.update(zip(todo, results))
        self.fit_count += len(todo)

    def window_score(self, model_at: pd.Timestamp, window: Window) -> WindowScore:
        key = (model_at, window.iso())
        if self.cache and key in self.metrics:
            return self.metrics[key]
        rows = self.data.rows(window)
        value = None
        if len(rows):  # the cycle's own scoring: a metric undefined on the window is None, a gap
            value = score_rows(self.config, self.data, self.fits[model_at].scorer, rows).metrics.get(self.config.metric)
        result = WindowScore(window.iso(), len(rows), value)
        self.metrics[key] = result
        return result

    def forget(self, serving: set[pd.Timestamp], upto: pd.Timestamp) -> None:
        """Drop fits no policy serves any more. All policies advance together, so a fit made at or
        before `upto` is only ever needed again as some policy's Production model."""
        for at in [at for at in self.fits if at <= upto and at not in serving]:
            del self.fits[at]
            self.meters.pop(at, None)

    def drift(self, model_at: pd.Timestamp, window: Window) -> DriftNumbers | None:
        rows = self.data.rows(window)
        if not len(rows):
            return None
        if model_at not in self.meters or not self.cache:
            self.meters[model_at] = DriftMeter(self.fits[model_at].train_rows, self.data.spec)
        return self.meters[model_at].measure(rows)


def replay_steps(data: LabelledData, start: str, end: str | None, every: timedelta) -> list[pd.Timestamp]:
    first = data.resolve_as_of(start, "--from")
    last = data.resolve_as_of(end, "--to") if end else data.last
    if last <= first:
        raise DataError(f"--to {last.isoformat()} must be after --from {first.isoformat()}")
    steps = list(pd.date_range(first, last, freq=pd.Timedelta(every)))
    if len(steps) < 2:
        raise DataError(f"the span {first.isoformat()}..{last.isoformat()} holds fewer than two steps of "
                        f"{format_span(every)}; widen it or shorten --every")
    return steps


def run_backtest(config: Config, *, start: str, end: str | None = None, every: timedelta | None = None,
                 policies: list[Policy] | None = None, data: LabelledData | None = None, tolerance: float = 0.05,
                 jobs: int = 1, cache: bool = True) -> BacktestResult:
    """Replay all policies over the steps in one pass; return their table and the recommendation."""
    began = time.perf_counter()
    data = data or LabelledData.load(config)
    every = every or config.monitoring.window
    steps = replay_steps(data, start, end, every)
    policies = policies or default_policies(config, every)
    replay = Replay(config, data, cache=cache)
    # with retrain-every-window present every step's fit is known in advance: fit them on all
    # cores, a chunk ahead at a time so memory holds a chunk, not the whole history
    ahead = steps[1:-1] if cache and any(p.every_window for p in policies) else []
    chunk = max(32, 16 * jobs)
    first = replay.fit(steps[0])  # the bootstrap: every policy starts from the same first model
    states = [PolicyState(p, steps[0], last_retrain=steps[0], train_seconds=first.fit_seconds) for p in policies]
    depth = {p.name: monitoring_depth(p.config) for p in policies}
    step_span = pd.Timedelta(every)
    # disable=None: a bar on a terminal, nothing in CI logs
    progress = tqdm(total=len(steps) - 1, desc="backtest", unit="step", leave=False, disable=None)
    for index, as_of in enumerate(steps[:-1]):
        if index > 0:
            if ahead and as_of not in replay.fits:
                replay.prefit(ahead[index - 1:index - 1 + chunk], jobs)
            for state in states:
                _step(replay, state, as_of, depth[state.policy.name])
            replay.forget(serving={state.production for state in states}, upto=as_of)
        serve = Window(as_of, min(as_of + step_span, steps[-1]))
        for state in states:
            state.series.append(replay.window_score(state.production, serve).metric)
        if index:
            progress.update(1)
    progress.close()
    result = BacktestResult(steps, states, "", tolerance, config.threshold_limit, config.monitoring.metric,
                            config.higher_is_better, time.perf_counter() - began, replay.fit_count)
    result.recommended = recommend(result.table(), tolerance, config.higher_is_better)
    return result


def _step(replay: Replay, state: PolicyState, as_of: pd.Timestamp, depth: int) -> None:
    """One controller cycle of one policy at `as_of`: assess, and if asked, fit and judge."""
    config = state.policy.config
    scores = [replay.window_score(state.production, w) for w in recent_windows(as_of, config, depth)]
    drift = None
    if config.triggers.needs("drift"):
        drift = replay.drift(state.production, Window.parse(scores[-1].window))
    decision = assess(config, as_of=as_of, scores=scores, drift=drift, trained_at=state.production,
                      seen_until=replay.fits[state.production].train_window.end,
                      rows_since=replay.data.count_after(state.production, as_of),
                      last_retrain_at=state.last_retrain, force=state.policy.every_window,
                      reason="every window" if state.policy.every_window else None)
    if not decision.retrain:
        return
    candidate = replay.fit(as_of)
    production = replay.fits[state.production]
    promotion, _ = judge(config, replay.data, candidate.holdout_rows, candidate.scorer, production.scorer)
    state.retrains += 1
    state.train_seconds += candidate.fit_seconds
    state.last_retrain = as_of
    if promotion.promote:
        state.promoted += 1
        state.production = as_of
    else:
        state.rejected += 1
    state.retrain_points.append((as_of.isoformat(), T.PROMOTED if promotion.promote else T.REJECTED))


def recommend(rows: list[dict[str, Any]], tolerance: float, higher_is_better: bool = False) -> str:
    """The cheapest policy (fewest retrains) whose mean metric is within `tolerance` of the best.

    The tolerance is relative to the distance from a perfect score (the error itself; 1 - accuracy),
    as in the threshold sweep: 5% of a 0.90 accuracy would otherwise accept anything above 0.855.
    """
    def distance(row: dict[str, Any]) -> float:
        return abs(perfect(higher_is_better) - row["mean_metric"])

    scored = [r for r in rows if not math.isnan(r["mean_metric"])]
    if not scored:
        return ""
    best = min(distance(r) for r in scored)
    ok = [r for r in scored if distance(r) <= best * (1 + tolerance)]
    return min(ok, key=lambda r: (r["retrains"], distance(r)))["policy"]


def write_outputs(config: Config, result: BacktestResult, out_dir: Path, log_run: bool = True,
                  show: Iterable[str] = ("never", "configured", "every-window")) -> BacktestResult:
    """The table as CSV, the trade-off chart as self-contained HTML, both in one MLflow run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = result.table()
    result.table_path = out_dir / "backtest.csv"
    pd.DataFrame(rows).to_csv(result.table_path, index=False)
    steps = [t.to_pydatetime() for t in result.steps]
    result.chart = out_dir / "backtest.html"
    result.chart.write_text(tradeoff_html(
        title=f"{config.model_name}: retrains vs mean {config.metric}, "
              f"{result.steps[0].date()}..{result.steps[-1].date()} ({len(result.steps) - 1} steps)",
        metric=config.metric,
        policies=[PolicyPoint(r["policy"], r["family"], r["retrains"], r["mean_metric"], r["p90_metric"],
                              r["promoted"], r["rejected"]) for r in rows if not math.isnan(r["mean_metric"])],
        # every policy over time (window i serves steps[i]..steps[i + 1]); the recommended and `show` drawn at first
        series={s.policy.name: list(zip(steps[:-1], steps[1:], s.series)) for s in result.states},
        retrains={s.policy.name: [(pd.Timestamp(t).to_pydatetime(), d) for t, d in s.retrain_points]
                  for s in result.states},
        visible=[result.recommended, *show], recommended=result.recommended, table_rows=rows,
    ))
    if log_run:
        import mlflow

        from mlflow_retrain.tracking import start_run

        with start_run(f"{config.experiment}-backtest", "backtest",
                       {T.RUN_KIND: "backtest", "model_name": config.model_name,
                        "recommended": result.recommended}) as run:
            mlflow.log_params({"from": result.steps[0].isoformat(), "to": result.steps[-1].isoformat(),
                               "steps": len(result.steps) - 1, "tolerance": result.tolerance,
                               "policies": ",".join(r["policy"] for r in rows)})
            for r in rows:
                safe = r["policy"].replace(".", "_")
                mlflow.log_metrics({f"{safe}.retrains": r["retrains"], f"{safe}.mean_{config.metric}": r["mean_metric"],
                                    f"{safe}.train_seconds": r["train_seconds"]})
            mlflow.log_metric("seconds", result.seconds)
            mlflow.log_artifact(str(result.table_path))
            mlflow.log_artifact(str(result.chart))
            result.run_id = run.info.run_id
    return result
