"""Why retrain: each trigger is a pure function over plain numbers returning its verdict and why.

Pure so that the controller (numbers from the registry), the backtest (numbers from a replay) and
the tests call exactly the same logic; every verdict carries one sentence with the numbers, which
becomes the `retrain.reason` tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class TriggerResult:
    fired: bool
    kind: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"fired": self.fired, "kind": self.kind, "reason": self.reason, "evidence": dict(self.evidence)}


def _n(x: float) -> str:
    return f"{x:.4g}"


def format_span(span: timedelta) -> str:
    """`30d`, `12h`, `90m`: the policy file's own syntax."""
    seconds = span.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):  # days, not weeks: "140d > 120d" reads at once
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds / 86400:.2f}d"


def metric_threshold(value: float | None, *, metric: str, higher_is_better: bool, limit: float | None,
                     window: str = "") -> TriggerResult:
    """Absolute: an error above its max (the seed's MAX_MAE) or a score below its min."""
    kind = "metric_threshold"
    where = f" on {window}" if window else ""
    if limit is None:
        return TriggerResult(False, kind, "no threshold configured")
    if value is None or np.isnan(value):
        return TriggerResult(False, kind, f"no {metric} to compare{where}: no labelled rows", {"limit": limit})
    fired = value < limit if higher_is_better else value > limit
    if higher_is_better:
        text = f"{metric} {_n(value)} {'<' if fired else '>='} min {_n(limit)}{where}"
    else:
        text = f"{metric} {_n(value)} {'>' if fired else '<='} max {_n(limit)}{where}"
    return TriggerResult(fired, kind, text, {"value": float(value), "limit": limit})


def metric_trend(history: Sequence[float | None], *, metric: str, higher_is_better: bool, windows: int,
                 max_relative_increase: float | None = None, max_slope: float | None = None) -> TriggerResult:
    """Rate of change: the metric worsened by more than a fraction, or its slope per window is too steep."""
    kind = "metric_trend"
    values = [float(v) for v in history if v is not None and not np.isnan(v)][-windows:]
    if len(values) < 2:
        return TriggerResult(False, kind, f"fewer than 2 windows with {metric} to measure a trend",
                             {"windows": len(values)})
    sign = -1.0 if higher_is_better else 1.0
    first, last = values[0], values[-1]
    relative = sign * (last - first) / abs(first) if first else (0.0 if last == first else float("inf"))
    slope = sign * float(np.polyfit(np.arange(len(values)), values, 1)[0])
    evidence = {"first": first, "last": last, "relative_change": relative, "slope": slope, "windows": len(values)}
    fired_rel = max_relative_increase is not None and relative > max_relative_increase
    fired_slope = max_slope is not None and slope > max_slope
    text = (f"{metric} went {_n(first)} -> {_n(last)} over {len(values)} windows "
            f"({_direction(relative, '.1%')}, slope {_direction(slope)} per window)")
    limits = []
    if max_relative_increase is not None:
        limits.append(f"max {max_relative_increase:.0%}")
    if max_slope is not None:
        limits.append(f"max slope {_n(max_slope)}")
    return TriggerResult(fired_rel or fired_slope, kind, f"{text}; limits {', '.join(limits)}", evidence)


def data_drift(drift_share: float | None, *, max_drift_share: float, drifted_columns: int | None = None,
               total_columns: int | None = None) -> TriggerResult:
    kind = "data_drift"
    if drift_share is None or np.isnan(drift_share):
        return TriggerResult(False, kind, "no drift measured: no labelled rows in the window")
    fired = drift_share > max_drift_share
    columns = f" ({drifted_columns} of {total_columns} columns)" if drifted_columns is not None else ""
    return TriggerResult(fired, kind, f"drift share {_n(drift_share)}{columns} {'>' if fired else '<='} max "
                                      f"{_n(max_drift_share)}",
                         {"drift_share": drift_share, "drifted_columns": drifted_columns,
                          "total_columns": total_columns, "limit": max_drift_share})


def max_age(trained_at: datetime | None, *, as_of: datetime, max_age: timedelta) -> TriggerResult:
    """Schedule-style freshness: Production older than the allowed age."""
    kind = "max_age"
    if trained_at is None:
        return TriggerResult(False, kind, "no Production model")
    age = as_of - trained_at
    fired = age > max_age
    return TriggerResult(fired, kind, f"Production trained {format_span(age)} before {as_of.isoformat()} "
                                      f"{'>' if fired else '<='} max age {format_span(max_age)}",
                         {"age_seconds": age.total_seconds(), "max_age_seconds": max_age.total_seconds()})


def new_data(rows: int, *, min_rows: int, since: datetime | None = None) -> TriggerResult:
    kind = "new_data"
    fired = rows >= min_rows
    after = f" since {since.isoformat()}" if since else ""
    return TriggerResult(fired, kind, f"{rows} new labelled rows{after} {'>=' if fired else '<'} {min_rows}",
                         {"rows": rows, "min_rows": min_rows})


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


def _direction(change: float, spec: str = ".4g") -> str:
    """A change in the metric's worse direction (+) as words: 'x worse' or 'x better'."""
    return f"{abs(change):{spec}} {'worse' if change > 0 else 'better' if change < 0 else 'unchanged'}"


def cooldown(last_retrain_at: datetime | None, *, as_of: datetime, span: timedelta | None) -> TriggerResult:
    """`fired` means the cooldown is ACTIVE and blocks a retrain (unless forced)."""
    kind = "cooldown"
    if span is None or last_retrain_at is None:
        return TriggerResult(False, kind, "no earlier retrain" if span else "no cooldown configured")
    since = as_of - last_retrain_at
    active = since < span
    evidence = {"since_seconds": since.total_seconds(), "cooldown_seconds": span.total_seconds()}
    if since < timedelta(0):  # a replay behind the registry: the last retrain is in this as-of's future
        return TriggerResult(True, kind, f"last retrain {last_retrain_at.isoformat()} is after {as_of.isoformat()} "
                                         "(a cycle behind the registry's history); only --force retrains", evidence)
    return TriggerResult(active, kind, f"last retrain {last_retrain_at.isoformat()} is {format_span(since)} before "
                                       f"{as_of.isoformat()}, {'within' if active else 'beyond'} cooldown "
                                       f"{format_span(span)}", evidence)


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
