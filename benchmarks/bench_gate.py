"""Why so many candidates lose the gate, and whether the gate is right when it says so (issue 14).

Every-step replays of the bundled data reject most candidates (344 of 609). Two explanations were on
the table: a holdout too short to tell two similar models apart (the gate is a coin flip), or
candidates that lose because they never saw the newest rows (the holdout is kept out of training).
This measures both on the bundled bike data and on Google's daily prices
(`bench_small_reference.py`'s data), with the project's own `fit` and `judge`:

at each point t of a weekly grid, a candidate fitted at t meets a Production fitted `age` earlier
(7 and 28 days: a step, a month), for holdouts of 7, 14 and 28 days. The gate's verdict is compared
with what happened next: which of the two models has the lower error over (t, t + 28d], the weeks the
promoted model would serve. Reported per holdout and age:
- `rejected`: the gate's rejections;
- `right`: the gate chose the model that did better over the next 28 days;
- `regret`: the future error of the gate's choice above the better of the two, in % of it;
- future mean error of always Production, always the candidate, the gate's choice, and the gate's
  choice refitted on the whole window up to t (holdout rows included) when it passes.

The second table sets the gate's comparisons against always promoting (issue 25, item 3): today's
`compare: better`, `not_worse` and `non_inferior` (margin 2%, `MARGIN`), each pick's rejections,
regret and future error, and how many planted broken candidates each promoted: a constant (the
training rows' mean) and the candidate's own predictions shuffled across the holdout's rows, judged
against the same Production on the same holdout.

    .venv/bin/python benchmarks/bench_gate.py [--only bike|goog]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from mlflow_retrain.policy.load import load_config
from mlflow_retrain.adapters.data import LabelledData, Window
from mlflow_retrain.loop.evaluate import judge, score_rows
from mlflow_retrain.adapters.models import Scorer
from mlflow_retrain.adapters.train import fit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

HOLDOUTS = (7, 14, 28)
AGES = (7, 28)
FUTURE = timedelta(days=28)
MARGIN = 0.02
COMPARES = {"better": "better", "not worse": "not_worse", "non-inferior": "non_inferior"}
GRIDS = {"bike": ("2011-07-01", "2012-11-30"), "goog": ("2006-06-01", "2008-09-15")}


def config_for(name: str, folder: Path):
    if name == "bike":
        text = (REPO / "retrain.yaml").read_text().replace("path: data/", f"path: {REPO}/data/")
        (folder / "retrain.yaml").write_text(text)
    else:
        from bench_small_reference import write_folder

        folder = folder / name
        write_folder(folder)
    return load_config(folder / "retrain.yaml")


def fitted(config, data: LabelledData, fits: dict, t: pd.Timestamp):
    """`fit` at `t`, once per holdout (the grid's points are each other's Production and refit)."""
    if t not in fits:
        fits[t] = fit(config, data, t)
    return fits[t]


def later(config, data: LabelledData, future: pd.DataFrame, model) -> float:
    """A model's error over the weeks after t: what promoting it would have served."""
    return score_rows(config, data, model.scorer, future).metrics[config.metric]


class Constant:
    """A broken candidate: the training rows' mean for every row."""

    def __init__(self, value: float):
        self.value = value

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return np.full(len(rows), self.value)


class Shuffled:
    """A broken candidate: a real model's predictions, each given to another row."""

    def __init__(self, model, seed: int):
        self.model, self.seed = model, seed

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return np.random.default_rng(self.seed).permutation(np.asarray(self.model.predict(rows)))


def comparing(config, compare: str):
    """The same policy with another `validation.compare` (the margin set when it reads one)."""
    margin = MARGIN if compare != "better" else config.validation.margin
    return dataclasses.replace(config, validation=dataclasses.replace(config.validation, compare=compare, margin=margin))


def broken(config, data: LabelledData, candidate, t: pd.Timestamp) -> list[Scorer]:
    """The planted broken candidates of a grid point: a constant and a shuffle of the candidate."""
    mean = float(data.target(candidate.train_rows).mean())
    return [Scorer(Constant(mean), candidate.columns), Scorer(Shuffled(candidate.model, t.dayofyear), candidate.columns)]


