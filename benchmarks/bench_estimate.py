"""Label-free performance estimates (issue 14): `estimate.PerformanceEstimator` against NannyML's own
DLE and CBPE on the same data and windows, and both against the true metric.

The data, generated (`--seed`): five features (four numeric, one categorical `region`), a model fitted
on `--train` rows, its holdout (`--reference` rows) as the reference, then `--windows` windows of
`--rows` rows drifting away from it, labels known to this script only.

* Regression: y = 3 sin(x1) + x2^2 / 2 + x3 + region effect + noise whose scale grows with x1 > 0; the
  model is a HistGradientBoostingRegressor; across the windows x1's mean goes from 0 to 1.5, x2's
  spread from 1 to 1.6 and the regions' mix tilts to `e`: the error grows. Metrics mae and rmse (DLE).
* Binary classification: P(y=1) = sigmoid(1.2 x1 - x2 + 0.8 x3 x4 + region effect); the model is a
  HistGradientBoostingClassifier; x1's mean goes from -1 to 1.5 and the features' spread shrinks from
  1.3 to 0.7 (accuracy and roc_auc both move). Metrics accuracy, f1 and roc_auc (CBPE).

NannyML 0.13.1 does not install beside our pins (it wants lightgbm<4.6, FLAML, plotly<6, ...), so it
runs in its own venv, made once under `--cache` (default ~/.cache/mlflow-retrain-bench/nannyml-venv:
`python3.11 -m venv`, then pip install nannyml==0.13.1 with statsmodels, which it imports without
declaring it, and pandas<3: on pandas 3 its DLE fails on string columns (ArrowStringArray cannot
reshape). If that venv cannot be made, the script says so and reports our side alone. The frames go
to Parquet in a temporary folder; NannyML's side (`NANNYML_SIDE`, its documented API: `DLE`, `CBPE`,
`chunk_size` = the window size, the analysis rows in window order, no labels) reads them and writes its
per-window estimates and times as JSON. Usage logging off (NML_DISABLE_USAGE_LOGGING); one OpenMP
thread for both sides, so the times compare the methods, not the thread pools.

Times: "fit" is preparing on the reference (NannyML's also estimates the reference's chunks and
thresholds, which it always does), "estimate" is all windows; wall clock, one run each.

    .venv/bin/python benchmarks/bench_estimate.py [--windows 20] [--rows 2000] [--seed 0]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and scikit-learn start their pools

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)

from mlflow_retrain.measure.estimate import ESTIMABLE, PerformanceEstimator
from mlflow_retrain.measure.metrics import score

NANNYML = "nannyml==0.13.1"
# statsmodels: imported by nannyml.plots, not declared; pandas 3 breaks DLE on string columns
NANNYML_EXTRAS = ("statsmodels", "pandas<3", "pyarrow")
FEATURES = ["x1", "x2", "x3", "x4", "region"]
REGIONS = np.array(["a", "b", "c", "d", "e"])
REGION_EFFECT = {"regression": np.array([0.0, 0.5, -0.5, 1.0, 2.0]),
                 "classification": np.array([0.0, 0.3, -0.3, 0.6, -0.8])}

NANNYML_SIDE = """
import json, sys, time
import pandas as pd
import nannyml as nml

folder = sys.argv[1]
spec = json.load(open(f"{folder}/spec.json"))
out = {"version": nml.__version__}
for task, metrics in spec["metrics"].items():
    reference = pd.read_parquet(f"{folder}/{task}_reference.parquet")
    analysis = pd.read_parquet(f"{folder}/{task}_analysis.parquet")
    common = dict(y_pred="y_pred", y_true="y_true", metrics=metrics, chunk_size=spec["rows"])
    if task == "regression":
        estimator = nml.DLE(feature_column_names=spec["features"], **common)
    else:
        estimator = nml.CBPE(y_pred_proba="y_pred_proba", problem_type="classification_binary", **common)
    began = time.perf_counter()
    estimator.fit(reference)
    fitted = time.perf_counter()
    result = estimator.estimate(analysis.drop(columns="y_true")).filter(period="analysis").to_df()
    done = time.perf_counter()
    out[task] = {"fit_s": fitted - began, "estimate_s": done - fitted,
                 "calibrated": bool(getattr(estimator, "needs_calibration", False)),
                 "estimates": {m: result[(m, "value")].tolist() for m in metrics}}
