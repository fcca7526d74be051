"""The backtest's replay engine:

Why it is built this way: docs/design.md#usecases-replay.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Iterable

import numpy as np
import pandas as pd
from tqdm import tqdm

from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.config import Config
from mlflow_retrain.adapters.data import LabelledData, Window
from mlflow_retrain.decide.challenge import ARCHIVE, PROMOTE, WAIT, Round, inconclusive, play, verdict
from mlflow_retrain.decide.choice import failed_checks
from mlflow_retrain.decide.window import unseen
from mlflow_retrain.decide import WindowScore, assess, format_span, monitoring_depth, recent_windows
from mlflow_retrain.measure.columns import DriftNumbers
from mlflow_retrain.measure.drift import DriftMeter
from mlflow_retrain.base.errors import DataError
from mlflow_retrain.measure.estimate import PerformanceEstimator
from mlflow_retrain.loop.challenger import next_rounds
from mlflow_retrain.loop.evaluate import estimate_rows, judge, label_free, score_predictions, score_rows
from mlflow_retrain.usecases.fitting import FitsAhead
from mlflow_retrain.adapters.train import FitResult, fit
from mlflow_retrain.adapters.trainers import fit_project


@dataclass(frozen=True)
class Policy:
    """A way of deciding when to retrain. A schedule (`cadence`) retrains at fixed times from the
    first step, whatever the outcome: a rejected candidate waits for the next due time, as a cron job
    would; `equal_budget` marks the schedule added to match the configured policy's retrain count."""

    name: str
    family: str
    config: Config
    every_window: bool = False
    cadence: timedelta | None = None
    equal_budget: bool = False


@dataclass(frozen=True)
class Refit:
    """The cache key of a refit (`training.refit_on_pass`): the fit as of `at`, through `at`."""

    at: pd.Timestamp


FitKey = pd.Timestamp | Refit  # a fit as of a time, or its refit


def fitted_at(key: FitKey) -> pd.Timestamp:
    """A fit's data time, a refit's included (the version's `retrain.as_of`)."""
    return key.at if isinstance(key, Refit) else key


@dataclass
class PolicyState:
    """One policy's replay so far: the fit serving, its retrains and their outcomes, the metric per window."""

    policy: Policy
    production: FitKey  # the fit serving now (its cache key)
    last_retrain: pd.Timestamp | None = None
    last_rejected: pd.Timestamp | None = None  # the newest rejected candidate's data time (`max_age` waits)
    retrains: int = 0
    promoted: int = 0
    rejected: int = 0
    train_seconds: float = 0.0
    retrain_points: list[tuple[str, str]] = field(default_factory=list)  # (as_of, promoted|rejected)
    series: list[float | None] = field(default_factory=list)
    fired: list[list[str]] = field(default_factory=list)  # per step, the triggers that fired (`fires_always`)
    next_due: pd.Timestamp | None = None  # a schedule's next retrain time
    failed: list[tuple[str, ...]] = field(default_factory=list)  # per retrain point: the gate checks it failed
    candidate_metrics: list[float] = field(default_factory=list)  # per retrain point: the candidate's holdout metric
    challenger: FitKey | None = None  # an inconclusive candidate waiting beside Production (`validation.challenger`)
    challenger_since: pd.Timestamp | None = None
    rounds: list[Round] = field(default_factory=list)  # the challenger's rounds so far
    challenges: list[tuple[str, str]] = field(default_factory=list)  # (as_of, challenger|promoted|rejected|superseded)

    @property
    def rejected_by(self) -> Counter[str]:
        """Rejections per gate check failed (a rejection failing two checks counts for both)."""
        return Counter(name for checks in self.failed for name in checks)


@dataclass(frozen=True)
class _Block:
    """A fit's predictions on the data's rows `lo:hi`."""

    lo: int
    hi: int
    pred: np.ndarray
    proba: np.ndarray | None


