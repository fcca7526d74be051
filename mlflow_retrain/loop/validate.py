"""Steps 5-7 of a cycle: the candidate against Production on one holdout, the gate's verdict carried
out (`loop.moves`: promoted, rejected, or waiting for a person), the numbers in the cycle's run.
`compare` alone is `mlflow-retrain compare`: the same judgement, nothing moved.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from mlflow_retrain.adapters.data import LabelledData, Window
from mlflow_retrain.adapters.registry import VersionInfo
from mlflow_retrain.base import tags as T
from mlflow_retrain.decide import PromotionDecision, format_span
from mlflow_retrain.decide.gate import limit_key
from mlflow_retrain.loop.evaluate import judge, registered
from mlflow_retrain.loop.moves import await_approval, judged
from mlflow_retrain.loop.observe import Cycle
from mlflow_retrain.loop.report import first_model_advice
from mlflow_retrain.measure.metrics import score
from mlflow_retrain.policy.config import Config


def compare(config: Config, data: LabelledData, holdout: Window, candidate: VersionInfo,
            production: VersionInfo | None) -> tuple[PromotionDecision, dict[str, Any]]:
    """Staging against Production, both loaded from the registry, on the holdout ending at as_of."""
    rows = data.cut(holdout, "holdout window")
    decision, evidence = judge(config, data, rows, registered(config, data, candidate.version),
                               None if production is None else registered(config, data, production.version))
    return decision, {"holdout_window": holdout.iso(), **evidence}


def validate(c: Cycle, candidate: VersionInfo, production: VersionInfo | None) -> None:
    """Compare on one holdout, gate, promote or archive; the numbers go to the report and run. A first
    model that fails says what to change (`loop.report.first_model_advice`), on its version too."""
    config, report = c.config, c.report
    promotion = _scored(c, candidate, production)
    if production is None and not promotion.promote:
        promotion = replace(promotion, reasons=[*promotion.reasons, first_model_advice(config, report.naive)])
    report.promotion = promotion
    if promotion.promote and config.validation.require_approval:  # a person signs off first (`signoff.py`)
        await_approval(c.registry, candidate, production, promotion, c.as_of, by=report.cycle_run_id or "")
        report.outcome = T.AWAITING_APPROVAL
    else:
        report.archived_versions = judged(c.registry, candidate, production, promotion, c.as_of,
                                          by=report.cycle_run_id or "")
        report.outcome = T.PROMOTED if promotion.promote else T.REJECTED


def first_promoted(c: Cycle, candidate: VersionInfo) -> None:
    """A first model the gate promoted as it was placed: its numbers on the holdout recorded like any
    judged candidate's, so the cycle's run, description and output carry the gate's verdict."""
    c.report.promotion = _scored(c, candidate, None)
    c.report.outcome = T.PROMOTED


def _scored(c: Cycle, candidate: VersionInfo, production: VersionInfo | None) -> PromotionDecision:
    """Both models on the cycle's holdout and the gate's verdict, recorded in the report and the run; a
    first model (no Production to beat) gets a naive forecast's error beside its own, for scale."""
    holdout = Window.ending(c.config.monitoring.labelled(c.as_of), c.config.training.holdout)
    decision, evidence = compare(c.config, c.data, holdout, candidate, production)
    if production is None:
        c.report.naive = naive_error(c.config, c.data, holdout)
    _record(c, decision, evidence)
    return decision


def _record(c: Cycle, decision: PromotionDecision, evidence: dict[str, Any]) -> None:
    import mlflow

    config, report = c.config, c.report
    report.holdout_window, report.holdout_digest = evidence["holdout_window"], evidence["holdout_digest"]
    # the policy's settings the gate applied, and the holdout it scored on
    mlflow.log_params({"holdout_window": evidence["holdout_window"], "holdout_digest": evidence["holdout_digest"],
                       "holdout_rows": evidence["holdout_rows"], "metric": config.metric,
                       limit_key(config.higher_is_better): decision.threshold,
                       "training.window": format_span(config.training.window)})
    # `holdout_` as in the training runs: both models scored on the cycle's one holdout, the gate's numbers
    for who in ("candidate", "production"):
        if evidence[who]:
            mlflow.log_metrics({f"holdout_{who}_{k}": v for k, v in evidence[who].items() if np.isfinite(v)})
    if report.naive is not None:
        mlflow.log_metric(f"holdout_naive_{config.metric}", report.naive)


def naive_error(config: Config, data: LabelledData, holdout: Window) -> float | None:
    """The policy's metric of a last-value forecast on the holdout (each row predicted by the labelled
    row before it), for the scale of a first model's error; None for classification."""
    if config.task != "regression":
        return None
    lo, hi = data.positions(holdout)
    target = data.frame[data.spec.target].astype(float)
    before = target.ffill().shift(1).iloc[lo:hi].to_numpy()
    truth = target.iloc[lo:hi].to_numpy()
    known = ~(np.isnan(before) | np.isnan(truth))
    return score(config.task, truth[known], before[known]).get(config.metric)
