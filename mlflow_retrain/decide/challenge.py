"""The challenger (`validation.challenger`): a candidate the gate could not tell from Production waits
beside it and is scored on each new labelled window; k wins of N promote it, too many losses archive it.

Why it is built this way: docs/design.md#decide-challenge.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Sequence

from mlflow_retrain.decide.choice import failed_checks
from mlflow_retrain.decide.gate import PromotionDecision
from mlflow_retrain.decide.verdicts import number as _n

# the checks of the comparison with Production: a candidate failing only these may be a challenger
COMPARISON_CHECKS = frozenset({"relative", "significance", "non-inferior"})
WAIT, PROMOTE, ARCHIVE = "wait", "promote", "archive"


@dataclass(frozen=True)
class ChallengerRule:
    """`validation.challenger`: promoted after `wins` wins within `windows` rounds."""

    windows: int = 3
    wins: int = 2


def inconclusive(decision: PromotionDecision) -> bool:
    """Rejected by the comparison with Production alone (the absolute, naive and every other check
    passed) while the paired bootstrap interval of the loss reduction contains 0: neither clearly
    better nor clearly worse. A first model, or one failing anything else, never is."""
    if decision.promote or decision.baseline is None or decision.ci is None:
        return False
    failed = set(failed_checks(decision.reasons))
    return failed <= COMPARISON_CHECKS and decision.ci[0] <= 0 <= decision.ci[1]


@dataclass(frozen=True)
class Round:
    """One labelled window scored by both models on the same rows; `won`: the challenger strictly better."""

    window: str
    rows: int
    production: float
    challenger: float
    won: bool

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Round":
        return cls(**json.loads(text))

    def line(self, metric: str) -> str:
        return (f"{self.window} ({self.rows} rows): {metric} {_n(self.challenger)} vs Production {_n(self.production)} "
                f"({'won' if self.won else 'lost'})")


def play(window: str, rows: int, production: float | None, challenger: float | None,
         higher_is_better: bool) -> Round | None:
    """The round on one window; None when either score is missing (no rows, an undefined metric): a gap
    counts for neither model."""
    if production is None or challenger is None or not (math.isfinite(production) and math.isfinite(challenger)):
        return None
    won = challenger > production if higher_is_better else challenger < production
    return Round(window, rows, float(production), float(challenger), won)


@dataclass(frozen=True)
class ChallengerVerdict:
    """What the rounds so far decide, with every round named."""

    action: str  # wait | promote | archive
    rounds: tuple[Round, ...]
    wins: int
    reason: str


def verdict(rule: ChallengerRule, rounds: Sequence[Round], metric: str) -> ChallengerVerdict:
    """Promote once `wins` rounds are won, archive once they no longer can be within `windows`, else
    wait. Deciding as soon as the outcome is certain gives the verdict the N-th round would."""
    wins = sum(r.won for r in rounds)
    losses = len(rounds) - wins
    head = f"challenger won {wins} of {len(rounds)} windows (promoted at {rule.wins} of {rule.windows})"
    played = "; ".join(r.line(metric) for r in rounds)
    if wins >= rule.wins:
        action, why = PROMOTE, f"{head}: promoted"
    elif losses > rule.windows - rule.wins:
        action, why = ARCHIVE, f"{head}: can no longer reach {rule.wins}, archived"
    else:
        action, why = WAIT, f"{head}: waits for {rule.windows - len(rounds)} more at most"
    return ChallengerVerdict(action, tuple(rounds), wins, f"{why}{': ' + played if played else ''}")
