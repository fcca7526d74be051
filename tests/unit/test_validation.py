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


def test_not_worse_promotes_a_tie_within_noise_and_refuses_a_worse_or_broken_candidate():
    """`compare: not_worse`: the upper CI bound of (candidate - Production) loss below margin x Production's loss."""
    rng = np.random.default_rng(2)
    production = rng.gamma(2.0, 5.0, size=300)
    tie = production + rng.normal(0.0, 1.0, size=300)  # as good, up to noise: "better" is a coin flip here
    kwargs = dict(metric="mae", higher_is_better=False, threshold=30.0, baseline_loss=production, n_boot=500,
                  not_worse=0.02)
    passed = gate(candidate=float(tie.mean()), baseline=float(production.mean()), candidate_loss=tie, **kwargs)
    low, high = -passed.ci[1], -passed.ci[0]
    allowed = 0.02 * production.mean()
    assert passed.promote and high < allowed and low < 0
    assert passed.reasons[1] == (f"not worse: candidate mae {tie.mean():.4g} vs Production {production.mean():.4g}: "
                                 f"the 95% CI of the per-row loss difference [{low:.4g}, {high:.4g}] is within the 2% "
                                 f"margin ({allowed:.4g}) (pass)")
    worse = production * 1.1  # 10% worse on every row: beyond the 2% margin
    refused = gate(candidate=float(worse.mean()), baseline=float(production.mean()), candidate_loss=worse, **kwargs)
    assert not refused.promote and "is beyond the 2% margin" in refused.reasons[1] and "(fail)" in refused.reasons[1]
    # the absolute gate still catches a broken candidate, even against a broken Production
    broken = production + 100.0
    both_bad = gate(candidate=float(broken.mean()), baseline=float(broken.mean()), candidate_loss=broken,
                    **{**kwargs, "baseline_loss": broken})
    assert not both_bad.promote and both_bad.reasons[0].endswith("(fail)") and both_bad.reasons[1].endswith("(pass)")
    first = gate(candidate=10.0, baseline=None, candidate_loss=tie, **kwargs)
    assert first.promote and first.ci is None
    with pytest.raises(ValueError, match="per-row losses"):
        gate(candidate=10.0, baseline=11.0, **{**kwargs, "baseline_loss": None})


def test_the_policy_chooses_the_comparison():
    """`validation.compare: not_worse` with `margin` replaces the relative gate in `judge`; `better` stays the default."""
    from mlflow_retrain.decide.gate import Scores, judge
    from mlflow_retrain.policy.parse import parse_config

    data = {"path": "d.csv", "timestamp": "t", "target": "y", "features": ["a"]}
    loss = np.linspace(1.0, 3.0, 200)
    candidate, production = Scores({"mae": 2.01}, loss + 0.01), Scores({"mae": 2.0}, loss)
    better = judge(parse_config({"model_name": "m", "data": data}), candidate, production)
    assert not better.promote and better.reasons[1].startswith("relative gate")
    policy = parse_config({"model_name": "m", "data": data, "validation": {"compare": "not_worse", "margin": 0.05,
                                                                             "significance": {"confidence": 0.9}}})
    assert (policy.validation.compare, policy.validation.margin) == ("not_worse", 0.05)
    fresher = judge(policy, candidate, production)
    assert fresher.promote and len(fresher.reasons) == 2
    assert "the 90% CI of the per-row loss difference [0.01, 0.01] is within the 5% margin (0.1) (pass)" in fresher.reasons[1]
