"""The backtests a person waits for (issue 28): a user's 18 months of hourly sales at weekly steps, and
15 years of daily ridership at 30-day steps, each as a new user runs it, against its floor in the same run.

In a fresh folder per case: the generated table, `mlflow-retrain init` (defaults; the ridership case
then sets `training.window: 730d`, the issue's), then `mlflow-retrain backtest` with every default
policy (`--jobs 1`, the default) in a process of its own. Its CPU (user + system of the process and
its children, `wait4`) and wall are set against two floors measured in the same run: the import
floor `python -c "import mlflow, sklearn, pandas"`, and the fits alone: one process that imports the
package and makes, one by one, the same number of fits the backtest reports, each on a training
window of the policy's length (as of the backtest's steps, round robin). The machine's load average
is printed at the start and the end. Results to stdout as Markdown.

    .venv/bin/python benchmarks/bench_backtest_waits.py [--only sales|ridership] [--code DIR]
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
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from synthetic import TARGET, energy_load  # noqa: E402  (tests/ is on the path only from here)


def sales() -> pd.DataFrame:
    """18 months of hourly units (13,104 rows), 2023-01 to 2024-06; the level and the evening peak shift
    at 2024-01-01, where the backtest starts (`tests/synthetic.py`'s load, a year later, renamed)."""
    frame = energy_load("2022-01-01", "2023-06-30 23:00").rename(columns={TARGET: "units"})
    stamps = pd.to_datetime(frame.timestamp) + pd.DateOffset(years=1)
    return frame.assign(timestamp=stamps.dt.strftime("%Y-%m-%d %H:%M:%S"))


def ridership(seed: int = 28) -> pd.DataFrame:
    """15 years of daily riders (5,478 rows): trend, weekly and yearly seasonality, temperature, rain and
    holidays, a fare change (-12%) in 2016 and a new line (+18%) in 2020."""
    rng = np.random.default_rng(seed)
    days = pd.date_range("2009-01-01", "2023-12-31", freq="D")
    n, doy, dow = len(days), days.dayofyear.to_numpy(), days.dayofweek.to_numpy()
    temperature = 12 - 10 * np.cos(2 * np.pi * (doy - 20) / 365.25) + rng.normal(0, 3, n)
    rain = rng.random(n) < 0.25
    holiday = np.isin(days.strftime("%m-%d"), ["01-01", "05-01", "07-04", "11-11", "12-25"])
    weekly = np.select([dow == 5, dow == 6], [0.62, 0.48], 1.0) * np.where(holiday, 0.55, 1.0)
    level = 50_000 * (1 + 0.03 * (days.year.to_numpy() - 2009) + 0.08 * np.sin(2 * np.pi * (doy - 100) / 365.25))
    shifts = np.where(days >= "2016-03-01", 0.88, 1.0) * np.where(days >= "2020-09-01", 1.18, 1.0)
    riders = level * weekly * shifts * (1 + 0.004 * (temperature - 12)) * np.where(rain, 0.9, 1.0)
    return pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "day_of_week": dow, "month": days.month,
                         "temperature_c": temperature.round(1), "rain": np.where(rain, "yes", "no"),
                         "holiday": np.where(holiday, "yes", "no"),
                         "riders": np.round(riders * (1 + rng.normal(0, 0.04, n))).astype(int)})


# name: (table, target, backtest arguments, policy keys set after init)
CASES = {
    "sales": (sales, "units", ["--from", "2024-01-01", "--every", "7d"], {}),
    "ridership": (ridership, "riders", ["--from", "2011-06-01", "--every", "30d"], {"window": "730d"}),
}

FITS = """
import sys, pandas as pd
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.adapters.data import LabelledData
from mlflow_retrain.adapters.train import fit
config = load_config("retrain.yaml")
data = LabelledData.load(config).whole()
steps = pd.date_range(sys.argv[1], data.last_labelled, freq=sys.argv[2])
for i in range(int(sys.argv[3])):
    fit(config, data, steps[i % len(steps)])
"""


def run(cmd: list[str], folder: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + system of the process and its children) of one command, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the child is reaped: its rusage counts here
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, done.stdout


def case(name: str, code: Path) -> list[tuple[str, float, float]]:
    table, target, args, training = CASES[name]
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix=f"bench-backtest-{name}-") as tmp:
        folder = Path(tmp)
        data = f"{name}.csv"
        table().to_csv(folder / data, index=False)
        env = {**os.environ, "PYTHONPATH": str(code.resolve()), "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
        run([python, "-m", "mlflow_retrain.cli", "init", "--data", data, "--target", target], folder, env)
        if training:
            policy = yaml.safe_load((folder / "retrain.yaml").read_text())
            policy["training"].update(training)
            (folder / "retrain.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
        floor = run([python, "-c", "import mlflow, sklearn, pandas"], folder, env)
        backtest = run([python, "-m", "mlflow_retrain.cli", "backtest", *args, "--json"], folder, env)
        result = json.loads(backtest[2])
        every = args[args.index("--every") + 1].replace("d", "D")
        fits = run([python, "-c", FITS, args[args.index("--from") + 1], every, str(result["fits"])], folder, env)
    label = f"{name}: `backtest {' '.join(args)}` ({result['steps']} steps, {result['fits']} fits)"
    return [(f"{name}: floor `python -c \"import mlflow, sklearn, pandas\"`", floor[0], floor[1]),
            (f"{name}: the same number of fits alone, one process (imports included)", fits[0], fits[1]),
            (label, backtest[0], backtest[1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(CASES))
    parser.add_argument("--code", type=Path, default=REPO, help="the folder holding the mlflow_retrain to run")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    rows = [row for name in ([args.only] if args.only else CASES) for row in case(name, args.code)]
    print("\n| run | wall, s | CPU, s |")
    print("| --- | ---: | ---: |")
    for label, wall, cpu in rows:
        print(f"| {label} | {wall:.1f} | {cpu:.1f} |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