json.dump(out, open(f"{folder}/nannyml.json", "w"))
"""


@dataclass(frozen=True)
class Task:
    """One task's frames: the reference (holdout) and the windows, with predictions, probabilities, labels."""

    name: str
    reference: pd.DataFrame
    windows: list[pd.DataFrame]


@dataclass(frozen=True)
class Side:
    """One implementation's per-window estimates of each metric and its times."""

    estimates: dict[str, list[float]]
    fit_s: float
    estimate_s: float
    calibrated: bool | None = None


def features(rng: np.random.Generator, n: int, shift: float, spread: float, tilt: float) -> pd.DataFrame:
    """x1 around `shift`, x2..x4 with `spread`, regions drawn with weights tilting to `e` as `tilt` goes 0 -> 1."""
    weights = np.array([1.0, 1.0, 1.0, 1.0, 1.0 + 6 * tilt])
    return pd.DataFrame({
        "x1": rng.normal(shift, 1.0, n), "x2": rng.normal(0.0, spread, n), "x3": rng.normal(0.0, spread, n),
        "x4": rng.normal(0.0, spread, n),
        "region": pd.Categorical(rng.choice(REGIONS, n, p=weights / weights.sum()), categories=REGIONS),
    })


def labels(task: str, rng: np.random.Generator, x: pd.DataFrame) -> np.ndarray:
    effect = REGION_EFFECT[task][x["region"].cat.codes.to_numpy()]
    if task == "regression":
        noise = rng.normal(0.0, 1.0, len(x)) * (0.3 + 1.0 * np.maximum(x["x1"], 0.0))
        return 3 * np.sin(x["x1"]) + x["x2"] ** 2 / 2 + x["x3"] + effect + noise
    logit = 1.2 * x["x1"] - x["x2"] + 0.8 * x["x3"] * x["x4"] + effect
    return (rng.random(len(x)) < 1 / (1 + np.exp(-logit))).astype(int)


def drift(task: str, step: float) -> tuple[float, float, float]:
    """(x1's mean, the others' spread, the region tilt) at `step` in [0, 1] of the way through the windows."""
    if task == "regression":
        return 1.5 * step, 1.0 + 0.6 * step, step
    return -1.0 + 2.5 * step, 1.3 - 0.6 * step, step


def make_task(task: str, args: argparse.Namespace) -> Task:
    """Fit the model on the training rows; predict on the reference and every window."""
    rng = np.random.default_rng(args.seed)
    train, reference = features(rng, args.train, 0.0, 1.0, 0.0), features(rng, args.reference, 0.0, 1.0, 0.0)
    model_class = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    model = model_class(categorical_features="from_dtype", random_state=args.seed)
    model.fit(train, labels(task, rng, train))
    frames = [reference] + [features(rng, args.rows, *drift(task, i / max(args.windows - 1, 1)))
                            for i in range(args.windows)]
    return Task(task, *_predicted(task, model, rng, frames))


