"""Steps 5-7 of a cycle: the candidate against Production on one holdout, the gate's verdict carried
out (`loop.moves`: promoted, rejected, or waiting for a person), the numbers in the cycle's run.
`compare` alone is `mlflow-retrain compare`: the same judgement, nothing moved. With
`training.refit_on_pass` a candidate that passes is fitted again through as_of and that refit takes
its place: docs/design.md#refit-after-the-gate.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from mlflow_retrain.adapters.data import LabelledData, Window
from mlflow_retrain.adapters.registry import VersionInfo
from mlflow_retrain.adapters.trainers import make_candidate
from mlflow_retrain.base import tags as T
from mlflow_retrain.base.errors import TrainingError
from mlflow_retrain.decide import PromotionDecision, format_span
from mlflow_retrain.decide.gate import limit_key
from mlflow_retrain.decide.window import unseen
from mlflow_retrain.loop.challenger import placed
from mlflow_retrain.loop.evaluate import judge, registered
from mlflow_retrain.loop.moves import await_approval, judged, recorded, refitted
from mlflow_retrain.loop.observe import Cycle
from mlflow_retrain.loop.report import first_model_advice
from mlflow_retrain.policy.config import Config

log = logging.getLogger(__name__)


def compare(config: Config, data: LabelledData, holdout: Window, candidate: VersionInfo,
            production: VersionInfo | None) -> tuple[PromotionDecision, dict[str, Any]]:
    """Staging against Production, both loaded from the registry, on the holdout ending at as_of: its
    rows after Production's training rows (`window.unseen`), so neither model is scored in sample."""
    seen = production.tags.get(T.TRAIN_WINDOW) if production is not None else None
    holdout = unseen(holdout, Window.parse(seen).end if seen else None)
    rows = data.cut(holdout, "holdout window")
    decision, evidence = judge(config, data, rows, registered(config, data, candidate.version),
                               None if production is None else registered(config, data, production.version))
    return decision, {"holdout_window": holdout.iso(), **evidence}


def validate(c: Cycle, candidate: VersionInfo, production: VersionInfo | None) -> None:
    """Compare on one holdout, gate, promote or archive; the numbers go to the report and run. A first
    model that fails says what to change (`loop.report.first_model_advice`), on its version too."""
    config, report = c.config, c.report
    if candidate.tags.get(T.REFIT_OF):  # staged by a cycle cut short: its gate's record, not its rows, decides
        _carry_out(c, candidate, production, _recorded(c, candidate, production))
        return
    promotion = _scored(c, candidate, production)
    if production is None and not promotion.promote:
        promotion = replace(promotion, reasons=[*promotion.reasons, first_model_advice(config, report.naive)])
    report.promotion = promotion
    if placed(c, candidate, production, promotion):  # inconclusive: waits beside Production (`loop.challenger`)
        return
    if promotion.promote and config.training.refit_on_pass:
        candidate = refit(c, candidate, production, promotion)
        report.candidate_version = candidate.version
    _carry_out(c, candidate, production, promotion)


def refit(c: Cycle, validated: VersionInfo, production: VersionInfo | None,
          promotion: PromotionDecision) -> VersionInfo:
    """The validated candidate fitted again by the same trainer through the holdout's end, and staged
    in its place (`moves.refitted`). A refit that fails leaves the validated fit to be carried out: it
    passed the gate, and nothing half-made is placed (a half-made version stays pending outside
    Staging, which the next reconcile archives as abandoned)."""
    as_of = c.config.monitoring.labelled(c.as_of)
    try:
        made = make_candidate(c.config, c.data, as_of, trigger=validated.tags.get(T.TRIGGER, ""),
                              reason=validated.tags.get(T.REASON, ""), cycle_run_id=c.report.cycle_run_id or "",
                              registry=c.registry, via=c.via, refit_of=validated.run_id or "")
    except TrainingError as exc:
        log.warning("the refit of v%s failed, the validated fit is carried out instead: %s", validated.version, exc)
        promotion.reasons.append(f"the refit failed ({str(exc)[:300]}): the validated fit itself")
        return validated
    refitted(c.registry, validated, made.version, production, promotion, c.as_of, by=c.report.cycle_run_id or "")
    return c.registry.get(made.version)


def _recorded(c: Cycle, refit: VersionInfo, production: VersionInfo | None) -> PromotionDecision:
    """A refit's verdict is its validated fit's gate, recorded on that fit when the refit was staged; it
    stands only while that record does and Production is still the version the gate compared against."""
    validated, reason = recorded(c.registry, refit)
    baseline = validated.tags.get(T.BASELINE_VERSION, "") if validated is not None else ""
    now = production.version if production is not None else ""
    if reason and baseline == now:
        return PromotionDecision(True, [reason], c.config.metric, float("nan"), None, None, None)
    if validated is None:
        why = "a refit whose validated fit is not in the registry"
    elif not reason:
        why = (f"a refit whose validated fit v{validated.version} no longer says refitted (it is now "
               f"{validated.tags.get(T.DECISION) or 'undecided'})")
    else:
        why = f"a refit whose validated fit's gate compared against v{baseline or '-'}"
    why += f", while Production is now v{now or '-'}: not carried out"
    return PromotionDecision(False, [why], c.config.metric, float("nan"), None, None, None)


def _carry_out(c: Cycle, candidate: VersionInfo, production: VersionInfo | None,
               promotion: PromotionDecision) -> None:
    report = c.report
    if promotion.promote and c.config.validation.require_approval:  # a person signs off first (`signoff.py`)
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
        c.report.naive = (evidence.get("naive") or {}).get(c.config.metric)
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
