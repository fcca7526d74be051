"""What one cycle saw and did (`CycleReport`), and its record: the audit run's name, its Markdown
description, its metrics and `decision.json`, the gate's evidence on the candidate's page.

The words a person reads first about a cycle are made here, from the report alone, so a cycle, a
dry run and the notifications describe the same decision the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlflow_retrain.base import links
from mlflow_retrain.base import tags as T
from mlflow_retrain.decide import PromotionDecision, RetrainDecision, WindowScore
from mlflow_retrain.measure.columns import DriftNumbers
from mlflow_retrain.decide.approval import ApprovalVerdict
from mlflow_retrain.decide.gate import limit_key
from mlflow_retrain.decide.verdicts import number
from mlflow_retrain.adapters.registry.story import padded
from mlflow_retrain.loop.reconcile import Reconciled
from mlflow_retrain.policy.config import Config

@dataclass
class CycleReport:
    """Everything one cycle saw and did; logged as `decision.json` and printed by the CLI."""

    model_name: str
    as_of: str
    dry_run: bool
    # no_retrain | blocked | would_retrain | would_validate | promoted | rejected | awaiting_approval | expired;
    # a dry run whose candidate a person signed off: would_promote | would_reject | would_expire
    outcome: str = "no_retrain"
    cycle_run_id: str | None = None
    production_version: str | None = None
    metric: str = "mae"
    monitoring: list[WindowScore] = field(default_factory=list)
    drift: DriftNumbers | None = None
    decision: RetrainDecision | None = None
    candidate_version: str | None = None
    promotion: PromotionDecision | None = None
    holdout_window: str | None = None
    holdout_digest: str | None = None
    archived_versions: list[str] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    reconciled: Reconciled | None = None  # what this cycle repaired first, after a crashed one
    stale: str | None = None  # labels stopped arriving: the newest is older than monitoring.max_data_gap
    approval: ApprovalVerdict | None = None  # what became of a candidate awaiting a person's sign-off
    # rows read, exact repeats and conflicting labels found, what data.duplicates did (`data.RowCounts`)
    data: dict[str, Any] | None = None
    naive: float | None = None  # a first model's scale: a naive forecast's metric on the same holdout (`measure.naive`)
    warnings: list[str] = field(default_factory=list)  # a trigger that will fire always (`Trigger.below_floor`)
    challenger: dict[str, Any] | None = None  # the challenger's rounds so far and their verdict (`loop.challenger`)

    @property
    def reason(self) -> str:
        """Why this cycle did what it did: the triggers, then the gate's verdict when there was one."""
        why = self.decision.reason if self.decision else ""
        if self.first_model_rejected:
            return (f"{why} => rejected: the first model failed the {failed_checks(self.promotion)}, so no version "
                    f"is in Production yet; it is archived and the next cycle trains another, which fails alike "
                    f"unless the policy or the data changes: {self.promotion.reason}")
        if self.promotion is not None:
            return f"{why} => {self.outcome}: {self.promotion.reason}"
        return why

    @property
    def first_model_rejected(self) -> bool:
        """No Production and the candidate failed the gate: nothing serves, which must read plainly."""
        return self.production_version is None and self.promotion is not None and not self.promotion.promote

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name, "as_of": self.as_of, "dry_run": self.dry_run, "outcome": self.outcome,
            "cycle_run_id": self.cycle_run_id, "production_version": self.production_version, "metric": self.metric,
            "monitoring": [w.__dict__ for w in self.monitoring],
            "drift": None if self.drift is None else {"drift_share": self.drift.drift_share,
                                                      "drifted_columns": self.drift.drifted_columns,
                                                      "total_columns": self.drift.total_columns},
            "retrain": None if self.decision is None else self.decision.to_dict(),
            "candidate_version": self.candidate_version,
            "promotion": None if self.promotion is None else self.promotion.to_dict(),
            "holdout_window": self.holdout_window, "holdout_digest": self.holdout_digest,
            "archived_versions": self.archived_versions, "reason": self.reason,
            "stale": self.stale, "approval": None if self.approval is None else self.approval.to_dict(),
            "data": self.data, "naive": self.naive, "warnings": list(self.warnings),
            **({"challenger": self.challenger} if self.challenger is not None else {}),  # with one in Staging
            "reconciled": None if self.reconciled is None or not self.reconciled.acted else self.reconciled.to_dict(),
        }

    def to_markdown(self) -> str:
        """The CI job summary: the decision first, then the evidence."""
        lines = [f"## mlflow-retrain cycle: **{self.outcome}** ({self.model_name}, as of {self.as_of})", ""]
        lines.append(f"- Production before the cycle: version {self.production_version or 'none'}")
        if self.candidate_version:
            lines.append(f"- Candidate: version {self.candidate_version}")
        lines.append(f"- Reason: {self.reason}")
        if self.stale:
            lines.append(f"- **Data gap**: {self.stale}")
        if self.data:
            lines.append(f"- Data: {self.data['summary']}")
        if self.reconciled is not None and self.reconciled.acted:
            lines.append(f"- Repaired first (run `{self.reconciled.run_id}`): "
                         + "; ".join(f.problem for f in self.reconciled.repairs)
                         + (f"; {len(self.reconciled.closed_runs)} crashed run(s) ended FAILED"
                            if self.reconciled.closed_runs else ""))
        lines += [f"- **Warning**: {w}" for w in self.warnings]
        if self.cycle_run_id:
            lines.append(f"- Audit run: `{self.cycle_run_id}`")
        if self.decision is not None and self.decision.results:  # none when bootstrapping or reconciling
            lines += ["", "| trigger | fired | reason |", "| --- | --- | --- |"]
            lines += [f"| {r.kind} | {'yes' if r.fired else 'no'} | {r.reason} |" for r in self.decision.results]
        if self.promotion is not None:
            lines += ["", "| check | result |", "| --- | --- |"]
            lines += [f"| gate | {r} |" for r in self.promotion.reasons]
        return "\n".join(lines) + "\n"


