"""Steps 5-7 of a cycle: the candidate against Production on one holdout, the gate's verdict carried
out (`loop.moves`: promoted, rejected, or waiting for a person), the numbers in the cycle's run.
`compare` alone is `mlflow-retrain compare`: the same judgement, nothing moved.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlflow_retrain.adapters.data import LabelledData, Window
from mlflow_retrain.adapters.registry import VersionInfo
from mlflow_retrain.base import tags as T
from mlflow_retrain.decide import PromotionDecision
from mlflow_retrain.loop.evaluate import judge, registered
from mlflow_retrain.loop.moves import await_approval, judged
from mlflow_retrain.loop.observe import Cycle
from mlflow_retrain.policy.config import Config


def compare(config: Config, data: LabelledData, holdout: Window, candidate: VersionInfo,
            production: VersionInfo | None) -> tuple[PromotionDecision, dict[str, Any]]:
    """Staging against Production, both loaded from the registry, on the holdout ending at as_of."""
    rows = data.cut(holdout, "holdout window")
    decision, evidence = judge(config, data, rows, registered(config, data, candidate.version),
                               None if production is None else registered(config, data, production.version))
    return decision, {"holdout_window": holdout.iso(), **evidence}


def validate(c: Cycle, candidate: VersionInfo, production: VersionInfo | None) -> None:
    """Compare on one holdout, gate, promote or archive; the numbers go to the report and run."""
    config, report = c.config, c.report
    holdout = Window.ending(config.monitoring.labelled(c.as_of), config.training.holdout)
    promotion, evidence = compare(config, c.data, holdout, candidate, production)
    report.promotion = promotion
    report.holdout_window, report.holdout_digest = evidence["holdout_window"], evidence["holdout_digest"]
    if promotion.promote and config.validation.require_approval:  # a person signs off first (`signoff.py`)
        await_approval(c.registry, candidate, production, promotion, c.as_of, by=report.cycle_run_id or "")
        report.outcome = T.AWAITING_APPROVAL
    else:
        report.archived_versions = judged(c.registry, candidate, production, promotion, c.as_of,
                                          by=report.cycle_run_id or "")
        report.outcome = T.PROMOTED if promotion.promote else T.REJECTED
    _log_comparison(evidence)


def _log_comparison(evidence: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_params({"holdout_window": evidence["holdout_window"], "holdout_digest": evidence["holdout_digest"],
                       "holdout_rows": evidence["holdout_rows"]})
    # `holdout_` as in the training runs: both models scored on the cycle's one holdout, the gate's numbers
    for who in ("candidate", "production"):
        if evidence[who]:
            mlflow.log_metrics({f"holdout_{who}_{k}": v for k, v in evidence[who].items() if np.isfinite(v)})
