"""Choose the retraining policy by replaying history: number of retrains against error.

A sensitive threshold keeps the model fresh but retrains often; a lax one is cheap but leaves a
stale model serving. The backtest measures that trade-off on the user's own data: it replays the
data step by step exactly as the controller would have run at each `--as-of` (`replay.py`), every
policy of the comparison set in one pass, then tables the policies, recommends one by the choice
rule (`decide.choice`) and writes the table and the chart (`tradeoff.py`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from mlflow_retrain.base import tags as T
from mlflow_retrain.usecases.tradeoff import FoldPoint, PolicyPoint, tradeoff_html
from mlflow_retrain.policy.config import Config, TriggersConfig
from mlflow_retrain.policy.section import parse_span
from mlflow_retrain.adapters.data import LabelledData
from mlflow_retrain.decide import format_span
from mlflow_retrain.decide.choice import (DAYS_PER_BUDGET, Candidate, Rule, WalkForward, choose, equal_budget,
                                          gain, per_30_days, perfect, schedule_curve, tied, walk_forward)
from mlflow_retrain.decide.gate import limit_key
from mlflow_retrain.decide.triggers import fires_always
from mlflow_retrain.decide.triggers.drift import DataDrift
from mlflow_retrain.decide.triggers.estimated import EstimatedMetric
from mlflow_retrain.decide.triggers.threshold import MetricThreshold, crosses
from mlflow_retrain.decide.triggers.trend import MetricTrend
from mlflow_retrain.base.errors import ConfigError, DataError
from mlflow_retrain.measure.estimate import ESTIMABLE
from mlflow_retrain.measure.metrics import worse_tail
from mlflow_retrain.usecases.replay import Policy, PolicyState, Replay, replay_policies, replay_steps
from mlflow_retrain.usecases.search import Search, search

# The sweep scales the configured threshold's distance from a perfect score: 0.6 is more
# sensitive, 2.0 laxer, and a score's threshold never passes 1.
THRESHOLD_FACTORS = (0.6, 0.8, 1.0, 1.25, 1.5, 2.0)


def schedule(config: Config, cadence: timedelta, equal_budget: bool = False) -> Policy:
    """Retrain every `cadence` of data time, named by it (`every-28d`)."""
    return Policy(f"every-{format_span(cadence)}", "schedule",
                  dataclasses.replace(config, triggers=TriggersConfig(configured=())), cadence=cadence,
                  equal_budget=equal_budget)


def default_schedules(every: timedelta) -> list[timedelta]:
    """7 and 30 steps: weekly and monthly for daily steps."""
    return [every * 7, every * 30]


def default_policies(config: Config, every: timedelta, thresholds: Iterable[float] | None = None,
                     schedules: Iterable[timedelta] | None = None) -> list[Policy]:
    """The comparison set: never, schedules, a threshold sweep, trend, drift, configured, every window.

    The schedule with the configured policy's retrain count is added by `run_backtest` once that count
    is known, so the equal-budget comparison needs no hand-made schedule."""
    hib = config.higher_is_better

    def with_triggers(*triggers: Any) -> Config:
        return dataclasses.replace(config, triggers=TriggersConfig(configured=triggers))

    base = config.threshold_limit or config.gate_threshold
    if thresholds is None:
        if base is None:
            gate = limit_key(hib)
            raise ConfigError(f"the threshold sweep needs triggers.metric_threshold or {gate} in the "
                              "policy file, or --thresholds")
        best = perfect(hib)
        thresholds = [round(best + (base - best) * f, 4) for f in THRESHOLD_FACTORS]
    policies = [Policy("never", "never", with_triggers())]
    for cadence in sorted(set(default_schedules(every) if schedules is None else schedules)):
        if cadence < every:
            raise ConfigError(f"--schedule {format_span(cadence)} is shorter than a step (--every "
                              f"{format_span(every)}); the shortest schedule retrains at every step")
        policies.append(schedule(config, cadence))
    for value in thresholds:
        limit = MetricThreshold(min=value) if hib else MetricThreshold(max=value)
        policies.append(Policy(f"threshold-{value:g}", "threshold", with_triggers(limit)))
    trend = config.triggers.metric_trend or MetricTrend(windows=7, max_relative_increase=0.25)
    policies.append(Policy("trend", "trend", with_triggers(trend)))
    drift = config.triggers.data_drift or DataDrift(max_drift_share=0.5)
    policies.append(Policy("drift", "drift", with_triggers(drift)))
    if config.monitoring.label_delay and config.metric in ESTIMABLE[config.task]:
        # with late labels: the same threshold on the newest rows' label-free estimate
        limit = EstimatedMetric(min=base) if hib else EstimatedMetric(max=base)
        policies.append(Policy("estimated", "estimated", with_triggers(limit)))
    policies.append(Policy("configured", "configured", config))
    policies.append(Policy("every-window", "every_window", with_triggers(), every_window=True))
    return policies


def parse_budget(text: str) -> float:
    """`--budget N/30d` (or N/<span>): at most this many retrains per 30 days."""
    count, _, span = text.partition("/")
    try:
        value = float(count)
    except ValueError:
        value = -1.0
    if value < 0 or not span:
        raise ConfigError(f"--budget {text!r} must read N/<span>, e.g. 2/30d (at most 2 retrains per 30 days)")
    days = parse_span(span, "--budget") / timedelta(days=1)
    return value * DAYS_PER_BUDGET / days


def select(policies: list[Policy], names: Iterable[str] | None, schedules: Iterable[timedelta] = ()) -> list[Policy]:
    """The policies `names` (all without), and every schedule of `schedules` (`--schedule`): a
    schedule asked for is replayed and shown, whatever `--policy` says."""
    if not names:
        return policies
    known = {p.name: p for p in policies}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown policy {unknown[0]!r}; choose from {', '.join(known)}")
    asked = set(schedules)
    chosen = list(dict.fromkeys([*names, *(p.name for p in policies if p.cadence is not None and p.cadence in asked)]))
    return [known[n] for n in chosen]


@dataclass
class BacktestResult:
    steps: list[pd.Timestamp]
    states: list[PolicyState]
    recommended: str
    rule: Rule
    threshold: float | None
    metric: str
    seconds: float
    fits: int
    folds: int = 0  # walk-forward folds (0: the recommendation is chosen and scored in sample)
    undelayed: list[PolicyState] | None = None  # the same policies replayed with labels at once
    label_delay: timedelta = timedelta(0)
    run_id: str | None = None
    chart: Path | None = None
    table_path: Path | None = None
    gate_threshold: float | None = None  # validation.max_metric (min_metric for a score)
    search: Search | None = None  # the dimensions beyond triggers, when searched

    @property
    def higher_is_better(self) -> bool:
        return self.rule.higher_is_better

    def candidates(self) -> list[Candidate]:
        """Each policy as plain numbers: the metric per window, the windows where it retrained."""
        index = {t: i for i, t in enumerate(self.steps)}
        days = (self.steps[-1] - self.steps[0]) / pd.Timedelta(days=1)
        return [Candidate(s.policy.name, s.policy.family, s.series,
                          [index[pd.Timestamp(t)] for t, _ in s.retrain_points], days) for s in self.states]

    @cached_property
    def _forward(self) -> WalkForward | None:
        # its block bootstraps take seconds: the table, the JSON and the chart share one
        return walk_forward(self.candidates(), self.rule, self.folds, self.day_of()) if self.folds else None

    def day_of(self) -> list[float]:
        return [(t - self.steps[0]) / pd.Timedelta(days=1) for t in self.steps]

    def walk_forward(self) -> WalkForward | None:
        return self._forward

    def recommend(self) -> str:
        """The rule's choice on the whole history: what to run from now on. With folds, the rule the
        walk-forward scored out of sample (regret per block, `decide.choice.robust_choose`)."""
        if self.folds:
            return self._forward.recommended.chosen
        return choose(self.candidates(), self.rule).chosen

    def table(self) -> list[dict[str, Any]]:
        """One row per policy (and the walk-forward row); computed once, as its ties bootstrap."""
        return [dict(row) for row in self._table]

    @cached_property
    def _table(self) -> list[dict[str, Any]]:
        candidates = self.candidates()
        curve = schedule_curve(self._as_configured(candidates), self.rule)
        best = next((c for c in candidates if c.name == choose(candidates, self.rule).best), None)
        forward = self.walk_forward()
        rows = []
        for s, c in zip(self.states, candidates):
            row = self._row(c, curve, best)
            row.update(promoted=s.promoted, rejected=s.rejected, rejected_by=dict(s.rejected_by),
                       train_seconds=round(s.train_seconds, 2),
                       equal_budget=s.policy.equal_budget, recommended=s.policy.name == self.recommended)
            if self.search is not None:
                row.update(variant=self.search.variants[c.name].describe() if c.name in self.search.variants else None)
            instant = next((u for u in self.undelayed or () if u.policy.name == s.policy.name), None)
            if instant is not None:
                row.update(retrains_without_delay=instant.retrains, mean_metric_without_delay=Candidate(
                    c.name, c.family, instant.series, [], c.days).mean())
            if forward is not None:
                out = c.part(forward.start, len(c.series), forward.days)
                row.update(oos_mean_metric=out.mean(), oos_retrains=out.retrains,
                           oos_p90_metric=worse_tail(out.series, higher_is_better=self.higher_is_better))
            rows.append(row)
        if forward is not None:
            rows.append(self._walk_forward_row(forward))
        return rows

    def _as_configured(self, candidates: list[Candidate]) -> list[Candidate]:
        """The policies replayed as the file configures training and gate (the search's left out)."""
        return [c for c in candidates if self.search is None or c.name not in self.search.variants]

    def _row(self, c: Candidate, curve: list[tuple[int, float]], best: Candidate | None) -> dict[str, Any]:
        mean = c.mean()
        peer = equal_budget(curve, c.retrains)
        worse = sum(crosses(v, higher_is_better=self.higher_is_better, limit=self.threshold) for v in c.series)
        return {
            "policy": c.name, "family": c.family, "retrains": c.retrains,
            "retrains_per_30d": round(per_30_days(c.retrains, c.days), 3), "mean_metric": mean,
            # the worse tail in the metric's direction: 90% of windows did at least this well
            "p90_metric": worse_tail(c.series, higher_is_better=self.higher_is_better),
            "windows_worse_than_threshold": worse,
            "schedule_same_budget": None if peer is None else abs(perfect(self.higher_is_better) - peer),
            "vs_schedule": None if peer is None or math.isnan(mean) else gain(peer, self.rule.distance(mean)),
            "tied_with_best": best is not None and tied(self.rule.distances(c.series),
                                                        self.rule.distances(best.series), self.rule.resolution),
        }

    def _walk_forward_row(self, forward: WalkForward) -> dict[str, Any]:
        """The rule itself as a policy: each fold run by the choice made before it, out of sample only,
        compared with the schedules over the same out-of-sample windows."""
        parts = [c.part(forward.start, len(c.series), forward.days) for c in self._as_configured(self.candidates())]
        c = Candidate("walk-forward", "walk_forward", forward.series, [0] * forward.retrains, forward.days)
        row = self._row(c, schedule_curve(parts, self.rule), None)
        row.update(oos_mean_metric=row["mean_metric"], oos_p90_metric=row["p90_metric"], oos_retrains=forward.retrains,
                   retrains=None, mean_metric=None, p90_metric=None, tied_with_best=None, equal_budget=False,
                   recommended=False, promoted=None, rejected=None, rejected_by=None, train_seconds=None,
                   folds=[f"{f.chosen}@{self.steps[f.start].date()}" for f in forward.folds])
        return row

    def warnings(self) -> list[str]:
        """What the table alone does not say: a gate that binds, a walk-forward that idles, a trigger
        that fires always."""
        forward = self.walk_forward()
        return [*self._binding_gate(), *(forward.warnings if forward is not None else []), *self._always_firing()]

    def _always_firing(self) -> list[str]:
        """The configured policy's triggers that fired at every step of the replay."""
        configured = next((s for s in self.states if s.policy.family == "configured"), None)
        if configured is None:
            return []
        triggers = configured.policy.config.triggers.configured
        return fires_always(triggers, {t.name: [t.name in f for f in configured.fired] for t in triggers})

    def _binding_gate(self) -> list[str]:
        """When the absolute gate rejects most candidates of the policy that retrains most, it, not
        the retraining policy, decides: say so, with a limit 90% of those candidates would pass."""
        most = max(self.states, key=lambda s: s.retrains, default=None)
        if most is None or not most.retrains or most.rejected_by["absolute"] * 2 <= most.retrains:
            return []
        key = limit_key(self.higher_is_better)
        supported = worse_tail(most.candidate_metrics, higher_is_better=self.higher_is_better)
        recommended = next((s for s in self.states if s.policy.name == self.recommended), None)
        idle = f"; the recommendation ({self.recommended}) retrains {recommended.retrains} times because of it" if (
            recommended is not None and recommended.retrains < most.retrains) else ""
        return [f"the absolute gate binds: it rejected {most.rejected_by['absolute']} of {most.retrains} candidates "
                f"of {most.policy.name} ({key} {self.gate_threshold:g}){idle}. The candidates' holdout "
                f"{self.metric} reached {supported:.4g} or better in 90% of them: a {key} the data supports"]

    def to_dict(self) -> dict[str, Any]:
        forward = self.walk_forward()
        return {"steps": len(self.steps) - 1, "from": self.steps[0].isoformat(), "to": self.steps[-1].isoformat(),
                "policies": self.table(), "recommended": self.recommended, "tolerance": self.rule.tolerance,
                "resolution": self.rule.resolution, "budget_per_30d": self.rule.budget, "cost": self.rule.cost,
                "folds": self.folds, "label_delay": format_span(self.label_delay) if self.label_delay else None,
                "walk_forward": None if forward is None else {
                    "from": self.steps[forward.start].isoformat(), "reason": forward.recommended.reason,
                    "folds": [{"from": self.steps[f.start].isoformat(), "to": self.steps[f.end].isoformat(),
                               "chosen": f.chosen, "mean_metric": f.mean, "retrains": f.retrains}
                              for f in forward.folds]},
                "warnings": self.warnings(), "search": None if self.search is None else self.search.to_dict(),
                "seconds": round(self.seconds, 2), "fits": self.fits, "run_id": self.run_id,
                "chart": str(self.chart) if self.chart else None,
                "retrain_points": {s.policy.name: s.retrain_points for s in self.states}}


def run_backtest(config: Config, *, start: str, end: str | None = None, every: timedelta | None = None,
                 policies: list[Policy] | None = None, data: LabelledData | None = None, rule: Rule | None = None,
                 folds: int = 0, jobs: int = 1, cache: bool = True, client: Any = None,
                 dimensions: Sequence[str] = (), fit_budget: float | None = None) -> BacktestResult:
    """Replay all policies over the steps in one pass; return their table and the recommendation.

    When the configured policy retrained and no schedule in the set retrained as often, a second,
    short pass replays the schedule with its retrain count (`equal_budget`): the comparison "better
    than a schedule with the same budget" then needs no hand-made schedule. `folds` > 0 adds the
    walk-forward view (`decide.choice`). With a Dask `client` (`cluster.connect`) the fits run on its
    workers, `jobs` of them at a time; the table is the same. `dimensions` (`search.DIMENSIONS`) adds
    the policies under other training windows, holdouts and gate kinds, about `fit_budget` fits more
    (default: as many as the policies took)."""
    began = time.perf_counter()
    data = (data or LabelledData.load(config)).whole()  # a replay reads every window: all rows, once
    every = every or config.monitoring.window
    steps = replay_steps(data, start, end, every)
    if folds and len(steps) - 1 < folds + 1:
        raise DataError(f"--folds {folds} needs at least {folds + 1} windows; the span holds {len(steps) - 1} "
                        f"steps of {format_span(every)}")
    policies = policies or default_policies(config, every)
    with closing(Replay(config, data, cache=cache, jobs=jobs, client=client)) as replay:
        states = replay_policies(replay, policies, steps, every)
        matched = equal_budget_schedule(config, states, steps, every)
        if matched is not None:
            states += replay_policies(replay, [matched], steps, every)
    undelayed = None
    if config.monitoring.label_delay:
        # the same policies had the labels come at once: what the delay costs each of them
        with closing(Replay(config.with_label_delay(timedelta(0)), data, cache=cache, jobs=jobs,
                            client=client)) as instant:
            undelayed = replay_policies(instant, [without_delay(s.policy) for s in states], steps, every)
        replay.fit_count += instant.fit_count
    found = None
    if dimensions:
        more, found = search(config, data, states, steps, every, dimensions,
                             replay.fit_count if fit_budget is None else fit_budget, cache=cache, jobs=jobs, client=client)
        states += more
        replay.fit_count += found.fits
    rule = rule or Rule(higher_is_better=config.higher_is_better)
    result = BacktestResult(steps, states, "", dataclasses.replace(rule, higher_is_better=config.higher_is_better),
                            config.threshold_limit, config.monitoring.metric, time.perf_counter() - began,
                            replay.fit_count, folds=folds, undelayed=undelayed,
                            label_delay=config.monitoring.label_delay, gate_threshold=config.gate_threshold,
                            search=found)
    result.recommended = result.recommend()
    return result


def without_delay(policy: Policy) -> Policy:
    """The same policy with labels that arrive at once."""
    return dataclasses.replace(policy, config=policy.config.with_label_delay(timedelta(0)))


def equal_budget_schedule(config: Config, states: list[PolicyState], steps: list[pd.Timestamp],
                          every: timedelta) -> Policy | None:
    """The schedule whose retrain count is closest to the configured policy's, unless one ran already."""
    configured = next((s for s in states if s.policy.family == "configured"), None)
    if configured is None or not configured.retrains:
        return None
    points = len(steps) - 2  # decision points: the first step is the bootstrap, the last only ends a window
    cadences = range(1, points + 1)
    k = min(cadences, key=lambda c: (abs(points // c - configured.retrains), c))
    ran = {s.retrains for s in states if s.policy.family == "schedule"}
    if points // k in ran:
        return None
    return schedule(config, every * k, equal_budget=True)


def write_outputs(config: Config, result: BacktestResult, out_dir: Path, log_run: bool = True,
                  show: Iterable[str] = ("never", "configured", "every-window")) -> BacktestResult:
    """The table as CSV, the trade-off chart as self-contained HTML, both in one MLflow run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = result.table()
    replayed = [r for r in rows if r["family"] != "walk_forward"]  # the walk-forward row is the rule, not a replay
    forward = result.walk_forward()
    result.table_path = out_dir / "backtest.csv"
    pd.DataFrame(rows).to_csv(result.table_path, index=False)
    steps = [t.to_pydatetime() for t in result.steps]
    result.chart = out_dir / "backtest.html"
    result.chart.write_text(tradeoff_html(
        title=f"{config.model_name}: retrains vs mean {config.metric}, "
              f"{result.steps[0].date()}..{result.steps[-1].date()} ({len(result.steps) - 1} steps)",
        metric=config.metric,
        # a searched row is not on the configured threshold sweep's curve
        policies=[PolicyPoint(r["policy"], "variant" if r.get("variant") else r["family"], r["retrains"],
                              r["mean_metric"], r["p90_metric"],
                              r["promoted"], r["rejected"]) for r in replayed if not math.isnan(r["mean_metric"])],
        # every policy over time (window i serves steps[i]..steps[i + 1]); the recommended and `show` drawn at first
        series={s.policy.name: list(zip(steps[:-1], steps[1:], s.series)) for s in result.states},
        retrains={s.policy.name: [(pd.Timestamp(t).to_pydatetime(), d) for t, d in s.retrain_points]
                  for s in result.states},
        visible=[result.recommended, *show], recommended=result.recommended, table_rows=rows,
        folds=[FoldPoint(steps[f.start], steps[f.end], f.chosen, f.mean) for f in forward.folds] if forward else (),
    ))
    if log_run:
        import mlflow

        from mlflow_retrain.adapters.tracking import start_run

        with start_run(f"{config.experiment}-backtest", "backtest",
                       {T.RUN_KIND: "backtest", "model_name": config.model_name,
                        "recommended": result.recommended}) as run:
            mlflow.log_params({"from": result.steps[0].isoformat(), "to": result.steps[-1].isoformat(),
                               "steps": len(result.steps) - 1, "tolerance": result.rule.tolerance,
                               "policies": ",".join(r["policy"] for r in replayed), "folds": result.folds})
            for r in rows:
                safe = r["policy"].replace(".", "_")
                numbers = {f"{safe}.retrains": r["retrains"], f"{safe}.mean_{config.metric}": r["mean_metric"],
                           f"{safe}.train_seconds": r["train_seconds"], f"{safe}.oos_retrains": r.get("oos_retrains"),
                           f"{safe}.oos_mean_{config.metric}": r.get("oos_mean_metric")}
                mlflow.log_metrics({k: v for k, v in numbers.items() if v is not None})
            mlflow.log_metric("seconds", result.seconds)
            mlflow.log_artifact(str(result.table_path))
            mlflow.log_artifact(str(result.chart))
            result.run_id = run.info.run_id
    return result
