"""The champion/challenger gate: good AND better, optionally significantly better; every number kept."""

from __future__ import annotations

import numpy as np
import pytest

from mlflow_retrain.decide.gate import gate, paired_bootstrap_ci


def test_absolute_and_relative_gates():
    ok = gate(metric="mae", candidate=40.0, baseline=50.0, higher_is_better=False, threshold=90.0)
    assert ok.promote and ok.improvement == 10.0
    assert ok.reasons == ["absolute gate: candidate mae 40 is below the limit 90 (validation.max_metric) (pass)",
                          "relative gate: candidate mae 40 vs Production 50, improvement 10 is above 0 (pass)"]
    too_bad = gate(metric="mae", candidate=95.0, baseline=120.0, higher_is_better=False, threshold=90.0)
    assert not too_bad.promote and "(pass)" in too_bad.reasons[1]
    # no sign that reads as a false statement: the failed check says what is not so
    assert too_bad.reasons[0] == "absolute gate: candidate mae 95 is not below the limit 90 (validation.max_metric) (fail)"
    not_better = gate(metric="mae", candidate=50.0, baseline=50.0, higher_is_better=False, threshold=90.0)
    assert not not_better.promote and not_better.reasons[1].endswith("improvement 0 is not above 0 (fail)")
    small = gate(metric="mae", candidate=49.0, baseline=50.0, higher_is_better=False, threshold=None,
                 min_improvement=2.0)
    assert not small.promote and "is short of the 2 required (fail)" in small.reasons[1]
    # relative, as in MLflow's min_relative_change: 2% of Production's mae 50 is 1
    relative = [gate(metric="mae", candidate=c, baseline=50.0, higher_is_better=False, threshold=None,
                     min_relative_improvement=0.02) for c in (49.5, 49.0)]
    assert [d.promote for d in relative] == [False, True]
    assert "improvement 0.5 is short of the 1 required (2% of Production) (fail)" in relative[0].reasons[1]
    # the larger of the two minimums binds
    both = gate(metric="mae", candidate=48.0, baseline=50.0, higher_is_better=False, threshold=None,
                min_improvement=3.0, min_relative_improvement=0.02)
    assert not both.promote and "is short of the 3 required (fail)" in both.reasons[1]
    accuracy = gate(metric="accuracy", candidate=0.96, baseline=0.94, higher_is_better=True, threshold=0.95)
    assert accuracy.promote and "is above the limit 0.95 (validation.min_metric)" in accuracy.reasons[0]
    first = gate(metric="mae", candidate=40.0, baseline=None, higher_is_better=False, threshold=90.0)
    assert first.promote and "no Production version to beat" in first.reasons[1]
    assert not gate(metric="mae", candidate=float("nan"), baseline=None, higher_is_better=False, threshold=90.0).promote


def test_significance_uses_a_paired_bootstrap():
    rng = np.random.default_rng(1)
    difficulty = rng.gamma(2.0, 30.0, size=400)  # row difficulty dominates the spread
    baseline = difficulty + 1.0
    candidate = difficulty + rng.normal(0.0, 0.2, size=400)
    low, high = paired_bootstrap_ci(baseline, candidate, n_boot=1000)
    assert 0.9 < low < 1.0 < high < 1.1  # pairing cancels the difficulty: a 1-unit gain is sharp
    decided = gate(metric="mae", candidate=float(candidate.mean()), baseline=float(baseline.mean()),
                   higher_is_better=False, threshold=None, significance=0.95, baseline_loss=baseline,
                   candidate_loss=candidate, n_boot=500)
    assert decided.promote and "excludes zero (pass)" in decided.reasons[-1]
    noise = difficulty + rng.normal(0.0, 5.0, size=400)
    tie = gate(metric="mae", candidate=float(noise.mean()), baseline=float(difficulty.mean()) + 0.05,
               higher_is_better=False, threshold=None, significance=0.95, baseline_loss=difficulty + 0.05,
               candidate_loss=noise, n_boot=500)
    assert not tie.promote and "includes zero (fail)" in tie.reasons[-1]


def test_bootstrap_rejects_mismatched_or_empty_losses():
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap_ci(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="empty"):
        paired_bootstrap_ci(np.ones(0), np.ones(0))


