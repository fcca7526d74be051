"""`init` then `backtest` as a new user runs them: does the policy `init` writes do as well as a fixed
schedule with the same number of retrains, and does its gate let the first model through (issue 25)?

On three tables: (a) hourly demand whose level grows (`tests/growing.py`), (b) an imbalanced (~24%
positive) classification table (`tests/growing.py`), (c) the bundled bike data. For each, in a fresh
folder and a process of its own per command, `mlflow-retrain init` (defaults), a bootstrap `cycle`
at the backtest's first step (does the first model pass the gate?), and `backtest --policy
never,configured --folds 0` from the same step (the backtest adds the schedule with the configured
policy's retrain count). Run with the code under test ("after") and, with `--before PATH`, with
another copy of the package's code ("before": `git archive <base> mlflow_retrain | tar -x -C DIR`) in
the same run. `vs_schedule` is the configured policy's mean error (for a score: its distance from 1)
over the equal-budget schedule's. Machine load is recorded at the
start and end of each side. Results go to stdout as Markdown.

    .venv/bin/python benchmarks/bench_init.py [--before DIR] [--only growing|imbalanced|bike]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from growing import growing_demand, imbalanced_events  # noqa: E402  (tests/ is on the path only from here)

# name: (table, target, first step of the backtest and the bootstrap)
DATASETS = {
    "growing": (lambda: growing_demand(days=300), "demand", "2024-04-01"),
    "imbalanced": (lambda: imbalanced_events(days=180), "flagged", "2024-03-01"),
    # casual + registered = cnt: a user drops them (the bundled retrain.yaml excludes them), else they leak
    "bike": (lambda: pd.read_csv(REPO / "data" / "bike_sharing_hourly.csv").drop(columns=["casual", "registered"]),
             "cnt", "2011-07-01"),
}


def command(code: Path, folder: Path, *args: str) -> tuple[dict, float]:
    """One `mlflow-retrain` command with `code` first on the path, in `folder`: its JSON and wall seconds."""
    # one OpenMP thread: on a shared two-core machine HistGradientBoosting's fits with a thread per
    # core ran up to 40x slower (both sides alike)
    env = {**os.environ, "PYTHONPATH": str(code), "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
           "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mlflow_retrain.cli", *args, "--json"], cwd=folder, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} in {folder} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout), seconds


def side(code: Path, folder: Path, name: str) -> dict:
    """init, bootstrap cycle, backtest with `code`; the numbers the table shows."""
    make, target, start = DATASETS[name]
    folder.mkdir(parents=True)
    make().to_csv(folder / "data.csv", index=False)
    load = os.getloadavg()[0]
    made, init_seconds = command(code, folder, "init", "--data", "data.csv", "--target", target,
                                 "--model-name", name)
    policy = (folder / "retrain.yaml").read_text()
    first, _ = command(code, folder, "cycle", "--config", "retrain.yaml", "--as-of", start, "--retrain-via",
                       "inprocess")
    back, back_seconds = command(code, folder, "backtest", "--config", "retrain.yaml", "--from", start, "--policy",
                                 "never,configured", "--folds", "0", "--out", "backtest")
    rows = {r["policy"]: r for r in back["policies"]}
    configured = rows["configured"]
    peer = next((r for r in back["policies"] if r.get("equal_budget")), None)
    hib = made["metric"] not in ("mae", "rmse")

    def error(value: float | None) -> float | None:  # a score's distance from perfect, so lower is better
        return None if value is None else (1 - value if hib else value)

    same = None if peer is None else error(peer["mean_metric"])
    ratio = None if same in (None, 0) else error(configured["mean_metric"]) / same
    return {"metric": made["metric"], "gate": made["gate"], "ratio_to_naive": made.get("ratio_to_naive"),
            "threshold": made["threshold"], "training_window": made["training_window"],
            "exclude": ",".join(made["exclude"]) or "-", "init_s": init_seconds,
            "first_model": first.get("outcome"), "first_reason": first.get("reason", ""), "steps": back["steps"], "configured_mean": configured["mean_metric"],
            "configured_retrains": configured["retrains"], "rejected": configured["rejected"],
            "never_mean": rows["never"]["mean_metric"], "schedule": None if peer is None else peer["policy"],
            "schedule_mean": None if peer is None else peer["mean_metric"], "vs_schedule": ratio,
            "recommended": back["recommended"], "backtest_s": back_seconds,
            "load": f"{load:.1f}..{os.getloadavg()[0]:.1f}", "policy": policy}


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, default=None, help="Another checkout to run as 'before'.")
    parser.add_argument("--only", choices=list(DATASETS), default=None)
    args = parser.parse_args()
    sides = {"after": REPO, **({"before": args.before.resolve()} if args.before else {})}
    names = [args.only] if args.only else list(DATASETS)
    keys = ["metric", "gate", "ratio_to_naive", "threshold", "training_window", "exclude", "init_s", "first_model",
            "steps", "configured_retrains", "rejected", "configured_mean", "schedule", "schedule_mean",
            "vs_schedule", "never_mean", "recommended", "backtest_s", "load"]
    with tempfile.TemporaryDirectory(prefix="bench-init-") as tmp:
        for name in names:
            results = {label: side(code, Path(tmp) / label / name, name) for label, code in sides.items()}
            print(f"\n### {name}\n")
            print("| | " + " | ".join(results) + " |")
            print("| --- |" + " ---: |" * len(results))
            for key in keys:
                print(f"| {key} | " + " | ".join(fmt(r[key]) for r in results.values()) + " |")
            for label, r in results.items():
                print(f"\n{label}: first model: {r['first_reason']}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