def first_model_advice(config: Config, naive: float | None) -> str:
    """What to change when a first model fails the absolute gate: the model's features, or the limit (and
    where it is set); a naive forecast's error on the same holdout tells which is off, and by how much."""
    key, policy = limit_key(config.higher_is_better), config.source.name if config.source else "retrain.yaml"
    scale = (f"; for scale, a naive forecast with no model (`measure.naive`) scores {config.metric} "
             f"{number(naive)} on the same holdout" if naive is not None else "")
    return (f"what to change: give the model features it can learn from (derive them from the timestamp with a "
            f"factory and training.pass_timestamp: true, see docs/own-model.md), or set the limit {key} in "
            f"{policy} to an error you accept{scale}")


def _cmp(higher_is_better: bool, better: bool) -> str:
    """The sign that reads "better" (or "not better") for the metric's direction."""
    return (">" if better else "<=") if higher_is_better else ("<" if better else ">=")


def failed_checks(gate: PromotionDecision, otherwise: str = "gate") -> str:
    """The checks a candidate failed, by name (`absolute gate`, `relative gate`, ...), for the titles
    and reasons that must say which; `otherwise` when no check names itself as failed."""
    return ", ".join(gate.failed) or otherwise


def cycle_title(config: Config, report: CycleReport) -> str:
    """The audit run's name: the outcome and the numbers behind it, e.g. `v7 promoted: mae 44.7 < 85.2`."""
    n, metric, hib = number, report.metric, config.higher_is_better
    version = f"v{report.candidate_version}"
    gate = report.promotion
    if gate is not None:
        verdict = "awaits approval" if report.outcome == T.AWAITING_APPROVAL else (
            "promoted" if gate.promote else "rejected")
        if gate.baseline is None or not np.isfinite(gate.candidate):
            bound = (f" {_cmp(hib, gate.promote)} {'min' if hib else 'max'} {n(gate.threshold)}"
                     if gate.threshold is not None else "")
            where = (f"first model failed the {failed_checks(gate)}, no Production yet" if report.first_model_rejected
                     else "no Production to beat" if gate.baseline is None else "no score on the holdout")
            return f"{version} {verdict}: {metric} {n(gate.candidate)}{bound} ({where})"
        better = gate.candidate > gate.baseline if hib else gate.candidate < gate.baseline
        title = f"{version} {verdict}: {metric} {n(gate.candidate)} {_cmp(hib, better)} {n(gate.baseline)}"
        if not gate.promote and better and failed_checks(gate, ""):
            title += f" but {failed_checks(gate, '')} failed"
        return title
    if report.approval is not None and report.approval.final:
        return f"{version} {report.outcome}: {report.approval.reasons[0]}"
    if report.outcome == T.PROMOTED:
        return f"{version} promoted: bootstrap, no Production before"
    decision = report.decision
    if decision is None:
        return f"{report.outcome}: as of {report.as_of}"
    if report.outcome == "blocked":
        return f"no retrain, blocked by {decision.blocked_by}: {', '.join(decision.fired)} fired"
    threshold = next((r for r in decision.results if r.kind == "metric_threshold" and "value" in r.evidence), None)
    if threshold is not None:
        value, limit = threshold.evidence["value"], threshold.evidence["limit"]
        return f"no retrain: {metric} {n(value)} {'>=' if hib else '<='} {n(limit)}"
    latest = next((w.metric for w in reversed(report.monitoring) if w.metric is not None), None)
    return f"no retrain: {metric} {n(latest)}, no trigger fired" if latest is not None else "no retrain: no trigger fired"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def cycle_description(config: Config, report: CycleReport, trained_by: str = "", trained_in: str | None = None) -> str:
    """The audit run's Markdown description (`mlflow.note.content`): the decision, the triggers, the
    gate's numbers and links to the candidate's training run and version."""
    n, metric = number, report.metric
    lines = [cycle_title(config, report), "",
             f"Cycle as of `{report.as_of}` on `{report.model_name}`: Production was "
             f"{'v' + report.production_version if report.production_version else 'none'}."]
    if report.candidate_version:
        version = report.candidate_version
        run = f", trained by run [`{trained_by}`]({links.run(trained_by, trained_in)})" if trained_by else ""
        lines[-1] += (f" Candidate [v{version}]({links.model(report.model_name, version)}){run}.")
    lines += ["", "### Decision", "", report.reason or report.outcome]
    if report.approval is not None and report.approval.ignored:
        lines += ["", f"**Note:** {report.approval.reasons[0]}"]
    if report.stale:
        lines += ["", f"**Data gap:** {report.stale}"]
    if report.decision is not None and report.decision.results:
        lines += ["", "### Triggers", "", "| trigger | fired | reason |", "| --- | --- | --- |"]
        lines += [f"| `{r.kind}` | {'**yes**' if r.fired else 'no'} | {_cell(r.reason)} |"
                  for r in report.decision.results]
    gate = report.promotion
    if gate is not None:
        lines += ["", f"### Gate on the holdout `{report.holdout_window}`", "",
                  f"Both models scored on the same rows (digest `{report.holdout_digest}`); metrics "
                  f"`holdout_candidate_{metric}` and `holdout_production_{metric}`.", "",
                  f"| | {metric} |", "| --- | --- |", f"| candidate v{report.candidate_version} | {n(gate.candidate)} |"]
        if gate.baseline is not None:
            lines.append(f"| Production v{report.production_version} | {n(gate.baseline)} |")
        lines += ["", "| check | result |", "| --- | --- |"]
        lines += [f"| {_cell(r.split(':', 1)[0])} | {_cell(r.split(':', 1)[-1].strip())} |" for r in gate.reasons]
    scored = [w for w in report.monitoring if w.metric is not None]
    if scored:
        lines += ["", f"### Production's {metric} per window (metric `monitor_{metric}`)", "",
                  f"| window | rows | {metric} |", "| --- | --- | --- |"]
        lines += [f"| `{w.window}` | {w.rows} | {n(w.metric)} |" for w in scored]
    if report.drift is not None:
        lines += ["", f"Drift share {n(report.drift.drift_share)} ({report.drift.drifted_columns} of "
                      f"{report.drift.total_columns} columns)."]
    lines += ["", "Everything above is also in the artifact `decision.json`."]
    return padded("\n".join(lines))
