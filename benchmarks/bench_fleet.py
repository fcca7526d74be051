"""A fleet of N small models: one no-op `fleet cycle --jobs 2` against N separate `cycle` processes.

In a fresh folder outside the repository: N policies (Ridge on generated hourly load, `tests/synthetic.py`,
each model its own seed and file; two months of rows, fits in well under a second), one sqlite store.
Every model is bootstrapped by one `fleet cycle` (Production v1), then, in the same run:

- the fleet: `mlflow-retrain fleet cycle --policies DIR --jobs 2`, a week later, where no trigger
  fires (one process, a forkserver that imports once, two workers serving every model);
- separate processes: `mlflow-retrain cycle --config <policy>` for each model at the same data time,
  two at a time (the same two cores), as N CI jobs or a shell loop would run them;
- the fleet again: the two fleet runs bracket the separate ones, so a machine whose load changes
  during the run weighs on both sides; the ratio is taken against their mean.

Both decide `no_retrain` for every model (checked). Reported: wall time of each and their ratio, and
memory: the peak of the sum over the process tree of RSS and of PSS (proportional set size, which
splits pages the forked workers share with their forkserver instead of counting them per process),
sampled every 0.2 s from /proc. Results go to stdout as Markdown.

With `--fleet-only` the separate processes are skipped (at 1,000 models they are an hour of
processes) and the fleet runs once: its time, per-model seconds and memory are the measure.

    .venv/bin/python benchmarks/bench_fleet.py [--models 30] [--keep DIR] [--fleet-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from synthetic import TARGET, energy_load  # noqa: E402  (tests/ is on the path only from here)

BIN = Path(sys.executable).parent / "mlflow-retrain"
BOOTSTRAP, NOOP = "2022-02-28", "2022-03-07"


def write_fleet(folder: Path, n: int) -> Path:
    policies = folder / "policies"
    policies.mkdir(parents=True)
    (folder / "data").mkdir()
    for i in range(n):
        name = f"load-{i:03d}"
        energy_load("2022-01-01", "2022-03-10", seed=i).to_csv(folder / "data" / f"{name}.csv", index=False)
        (policies / f"{name}.yaml").write_text(yaml.safe_dump({
            "model_name": name, "data": {"path": f"../data/{name}.csv", "timestamp": "timestamp", "target": TARGET},
            "training": {"estimator": "sklearn.linear_model.Ridge", "window": "30d", "holdout": "7d"},
            "monitoring": {"window": "7d", "reports": "never"}, "triggers": {"metric_threshold": {"max": 500}},
            "validation": {"max_metric": 1000}}))
    return policies


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; zeros for one that is gone."""
    values = {"Rss:": 0, "Pss:": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                key, *rest = line.split()
                if key in values:
                    values[key] = int(rest[0])
    except OSError:
        pass
    return values["Rss:"], values["Pss:"]


class TreeMemory:
    """Samples the summed RSS and PSS of every process below this one while the block runs."""

    def __init__(self) -> None:
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            tree = _children()
            todo, rss, pss = list(tree.get(os.getpid(), [])), 0, 0
            while todo:
                pid = todo.pop()
                r, p = _memory(pid)
                rss, pss = rss + r, pss + p
                todo += tree.get(pid, [])
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(args: list[str], env: dict[str, str], cwd: Path) -> dict:
    done = subprocess.run([str(BIN), *args, "--json"], capture_output=True, text=True, env=env, cwd=cwd, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def report(models: int, boot_seconds: float, rows: list[tuple[str, float, TreeMemory]]) -> None:
    """The Markdown table: wall time, per-model seconds and peak memory of each run."""
    load = os.getloadavg()
    print(f"### Fleet: {models} models, a no-op cycle of each\n")
    print(f"Machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end; "
          f"bootstrap of the {models} models by one `fleet cycle --jobs 2`: {boot_seconds:.0f} s.\n")
    print("| run | wall s | per model s | peak RSS of the tree MB | peak PSS of the tree MB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, seconds, memory in rows:
        print(f"| {label} | {seconds:.1f} | {seconds / models:.2f} | {memory.peak_rss / 1024:.0f} | "
              f"{memory.peak_pss / 1024:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=30)
    parser.add_argument("--keep", type=Path, default=None, help="Build the fleet here and keep it.")
    parser.add_argument("--fleet-only", action="store_true", help="Skip the separate processes; one fleet run.")
    options = parser.parse_args()
    folder = options.keep or Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    try:
        policies = write_fleet(folder, options.models)
        began = time.perf_counter()
        boot = run(["fleet", "cycle", "--policies", str(policies), "--as-of", BOOTSTRAP, "--retrain-via", "inprocess",
                    "--jobs", "2"], env, folder)
        boot_seconds = time.perf_counter() - began
        assert all(m["outcome"] == "promoted" for m in boot["models"]), boot["counts"]

        def fleet_run() -> tuple[float, TreeMemory]:
            with TreeMemory() as memory:
                began = time.perf_counter()
                fleet = run(["fleet", "cycle", "--policies", str(policies), "--as-of", NOOP, "--jobs", "2"], env, folder)
                seconds = time.perf_counter() - began
            assert fleet["counts"] == {"no_retrain": options.models}, fleet["counts"]
            return seconds, memory

        fleets = [fleet_run()]
        if options.fleet_only:
            return report(options.models, boot_seconds, [("`fleet cycle --jobs 2`", *fleets[0])])
        files = sorted(policies.glob("*.yaml"))
        with TreeMemory() as alone_memory, ThreadPoolExecutor(2) as two_at_a_time:
            began = time.perf_counter()
            reports = list(two_at_a_time.map(lambda p: run(["cycle", "--config", str(p), "--as-of", NOOP], env, folder),
                                             files))
            alone_seconds = time.perf_counter() - began
        assert all(r["outcome"] == "no_retrain" for r in reports)
        fleets.append(fleet_run())
    finally:
        if options.keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    report(options.models, boot_seconds, [
        (f"`fleet cycle --jobs 2` (one process, {options.models} models), before", *fleets[0]),
        (f"{options.models} separate `cycle` processes, 2 at a time", alone_seconds, alone_memory),
        ("`fleet cycle --jobs 2`, after", *fleets[1])])
    fleet_seconds = (fleets[0][0] + fleets[1][0]) / 2
    print(f"\nWall-time ratio (separate / mean of the two fleet runs): **{alone_seconds / fleet_seconds:.1f}x**")


if __name__ == "__main__":
    main()
