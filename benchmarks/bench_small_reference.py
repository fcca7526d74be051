"""Monitor and backtest a daily dataset with a small reference: drift verdicts and time per window.

Issue 17, item 1. A reference of at most 1,000 values is where Evidently's DataDriftPreset switches to
its small-sample tests (K-S, chi-square, Z); `DriftMeter` used to build one Evidently report per
window there (189 daily windows took 800 s, a 52-step backtest with drift triggers 314 s against 6.9 s
without). This script runs the real command line on a real daily dataset whose model is trained on
about 250 rows, and checks every window's drift verdicts against Evidently's own report.

The data: Google's daily stock prices, 2004-08-19 .. 2008-10-14 (1,047 trading days, no rows on
weekends and market holidays), `sample_data/goog.npz` in matplotlib's wheel (installed in the venv,
read offline; shipped under the Matplotlib licence, prices originally from Yahoo! Finance). Real
drift: the price went from 100 to 742 (2007-11) and back to 330. The task: predict the day's close
from its open and the previous day's prices and volume (`frame()` derives the columns). A
HistGradientBoostingRegressor cannot extrapolate, so when the price leaves its training range the
error grows: the triggers have something to find.

1. A temporary folder with the data as CSV and two policies: `retrain.yaml` (training window 365d,
   i.e. about 250 rows: every drift test is a small-sample one; metric threshold, `data_drift`, age,
   cooldown) and `retrain-nodrift.yaml` (the same without `data_drift`). One real
   `mlflow-retrain cycle --bootstrap --as-of` trains v1 into a sqlite store there.
2. Timed, each a fresh process (wall time, and the child's own CPU time and peak RSS from `wait4`;
   `OMP_NUM_THREADS=1` for every process): `mlflow-retrain monitor --every 1d` over `--days`
   calendar days from the bootstrap, and the same command on the bundled bike data (its
   `retrain.yaml`, v1 bootstrapped as of 2011-12-31 into its own temporary store: hourly rows, a
   reference of about 2,800 rows, so Wasserstein and Jensen-Shannon) over as many days of 2012 as the goog span
   has trading days, so both score the same number of windows holding rows. Each also over its first
   7 days; each of the four `--repeat` times, interleaved, medians kept. Per window = the command's own
   `seconds` (in `--json`: read the data, load the model and its reference, score, drift, CSV,
   dashboard; not imports or the MLflow run) over the windows holding rows; and the cost of one more
   window: the CPU time of the long run less the 7-day one's, over the windows with rows it adds.
3. Parity, in this process: for every window of the monitor's `monitor.csv` that holds rows, Evidently's
   report (`reports.drift_report`, the report the cycle writes, one per window) against the serving
   version's logged reference; each column's verdict as Evidently decided it (read off its own
   `get_one_column_drift`, which its ValueDrift metric calls), its score, and the report's drift share,
   against the CLI's `drifted`, `drift.<column>` and `drift_share`. The Evidently side is timed (the
   peer), and so is `DriftMeter` alone on the same windows.
4. `mlflow-retrain backtest --every 7d` over `--steps` weekly steps from the bootstrap:
   `--policy never,drift,configured` with `retrain.yaml`, and `--policy never,configured` with
   `retrain-nodrift.yaml` (the same store); per step = the command's own `seconds` (in `--json`:
   `run_backtest`) and its process's CPU time, over the steps.

    .venv/bin/python benchmarks/bench_small_reference.py [--days 270] [--steps 52] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("mlflow-retrain"))
AS_OF = "2007-04-01"  # v1 trained on (2006-03-04, 2007-03-04], validated on the 28 days after
BIKE_AS_OF, BIKE_FROM = "2011-12-31", "2012-01-01"
FEATURES = ["open", "prev_close", "prev_high", "prev_low", "prev_volume", "gap", "prev_range", "weekday"]

POLICY = """\
# Google's daily close from its open and the previous day (benchmarks/bench_small_reference.py)
model_name: goog-close
experiment: goog-close
task: regression
data:
  path: goog_daily.csv
  timestamp: date
  target: close
  features: [{features}]
  categorical: [weekday]
training:
  estimator: sklearn.ensemble.HistGradientBoostingRegressor
  params: {{max_iter: 100}}
  window: 365d     # about 250 trading days: a small reference (<= 1000 values) for every column
  holdout: 28d
  seed: 0
