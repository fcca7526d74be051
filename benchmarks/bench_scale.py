"""Data larger than one window: a cycle's and the monitor's time and memory as the history grows.

The bundled bike data (`data/bike_sharing_hourly.csv`, 17,379 hourly rows over 2011-2012) is scaled
in two ways: 58 stations at the same timestamps (each its demand scaled by its own factor, with its
own noise, and noisy temperatures) make about one million rows per two years, and the two-year
block is repeated back in time (every copy 735 days, 105 weeks, earlier, so weekdays stay put) until
the size is reached. So 1M rows is 2 years, 10M is 20 years and 50M is 100 years of the same
density: every command's windows hold the same rows at every size, and only the history grows.
Each size is written as one CSV file and as a Parquet dataset partitioned `year=/month=`.

Per size and form, each a fresh `mlflow-retrain` process against its own sqlite store (timed from
outside, peak RSS from the child's `ru_maxrss`): a retraining `cycle` (the first, bootstrap, cycle
as of a year before the end: trains on 180 days, judged on 14), a no-op `cycle` at the newest row
(no trigger fires), and `monitor` over the year since the promotion (365 daily windows). Run once
each; the machine is shared, so expect noise.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 1000000,10000000] [--forms csv,parquet] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import yaml

REPO = Path(__file__).resolve().parents[1]
BIKE = REPO / "data" / "bike_sharing_hourly.csv"
STATIONS = 58  # 58 x 17,379 = 1.008M rows per two-year block
SHIFT = pd.Timedelta(days=735)
FEATURES = ["hour", "season", "holiday", "weekday", "workingday", "weathersit", "temp", "atemp", "hum", "windspeed"]
CATEGORICAL = ["season", "holiday", "weekday", "workingday", "weathersit"]


def block(bike: pd.DataFrame, copy: int) -> pd.DataFrame:
    """The two-year block `copy` blocks back in time, once per station, with the station's noise."""
    rng = np.random.default_rng(copy)
    n = len(bike)
    frames = []
    stamps = pd.to_datetime(bike.timestamp) - SHIFT * copy
    for station in range(STATIONS):
        factor = 0.7 + 0.6 * (station / STATIONS)
        frames.append(bike.assign(
            timestamp=stamps, station=station,
            temp=(bike.temp + rng.normal(0, 0.5, n)).round(2),
            cnt=np.clip(np.round(bike.cnt * factor + rng.normal(0, 10, n)), 0, None).astype("int64")))
    return pd.concat(frames, ignore_index=True).drop(columns=["casual", "registered"])


def write(size: int, folder: Path, forms: list[str]) -> dict[str, Path]:
    """The scaled data as `data.csv` and/or the dataset `data/year=YYYY/month=M/`, block by block."""
    bike = pd.read_csv(BIKE)
    copies = -(-size // (STATIONS * len(bike)))
    paths = {"csv": folder / "data.csv", "parquet": folder / "data"}
    for copy in reversed(range(copies)):  # oldest first, so the CSV is in time order
        rows = block(bike, copy)
        if "csv" in forms:
            rows.to_csv(paths["csv"], mode="a", header=copy == copies - 1, index=False)
        if "parquet" in forms:
            table = pa.Table.from_pandas(rows.assign(year=rows.timestamp.dt.year, month=rows.timestamp.dt.month),
                                         preserve_index=False)
            ds.write_dataset(table, paths["parquet"], format="parquet", partitioning=["year", "month"],
                             partitioning_flavor="hive", basename_template=f"part-{copy}-{{i}}.parquet",
                             existing_data_behavior="overwrite_or_ignore", max_rows_per_group=256 * 1024)
    return {form: paths[form] for form in forms}


def policy(folder: Path, data: Path) -> Path:
    path = folder / "retrain.yaml"
    path.write_text(yaml.safe_dump({
        "model_name": "bikes", "experiment": "bikes", "task": "regression",
        "data": {"path": str(data), "timestamp": "timestamp", "target": "cnt", "features": FEATURES,
                 "categorical": CATEGORICAL},
        "training": {"params": {"max_iter": 30}, "window": "180d", "holdout": "14d"},
        "monitoring": {"window": "1d", "metric": "mae"},
        "triggers": {"metric_threshold": {"max": 10000}},
        "validation": {"max_metric": 10000}}))
    return path


def measure(args: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MB) of one `mlflow-retrain` process, and its last output line."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    script = Path(sys.executable).parent / "mlflow-retrain"
    began = time.perf_counter()
    # a wrapper per command so that ru_maxrss of its children is this command's alone
    code = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(done.returncode); "
            "print((done.stdout + done.stderr).strip().splitlines()[-1][:160] if (done.stdout + done.stderr).strip() "
            "else '')")
    out = subprocess.run([sys.executable, "-c", code, str(script), *args], capture_output=True, text=True, cwd=cwd,
                         env=env, check=True)
    wall = time.perf_counter() - began
    rss_kb, code_, last = (out.stdout.splitlines() + ["", "", ""])[:3]
    if code_ != "0":
        raise RuntimeError(f"mlflow-retrain {' '.join(args)} exit {code_}: {last}")
    return wall, int(rss_kb) / 1024, last


def run(size: int, forms: list[str], keep: Path | None) -> list[dict]:
    folder = Path(tempfile.mkdtemp(prefix=f"bench-scale-{size}-", dir=keep))
    began = time.perf_counter()
    paths = write(size, folder, forms)
    written = time.perf_counter() - began
    results = []
    for form, data in paths.items():
        work = folder / form
        work.mkdir()
        config = policy(work, data)
        newest = pd.Timestamp("2012-12-31 23:00")
        start = str((newest - pd.Timedelta(days=365)).date())
        rows = {}
        for name, args in (("retraining cycle", ["cycle", "-c", str(config), "--as-of", start,
                                                  "--retrain-via", "inprocess"]),
                           ("no-op cycle", ["cycle", "-c", str(config)]),
                           ("monitor", ["monitor", "-c", str(config)])):
            wall, rss, last = measure(args, work)
            rows[name] = (wall, rss)
            print(f"  {size:>11,} {form:8} {name:17} {wall:7.1f} s {rss:7.0f} MB   {last[:90]}", flush=True)
        size_on_disk = (sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) if data.is_dir()
                        else data.stat().st_size) / 1e6
        results.append({"size": size, "form": form, "disk_mb": size_on_disk, "write_s": written, **rows})
    if keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--forms", default="csv,parquet")
    parser.add_argument("--keep", type=Path, default=None, help="write the data under this folder and keep it")
    args = parser.parse_args()
    forms = args.forms.split(",")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    table = []
    for size in map(int, args.sizes.split(",")):
        table += run(size, forms, args.keep)
    print("\n| rows | form | on disk | retraining cycle | no-op cycle | monitor (365 windows) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for r in table:
        cells = " | ".join(f"{r[k][0]:.1f} s, {r[k][1]:.0f} MB" for k in ("retraining cycle", "no-op cycle", "monitor"))
        print(f"| {r['size']:,} | {r['form']} | {r['disk_mb']:.0f} MB | {cells} |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end; peak RSS is the largest process of each command")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
