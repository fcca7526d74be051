"""The monitor's drift on data larger than one window (issue 28, row `monitor`): a year of daily
windows against a 180-day reference of 58 stations (`bench_scale.py`'s data: 250,000 reference rows,
about 1,400 rows a window), ours against the naive form in the same process.

Ours: `DriftMeter.sliced` as the monitor calls it, the reference's numeric columns sorted once with
the integral of their CDF (`drift._cdf_distance`: a window reads them by `searchsorted`). Naive: the same meter with
scipy's `wasserstein_distance` per window (what `_wasserstein` called before), which sorts the
250,000 reference values again for every window and column. Both sides are timed in CPU seconds of
this process (`resource.getrusage`), the machine's load average printed at start and end; the script
checks that every column's score is the same number on both sides (to 1e-12 relative; the naive side
on one BLAS thread, whose threads spin on a busy 2-core machine) before printing the ratio. Results to stdout as Markdown.

    .venv/bin/python benchmarks/bench_monitor_drift.py [--windows 366] [--naive-windows 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_scale  # noqa: E402  (its scaled bike data)

from mlflow_retrain.measure import drift  # noqa: E402
from mlflow_retrain.policy.config import DataConfig  # noqa: E402

END = pd.Timestamp("2012-12-31 23:00")


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def naive_wasserstein(ref: drift._Reference, current: np.ndarray, counts: dict) -> float:
    """The per-window form this replaces: scipy sorts the whole reference for every window."""
    return float(stats.wasserstein_distance(ref.values, current) / ref.norm)


def run(meter: drift.DriftMeter, frame: pd.DataFrame, bounds: list[tuple[int, int]]) -> tuple[float, list]:
    began = cpu()
    columns = meter.sliced(frame)
    scores = [[c.score for c in columns(lo, hi)] for lo, hi in bounds]
    return cpu() - began, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=366)
    parser.add_argument("--naive-windows", type=int, default=60, help="windows the naive side measures (its "
                        "time per window is extrapolated to --windows; the scores compared are these)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    bike = pd.read_csv(bench_scale.BIKE)
    rows = bench_scale.block(bike, 0).sort_values("timestamp", kind="stable", ignore_index=True)
    start = END.normalize() - pd.Timedelta(days=args.windows - 1)
    reference = rows[(rows.timestamp >= start - pd.Timedelta(days=194)) & (rows.timestamp < start - pd.Timedelta(days=14))]
    span = rows[rows.timestamp >= start].reset_index(drop=True)
    stamps = span.timestamp.to_numpy()
    edges = np.searchsorted(stamps, (start + pd.to_timedelta(np.arange(args.windows + 1), "D")).to_numpy())
    bounds = list(zip(edges[:-1], edges[1:]))
    spec = DataConfig(path="-", timestamp="timestamp", target="cnt", features=tuple(bench_scale.FEATURES),
                      categorical=tuple(bench_scale.CATEGORICAL))
    began = cpu()
    meter = drift.DriftMeter(reference, spec)
    prepared = cpu() - began
    ours, scores = run(meter, span, bounds)
    with threadpool_limits(1, user_api="blas"):
        drift.WASSERSTEIN = dataclasses.replace(drift.WASSERSTEIN, score=naive_wasserstein)  # `_choose` reads it
        naive_meter = drift.DriftMeter(reference, spec)
        naive, naive_scores = run(naive_meter, span, bounds[:args.naive_windows])
    same = all(np.isclose(a, b, rtol=1e-12, atol=0) or (np.isnan(a) and np.isnan(b))
               for x, y in zip(scores, naive_scores) for a, b in zip(x, y))
    naive_all = naive / len(naive_scores) * len(bounds)
    print(f"\nreference {len(reference):,} rows, {len(span):,} rows in {len(bounds)} daily windows "
          f"(median {int(np.median(np.diff(edges))):,} a window); numeric columns: "
          f"{', '.join(c for c in bench_scale.FEATURES if c not in bench_scale.CATEGORICAL)}\n")
    print("| drift of the year's windows, one process | ours (prepared once) | naive (scipy per window) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| CPU s, {len(bounds)} windows | {ours:.2f} (+ {prepared:.2f} preparing) | {naive_all:.1f} "
          f"(measured on {len(naive_scores)}) | {naive_all / (ours + prepared):.0f}x |")
    print(f"| CPU ms per window | {1000 * ours / len(bounds):.1f} | {1000 * naive / len(naive_scores):.1f} | |")
    print(f"| same scores, to 1e-12 relative ({len(naive_scores)} windows x {len(meter.features)} columns) | "
          f"{'yes' if same else 'NO'} | | |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    if not same:
        sys.exit("the scores differ")


if __name__ == "__main__":
    main()