monitoring:
  window: 7d
  metric: mae
  max_data_gap: 7d # weekends and market holidays are not downtime
  reports: never
triggers:
  metric_threshold: {{max: 12}}
{drift}  max_age: 180d
  cooldown: 7d
validation:
  max_metric: 25
  min_improvement: 0.0
registry:
  aliases: {{production: production, staging: staging}}
  use_stages: true
"""


def frame():
    """One row per trading day: the close to predict, the day's open and the previous day's numbers."""
    import matplotlib
    import numpy as np
    import pandas as pd

    prices = np.load(Path(matplotlib.get_data_path()) / "sample_data" / "goog.npz")["price_data"]
    raw = pd.DataFrame({name: prices[name] for name in prices.dtype.names}).sort_values("date")
    before = raw.shift(1)
    out = pd.DataFrame({
        "date": pd.to_datetime(raw["date"]),
        "open": raw["open"], "prev_close": before["close"], "prev_high": before["high"], "prev_low": before["low"],
        "prev_volume": before["volume"] / 1e6,  # millions of shares
        "gap": raw["open"] / before["close"] - 1, "prev_range": (before["high"] - before["low"]) / before["close"],
        "weekday": pd.to_datetime(raw["date"]).dt.dayofweek, "close": raw["close"]})
    return out.iloc[1:].reset_index(drop=True)


def write_folder(folder: Path) -> None:
    folder.mkdir(parents=True)
    frame().to_csv(folder / "goog_daily.csv", index=False)
    features = ", ".join(FEATURES)
    (folder / "retrain.yaml").write_text(POLICY.format(features=features, drift="  data_drift: {max_drift_share: 0.5}\n"))
    (folder / "retrain-nodrift.yaml").write_text(POLICY.format(features=features, drift=""))


def run(args: list[str], store: Path, cwd: Path, ok=(0,)) -> dict:
    """One fresh process: wall time, its own peak RSS (wait4), and its --json output."""
    # one OpenMP thread (HistGradientBoosting's fit and predict), every process alike: on a busy
    # 2-core machine OpenMP's spinning threads inflate both wall and CPU time erratically
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    out_path, err_path = cwd / "stdout.txt", cwd / "stderr.txt"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        began = time.perf_counter()
        child = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - began
    child.returncode = os.waitstatus_to_exitcode(status)
    print(f"{seconds:6.1f} s  {' '.join(a if len(a) < 60 else '...' + a[-40:] for a in args[1:])}", file=sys.stderr)
    if child.returncode not in ok:
        sys.exit(f"{' '.join(args)} failed ({child.returncode}):\n{err_path.read_text()[-3000:]}")
    text = out_path.read_text()
    return {"wall": seconds, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
            "code": child.returncode,
            "json": json.loads(text[text.index("{"):]) if "--json" in args else None}


def bootstrap(policy: Path, as_of: str, store: Path, cwd: Path) -> None:
    result = run([CLI, "cycle", "--config", str(policy), "--bootstrap", "--as-of", as_of,
                  "--retrain-via", "inprocess", "--json"], store, cwd)
    if result["json"].get("outcome") != "promoted":
        sys.exit(f"bootstrap of {policy} as of {as_of} did not promote: {result['json'].get('reason')}")


def monitor(policy: Path, start: str, days: int, store: Path, cwd: Path) -> dict:
    import pandas as pd

    end = (pd.Timestamp(start) + pd.Timedelta(days=days)).isoformat()
    out = cwd / f"monitor-{days}"
    result = run([CLI, "monitor", "--config", str(policy), "--from", start, "--to", end, "--every", "1d",
                  "--out", str(out), "--json"], store, cwd, ok=(0, 4))
    windows = result["json"]["windows"]
    result.update(windows=len(windows), with_rows=sum(w["rows"] > 0 for w in windows),
                  rows=sum(w["rows"] for w in windows), seconds=result["json"]["seconds"], table=out / "monitor.csv")
    return result


def median(results: list[dict]) -> dict:
    """The first run's counts with the median of each timing over the runs."""
    import statistics

    return {**results[0], **{key: statistics.median(r[key] for r in results) for key in ("wall", "cpu", "seconds")},
            "rss_mb": max(r["rss_mb"] for r in results), "runs": len(results)}