def _predicted(task: str, model: object, rng: np.random.Generator,
               frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    out = []
    for x in frames:
        frame = x.assign(y_true=labels(task, rng, x), y_pred=model.predict(x))
        if task == "classification":
            frame["y_pred_proba"] = model.predict_proba(x)[:, 1]
        out.append(frame)
    return out[0], out[1:]


def truths(task: Task) -> dict[str, list[float]]:
    """The true metric of every window, by the one metric function the cycle uses."""
    per_window = [score(task.name, w["y_true"].to_numpy(), w["y_pred"].to_numpy(), _proba(w))
                  for w in task.windows]
    return {metric: [s.get(metric, np.nan) for s in per_window] for metric in ESTIMABLE[task.name]}


def _proba(frame: pd.DataFrame) -> np.ndarray | None:
    if "y_pred_proba" not in frame:
        return None
    return np.column_stack([1 - frame["y_pred_proba"], frame["y_pred_proba"]])


def ours(task: Task) -> Side:
    """Our estimator, prepared once per metric on the reference, then every window without its labels."""
    ref = task.reference
    began = time.perf_counter()
    fitted = {metric: PerformanceEstimator.fit(ref[FEATURES], ref["y_pred"].to_numpy(), ref["y_true"].to_numpy(),
                                               metric=metric, task=task.name, probabilities=_proba(ref))
              for metric in ESTIMABLE[task.name]}
    fit_s = time.perf_counter() - began
    began = time.perf_counter()
    estimates = {metric: [est.estimate(w[FEATURES], w["y_pred"].to_numpy(), _proba(w)) for w in task.windows]
                 for metric, est in fitted.items()}
    calibrated = getattr(next(iter(fitted.values())), "calibrator", None) is not None
    return Side(estimates, fit_s, time.perf_counter() - began, calibrated if task.name != "regression" else None)


class NannyMLBooster:
    """LightGBM's LGBMRegressor as NannyML's DLE runs it (default settings; categories coded from 1, an
    unseen or missing one 0), standing in for our HistGradientBoostingRegressor: with it our DLE should
    give NannyML's numbers exactly, so any difference left in the table is the booster, not the method."""

    def __init__(self, categorical_features: list[bool], **_: object) -> None:
        self.categorical = [i for i, is_category in enumerate(categorical_features) if is_category]

    def _coded(self, matrix: np.ndarray) -> np.ndarray:
        out = matrix.copy()
        out[:, self.categorical] = np.nan_to_num(out[:, self.categorical], nan=-1.0) + 1
        return out

    def fit(self, matrix: np.ndarray, loss: np.ndarray) -> NannyMLBooster:
        from lightgbm import LGBMRegressor

        self.model = LGBMRegressor(verbose=-1).fit(self._coded(matrix), loss, categorical_feature=self.categorical)
        return self

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return self.model.predict(self._coded(matrix))


def ours_on_lightgbm(task: Task) -> Side:
    """Our DLE with NannyML's booster swapped in (the method check)."""
    with mock.patch("mlflow_retrain.measure.estimate.HistGradientBoostingRegressor", NannyMLBooster):
        return ours(task)


def nannyml_python(cache: Path) -> Path | None:
    """NannyML's venv under `cache`, made on first use; None (with the reason printed) if it cannot be."""
    python = cache / "nannyml-venv" / "bin" / "python"
    check = [str(python), "-c", ("import nannyml, statsmodels, pyarrow; import pandas; "
                                 "assert int(pandas.__version__.split('.')[0]) < 3")]
    if python.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return python
    print(f"making NannyML's venv in {python.parents[1]} (once; a few minutes)", file=sys.stderr)
    steps = [["python3.11", "-m", "venv", str(python.parents[1])],
             [str(python), "-m", "pip", "install", "--quiet", NANNYML, *NANNYML_EXTRAS], check]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"NannyML cannot be installed ({' '.join(step[:4])} ...: "
                  f"{' '.join((done.stderr or done.stdout).strip().splitlines()[-1:])}); comparison skipped")
            return None
    return python