def pairs(name: str, folder: Path) -> pd.DataFrame:
    base = config_for(name, folder)
    data = LabelledData.load(base)
    start, end = GRIDS[name]
    grid = pd.date_range(start, end, freq="7D")
    rows = []
    for days in HOLDOUTS:
        config = dataclasses.replace(base, training=dataclasses.replace(base.training, holdout=timedelta(days=days)))
        fits: dict = {}
        for t in grid:
            future = data.cut(Window(t, t + FUTURE), "future")
            if not len(future):
                continue
            candidate = fitted(config, data, fits, t)
            refit = fitted(config, data, fits, t + timedelta(days=days))  # trained on (t - window, t]: holdout rows in
            for age in AGES:
                production = fitted(config, data, fits, t - timedelta(days=age))
                decision, evidence = judge(config, data, candidate.holdout_rows, candidate.scorer, production.scorer)
                verdicts = {}
                for label, compare in COMPARES.items():
                    policy = comparing(config, compare)
                    verdicts[f"promote {label}"] = judge(policy, data, candidate.holdout_rows, candidate.scorer,
                                                         production.scorer)[0].promote
                    for kind, bad in zip(("constant", "shuffled"), broken(config, data, candidate, t)):
                        verdicts[f"{kind} {label}"] = judge(policy, data, candidate.holdout_rows, bad,
                                                            production.scorer)[0].promote
                rows.append({"holdout": days, "age": age, "t": t, "promote": decision.promote, **verdicts,
                             "holdout_candidate": evidence["candidate"][config.metric],
                             "holdout_production": evidence["production"][config.metric],
                             "future_candidate": later(config, data, future, candidate),
                             "future_production": later(config, data, future, production),
                             "future_refit": later(config, data, future, refit)})
    return pd.DataFrame(rows)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (days, age), g in frame.groupby(["holdout", "age"]):
        chosen = np.where(g.promote, g.future_candidate, g.future_production)
        refitted = np.where(g.promote, g.future_refit, g.future_production)
        best = np.minimum(g.future_candidate, g.future_production)
        candidate_better = g.future_candidate < g.future_production
        out.append({"holdout": f"{days}d", "production age": f"{age}d", "pairs": len(g),
                    "rejected": f"{1 - g.promote.mean():.0%}",
                    "candidate better next 28d": f"{candidate_better.mean():.0%}",
                    "right": f"{(g.promote == candidate_better).mean():.0%}",
                    "regret": f"{(chosen.mean() / best.mean() - 1):.1%}",
                    "always production": f"{g.future_production.mean():.2f}",
                    "always candidate": f"{g.future_candidate.mean():.2f}",
                    "gate": f"{chosen.mean():.2f}", "gate, refit on pass": f"{refitted.mean():.2f}",
                    "always refit": f"{g.future_refit.mean():.2f}"})
    return pd.DataFrame(out)


def comparisons(frame: pd.DataFrame) -> pd.DataFrame:
    """Each comparison and always promoting: rejections, regret, future error, broken candidates promoted."""
    out = []
    for (days, age), g in frame.groupby(["holdout", "age"]):
        best = np.minimum(g.future_candidate, g.future_production).mean()
        for label in [*COMPARES, "always promote"]:
            promote = g[f"promote {label}"] if label in COMPARES else pd.Series(True, index=g.index)
            pick = np.where(promote, g.future_candidate, g.future_production)
            broken_ = "-" if label not in COMPARES else f"{g[f'constant {label}'].sum()}, {g[f'shuffled {label}'].sum()}"
            out.append({"holdout": f"{days}d", "production age": f"{age}d", "gate": label, "pairs": len(g),
                        "rejected": f"{1 - promote.mean():.0%}",
                        "right": f"{(promote == (g.future_candidate < g.future_production)).mean():.0%}",
                        "regret": f"{pick.mean() / best - 1:.1%}", "future error": f"{pick.mean():.2f}",
                        "broken promoted (constant, shuffled)": broken_})
    return pd.DataFrame(out)


def markdown(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    return "\n".join([head, rule, *("| " + " | ".join(map(str, r)) + " |" for r in frame.itertuples(index=False))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(GRIDS), default=None)
    args = parser.parse_args()
    for name in [args.only] if args.only else list(GRIDS):
        with tempfile.TemporaryDirectory() as tmp:
            frame = pairs(name, Path(tmp))
        print(f"**{name}** (weekly grid {GRIDS[name][0]} .. {GRIDS[name][1]}; future = the next 28 days)\n")
        print(markdown(summary(frame)))
        print()
        print(markdown(comparisons(frame)))
        print()


if __name__ == "__main__":
    main()
