"""Monitor a year of hourly data in daily windows: our monitor against Evidently's Report per window.

Both sides do the same work for every window: score the Production model on the window's rows
(MAE) and measure feature drift against the model's training data. Ours is the whole `monitor`
command (one load per version, one predict per version, DriftMeter, the CSV, the dashboard and the
MLflow run); the peer is what a user writes with Evidently alone: one `Report` per window with
`DataDriftPreset` and `RegressionPreset`. Each side runs in its own fresh process so peak memory
(max RSS) is its own. Results go to stdout as Markdown; paste them into RESULTS.md.

    .venv/bin/python benchmarks/bench_monitor.py [--windows 366]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINED_AS_OF = "2011-12-31"
START = "2012-01-01"


def setup(folder: Path) -> None:
    """A store with one Production model, trained as of the end of 2011 on the bundled policy."""
    from mlflow_retrain.policy.load import load_config
    from mlflow_retrain.loop.training import train

    train(load_config(REPO / "retrain.yaml"), as_of=TRAINED_AS_OF)


def ours(windows: int) -> dict:
    from mlflow_retrain.policy.load import load_config
    from mlflow_retrain.usecases.monitor import run_monitor

    config = load_config(REPO / "retrain.yaml")
    end = (__import__("pandas").Timestamp(START) + timedelta(days=windows)).isoformat()
    began = time.perf_counter()
    result = run_monitor(config, start=START, end=end, every=timedelta(days=1), out_dir=Path("out"))
    seconds = time.perf_counter() - began
    scored = [p for p in result.points if p.metric is not None]
    return {"seconds": seconds, "windows": len(result.points),
            "mean_mae": sum(p.metric for p in scored) / len(scored),
            "mean_drift": sum(p.drift_share for p in scored) / len(scored)}


def peer(windows: int) -> dict:
    import warnings

    import mlflow.sklearn
    import pandas as pd
    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.presets import DataDriftPreset, RegressionPreset

    from mlflow_retrain.policy.load import load_config
    from mlflow_retrain.adapters.data import LabelledData, Window
    from mlflow_retrain.loop.evaluate import load_reference
    from mlflow_retrain.adapters.reports import parse_drift

    config = load_config(REPO / "retrain.yaml")
    spec = config.data
    began = time.perf_counter()
    data = LabelledData.load(config)
    version = mlflow.MlflowClient().get_latest_versions(config.model_name, ["Production"])[0]
    model = mlflow.sklearn.load_model(f"models:/{config.model_name}/Production")
    reference = load_reference(version.run_id)
    reference = reference.assign(prediction=model.predict(reference[list(spec.features)]))
    numerical = [c for c in spec.features if c not in spec.categorical]
    definition = DataDefinition(numerical_columns=numerical + [spec.target, "prediction"],
                                categorical_columns=list(spec.categorical),
                                regression=[Regression(target=spec.target, prediction="prediction")])
    columns = [*spec.features, spec.target, "prediction"]
    ref = Dataset.from_pandas(reference[columns], data_definition=definition)
    maes, drifts = [], []
    warnings.simplefilter("ignore")  # Evidently's r2 on one-row slices warns on every window
    for i in range(windows):
        start = pd.Timestamp(START) + timedelta(days=i)
        if not data.count_after(start, start + timedelta(days=1)):
            continue  # a day without data (2012-10-29/30, hurricane Sandy): a gap on both sides
        rows = data.cut(Window(start, start + timedelta(days=1)))
        rows = rows.assign(prediction=model.predict(rows[list(spec.features)]))
        snapshot = Report([DataDriftPreset(columns=list(spec.features)), RegressionPreset()]).run(
            Dataset.from_pandas(rows[columns], data_definition=definition), ref)
        numbers = snapshot.dict()
        maes.append(next(m["value"]["mean"] for m in numbers["metrics"] if m["metric_name"].startswith("MAE(")))
        drifts.append(parse_drift(numbers, len(spec.features)).drift_share)
    return {"seconds": time.perf_counter() - began, "windows": windows, "mean_mae": sum(maes) / len(maes),
            "mean_drift": sum(drifts) / len(drifts)}


def child(side: str, windows: int) -> None:
    result = ours(windows) if side == "ours" else peer(windows)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def run_side(side: str, windows: int, folder: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--side", side, "--windows", str(windows)], cwd=folder,
                         env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"},
                         capture_output=True, text=True)
    line = next((text for text in out.stdout.splitlines() if text.startswith("RESULT ")), None)
    if out.returncode or line is None:
        sys.exit(f"{side} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=366, help="daily windows from 2012-01-01")
    parser.add_argument("--side", choices=["setup", "ours", "peer"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "setup":
        return setup(Path.cwd())
    if args.side:
        return child(args.side, args.windows)
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        folder = Path(tmp)
        subprocess.run([sys.executable, __file__, "--side", "setup"], cwd=folder, check=True, capture_output=True,
                       env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"})
        a, b = run_side("ours", args.windows, folder), run_side("peer", args.windows, folder)
    print(f"| monitor, {a['windows']} daily windows of 2012 (hourly rows) | ours | Evidently Report per window | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| whole run, s | {a['seconds']:.1f} | {b['seconds']:.1f} | {b['seconds'] / a['seconds']:.1f}x faster |")
    print(f"| per window, ms | {1000 * a['seconds'] / a['windows']:.0f} | {1000 * b['seconds'] / b['windows']:.0f} | |")
    print(f"| peak RSS, MB (own process) | {a['peak_rss_mb']:.0f} | {b['peak_rss_mb']:.0f} | "
          f"{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x |")
    print(f"| mean daily MAE (same numbers?) | {a['mean_mae']:.3f} | {b['mean_mae']:.3f} | |")
    print(f"| mean drift share (same numbers?) | {a['mean_drift']:.4f} | {b['mean_drift']:.4f} | |")


if __name__ == "__main__":
    main()