def parity(policy: Path, table: Path, store: Path) -> dict:
    """Every window of the CLI's monitor.csv that holds rows against Evidently's report on it."""
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    import evidently.metrics.column_statistics as value_drift  # Evidently imported before anything is timed
    import pandas as pd

    from mlflow_retrain.policy.load import load_config
    from mlflow_retrain.adapters.data import LabelledData, Window
    from mlflow_retrain.measure.drift import DriftMeter
    from mlflow_retrain.loop.evaluate import load_reference
    from mlflow_retrain.adapters.registry import Registry
    from mlflow_retrain.adapters.reports import drift_report

    verdicts: dict[str, tuple[bool, str]] = {}  # Evidently's own per-column verdict and test, this report
    own = value_drift.get_one_column_drift

    def spy(*args, **kwargs):
        result = own(*args, **kwargs)
        verdicts[result.column_name] = (bool(result.drift_detected), result.stattest_name)
        return result

    value_drift.get_one_column_drift = spy
    config = load_config(policy)
    data = LabelledData.load(config)
    runs = {v.version: v.run_id for v in Registry(config).versions()}
    rows = pd.read_csv(table, dtype={"version": str})
    rows = rows[rows["rows"] > 0].assign(drifted=lambda f: f["drifted"].fillna(""), fired=lambda f: f["fired"].fillna(""))
    references = {v: load_reference(runs[v]) for v in set(rows["version"])}
    windows = [data.rows(Window(pd.Timestamp(r.start), pd.Timestamp(r.end))) for r in rows.itertuples()]
    meters = {v: DriftMeter(ref, data.spec) for v, ref in references.items()}
    columns = meters[next(iter(meters))].features
    began, cpu = time.perf_counter(), time.process_time()
    for version, window in zip(rows["version"], windows):
        meters[version].measure(window)
    meter_s, meter_cpu = time.perf_counter() - began, time.process_time() - cpu
    our_tests = [{c.column: c.method for c in meters[v].columns(w)} for v, w in zip(rows["version"], windows)]

    same = same_share = same_columns = same_scores = same_tests = 0
    column_checks = column_same = 0
    shares, reference_sizes, tests = [], {len(r) for r in references.values()}, {}
    peer_s = peer_cpu = 0.0
    for (_, row), window, methods in zip(rows.iterrows(), windows, our_tests):
        verdicts.clear()
        began, cpu = time.perf_counter(), time.process_time()
        numbers = drift_report(references[row["version"]], window, data.spec, config=config)
        peer_s, peer_cpu = peer_s + time.perf_counter() - began, peer_cpu + time.process_time() - cpu
        ours = set(filter(None, str(row["drifted"]).split(",")))
        theirs = {c for c, (drifted, _) in verdicts.items() if drifted}
        column_checks += len(columns)
        column_same += sum((c in ours) == (c in theirs) for c in columns)
        share_ok = math.isclose(float(row["drift_share"]), numbers.drift_share, abs_tol=1e-12)
        columns_ok = ours == theirs and set(verdicts) == set(columns) and numbers.drifted_columns == len(theirs)
        scores_ok = all(math.isclose(float(row[f"drift.{c}"]), s, rel_tol=1e-9, abs_tol=1e-12)
                        for c, s in numbers.column_scores.items())
        same_share += share_ok
        same_columns += columns_ok
        same_scores += scores_ok
        same += share_ok and columns_ok and scores_ok
        shares.append(numbers.drift_share)
        for _, test in verdicts.values():
            tests[test] = tests.get(test, 0) + 1
        same_tests += methods == {c: test for c, (_, test) in verdicts.items()}
    value_drift.get_one_column_drift = own
    return {"windows": len(windows), "same": same, "same_share": same_share, "same_columns": same_columns,
            "same_scores": same_scores, "column_checks": column_checks, "column_same": column_same,
            "peer_s": peer_s, "meter_s": meter_s, "peer_cpu": peer_cpu, "meter_cpu": meter_cpu, "mean_share": sum(shares) / len(shares),
            "ours_mean_share": float(rows["drift_share"].mean()), "reference_rows": sorted(reference_sizes),
            "fired": int((rows["fired"].astype(str).str.contains("data_drift")).sum()),
            "columns": len(columns), "tests": tests, "same_tests": same_tests}


