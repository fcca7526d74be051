"""The challenger (issue 25, item 4) against today's gate and always promoting, and planted broken candidates.

On a weekly grid (bike and Google's daily prices, `bench_gate.py`'s data and policies), a candidate
fitted at t meets a Production fitted `age` earlier (7 and 28 days) on the candidate's holdout, with
the project's own `fit`, `judge` and `decide.challenge`. What serves over (t, t + 28d]:
- `always promote`: the candidate;
- `gate`: today's `compare: better`: the candidate if the gate promotes it, else Production;
- `challenger k/N`: as the gate, but an inconclusive rejection (`decide.challenge.inconclusive`) is
  scored beside Production on the labelled `monitoring.window`s after t (`loop.challenger.next_rounds`,
  as a cycle plays them): Production serves until the rounds decide, then the challenger if it won.
Per pick: promotions (a model change; each grid point fitted one candidate for all picks), the
candidates the gate left inconclusive, the future mean error, regret (above the better of the two
over the same 28 days, in %), and how many planted broken candidates it promoted: a constant (the
training rows' mean) and the candidate's predictions shuffled across rows, each judged against the
same Production and, if inconclusive, played through the same rounds. Fits are bounded by `fit`
(one OpenMP thread under 50,000 rows); the load average is printed at start and end.

    .venv/bin/python benchmarks/bench_challenger.py [--only bike|goog]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gate import FUTURE, GRIDS, broken, config_for, fitted, later, markdown  # noqa: E402

from mlflow_retrain.adapters.data import LabelledData, Window  # noqa: E402
from mlflow_retrain.decide.challenge import PROMOTE, ChallengerRule, inconclusive, play, verdict  # noqa: E402
from mlflow_retrain.loop.challenger import next_rounds  # noqa: E402
from mlflow_retrain.loop.evaluate import judge, score_rows  # noqa: E402

AGES = (7, 28)
RULES = (ChallengerRule(3, 2), ChallengerRule(1, 1))


def challenged(config, data: LabelledData, candidate, production, t: pd.Timestamp,
               rule: ChallengerRule) -> pd.Timestamp | None:
    """When the challenger's rounds promote it (the end of the deciding window), None if they never do."""
    def score(window: Window):
        cut = data.rows(window)
        if not len(cut):
            return None
        both = [score_rows(config, data, m, cut).metrics.get(config.metric) for m in (production, candidate)]
        return play(window.iso(), len(cut), both[0], both[1], config.higher_is_better)

    played = next_rounds(rule, [], t, t + FUTURE, config.monitoring.window, score, config.metric)
    promoted = verdict(rule, played, config.metric).action == PROMOTE
    return Window.parse(played[-1].window).end if promoted else None


def served(config, data: LabelledData, t: pd.Timestamp, production, candidate, at: pd.Timestamp | None) -> float:
    """The future error when Production serves until `at` and the candidate after (None: never)."""
    future = data.rows(Window(t, t + FUTURE))
    if at is None:
        return score_rows(config, data, production, future).metrics[config.metric]
    before, after = data.rows(Window(t, at)), data.rows(Window(at, t + FUTURE))
    pred = np.concatenate([np.asarray(m.predict(r)) for m, r in ((production, before), (candidate, after)) if len(r)])
    error = pred - np.asarray(data.target(future), dtype=float)
    return float(np.mean(np.abs(error))) if config.metric == "mae" else float(np.sqrt(np.mean(error ** 2)))


def pairs(name: str, folder: Path) -> pd.DataFrame:
    base = config_for(name, folder)
    config = dataclasses.replace(base, validation=dataclasses.replace(base.validation, compare="better",
                                                                      challenger=RULES[0]))
    data = LabelledData.load(config)
    start, end = GRIDS[name]
    fits: dict = {}
    rows = []
    for t in pd.date_range(start, end, freq="7D"):
        if not len(data.rows(Window(t, t + FUTURE))):
            continue
        candidate = fitted(config, data, fits, t)
        for age in AGES:
            production = fitted(config, data, fits, t - timedelta(days=age))
            row = {"age": age, "t": t, "future_candidate": later(config, data, data.rows(Window(t, t + FUTURE)), candidate),
                   "future_production": later(config, data, data.rows(Window(t, t + FUTURE)), production)}
            for kind, scorer in (("real", candidate.scorer), *zip(("constant", "shuffled"),
                                                                  broken(config, data, candidate, t))):
                decision, _ = judge(config, data, candidate.holdout_rows, scorer, production.scorer)
                row[f"{kind} gate"] = decision.promote
                row[f"{kind} inconclusive"] = inconclusive(decision)
                for rule in RULES:
                    at = (challenged(config, data, scorer, production.scorer, t, rule)
                          if inconclusive(decision) else None)
                    row[f"{kind} {rule.wins}/{rule.windows}"] = at is not None
                    if kind == "real":
                        row[f"future {rule.wins}/{rule.windows}"] = (
                            served(config, data, t, production.scorer, scorer, at) if at is not None
                            else row["future_candidate"] if decision.promote else row["future_production"])
            rows.append(row)
    return pd.DataFrame(rows)


def table(frame: pd.DataFrame) -> pd.DataFrame:
    out = []
    for age, g in frame.groupby("age"):
        best = np.minimum(g.future_candidate, g.future_production).mean()
        picks = {"always promote": (pd.Series(True, index=g.index), g.future_candidate, "-"),
                 "gate (better)": (g["real gate"], np.where(g["real gate"], g.future_candidate, g.future_production),
                                   f"{g['constant gate'].sum()}, {g['shuffled gate'].sum()}")}
        for rule in RULES:
            k = f"{rule.wins}/{rule.windows}"
            promoted = g["real gate"] | g[f"real {k}"]
            picks[f"challenger {k}"] = (promoted, g[f"future {k}"], f"{(g['constant gate'] | g[f'constant {k}']).sum()}, "
                                                                   f"{(g['shuffled gate'] | g[f'shuffled {k}']).sum()}")
        for label, (promoted, future, bad) in picks.items():
            out.append({"production age": f"{age}d", "pick": label, "pairs": len(g), "promotions": int(promoted.sum()),
                        "inconclusive": int(g["real inconclusive"].sum()) if label.startswith("challenger") else "-",
                        "future error": f"{np.mean(future):.2f}", "regret": f"{np.mean(future) / best - 1:.1%}",
                        "broken promoted (constant, shuffled)": bad})
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(GRIDS), default=None)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f}\n")
    for name in [args.only] if args.only else list(GRIDS):
        began = time.process_time()
        with tempfile.TemporaryDirectory() as tmp:
            frame = pairs(name, Path(tmp))
        print(f"**{name}** (weekly grid {GRIDS[name][0]} .. {GRIDS[name][1]}; future = the next 28 days; "
              f"{time.process_time() - began:.0f} s CPU)\n")
        print(markdown(table(frame)))
        print()
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
