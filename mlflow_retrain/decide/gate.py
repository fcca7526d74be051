"""The champion/challenger gate: promote a candidate only if it is good AND better (or not worse).

Semantics follow `mlflow.validate_evaluation_results` (an absolute threshold, a minimum absolute
and a minimum relative change over the baseline, `greater_is_better`) but the result is a decision
carrying every number, not an exception, so a rejection is recorded as carefully as a promotion.

`judge` takes both models' numbers on the same holdout (metrics and per-row losses, scored outside
the core by `evaluate.judge`) and applies the gate, then every gate check the policy names under
`validation.checks` (a `GateCheck`, registered by a package through `mlflow_retrain.gates`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Sequence

import numpy as np

from mlflow_retrain.decide.baseline import naive_check
from mlflow_retrain.decide.settings import Options, Scored
from mlflow_retrain.decide.verdicts import number as _n

if TYPE_CHECKING:
    from mlflow_retrain.decide.triggers import PolicyContext


# `validation.compare`: beat Production; or not be worse than it beyond noise (`noise_check`): rejected
# only when the evidence says worse by more than the margin, or (non-inferior) promoted only when it
# says not worse by more than the margin
BETTER, NOT_WORSE, NON_INFERIOR = "better", "not_worse", "non_inferior"
COMPARISONS = (BETTER, NOT_WORSE, NON_INFERIOR)


@dataclass(frozen=True)
class Significance:
    """`validation.significance`: the paired bootstrap's confidence level and resamples."""

    confidence: float = 0.95
    n_boot: int = 2000


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reasons: list[str]
    metric: str
    candidate: float
    baseline: float | None
    threshold: float | None
    improvement: float | None
    ci: tuple[float, float] | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    @property
    def failed(self) -> list[str]:
        """The checks this decision's reasons name as failed (`absolute gate`, a plugin's name)."""
        return failed_checks(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "reasons": list(self.reasons), "metric": self.metric,
                "candidate": self.candidate, "baseline": self.baseline, "threshold": self.threshold,
                "improvement": self.improvement, "ci": None if self.ci is None else list(self.ci)}


def failed_checks(reasons: Sequence[str]) -> list[str]:
    """The checks that failed, named as their reasons name them: each reason reads `name: ... (pass|fail)`
    (a plugin may end `...; fail)`), so the titles, the backtest's `rejected_by` and the story agree."""
    return [text.split(":", 1)[0].strip() for text in reasons if re.search(r"\bfail\)\s*$", text)]


