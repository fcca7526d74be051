"""Verdicts: what a trigger says (`TriggerResult`) and what the policy decides from them (`decide`).

Every verdict carries one sentence with the numbers, which becomes the `retrain.reason` tag. The
checks here apply to every trigger: a request (`on_demand`, `event`), the `cooldown` that blocks a
retrain, and the `debounce` that asks a per-window trigger to hold in k of the last n windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Sequence

from mlflow_retrain.decide.words import DAY, moment, span_in


@dataclass(frozen=True)
class TriggerResult:
    fired: bool
    kind: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"fired": self.fired, "kind": self.kind, "reason": self.reason, "evidence": dict(self.evidence)}


def number(x: float) -> str:
    """A number in a reason: four significant digits."""
    return f"{x:.4g}"


def format_span(span: timedelta) -> str:
    """`30d`, `12h`, `90m`: the policy file's own syntax."""
    seconds = span.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):  # days, not weeks: "140d > 120d" reads at once
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds / 86400:.2f}d"


def on_demand(force: bool, reason: str | None, event: str | None = None) -> TriggerResult:
    """A person asked (`--force`, kind `on_demand`) or another system did (`--event SOURCE`, kind
    `event`: an HTTP request relayed by CI, a finished labelling job); the kind keeps them apart
    in the audit."""
    if not force:
        return TriggerResult(False, "on_demand", "not requested")
    if event:
        return TriggerResult(True, "event", f"event from {event}: {reason or 'no reason given'}",
                             {"source": event, "reason": reason})
    return TriggerResult(True, "on_demand", f"requested on demand: {reason or 'no reason given'}",
                         {"reason": reason})


def debounce(fired_history: Sequence[bool], *, k: int, n: int) -> bool:
    """A trigger must hold in k of the last n windows: one noisy window does not cost a retrain."""
    if not 1 <= k <= n:
        raise ValueError(f"debounce needs 1 <= k <= n, got k={k} n={n}")
    return sum(bool(x) for x in list(fired_history)[-n:]) >= k


def cooldown(last_retrain_at: datetime | None, *, as_of: datetime, span: timedelta | None,
             unit: str = DAY) -> TriggerResult:
    """`fired` means the cooldown is ACTIVE and blocks a retrain (unless forced). A cycle behind the
    registry's history (its last retrain is after `as_of`) says where a replay in order goes on."""
    kind = "cooldown"
    if span is None or last_retrain_at is None:
        return TriggerResult(False, kind, "no earlier retrain" if span else "no cooldown configured")
    since = as_of - last_retrain_at
    active = since < span
    evidence = {"since_seconds": since.total_seconds(), "cooldown_seconds": span.total_seconds()}
    last = moment(last_retrain_at, unit)
    if since < timedelta(0):  # a replay behind the registry: the last retrain is in this as-of's future
        return TriggerResult(True, kind, f"last retrain {last} is after {moment(as_of, unit)} (a cycle behind the "
                                         f"registry's history): replay history in order, from {last} on "
                                         f"(`mlflow-retrain replay --from {last}`), or into a fresh store; "
                                         "only --force retrains here", evidence)
    return TriggerResult(active, kind, f"last retrain {last} is {span_in(since, unit)} before {moment(as_of, unit)}, "
                                       f"{'within' if active else 'beyond'} cooldown {span_in(span, unit)}", evidence)


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    fired: list[str]
    results: list[TriggerResult]
    reason: str
    blocked_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"retrain": self.retrain, "fired": list(self.fired), "reason": self.reason,
                "blocked_by": self.blocked_by, "results": [r.to_dict() for r in self.results]}


def decide(results: Sequence[TriggerResult], *, cooldown: TriggerResult | None = None,
           forced: bool = False) -> RetrainDecision:
    """Retrain when any trigger fired, unless a cooldown is active and the retrain was not forced."""
    results = list(results)
    fired = [r for r in results if r.fired]
    kinds = [r.kind for r in fired]
    checks = results + ([cooldown] if cooldown is not None else [])
    if not fired:
        summary = "; ".join(r.reason for r in results) or "no trigger configured"
        return RetrainDecision(False, [], checks, f"no trigger fired: {summary}")
    because = "; ".join(r.reason for r in fired)
    if cooldown is not None and cooldown.fired and not forced:
        return RetrainDecision(False, kinds, checks, f"{because}; but {cooldown.reason}", "cooldown")
    return RetrainDecision(True, kinds, checks, because)
