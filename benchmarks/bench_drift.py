"""Drift of daily windows against a small reference: `DriftMeter` against one Evidently report each.

A reference of at most 1,000 rows is where Evidently switches to its small-sample tests (K-S,
chi-square, Z); `DriftMeter` used to build a whole Evidently report per window there. Both sides
take the bundled data and policy (`retrain.yaml`): a reference of the `--reference-rows` hourly rows
up to 2011-06-01 and the `--windows` daily windows after it. Ours: one `DriftMeter` (the reference
prepared once) and `measure` per window. The peer: `reports.drift_report` per window, the
DataDriftPreset report the cycle writes. Same process, one after the other; the script checks that
both give the same numbers before printing the ratio.

    .venv/bin/python benchmarks/bench_drift.py [--reference-rows 500] [--windows 30]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START = "2011-06-01"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-rows", type=int, default=500)
    parser.add_argument("--windows", type=int, default=30)
    args = parser.parse_args()

    import evidently  # noqa: F401  imported before timing: both sides run after it is loaded
    import pandas as pd

    from mlflow_retrain.policy.load import load_config
    from mlflow_retrain.adapters.data import LabelledData
    from mlflow_retrain.measure.drift import DriftMeter
    from mlflow_retrain.adapters.reports import drift_report

    warnings.simplefilter("ignore")  # Evidently's numpy warnings on constant columns, once per window
    data = LabelledData.load(load_config(REPO / "retrain.yaml"))
    frame, spec = data.frame, data.spec
    time_ = frame[spec.timestamp]
    start = pd.Timestamp(START)
    reference = frame[time_ <= start].tail(args.reference_rows)
    windows = [frame[(time_ > start + pd.Timedelta(days=d)) & (time_ <= start + pd.Timedelta(days=d + 1))]
               for d in range(args.windows)]

    began = time.perf_counter()
    meter = DriftMeter(reference, spec)
    ours = [meter.measure(w) for w in windows]
    ours_s = time.perf_counter() - began
    began = time.perf_counter()
    peer = [drift_report(reference, w, spec) for w in windows]
    peer_s = time.perf_counter() - began

    same = all(a.drifted_columns == b.drifted_columns and a.drift_share == b.drift_share
               and all(math.isclose(a.column_scores[c], s, rel_tol=1e-9, abs_tol=1e-12)
                       for c, s in b.column_scores.items())
               for a, b in zip(ours, peer))
    mean = sum(d.drift_share for d in ours) / len(ours)
    print(f"reference: {len(reference)} rows up to {START}; {len(windows)} daily windows of "
          f"{sum(map(len, windows)) / len(windows):.0f} rows; {len(spec.features)} features\n")
    print(f"| {len(windows)} daily windows, {len(reference)}-row reference | DriftMeter | Evidently report per window "
          "| ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| whole run, s | {ours_s:.3f} | {peer_s:.1f} | {peer_s / ours_s:.0f}x faster |")
    print(f"| per window, ms | {1000 * ours_s / len(windows):.2f} | {1000 * peer_s / len(windows):.0f} | |")
    print(f"| mean drift share | {mean:.4f} | {sum(d.drift_share for d in peer) / len(peer):.4f} | |")
    print(f"| same numbers every window (count, share, scores) | {'yes' if same else 'NO'} | | |")


if __name__ == "__main__":
    main()