def backtest(policy: Path, policies: str, steps: int, store: Path, cwd: Path) -> dict:
    import pandas as pd

    end = (pd.Timestamp(AS_OF) + pd.Timedelta(days=7 * steps)).isoformat()
    out = cwd / f"backtest-{policy.stem}"
    result = run([CLI, "backtest", "--config", str(policy), "--from", AS_OF, "--to", end, "--every", "7d",
                  "--policy", policies, "--out", str(out), "--json"], store, cwd)
    body = result["json"]
    result.update(steps=body["steps"], fits=body["fits"], seconds=body["seconds"],
                  policies={p["policy"]: p for p in body["policies"]})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=270, help="daily monitor windows (calendar days)")
    parser.add_argument("--steps", type=int, default=52, help="weekly backtest steps")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each monitor (the median is kept)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # Evidently's numpy warnings on one-row windows, once per window

    with tempfile.TemporaryDirectory(prefix="bench-small-ref-") as tmp:
        root = Path(tmp)
        goog, bike = root / "goog", root / "bike"
        write_folder(goog)
        bike.mkdir()
        goog_store, bike_store = goog / "mlflow.db", bike / "mlflow.db"
        bootstrap(goog / "retrain.yaml", AS_OF, goog_store, goog)
        bootstrap(REPO / "retrain.yaml", BIKE_AS_OF, bike_store, bike)

        # the bike data gets as many daily windows as the goog span has trading days (every bike day
        # holds rows): both monitors score the same number of windows
        import pandas as pd

        dates = pd.read_csv(goog / "goog_daily.csv", usecols=["date"], parse_dates=["date"])["date"]
        bike_days = int(((dates > AS_OF) & (dates <= pd.Timestamp(AS_OF) + pd.Timedelta(days=args.days))).sum())
        # each monitor `--repeat` times, interleaved, the median kept; a week on both too: what a
        # monitor costs whatever its length (imports, loading the model and reference, the run)
        sides = {"ours_week": (goog / "retrain.yaml", AS_OF, 7, goog_store, goog),
                 "bike_week": (REPO / "retrain.yaml", BIKE_FROM, 7, bike_store, bike),
                 "ours": (goog / "retrain.yaml", AS_OF, args.days, goog_store, goog),
                 "bike": (REPO / "retrain.yaml", BIKE_FROM, bike_days, bike_store, bike)}
        runs: dict[str, list[dict]] = {name: [] for name in sides}
        for _ in range(args.repeat):
            for name, side in sides.items():
                runs[name].append(monitor(*side))
        ours, peer_bike = median(runs["ours"]), median(runs["bike"])
        ours["week"], peer_bike["week"] = median(runs["ours_week"]), median(runs["bike_week"])
        with_drift = backtest(goog / "retrain.yaml", "never,drift,configured", args.steps, goog_store, goog)
        without = backtest(goog / "retrain-nodrift.yaml", "never,configured", args.steps, goog_store, goog)
        check = parity(goog / "retrain.yaml", ours["table"], goog_store)
    report(args, ours, peer_bike, check, with_drift, without)