@dataclass(frozen=True)
class _BlockScorer:
    """A fit's scorer for the holdout rows `lo:hi` alone, answered from the replay's blocks."""

    replay: Replay
    model_at: FitKey
    lo: int
    hi: int

    def predict_with_proba(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        assert len(rows) == self.hi - self.lo, "a block scorer answers for its holdout rows only"
        return self.replay.predictions(self.model_at, self.lo, self.hi)


class Replay:
    """Caches shared by every policy: fits by as_of, window metrics and drift by (fit, window)."""

    def __init__(self, config: Config, data: LabelledData, cache: bool = True, jobs: int = 1, client: Any = None):
        self.config, self.data, self.cache = config, data, cache
        self.jobs, self.client = jobs, client  # where fits made ahead run: local workers or a Dask cluster
        self.ahead: FitsAhead | None = None
        self.fits: dict[FitKey, FitResult] = {}
        self.fit_count = 0
        self.metrics: dict[tuple[FitKey, str], WindowScore] = {}
        self.predicted: dict[FitKey, _Block] = {}  # each fit's predictions on the rows it served
        self.meters: dict[FitKey, DriftMeter] = {}
        self.estimators: dict[FitKey, PerformanceEstimator] = {}

    def fit(self, as_of: FitKey) -> FitResult:
        if self.cache and as_of in self.fits:
            return self.fits[as_of]
        refit = isinstance(as_of, Refit)
        result = self.ahead.take(as_of) if self.ahead is not None and not refit else None
        if result is None:
            result = (fit_project if self.config.training.project else fit)(self.config, self.data, fitted_at(as_of),
                                                                           refit=refit)
        self.fit_count += 1
        self.fits[as_of] = result
        return result

    def fit_ahead(self, points: Iterable[pd.Timestamp]) -> None:
        """Start the fits of `points` on the other cores (or the cluster) without waiting for them; `fit`
        collects each when a step needs it. The same models as fitting one by one."""
        if (self.jobs == 1 and self.client is None) or self.config.training.project is not None:
            return  # one core: fitted when needed; a project's runs go one at a time
        if self.ahead is None:
            self.ahead = FitsAhead(self.config, self.data, self.jobs, self.client)
        self.ahead.submit(p for p in points if p not in self.fits)

    def close(self) -> None:
        """Stop the workers of fits made ahead (and drop fits no step collected)."""
        if self.ahead is not None:
            self.ahead.close()
            self.ahead = None

    def window_score(self, model_at: FitKey, window: Window) -> WindowScore:
        key = (model_at, window.iso())
        if self.cache and key in self.metrics:
            return self.metrics[key]
        lo, hi = self.data.positions(window)
        rows = self.data.frame.iloc[lo:hi]
        value = None
        if len(rows):  # the cycle's own scoring: a metric undefined on the window is None, a gap
            if self.cache:
                pred, proba = self.predictions(model_at, lo, hi)
                scored = score_predictions(self.config, self.data, rows, pred, proba)
            else:
                scored = score_rows(self.config, self.data, self.fits[model_at].scorer, rows)
            value = scored.metrics.get(self.config.metric)
        result = WindowScore(window.iso(), len(rows), value)
        self.metrics[key] = result
        return result

    def predictions(self, model_at: FitKey, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The fit's predictions on rows `lo:hi`, from a block predicted in one call and grown by doubling
        as the model keeps serving. A call has a fixed cost (input checks, the encoder) far above a day's
        rows, and a model serving n windows then costs about log2(n) calls instead of n; a prediction
        depends on its own row alone, so the numbers are those of predicting window by window."""
        block = self.predicted.get(model_at)
        if block is None or lo < block.lo or hi > block.hi:
            start = lo if block is None else min(lo, block.lo)
            end = min(len(self.data.frame), max(hi + (hi - lo), 0 if block is None else block.hi + (block.hi - block.lo)))
            pred, proba = self.fits[model_at].scorer.predict_with_proba(self.data.frame.iloc[start:end])
            block = self.predicted[model_at] = _Block(start, end, pred, proba)
        return block.pred[lo - block.lo:hi - block.lo], None if block.proba is None else block.proba[lo - block.lo:hi - block.lo]

    def judged(self, model_at: FitKey, holdout: Window) -> Any:
        """The fit as the gate takes it (`evaluate.judge`): with the cache, its predictions on the holdout
        come from its blocks, so Production, which has usually just scored those rows, costs nothing."""
        if not self.cache:
            return self.fits[model_at].scorer
        return _BlockScorer(self, model_at, *self.data.positions(holdout))

    def forget(self, serving: set[FitKey], upto: pd.Timestamp) -> None:
        """Drop fits no policy serves any more. All policies advance together, so a fit made at or
        before `upto` is only ever needed again as some policy's Production model."""
        for at in [at for at in self.fits if fitted_at(at) <= upto and at not in serving]:
            del self.fits[at]
            self.predicted.pop(at, None)
            self.meters.pop(at, None)
            self.estimators.pop(at, None)

    def drift(self, model_at: FitKey, window: Window) -> DriftNumbers | None:
        rows = self.data.rows(window)
        if not len(rows):
            return None
        if model_at not in self.meters or not self.cache:
            self.meters[model_at] = DriftMeter(self.fits[model_at].train_rows, self.data.spec)
        return self.meters[model_at].measure(rows)


    def estimate(self, model_at: FitKey, window: Window) -> float | None:
        """The serving fit's metric on `window` estimated without labels, prepared on its holdout rows."""
        fit = self.fits[model_at]
        if model_at not in self.estimators or not self.cache:
            self.estimators[model_at] = label_free(self.config, self.data, fit.scorer, fit.holdout_rows)
        return estimate_rows(self.estimators[model_at], self.data, fit.scorer, self.data.rows(window))


def replay_steps(data: LabelledData, start: str, end: str | None, every: timedelta) -> list[pd.Timestamp]:
    """The `--as-of` of each step, `every` apart from `--from` to `--to` (the newest labelled row by default)."""
    first = data.resolve_as_of(start, "--from")
    last = data.resolve_as_of(end, "--to") if end else data.last_labelled
    if last <= first:
        raise DataError(f"--to {last.isoformat()} must be after --from {first.isoformat()}")
    steps = list(pd.date_range(first, last, freq=pd.Timedelta(every)))
    if len(steps) < 2:
        raise DataError(f"the span {first.isoformat()}..{last.isoformat()} holds fewer than two steps of "
                        f"{format_span(every)}; widen it or shorten --every")
    return steps


def replay_policies(replay: Replay, policies: list[Policy], steps: list[pd.Timestamp],
                    every: timedelta) -> list[PolicyState]:
    """One pass over the steps, all `policies` advancing together."""
    # with retrain-every-window present every step's fit is known in advance: fit them on the other
    # cores while this one scores, a chunk ahead so memory holds a chunk, not the whole history
    labelled = replay.config.monitoring.labelled  # a fit at step t uses the labels known then
    ahead = [labelled(t) for t in steps[1:-1]] if replay.cache and any(p.every_window for p in policies) else []
    chunk = max(32, 16 * replay.jobs)
    replay.fit_ahead(ahead[:chunk])
    start = labelled(steps[0])
    first = replay.fit(start)  # the bootstrap: every policy starts from the same first model
    states = [PolicyState(p, start, last_retrain=start, train_seconds=first.fit_seconds,
                          next_due=steps[0] + p.cadence if p.cadence else None) for p in policies]
    depth = {p.name: monitoring_depth(p.config) for p in policies}
    step_span = pd.Timedelta(every)
    # disable=None: a bar on a terminal, nothing in CI logs
    progress = tqdm(total=len(steps) - 1, desc="backtest", unit="step", leave=False, disable=None)
    for index, as_of in enumerate(steps[:-1]):
        if index > 0:
            if ahead:
                replay.fit_ahead(ahead[index - 1:index - 1 + chunk])
            for state in states:
                _step(replay, state, as_of, depth[state.policy.name])
            serving = {state.production for state in states} | {s.challenger for s in states if s.challenger is not None}
            replay.forget(serving=serving, upto=labelled(as_of))
        serve = Window(as_of, min(as_of + step_span, steps[-1]))
        for state in states:
            state.series.append(replay.window_score(state.production, serve).metric)
        if index:
            progress.update(1)
    progress.close()
    return states


def _step(replay: Replay, state: PolicyState, as_of: pd.Timestamp, depth: int) -> None:
    """One controller cycle of one policy at `as_of`: assess, and if asked, fit and judge."""
    config = state.policy.config
    due = state.next_due is not None and as_of >= state.next_due
    while due and state.next_due <= as_of:  # the next due time stays on the grid, whatever the outcome
        state.next_due += state.policy.cadence
    # the metric reads the labelled windows, drift the newest features (`monitoring.label_delay`)
    labelled = config.monitoring.labelled(as_of)
    scores = [replay.window_score(state.production, w) for w in recent_windows(labelled, config, depth)]
    drift = None
    newest = Window.ending(as_of, config.monitoring.window)
    if config.triggers.needs("drift"):
        drift = replay.drift(state.production, newest)
    estimate = replay.estimate(state.production, newest) if config.triggers.needs("estimate") else None
    forced = state.policy.every_window or due
    trained_at = fitted_at(state.production)
    decision = assess(config, as_of=as_of, scores=scores, drift=drift, trained_at=trained_at,
                      seen_until=replay.fits[state.production].train_window.end,
                      rows_since=replay.data.count_after(trained_at, labelled),
                      last_retrain_at=state.last_retrain, force=forced, estimate=estimate,
                      last_rejected_at=state.last_rejected,
                      reason=("every window" if state.policy.every_window
                              else f"scheduled every {format_span(state.policy.cadence)}" if due else None))
    state.fired.append(decision.fired)
    if state.challenger is not None and _challenge(replay, state, as_of) == PROMOTE:
        return  # the cycle's one move of Production: a retrain the triggers asked for waits
    if not decision.retrain:
        return
    if state.challenger is not None:  # a new candidate replaces the challenger (`moves._stage_candidate`)
        state.challenges.append((as_of.isoformat(), T.SUPERSEDED))
        state.challenger = None
    candidate = replay.fit(labelled)
    # the holdout's rows Production was not fitted on, as the cycle's `validate.compare` scores them
    holdout = unseen(candidate.holdout_window, replay.fits[state.production].train_window.end)
    rows = candidate.holdout_rows if holdout == candidate.holdout_window else replay.data.rows(holdout)
    promotion, _ = judge(config, replay.data, rows, replay.judged(labelled, holdout),
                         replay.judged(state.production, holdout))
    state.retrains += 1
    state.train_seconds += candidate.fit_seconds
    state.last_retrain = labelled  # a version's data time is its training's (`controller.version_time`)
    if promotion.promote:
        state.promoted += 1
        state.production = labelled
        if config.training.refit_on_pass:  # the cycle's refit (`validate.refit`) serves in its place
            state.production = Refit(labelled)
            state.train_seconds += replay.fit(state.production).fit_seconds
    elif config.validation.challenger is not None and inconclusive(promotion):  # `loop.challenger.placed`
        state.challenger, state.challenger_since, state.rounds = labelled, labelled, []
        state.challenges.append((as_of.isoformat(), T.CHALLENGER))
    else:
        state.rejected += 1
        state.last_rejected = labelled
    placed = state.challenger == labelled  # a challenger is no rejection (yet): its rounds decide
    state.failed.append(() if promotion.promote or placed else tuple(failed_checks(promotion.reasons)))
    state.candidate_metrics.append(promotion.candidate)
    state.retrain_points.append((as_of.isoformat(), T.PROMOTED if promotion.promote else
                                 T.CHALLENGER if placed else T.REJECTED))


def _challenge(replay: Replay, state: PolicyState, as_of: pd.Timestamp) -> str:
    """The challenger's rounds on the windows labelled by `as_of` and their verdict, as a cycle plays
    them (`loop.challenger.challenger_round`); promoted it serves, archived it counts as a rejection."""
    config = state.policy.config
    rule = config.validation.challenger

    def score(window: Window) -> Round | None:
        both = [replay.window_score(key, window) for key in (state.production, state.challenger)]
        return play(window.iso(), both[0].rows, both[0].metric, both[1].metric, config.higher_is_better)

    state.rounds += next_rounds(rule, state.rounds, state.challenger_since, config.monitoring.labelled(as_of),
                                config.monitoring.window, score, config.metric)
    found = verdict(rule, state.rounds, config.metric)
    if found.action == PROMOTE:
        state.production = state.challenger
        state.promoted += 1
    elif found.action == ARCHIVE:
        state.rejected += 1
        made = fitted_at(state.challenger)
        state.last_rejected = made if state.last_rejected is None else max(state.last_rejected, made)
    if found.action != WAIT:
        state.challenges.append((as_of.isoformat(), T.PROMOTED if found.action == PROMOTE else T.REJECTED))
        state.challenger = None
    return found.action
