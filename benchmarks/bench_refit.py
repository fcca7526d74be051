"""Refit after the gate (`training.refit_on_pass`, issue 25 item 2): the same policies, the same gate,
replayed with and without the refit, on the bundled bike data and Google's daily prices.

`bench_gate.py` estimated that a candidate refitted through t, holdout rows included, errs 4-16% less
(bike) and 2-8% less (goog) over the next weeks. This measures what the loop now does: the real
backtest replay (`usecases.replay`, which decides as cycles do) of the configured policy and of a
retrain at every step (the floor), each once with `refit_on_pass: false` and once with `true`.
Reported per policy: retrains, promotions, the mean and p90 of the monitored error over every served
window, fits, wall and CPU seconds, and the refit's mean as a ratio to the same policy's without it
(the peer in the same run). Machine load is printed before and after.

    .venv/bin/python benchmarks/bench_refit.py [--only bike|goog]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_decisions import folder_for  # noqa: E402  (benchmarks/ is not a package)

from mlflow_retrain.measure.metrics import worse_tail  # noqa: E402
from mlflow_retrain.policy.load import load_config  # noqa: E402
from mlflow_retrain.usecases.backtest import default_policies, run_backtest, select  # noqa: E402

STEPS = {"bike": ("2011-05-01", timedelta(days=7)), "goog": ("2005-09-01", timedelta(days=7))}
POLICIES = ["configured", "every-window"]


def replay(name: str, root: Path, refit: bool) -> list[dict]:
    config = load_config(folder_for(name, root / f"{name}-{refit}") / "retrain.yaml")
    config = dataclasses.replace(config, training=dataclasses.replace(config.training, refit_on_pass=refit))
    start, every = STEPS[name]
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_backtest(config, start=start, every=every, policies=select(default_policies(config, every), POLICIES))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rows = []
    for state in result.states:
        if state.policy.equal_budget:
            continue
        values = [v for v in state.series if v is not None and math.isfinite(v)]
        rows.append({"data": name, "policy": state.policy.name, "refit": refit, "retrains": state.retrains,
                     "promoted": state.promoted, "mean": sum(values) / len(values),
                     "p90": worse_tail(state.series, higher_is_better=config.higher_is_better),
                     "fits": result.fits, "seconds": wall, "cpu": cpu, "steps": len(result.steps)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(STEPS), default=None)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start\n")
    print("| data | policy | refit | retrains | promoted | mean | p90 | mean / without refit | fits | wall s | CPU s |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in [args.only] if args.only else list(STEPS):
        with tempfile.TemporaryDirectory() as tmp:
            rows = replay(name, Path(tmp), False) + replay(name, Path(tmp), True)
        peer = {r["policy"]: r["mean"] for r in rows if not r["refit"]}
        for r in rows:
            print(f"| {r['data']} | {r['policy']} | {'yes' if r['refit'] else 'no'} | {r['retrains']} | {r['promoted']} | "
                  f"{r['mean']:.2f} | {r['p90']:.2f} | {r['mean'] / peer[r['policy']]:.3f} | {r['fits']} | "
                  f"{r['seconds']:.0f} | {r['cpu']:.0f} |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