def report(args, ours: dict, bike: dict, check: dict, with_drift: dict, without: dict) -> None:
    per = {name: 1000 * r["seconds"] / r["with_rows"] for name, r in (("ours", ours), ("bike", bike))}
    # the cost of one more window: the long run less the week's, CPU time of the process (other work
    # on the machine stretches wall time, not CPU time), over the windows with rows it adds
    marginal = {name: 1000 * (r["cpu"] - r["week"]["cpu"]) / (r["with_rows"] - r["week"]["with_rows"])
                for name, r in (("ours", ours), ("bike", bike))}
    peer_ms = 1000 * check["peer_s"] / check["windows"]
    print(f"goog: {ours['windows']} daily windows from {AS_OF}, {ours['with_rows']} with rows ({ours['rows']} rows), "
          f"reference {check['reference_rows']} rows, {check['columns']} features; bike: {bike['windows']} daily "
          f"windows from {BIKE_FROM}, {bike['with_rows']} with rows ({bike['rows']} rows)\n")
    print(f"| `mlflow-retrain monitor --every 1d`, median of {ours['runs']} runs | goog (small reference) | bike (bundled) "
          "| goog / bike |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| windows (with rows) | {ours['windows']} ({ours['with_rows']}) | {bike['windows']} ({bike['with_rows']}) | |")
    print(f"| monitor's own time (`seconds`), s | {ours['seconds']:.2f} | {bike['seconds']:.2f} | |")
    print(f"| per window with rows, ms | {per['ours']:.1f} | {per['bike']:.1f} | {per['ours'] / per['bike']:.2f}x |")
    print(f"| process wall time (imports, MLflow run), s | {ours['wall']:.1f} | {bike['wall']:.1f} | |")
    print(f"| process CPU time, s | {ours['cpu']:.1f} | {bike['cpu']:.1f} | |")
    print(f"| the same command over 7 days: CPU time, s (windows with rows) | {ours['week']['cpu']:.1f} "
          f"({ours['week']['with_rows']}) | {bike['week']['cpu']:.1f} ({bike['week']['with_rows']}) | |")
    print(f"| **per added window with rows, CPU ms** (difference of the two) | {marginal['ours']:.1f} | "
          f"{marginal['bike']:.1f} | {marginal['ours'] / marginal['bike']:.2f}x |")
    print(f"| peak RSS, MB | {ours['rss_mb']:.0f} | {bike['rss_mb']:.0f} | |")
    print()
    print(f"| drift of {check['windows']} goog windows | DriftMeter | Evidently report per window | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| whole, s | {check['meter_s']:.3f} | {check['peer_s']:.1f} | {check['peer_s'] / check['meter_s']:.0f}x |")
    print(f"| per window, ms | {1000 * check['meter_s'] / check['windows']:.2f} | {peer_ms:.0f} | |")
    print(f"| per window, CPU ms | {1000 * check['meter_cpu'] / check['windows']:.2f} | "
          f"{1000 * check['peer_cpu'] / check['windows']:.0f} | {check['peer_cpu'] / check['meter_cpu']:.0f}x |")
    print(f"| mean drift share | {check['ours_mean_share']:.4f} | {check['mean_share']:.4f} | |")
    print(f"| windows identical (CLI's verdicts, share, scores vs Evidently) | {check['same']}/{check['windows']} | | |")
    print(f"| ... same drifted columns / same share / same scores | {check['same_columns']} / {check['same_share']} / "
          f"{check['same_scores']} | | |")
    print(f"| column verdicts identical | {check['column_same']}/{check['column_checks']} | | |")
    print(f"| same test per column as Evidently chose (DriftMeter in process) | {check['same_tests']}/{check['windows']} "
          "| | |")
    print("| tests Evidently ran (column-windows) | " + ", ".join(f"{k} {v}" for k, v in sorted(check["tests"].items()))
          + " | | |")
    print(f"| windows where `data_drift` fired (share > 0.5) | {check['fired']} | | |")
    print()
    print(f"| `mlflow-retrain backtest --every 7d`, {with_drift['steps']} steps from {AS_OF} | "
          "with drift (`never,drift,configured`) | without (`never,configured`, no `data_drift`) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| process wall time, s | {with_drift['wall']:.1f} | {without['wall']:.1f} | "
          f"{with_drift['wall'] / without['wall']:.2f}x |")
    print(f"| process CPU time, s | {with_drift['cpu']:.1f} | {without['cpu']:.1f} | "
          f"{with_drift['cpu'] / without['cpu']:.2f}x |")
    print(f"| per step (CPU), ms | {1000 * with_drift['cpu'] / with_drift['steps']:.0f} | "
          f"{1000 * without['cpu'] / without['steps']:.0f} | |")
    print(f"| backtest's own time (`seconds`), s | {with_drift['seconds']:.1f} | {without['seconds']:.1f} | "
          f"{with_drift['seconds'] / without['seconds']:.2f}x |")
    print(f"| per step (own time), ms | {1000 * with_drift['seconds'] / with_drift['steps']:.0f} | "
          f"{1000 * without['seconds'] / without['steps']:.0f} | |")
    print(f"| model fits | {with_drift['fits']} | {without['fits']} | |")
    for name in ("drift", "configured"):
        for label, r in (("with", with_drift), ("without", without)):
            p = r["policies"].get(name)
            if p:
                print(f"| `{name}` ({label}): retrains, mean MAE | {p['retrains']}, {p['mean_metric']:.2f} | | |")


if __name__ == "__main__":
    main()
