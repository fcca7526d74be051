"""Which retraining policy to recommend from a replay, and how honest that recommendation is.

Why it is built this way: docs/design.md#decide-choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from dataclasses import dataclass, field

import numpy as np

from mlflow_retrain.decide.gate import failed_checks as gate_failed_checks
from mlflow_retrain.decide.gate import paired_bootstrap_ci

DAYS_PER_BUDGET = 30  # a budget counts retrains per 30 days of data time


def perfect(higher_is_better: bool) -> float:
    """The best value a metric can take: 0 for an error, 1 for a score (accuracy, f1, roc_auc, r2).

    Tolerances and sweeps are taken on the distance from it, so they mean the same for both kinds.
    """
    return 1.0 if higher_is_better else 0.0


@dataclass(frozen=True)
class Rule:
    """How to choose: tolerance and resolution make ties, a budget and a cost price the retrains."""

    tolerance: float = 0.05
    higher_is_better: bool = False
    resolution: float = 0.0
    budget: float | None = None  # at most this many retrains per 30 days
    cost: float = 0.0  # metric units per retrain, spread over the windows
    stability: float = 0.5  # walk-forward: weight of the spread of a policy's regret across blocks

    def allowance(self, retrains: int, best_retrains: int) -> float:
        """The band around the best: `tolerance`, widened up to twice by the share of the best's
        retrains a cheaper policy saves, so a near-tie that saves much is not lost on a knife edge."""
        return self.tolerance * (1 + max(0.0, 1 - (retrains + 1) / (best_retrains + 1)))

    def distance(self, value: float) -> float:
        return abs(perfect(self.higher_is_better) - value)

    def distances(self, series: Sequence[float | None]) -> list[float | None]:
        return [None if v is None or not math.isfinite(v) else self.distance(v) for v in series]


@dataclass(frozen=True)
class Candidate:
    """One policy over a run of windows: its metric per window and the windows where it retrained."""

    name: str
    family: str
    series: Sequence[float | None]
    retrain_windows: Sequence[int]  # window indices (a retrain at step i starts window i)
    days: float  # data time the windows cover

    @property
    def retrains(self) -> int:
        return len(self.retrain_windows)

    def mean(self) -> float:
        values = [v for v in self.series if v is not None and math.isfinite(v)]
        return float(np.mean(values)) if values else math.nan

    def part(self, lo: int, hi: int, days: float) -> Candidate:
        """The same policy over windows lo..hi-1 only."""
        return Candidate(self.name, self.family, self.series[lo:hi],
                         [w - lo for w in self.retrain_windows if lo <= w < hi], days)


@dataclass(frozen=True)
class Choice:
    """The chosen policy and why: the best, the ones as good as it, the ones over budget."""

    chosen: str
    best: str
    as_good: list[str] = field(default_factory=list)
    over_budget: list[str] = field(default_factory=list)
    reason: str = ""
    regret: dict[str, float] = field(default_factory=dict)  # walk-forward's score per policy (robust_choose)


def failed_checks(reasons: Sequence[str]) -> list[str]:
    """The gate checks a rejection failed, named as its reasons name them (`absolute`, `relative`,
    `significance`, a plugin's name): each reason is `name: ... (pass|fail)`; a rejection whose
    reasons say no `fail` counts as `other`."""
    return [name.removesuffix(" gate") for name in gate_failed_checks(reasons)] or ["other"]


def per_30_days(retrains: int, days: float) -> float:
    return retrains * DAYS_PER_BUDGET / days if days > 0 else math.inf


def objective(candidate: Candidate, rule: Rule) -> float:
    """Mean distance from perfect, plus the retrains' cost per window."""
    windows = sum(1 for v in candidate.series if v is not None and math.isfinite(v))
    mean = candidate.mean()
    if math.isnan(mean) or not windows:
        return math.nan
    return rule.distance(mean) + rule.cost * candidate.retrains / windows


def _within_budget(candidates: Sequence[Candidate], rule: Rule) -> tuple[list[Candidate], list[str]]:
    """The candidates the budget allows, and the names of those over it."""
    over = [c.name for c in candidates if c.retrains and rule.budget is not None
            and per_30_days(c.retrains, c.days) > rule.budget]
    return [c for c in candidates if c.name not in over], over


def _budget_note(rule: Rule, over: list[str]) -> str:
    return f"; over the budget of {rule.budget:g} per {DAYS_PER_BUDGET}d: {', '.join(over)}" if over else ""


def choose(candidates: Sequence[Candidate], rule: Rule) -> Choice:
    """The cheapest policy as good as the best allowed by the budget (module docstring)."""
    allowed, over = _within_budget([c for c in candidates if not math.isnan(objective(c, rule))], rule)
    if not allowed:
        return Choice("", "", over_budget=over, reason="no policy scored a window")
    best = min(allowed, key=lambda c: objective(c, rule))
    as_good = [c for c in allowed if c is best
               or objective(c, rule) <= objective(best, rule) * (1 + rule.allowance(c.retrains, best.retrains))
               or tied(rule.distances(c.series), rule.distances(best.series), rule.resolution,
                       shift=objective(c, rule) - objective(best, rule) - (rule.distance(c.mean()) - rule.distance(best.mean())))]
    chosen = min(as_good, key=lambda c: (c.retrains, objective(c, rule)))
    reason = (f"{chosen.name}: the fewest retrains ({chosen.retrains}) among {len(as_good)} policies within "
              f"{rule.tolerance:.0%} of the best ({best.name}; up to {2 * rule.tolerance:.0%} for one that saves "
              "most of its retrains) or tied with it")
    return Choice(chosen.name, best.name, [c.name for c in as_good], over, reason + _budget_note(rule, over))


def blocks_of(lo: int, hi: int, size: int) -> list[tuple[int, int]]:
    """Windows lo..hi-1 as consecutive blocks of `size` ending at `hi`; the oldest takes the rest
    (merged into the next one when shorter than half a block)."""
    size = max(1, size)
    cuts = list(range(hi, lo, -size))[::-1]
    if cuts[0] - lo < size / 2 and len(cuts) > 1:
        cuts = cuts[1:]
    return list(pairwise([lo, *cuts]))


def regrets(candidates: Sequence[Candidate], rule: Rule, blocks: Sequence[tuple[int, int]]) -> dict[str, list[float]]:
    """Each policy's regret per block: its objective over the block above the block's best, as a
    fraction of it (0 for the block's best); blocks a policy did not score are left out."""
    out: dict[str, list[float]] = {c.name: [] for c in candidates}
    for lo, hi in blocks:
        scores = {c.name: objective(c.part(lo, hi, c.days), rule) for c in candidates}
        finite = [v for v in scores.values() if not math.isnan(v)]
        if not finite:
            continue
        best = min(finite)
        for name, value in scores.items():
            if not math.isnan(value):
                out[name].append(value / best - 1 if best > 0 else 0.0 if value == 0 else math.inf)
    return out


def robust_choose(candidates: Sequence[Candidate], rule: Rule, blocks: Sequence[tuple[int, int]]) -> Choice:
    """The cheapest policy whose regret against each block's best, averaged over the blocks plus
    `rule.stability` times its spread, is within the band of the lowest (`Rule.allowance`): a policy
    that was best once by luck, or good only on average, loses to one that was always close."""
    per_block = regrets(candidates, rule, blocks)
    score = {name: float(np.mean(r) + rule.stability * np.std(r)) if r else math.nan for name, r in per_block.items()}
    allowed, over = _within_budget([c for c in candidates if not math.isnan(score[c.name])], rule)
    if not allowed:
        return Choice("", "", over_budget=over, reason="no policy scored a window")
    best = min(allowed, key=lambda c: (score[c.name], c.retrains))
    as_good = [c for c in allowed
               if score[c.name] <= score[best.name] + rule.allowance(c.retrains, best.retrains) + 1e-12]
    chosen = min(as_good, key=lambda c: (c.retrains, score[c.name]))
    reason = (f"{chosen.name}: the fewest retrains ({chosen.retrains}) among {len(as_good)} policies whose regret "
              f"against the best of each of {len(blocks)} blocks (mean + {rule.stability:g} x spread) is within "
              f"{rule.tolerance:.0%} of the lowest ({best.name}, {score[best.name]:.1%}; up to "
              f"{2 * rule.tolerance:.0%} for one that saves most of its retrains)")
    return Choice(chosen.name, best.name, [c.name for c in as_good], over, reason + _budget_note(rule, over),
                  regret={c.name: score[c.name] for c in allowed})


def tied(distances: Sequence[float | None], best: Sequence[float | None], resolution: float = 0.0,
         confidence: float = 0.95, shift: float = 0.0) -> bool:
    """Whether a policy's per-window errors are not distinguishable from the best policy's.

    A tie when the mean difference over the windows both scored (plus `shift`, the retrains' cost
    difference) is at most `resolution`, or when its paired bootstrap interval reaches zero.
    Consecutive windows are correlated (a stale model stays stale), so the windows are resampled in
    blocks of about n^(1/3): the means of consecutive blocks (a non-overlapping block bootstrap)."""
    pairs = np.array([(d, b) for d, b in zip(distances, best) if d is not None and b is not None], dtype=float)
    if not len(pairs):
        return False
    diff = pairs[:, 0] - pairs[:, 1] + shift
    if abs(float(diff.mean())) <= resolution:
        return True
    block = max(1, round(len(diff) ** (1 / 3)))
    usable = len(diff) - len(diff) % block
    blocks = diff[:usable].reshape(-1, block).mean(axis=1)
    if len(blocks) < 2:
        return False
    low, _ = paired_bootstrap_ci(blocks, np.zeros_like(blocks), confidence=confidence)
    return low <= 0


def schedule_curve(candidates: Sequence[Candidate], rule: Rule) -> list[tuple[int, float]]:
    """(retrains, distance from perfect) of the schedules replayed, `never` (a schedule that never
    comes) and every window (the shortest schedule) included, by retrains."""
    points: dict[int, float] = {}
    for c in candidates:
        if c.family in ("never", "schedule", "every_window") and not math.isnan(c.mean()):
            points.setdefault(c.retrains, rule.distance(c.mean()))
    return sorted(points.items())


def equal_budget(curve: Sequence[tuple[int, float]], retrains: int) -> float | None:
    """A schedule's distance from perfect at `retrains` retrains, interpolated linearly between the
    schedules run; None outside them (no schedule to compare with)."""
    if not curve or not curve[0][0] <= retrains <= curve[-1][0]:
        return None
    counts, distances = zip(*curve)
    return float(np.interp(retrains, counts, distances))


def gain(schedule_distance: float, distance: float) -> float:
    """How much closer to perfect than the equal-budget schedule: 0.1 = 10% less error."""
    if schedule_distance == 0:
        return 0.0 if distance == 0 else -math.inf
    return (schedule_distance - distance) / schedule_distance


@dataclass(frozen=True)
class Fold:
    """Windows [start, end) scored with the policy chosen on the windows before `start`."""

    start: int
    end: int
    chosen: str
    mean: float
    retrains: int


@dataclass(frozen=True)
class WalkForward:
    """The rule applied out of sample: each fold scored with the choice made before it."""

    folds: list[Fold]
    series: list[float | None]  # the chosen policies' metric over every out-of-sample window
    retrains: int
    days: float
    recommended: Choice  # the choice on the whole history: what to run from now on
    warnings: list[str] = field(default_factory=list)

    @property
    def start(self) -> int:
        return self.folds[0].start if self.folds else 0


def boundaries(windows: int, folds: int) -> list[int]:
    """Fold starts: `folds + 1` nearly equal consecutive blocks, the first one only ever a past."""
    return [round(windows * k / (folds + 1)) for k in range(1, folds + 1)] + [windows]


def walk_forward(candidates: Sequence[Candidate], rule: Rule, folds: int, day_of: Sequence[float]) -> WalkForward:
    """Choose on each fold's past by regret (`robust_choose`, in blocks of half the first fold),
    score on the fold. `day_of[i]` is window i's start in days from the first, `day_of[-1]` the end
    of the last window."""
    windows = len(candidates[0].series) if candidates else 0
    if folds < 1 or windows < folds + 1:
        raise ValueError(f"{folds} folds need at least {folds + 1} windows, got {windows}")
    cuts = boundaries(windows, folds)
    size = max(1, cuts[0] // 2)
    result: list[Fold] = []
    series: list[float | None] = []
    retrains = 0
    by_name = {c.name: c for c in candidates}
    for start, end in pairwise(cuts):
        past = [c.part(0, start, day_of[start] - day_of[0]) for c in candidates]
        chosen = robust_choose(past, rule, blocks_of(0, start, size)).chosen
        scored = by_name[chosen].part(start, end, day_of[end] - day_of[start])
        result.append(Fold(start, end, chosen, scored.mean(), scored.retrains))
        series += list(scored.series)
        retrains += scored.retrains
    whole = robust_choose(candidates, rule, blocks_of(0, windows, size))
    return WalkForward(result, series, retrains, day_of[-1] - day_of[cuts[0]], whole,
                       never_warnings(result, candidates, rule))


def never_warnings(folds: Sequence[Fold], candidates: Sequence[Candidate], rule: Rule) -> list[str]:
    """A walk-forward that runs `never` on a fold while some retraining policy beats never over the
    whole history by more than the tolerance: the early windows hid what retraining is worth."""
    never = {c.name for c in candidates if c.family == "never"}
    idle = [i + 1 for i, f in enumerate(folds) if f.chosen in never]
    scored = [c for c in candidates if not math.isnan(objective(c, rule))]
    retraining = [c for c in scored if c.retrains]
    if not idle or not retraining:
        return []
    baseline = min((objective(c, rule) for c in scored if c.name in never), default=math.nan)
    best = min(retraining, key=lambda c: objective(c, rule))
    cut = 1 - objective(best, rule) / baseline if baseline else 0.0
    if not cut > rule.tolerance:
        return []
    return [f"walk-forward ran never on fold{'s' if len(idle) > 1 else ''} {', '.join(map(str, idle))} of "
            f"{len(folds)}, while {best.name} has {cut:.0%} less error than never over the whole history: the "
            "windows before those folds did not show what retraining is worth (see rejected_by: a gate that "
            "rejects every candidate makes every policy look like never)"]
