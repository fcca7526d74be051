"""The challenger in a cycle (`validation.challenger`): placed when the gate's comparison is
inconclusive, then scored beside Production on each labelled `monitoring.window` after it, until its
rounds decide (`decide.challenge.verdict`); every write goes through `loop.moves`.

Why it is built this way: docs/design.md#decide-challenge.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import Callable, Iterator

import pandas as pd

from mlflow_retrain.adapters.data import Window
from mlflow_retrain.adapters.registry import VersionInfo
from mlflow_retrain.base import tags as T
from mlflow_retrain.decide import PromotionDecision
from mlflow_retrain.decide.challenge import (ARCHIVE, PROMOTE, WAIT, ChallengerRule, ChallengerVerdict, Round,
                                             inconclusive, play, verdict)
from mlflow_retrain.loop.evaluate import registered
from mlflow_retrain.loop.moves import challenge, played, settled
from mlflow_retrain.loop.observe import Cycle, score_windows

log = logging.getLogger(__name__)


def placed(c: Cycle, candidate: VersionInfo, production: VersionInfo | None, promotion: PromotionDecision) -> bool:
    """An inconclusive rejection becomes the challenger (in Staging, alias `challenger`); True if it did."""
    if c.config.validation.challenger is None or production is None or not inconclusive(promotion):
        return False
    low, high = promotion.ci
    c.report.promotion = replace(promotion, reasons=[
        *promotion.reasons, f"inconclusive: the per-row loss reduction's interval [{low:.4g}, {high:.4g}] contains 0: "
                            f"the challenger, scored beside Production on each new window"])
    challenge(c.registry, candidate, production, c.report.promotion, c.as_of,
              since=c.config.monitoring.labelled(c.as_of), by=c.report.cycle_run_id or "")
    c.report.outcome = T.CHALLENGER
    return True


def rounds(version: VersionInfo) -> list[Round]:
    """The rounds recorded on a challenger, in order."""
    prefix = f"{T.CHALLENGER_ROUND}."
    numbered = sorted((int(k[len(prefix):]), v) for k, v in version.tags.items()
                      if k.startswith(prefix) and k[len(prefix):].isdigit())
    return [Round.from_json(v) for _, v in numbered]


def windows_after(start: pd.Timestamp, labelled: pd.Timestamp, span: timedelta) -> Iterator[Window]:
    """The whole windows of `span` after `start` whose labels are in by `labelled`: the rounds to play."""
    step = pd.Timedelta(span)
    while start + step <= labelled:
        yield Window(start, start + step)
        start += step


def next_rounds(rule: ChallengerRule, done: list[Round], since: pd.Timestamp, labelled: pd.Timestamp,
                span: timedelta, score: Callable[[Window], Round | None], metric: str) -> list[Round]:
    """The rounds to add until the verdict is final or the labelled windows run out (a window without
    rows is no round). Shared by the cycle and the backtest's replay, so both play the same rounds."""
    start = Window.parse(done[-1].window).end if done else since
    added: list[Round] = []
    for window in windows_after(start, labelled, span):
        if verdict(rule, [*done, *added], metric).action != WAIT:
            break
        scored = score(window)
        if scored is not None:
            added.append(scored)
    return added


def challenger_round(c: Cycle, production: VersionInfo | None) -> str | None:
    """The challenger waiting in Staging, if any, scored on its new windows and decided: the verdict's
    action (wait, promote, archive), None without a challenger. Turned off in the policy, it is archived."""
    staged = c.registry.staging()
    if production is None or staged is None or staged.tags.get(T.DECISION) != T.CHALLENGER:
        return None
    config, report = c.config, c.report
    rule, done = config.validation.challenger, rounds(staged)
    if rule is None:
        wins = sum(r.won for r in done)
        found = ChallengerVerdict(ARCHIVE, tuple(done), wins, "validation.challenger is no longer in the policy: archived")
    else:
        models = {v.version: c.loaded.get(v.version) or registered(config, c.data, v.version) for v in (production, staged)}

        def score(window: Window) -> Round | None:
            both = [score_windows(config, c.data, models[v.version], [window])[0] for v in (production, staged)]
            return play(window.iso(), both[0].rows, both[0].metric, both[1].metric, config.higher_is_better)

        for scored in next_rounds(rule, done, pd.Timestamp(staged.tags[T.CHALLENGER_SINCE]),
                                  config.monitoring.labelled(c.as_of), config.monitoring.window, score, config.metric):
            played(c.registry, staged, len(done), scored)
            done.append(scored)
        found = verdict(rule, done, config.metric)
    report.challenger = {"version": staged.version, "action": found.action, "wins": found.wins,
                         "rounds": [r.__dict__ for r in found.rounds], "reason": found.reason}
    if found.action == WAIT:
        return WAIT
    report.candidate_version = staged.version
    last = found.rounds[-1] if found.rounds else None
    report.promotion = PromotionDecision(found.action == PROMOTE, [found.reason], config.metric,
                                         last.challenger if last else float("nan"), last.production if last else None,
                                         None, None)
    report.archived_versions = settled(c.registry, staged, production, found, c.as_of, by=report.cycle_run_id or "")
    report.outcome = T.PROMOTED if found.action == PROMOTE else T.REJECTED
    log.info("challenger v%s: %s", staged.version, found.reason)
    return found.action
