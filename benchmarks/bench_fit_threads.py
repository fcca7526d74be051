"""A training fit on the bundled data with one OpenMP thread (`adapters.models.threads_for`, used by
`adapters.train.fit`) against the same fit with a thread per core, in one process each, the same
three as-of dates, CPU and wall seconds (issue 28: the backtest's profile was 380 of 398 s CPU in
gradient-boosting fits spinning threads). The fits are identical either way (same predictions).

    .venv/bin/python benchmarks/bench_fit_threads.py
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(mode: str) -> None:
    import pandas as pd

    import mlflow_retrain.adapters.train as train
    from mlflow_retrain.adapters.data import LabelledData
    from mlflow_retrain.policy.load import load_config

    config = load_config(ROOT / "retrain.yaml")
    data = LabelledData.load(config)
    if mode == "every-core":
        train.threads_for = lambda rows: contextlib.nullcontext()
    train.fit(config, data, pd.Timestamp("2012-03-01"))  # warm: imports, the first fit's set-up

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    started_cpu, started = cpu(), time.perf_counter()
    for as_of in ("2012-04-01", "2012-05-01", "2012-06-01"):
        train.fit(config, data, pd.Timestamp(as_of))
    print(f"| {mode} | {cpu() - started_cpu:.1f} | {time.perf_counter() - started:.1f} |")


def main() -> None:
    if len(sys.argv) > 1:
        return one(sys.argv[1])
    print(f"load average at start: {os.getloadavg()[0]:.1f}\n")
    print("| fits (3, bundled policy) | CPU s | wall s |\n| --- | ---: | ---: |", flush=True)
    for mode in ("every-core", "one-thread", "every-core", "one-thread"):
        subprocess.run([sys.executable, __file__, mode], check=True, cwd=ROOT)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
