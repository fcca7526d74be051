"""The bundled data's full two-year replay, daily steps, every default policy: cached vs naive.

Ours: `run_backtest` as shipped (fits cached per training window and shared between policies,
window scores cached, one pass, `--jobs` cores for the fits known in advance). The peer is the naive
loop that trains per policy (`cache=False`: every retrain of every policy fits its own model, in
one process). Both must give the same table; the script checks that before printing the ratio.

    .venv/bin/python benchmarks/bench_backtest.py [--from 2011-05-01] [--jobs 2]
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="start", default="2011-05-01")
    parser.add_argument("--to", dest="end", default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--skip-naive", action="store_true", help="only the cached run (for the README table)")
    parser.add_argument("--out", default=None, help="also write the CSV and HTML chart of the cached run here")
    args = parser.parse_args()

    from mlflow_retrain.usecases.backtest import run_backtest, write_outputs
    from mlflow_retrain.policy.load import load_config
    from mlflow_retrain.adapters.data import LabelledData

    config = load_config(REPO / "retrain.yaml")
    data = LabelledData.load(config)
    every = timedelta(days=1)
    began = time.perf_counter()
    ours = run_backtest(config, start=args.start, end=args.end, every=every, data=data, jobs=args.jobs)
    ours_s = time.perf_counter() - began
    rows = ours.table()
    if args.out:
        write_outputs(config, ours, Path(args.out), log_run=False)
    print(f"{len(ours.steps) - 1} daily steps {ours.steps[0].date()}..{ours.steps[-1].date()}, "
          f"{len(rows)} policies, recommended: {ours.recommended}\n")
    print("| policy | retrains | promoted | rejected | mean MAE | p90 MAE | windows worse than threshold |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['policy']}{' (recommended)' if r['recommended'] else ''} | {r['retrains']} | {r['promoted']} | "
              f"{r['rejected']} | {r['mean_metric']:.1f} | {r['p90_metric']:.1f} | {r['windows_worse_than_threshold']} |")
    if args.skip_naive:
        print(f"\nours: {ours_s:.0f} s, {ours.fits} fits")
        return
    began = time.perf_counter()
    naive = run_backtest(config, start=args.start, end=args.end, every=every, data=data, jobs=1, cache=False)
    naive_s = time.perf_counter() - began

    def results(table):
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in table]

    same = results(naive.table()) == results(rows)
    print(f"\n| full replay, all default policies | ours (cache, jobs={args.jobs}) | naive (per-policy fits, one process) "
          "| speed-up |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| wall time, s | {ours_s:.0f} | {naive_s:.0f} | {naive_s / ours_s:.1f}x |")
    print(f"| model fits | {ours.fits} | {naive.fits} | {naive.fits / ours.fits:.1f}x fewer |")
    print(f"| identical table | {'yes' if same else 'NO'} | | |")


if __name__ == "__main__":
    main()