def test_noise_aware_comparisons_against_a_margin_of_productions_loss():
    """`not_worse` fails only a candidate worse beyond noise; `non_inferior` passes only one shown not worse;
    both against margin x Production's mean per-row loss, and the absolute gate still catches a broken one."""
    rng = np.random.default_rng(2)
    production = rng.gamma(2.0, 5.0, size=300)
    tie = production + rng.normal(0.0, 1.0, size=300)  # as good, up to noise: "better" is a coin flip here
    kwargs = dict(metric="mae", higher_is_better=False, threshold=30.0, baseline_loss=production, n_boot=500,
                  margin=0.02)

    def both(candidate_loss: np.ndarray, **more) -> list:
        return [gate(candidate=float(candidate_loss.mean()), candidate_loss=candidate_loss,
                     **{"baseline": float(production.mean()), **kwargs, **more}, compare=c)
                for c in ("not_worse", "non_inferior")]

    lenient, strict = both(tie)
    low, high = -strict.ci[1], -strict.ci[0]
    allowed = 0.02 * production.mean()
    assert lenient.promote and strict.promote and low < 0 < high < allowed
    head = (f"candidate mae {tie.mean():.4g} vs Production {production.mean():.4g}: the 95% CI of the per-row loss "
            f"difference [{low:.4g}, {high:.4g}]")
    assert strict.reasons[1] == f"non-inferior: {head} is within the 2% margin ({allowed:.4g}) (pass)"
    assert lenient.reasons[1] == (f"not worse: {head} does not lie wholly above the 2% margin ({allowed:.4g}): "
                                  "not worse beyond noise (pass)")
    # 3% worse on every row: not shown within 2%, yet not shown worse beyond it on a noisy holdout either
    noisy = production * 1.03 + rng.normal(0.0, 3.0, size=300)
    lenient, strict = both(noisy)
    assert lenient.promote and not strict.promote and "reaches beyond the 2% margin" in strict.reasons[1]
    worse = production * 1.1  # 10% worse on every row: worse beyond noise for both
    lenient, strict = both(worse)
    assert not lenient.promote and not strict.promote
    assert lenient.reasons[1].endswith("lies wholly above the 2% margin " f"({allowed:.4g}): worse beyond noise (fail)")
    # the absolute gate still catches a broken candidate, even against an equally broken Production
    broken = production + 100.0
    for decided in both(broken, baseline=float(broken.mean()), baseline_loss=broken):
        assert not decided.promote and decided.reasons[0].endswith("(fail)") and decided.reasons[1].endswith("(pass)")
    first = gate(candidate=10.0, baseline=None, candidate_loss=tie, **kwargs, compare="not_worse")
    assert first.promote and first.ci is None
    with pytest.raises(ValueError, match="per-row losses"):
        gate(candidate=10.0, baseline=11.0, **{**kwargs, "baseline_loss": None}, compare="not_worse")


def test_the_policy_chooses_the_comparison():
    """`validation.compare` with `margin` replaces the relative gate in `judge`; `better` stays the default."""
    from mlflow_retrain.decide.gate import Scores, judge
    from mlflow_retrain.policy.parse import parse_config

    data = {"path": "d.csv", "timestamp": "t", "target": "y", "features": ["a"]}
    loss = np.linspace(1.0, 3.0, 200)
    candidate, production = Scores({"mae": 2.01}, loss + 0.01), Scores({"mae": 2.0}, loss)
    better = judge(parse_config({"model_name": "m", "data": data}), candidate, production)
    assert not better.promote and better.reasons[1].startswith("relative gate")
    for compare, word in (("not_worse", "does not lie wholly above"), ("non_inferior", "is within")):
        policy = parse_config({"model_name": "m", "data": data, "validation": {
            "compare": compare, "margin": 0.05, "significance": {"confidence": 0.9}, "min_improvement": 0.0}})
        assert (policy.validation.compare, policy.validation.margin) == (compare, 0.05)
        fresher = judge(policy, candidate, production)
        assert fresher.promote and len(fresher.reasons) == 2
        assert f"the 90% CI of the per-row loss difference [0.01, 0.01] {word} the 5% margin (0.1)" in fresher.reasons[1]