def nannyml(python: Path, tasks: list[Task], rows: int) -> tuple[str, dict[str, Side]]:
    """NannyML's DLE and CBPE in their own venv, on the same frames written to Parquet."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for task in tasks:
            task.reference.to_parquet(folder / f"{task.name}_reference.parquet")
            pd.concat(task.windows, ignore_index=True).to_parquet(folder / f"{task.name}_analysis.parquet")
        spec = {"features": FEATURES, "rows": rows, "metrics": {t.name: list(ESTIMABLE[t.name]) for t in tasks}}
        (folder / "spec.json").write_text(json.dumps(spec))
        env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        done = subprocess.run([str(python), "-c", NANNYML_SIDE, tmp], env=env, capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            sys.exit(f"NannyML's side failed:\n{done.stderr[-3000:]}")
        out = json.loads((folder / "nannyml.json").read_text())
    sides = {t.name: Side(out[t.name]["estimates"], out[t.name]["fit_s"], out[t.name]["estimate_s"],
                          out[t.name]["calibrated"] if t.name != "regression" else None) for t in tasks}
    return out["version"], sides


def _mean_abs(a: list[float], b: list[float]) -> float:
    return float(np.nanmean(np.abs(np.array(a, dtype=float) - np.array(b, dtype=float))))


def _corr(a: list[float], b: list[float]) -> float:
    return float(np.corrcoef(np.array(a, dtype=float), np.array(b, dtype=float))[0, 1])


def accuracy_table(tasks: list[Task], mine: dict[str, Side], theirs: dict[str, Side] | None,
                   on_lightgbm: Side | None) -> None:
    """Per metric: how far each estimate is from the truth, and from each other, over the windows; for
    DLE also ours on NannyML's booster against NannyML (the method alone)."""
    print("| task | metric | true (first -> last window) | ours: mean abs error | NannyML: mean abs error "
          "| mean abs ours - NannyML | same on LightGBM | corr with truth: ours / NannyML |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for task in tasks:
        for metric, truth in truths(task).items():
            ours_est = mine[task.name].estimates[metric]
            row = [task.name, metric, f"{truth[0]:.4f} -> {truth[-1]:.4f}", f"{_mean_abs(ours_est, truth):.4f}"]
            if theirs is None:
                row += ["-", "-", "-", f"{_corr(ours_est, truth):.3f} / -"]
            else:
                nml_est = theirs[task.name].estimates[metric]
                same = (f"{_mean_abs(on_lightgbm.estimates[metric], nml_est):.1e}"
                        if on_lightgbm and task.name == "regression" else "-")
                row += [f"{_mean_abs(nml_est, truth):.4f}", f"{_mean_abs(ours_est, nml_est):.1e}", same,
                        f"{_corr(ours_est, truth):.3f} / {_corr(nml_est, truth):.3f}"]
            print("| " + " | ".join(row) + " |")


def time_table(tasks: list[Task], mine: dict[str, Side], theirs: dict[str, Side] | None, windows: int) -> None:
    print("\n| task | ours: fit s | ours: estimate ms/window | NannyML: fit s | NannyML: estimate ms/window "
          "| calibrated: ours / NannyML |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for task in tasks:
        m, t = mine[task.name], (theirs or {}).get(task.name)
        calibrated = "-" if m.calibrated is None else f"{m.calibrated} / {t.calibrated if t else '-'}"
        peer = f"{t.fit_s:.2f} | {1000 * t.estimate_s / windows:.1f}" if t else "- | -"
        print(f"| {task.name} | {m.fit_s:.2f} | {1000 * m.estimate_s / windows:.1f} | {peer} | {calibrated} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--rows", type=int, default=2000, help="rows a window (NannyML's chunk_size)")
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--reference", type=int, default=5000, help="holdout rows: the estimators' reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mlflow-retrain-bench")
    args = parser.parse_args()
    tasks = [make_task(name, args) for name in ESTIMABLE]
    mine = {task.name: ours(task) for task in tasks}
    python = nannyml_python(args.cache)
    version, theirs = nannyml(python, tasks, args.rows) if python else ("not installed", None)
    print(f"{args.windows} windows of {args.rows} rows, reference {args.reference} holdout rows, seed {args.seed}; "
          f"NannyML {version}\n")
    accuracy_table(tasks, mine, theirs, ours_on_lightgbm(tasks[0]) if theirs else None)
    time_table(tasks, mine, theirs, args.windows)


if __name__ == "__main__":
    main()