def paired_bootstrap_ci(baseline_loss: np.ndarray, candidate_loss: np.ndarray, *, confidence: float = 0.95,
                        n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """CI of mean(baseline_loss - candidate_loss) resampling rows (paired); positive = candidate better.

    Pairing matters: both models are scored on the same rows, so the row-to-row difficulty cancels
    and a small but consistent improvement is detectable.
    """
    base = np.asarray(baseline_loss, dtype=float)
    cand = np.asarray(candidate_loss, dtype=float)
    if base.shape != cand.shape:
        raise ValueError(f"loss arrays differ in length: {base.shape} vs {cand.shape}")
    if base.size == 0:
        raise ValueError("loss arrays are empty")
    diff = base - cand
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // diff.size)  # bound memory: rows x resamples per chunk
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        idx = rng.integers(0, diff.size, size=(size, diff.size))
        means[start:start + size] = diff[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def limit_key(higher_is_better: bool) -> str:
    """The policy key the absolute gate's limit comes from, for reasons that say where to change it."""
    return "validation.min_metric" if higher_is_better else "validation.max_metric"


def gate(*, metric: str, candidate: float, baseline: float | None, higher_is_better: bool,
         threshold: float | None, min_improvement: float = 0.0, min_relative_improvement: float = 0.0,
         significance: float | None = None,
         baseline_loss: np.ndarray | None = None, candidate_loss: np.ndarray | None = None,
         n_boot: int = 2000, seed: int = 0, extra: Sequence[tuple[bool, str]] = (),
         compare: str = BETTER, margin: float = 0.02, confidence: float = 0.95) -> PromotionDecision:
    """Absolute gate AND a comparison with Production AND `extra` (further verdicts: the policy's gate
    checks). The comparison is `better` (the relative gate, optionally a significant paired
    improvement) or a paired bootstrap against a `margin` of Production's loss (`noise_check`)."""
    valid = candidate is not None and not math.isnan(candidate)
    checks = [absolute_check(metric, candidate, threshold, higher_is_better, valid)]
    improvement = None
    if baseline is not None:
        improvement = (candidate - baseline) if higher_is_better else (baseline - candidate)
    ci = None
    if baseline is None:
        checks.append((True, "relative gate: no Production version to beat"))
    elif compare != BETTER:
        ci = paired_bootstrap_ci(*_losses(baseline_loss, candidate_loss), confidence=confidence, n_boot=n_boot,
                                 seed=seed)
        checks.append(noise_check(metric, candidate, baseline, ci, float(np.mean(baseline_loss)), margin, confidence,
                                  valid, strict=compare == NON_INFERIOR))
    else:
        checks.append(relative_check(metric, candidate, baseline, improvement, min_improvement,
                                     min_relative_improvement, valid))
        if significance is not None:
            ci = paired_bootstrap_ci(*_losses(baseline_loss, candidate_loss), confidence=significance,
                                     n_boot=n_boot, seed=seed)
            checks.append(significance_check(ci, significance))
    checks.extend(extra)
    return PromotionDecision(
        promote=all(ok for ok, _ in checks), reasons=[text for _, text in checks], metric=metric,
        candidate=float(candidate), baseline=None if baseline is None else float(baseline), threshold=threshold,
        improvement=improvement, ci=ci,
    )


def _losses(baseline_loss: np.ndarray | None, candidate_loss: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if baseline_loss is None or candidate_loss is None:
        raise ValueError("comparing beyond noise needs the per-row losses of both models")
    return baseline_loss, candidate_loss


def absolute_check(metric: str, candidate: float, threshold: float | None, higher_is_better: bool,
                   valid: bool) -> tuple[bool, str]:
    """The candidate within the policy's limit: what catches a broken candidate whatever Production does."""
    if threshold is None:
        return valid, "absolute gate: none configured"
    passed = valid and (candidate > threshold if higher_is_better else candidate < threshold)
    side = "above" if higher_is_better else "below"
    return passed, (f"absolute gate: candidate {metric} {_n(candidate)} is {'' if passed else 'not '}{side} "
                    f"the limit {_n(threshold)} ({limit_key(higher_is_better)}) ({'pass' if passed else 'fail'})")


def relative_check(metric: str, candidate: float, baseline: float, improvement: float, min_improvement: float,
                   min_relative_improvement: float, valid: bool) -> tuple[bool, str]:
    """`compare: better`: the candidate beats Production by the larger of the two required margins."""
    relative = min_relative_improvement * abs(baseline)  # e.g. 2% of Production's error
    required = max(min_improvement, relative)
    if required > 0:
        passed = valid and improvement >= required
        need = (f"{'reaches' if passed else 'is short of'} the {_n(required)} required"
                + (f" ({min_relative_improvement:.0%} of Production)" if relative > min_improvement else ""))
    else:
        passed = valid and improvement > 0
        need = f"is {'' if passed else 'not '}above 0"
    return passed, (f"relative gate: candidate {metric} {_n(candidate)} vs Production {_n(baseline)}, "
                    f"improvement {_n(improvement)} {need} ({'pass' if passed else 'fail'})")


def significance_check(reduction: tuple[float, float], confidence: float) -> tuple[bool, str]:
    """`compare: better` with `significance`: the CI of the per-row loss reduction excludes zero."""
    passed = reduction[0] > 0
    return passed, (f"significance: {confidence:.0%} CI of the per-row loss reduction [{_n(reduction[0])}, "
                    f"{_n(reduction[1])}] {'excludes' if passed else 'includes'} zero ({'pass' if passed else 'fail'})")


def noise_check(metric: str, candidate: float, baseline: float, reduction: tuple[float, float],
                baseline_mean_loss: float, margin: float, confidence: float, valid: bool, *,
                strict: bool) -> tuple[bool, str]:
    """The CI of the per-row loss difference (candidate - Production) against `margin` x Production's
    mean loss. `not_worse` fails only when the whole CI lies above it (worse beyond noise);
    `non_inferior` (`strict`) passes only when the whole CI lies below it.

    On a noisy series "better" is a coin flip between two equally good models; `not_worse` promotes
    the fresher one unless the holdout shows it worse (`docs/design.md#decide-gate`).
    """
    low, high = -reduction[1], -reduction[0]  # (candidate - Production), from (Production - candidate)
    allowed = margin * baseline_mean_loss
    bounds = f"the {confidence:.0%} CI of the per-row loss difference [{_n(low)}, {_n(high)}]"
    head = f"candidate {metric} {_n(candidate)} vs Production {_n(baseline)}: {bounds}"
    if strict:
        passed = valid and high < allowed
        where = "is within" if passed else "reaches beyond"
        return passed, f"non-inferior: {head} {where} the {margin:.0%} margin ({_n(allowed)}) ({'pass' if passed else 'fail'})"
    passed = valid and low <= allowed
    where = "does not lie wholly above" if passed else "lies wholly above"
    verdict = "not worse beyond noise" if passed else "worse beyond noise"
    return passed, (f"not worse: {head} {where} the {margin:.0%} margin ({_n(allowed)}): {verdict} "
                    f"({'pass' if passed else 'fail'})")


@dataclass(frozen=True)
class Scores:
    """One model's numbers on the holdout: every metric, and the per-row loss of the policy's metric."""

    metrics: dict[str, float]
    loss: np.ndarray


@dataclass(frozen=True)
class Comparison:
    """What a gate check sees: both models on the same holdout rows, as plain numbers."""

    metric: str
    higher_is_better: bool
    candidate: Scores
    baseline: Scores | None


class GateCheck:
    """One more condition a candidate must meet to be promoted, configured under `validation.checks`.

    Subclasses are frozen dataclasses of their options, registered through the `mlflow_retrain.gates`
    entry point group under their `name`.
    """

    name: ClassVar[str]

    @classmethod
    def parse(cls, checks: Options, policy: "PolicyContext") -> "GateCheck | None":
        """Read `validation.checks.<name>` (`checks.sub(cls.name)`, ...); None if unset."""
        raise NotImplementedError

    def check(self, seen: Comparison) -> tuple[bool, str]:
        """(passed, one sentence with the numbers)."""
        raise NotImplementedError


class Validation(Protocol):
    @property
    def min_improvement(self) -> float: ...

    @property
    def min_relative_improvement(self) -> float: ...

    @property
    def significance(self) -> Significance | None: ...

    @property
    def checks(self) -> Sequence[GateCheck]: ...

    @property
    def compare(self) -> str: ...

    @property
    def margin(self) -> float: ...

    @property
    def max_ratio_to_naive(self) -> float | None: ...

    @property
    def challenger(self) -> Any: ...  # `decide.challenge.ChallengerRule | None`: its verdict needs the CI


class Training(Protocol):
    @property
    def seed(self) -> int: ...


class Policy(Scored, Protocol):
    """What the gate reads of the policy (`policy.config.Config`)."""

    @property
    def gate_threshold(self) -> float | None: ...

    @property
    def validation(self) -> Validation: ...

    @property
    def training(self) -> Training: ...


def judge(config: Policy, candidate: Scores, baseline: Scores | None, naive: Scores | None = None) -> PromotionDecision:
    """The gate over both models' numbers on ONE holdout, then the naive baseline's check (`naive`:
    its numbers on the same rows) and the policy's gate checks."""
    v = config.validation
    significance = v.significance
    ratio = v.max_ratio_to_naive
    # a first model is judged by the absolute gate alone, as it is placed (`docs/concepts.md`)
    against_naive = [] if ratio is None or baseline is None else [
        naive_check(config.metric, candidate.metrics[config.metric],
                    None if naive is None else naive.metrics.get(config.metric), ratio)]
    seen = Comparison(config.metric, config.higher_is_better, candidate, baseline)
    noise = v.compare != BETTER
    decision = gate(
        metric=config.metric, candidate=candidate.metrics[config.metric],
        baseline=None if baseline is None else baseline.metrics[config.metric],
        higher_is_better=config.higher_is_better, threshold=config.gate_threshold,
        min_improvement=v.min_improvement, min_relative_improvement=v.min_relative_improvement,
        significance=significance.confidence if significance and not noise else None,
        baseline_loss=None if baseline is None else baseline.loss, candidate_loss=candidate.loss,
        n_boot=significance.n_boot if significance else Significance.n_boot, seed=config.training.seed,
        extra=[*against_naive, *(check.check(seen) for check in v.checks)],
        compare=v.compare, margin=v.margin,
        confidence=significance.confidence if significance else Significance.confidence,
    )
    if v.challenger is not None and decision.ci is None and baseline is not None:
        # whether a rejection is inconclusive (`challenge.inconclusive`) reads the paired interval
        ci = paired_bootstrap_ci(baseline.loss, candidate.loss, confidence=Significance.confidence,
                                 n_boot=Significance.n_boot, seed=config.training.seed)
        decision = replace(decision, ci=ci)
    return decision
