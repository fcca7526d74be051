"""The backtest's walk-forward choice with training window, holdout and gate kind as dimensions (issue 25 item 5).

On the bundled bike data (weekly steps from 2011-05-01, `retrain.yaml` as shipped) and Google's daily
prices (`bench_small_reference.py`'s data and policy, weekly steps from 2005-09-01), `run_backtest`
with every default policy, `--folds 4` and `--search window,holdout,gate` (the cheapest policies
under each value, about twice the policies' own fits). Reported: the walk-forward
recommendation's out-of-sample mean error against the every-step floor on the same windows and
against the floor's whole-history figure (bike 43.5, goog 23.8), its retrains as a share of the
floor's, and per fold every chosen dimension, error, p90, retrains and rejections by check; fits and
CPU seconds of the whole backtest (one process, `OMP_NUM_THREADS=1`), the machine's load average.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_backtest_choice.py [--only bike|goog]
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# --from, step days, the every-step floor's whole-history mean (RESULTS: daily steps on bike), the
# search's fit budget (goog: about twice the fits of the policies' own replay; bike: about 5x, enough
# for threshold-48 under each value). Bike in weekly steps: daily steps with the search take about
# 1,900 fits, more than a shared 2-core machine gives in an hour.
DATASETS = {"bike": ("2011-05-01", 7, 43.5, 480), "goog": ("2005-09-01", 7, 23.8, 330)}


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def replay(name: str) -> dict:
    """The backtest with the search, once: its result and what it cost."""
    from bench_gate import config_for

    from mlflow_retrain.adapters.data import LabelledData
    from mlflow_retrain.usecases.backtest import run_backtest

    start, step, _, budget = DATASETS[name]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        config = config_for(name, Path(tmp))
        data = LabelledData.load(config)
        cpu, wall = cpu_seconds(), time.perf_counter()
        result = run_backtest(config, start=start, every=timedelta(days=step), data=data, folds=4,
                              dimensions=("window", "holdout", "gate"), fit_budget=budget)
        cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    return {"result": result, "config": config, "cpu": cpu, "wall": wall, "load": (load, os.getloadavg()[0])}


def report(name: str, run: dict) -> None:
    from mlflow_retrain.decide.choice import walk_forward
    from mlflow_retrain.measure.metrics import worse_tail

    start, step, floor_then, budget = DATASETS[name]
    result, config, cpu, wall, load = run["result"], run["config"], run["cpu"], run["wall"], run["load"]
    for cached in ("_forward", "_table"):  # a saved replay is chosen on again with this version's rule
        result.__dict__.pop(cached, None)
    result.recommended = result.recommend()
    forward = result.walk_forward()
    plain = [c for c in result.candidates() if c.name not in result.search.variants]
    triggers_only = walk_forward(plain, result.rule, 4, result.day_of())
    index = {t.isoformat(): i for i, t in enumerate(result.steps)}
    rows = {r["policy"]: r for r in result.table()}
    floor = rows["every-window"]
    wf = rows["walk-forward"]
    states = {s.policy.name: s for s in result.states}
    variants = result.search.variants
    print(f"**{name}**: {len(result.steps) - 1} steps of {step}d from {start}, out of sample from "
          f"{result.steps[forward.start].date()}; {len(result.states)} policies ({len(variants)} under "
          f"{', '.join(result.search.to_dict()['values'])}), {result.fits - result.search.fits} + {result.search.fits} fits "
          f"(search budget {budget}); {wall:.0f} s wall, {cpu:.0f} s CPU, load average "
          f"{load[0]:.1f} at the start, {load[1]:.1f} at the end\n")
    print(f"- walk-forward OOS mean {wf['oos_mean_metric']:.2f} vs the floor on the same windows "
          f"{floor['oos_mean_metric']:.2f} ({wf['oos_mean_metric'] / floor['oos_mean_metric']:.3f}x) and the floor's "
          f"whole-history {floor_then} ({wf['oos_mean_metric'] / floor_then:.3f}x); OOS p90 {wf['oos_p90_metric']:.1f} "
          f"vs {floor['oos_p90_metric']:.1f}; retrains {wf['oos_retrains']} = "
          f"{wf['oos_retrains'] / floor['oos_retrains']:.1%} of the floor's {floor['oos_retrains']}")
    oos = [v for v in triggers_only.series if v is not None]
    print(f"- without the search (triggers only, same rule): walk-forward OOS mean {sum(oos) / len(oos):.2f} "
          f"with {triggers_only.retrains} retrains ({', '.join(f.chosen for f in triggers_only.folds)}); "
          f"recommended from now on: {result.recommended}")
    for warning in result.warnings():
        print(f"- note: {warning}")
    print("\n| fold | from | policy | window | holdout | gate | mean | p90 | retrains (fits) | rejected by check |")
    print("| ---: | --- | --- | --- | --- | --- | ---: | ---: | ---: | --- |")
    for k, fold in enumerate(forward.folds, 1):
        state = states[fold.chosen]
        variant = variants.get(fold.chosen)
        keys = variant.keys() if variant else {}
        series = state.series[fold.start:fold.end]
        failed = Counter(c for (at, _), checks in zip(state.retrain_points, state.failed)
                         if fold.start <= index[at] < fold.end for c in checks)
        print(f"| {k} | {result.steps[fold.start].date()} | {state.policy.name.split('/')[0]} | "
              f"{keys.get('training', {}).get('window', f'{config.training.window.days}d')} | "
              f"{keys.get('training', {}).get('holdout', f'{config.training.holdout.days}d')} | "
              f"{keys.get('validation', {}).get('compare', 'configured')} | {fold.mean:.2f} | "
              f"{worse_tail(series, higher_is_better=False):.1f} | {fold.retrains} | "
              f"{', '.join(f'{c} {n}' for c, n in failed.items()) or '-'} |")
    print("\n| policy | retrains | rejected by check | mean | OOS mean | OOS retrains |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for r in sorted(rows.values(), key=lambda r: r["oos_mean_metric"])[:12]:
        print(f"| {r['policy']} | {r['retrains'] if r['retrains'] is not None else '-'} | "
              f"{', '.join(f'{c} {n}' for c, n in (r['rejected_by'] or {}).items()) or '-'} | "
              f"{r['mean_metric'] if r['mean_metric'] is None else round(r['mean_metric'], 2)} | "
              f"{r['oos_mean_metric']:.2f} | {r['oos_retrains']} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(DATASETS), default=None)
    parser.add_argument("--save", type=Path, default=None, help="keep each replay in DIR/<data>.pickle")
    parser.add_argument("--load", type=Path, default=None,
                        help="report on replays kept by --save (the choice is made again, the replay is the same)")
    args = parser.parse_args()
    for name in [args.only] if args.only else list(DATASETS):
        if args.load:
            run = pickle.loads((args.load / f"{name}.pickle").read_bytes())
        else:
            run = replay(name)
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                (args.save / f"{name}.pickle").write_bytes(pickle.dumps(run))
        report(name, run)


if __name__ == "__main__":
    main()
