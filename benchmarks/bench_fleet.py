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

Both decide `no_retrain` for every model (checked). Reported: wall time of each and their ratio, the
CPU seconds of the process tree (the number to trust on a shared machine; the load at each run's
start is recorded), and memory: the peak of the sum over the process tree of RSS and of PSS
(proportional set size, which splits pages the forked workers share with their forkserver instead
of counting them per process), all sampled every 0.2 s from /proc. Results go to stdout as Markdown.

With `--fleet-only` the separate processes are skipped (at 1,000 models they are an hour of
processes) and the fleet runs once: its time, per-model seconds and memory are the measure.
`--clone` bootstraps one model and registers its model under every other name through the MLflow
client (`clone_fleet`): the store a bootstrap leaves, without 2.5 s of training and gating per
model; the cycle measured is the same real no-op cycle over a real store. `--dask 1,2,4` runs the
fleet again on Dask LocalClusters of that many single-threaded worker processes (`--cluster`).
`--keep DIR` keeps the fleet; run again with the same DIR, it is reused as it is.

    .venv/bin/python benchmarks/bench_fleet.py [--models 30] [--keep DIR] [--fleet-only] [--clone] [--dask 1,2,4]
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


def clone_fleet(uri: str, template: str, names: list[str]) -> None:
    """Register the bootstrapped `template`'s Production model under every one of `names`, through the
    real MLflow client, as a bootstrap leaves it: a registered model with its description, version 1
    from the same logged model and training run, its retrain.* tags, in stage Production and under
    the `production` alias. Each name keeps its own policy and data file; only the training is shared
    (0.1 s a model instead of a 2.5 s bootstrap)."""
    import warnings

    import mlflow
    from mlflow.tracking import MlflowClient

    warnings.filterwarnings("ignore")  # stages are deprecated in MLflow 3; the registry still writes them
    mlflow.set_tracking_uri(uri)  # the registry finds a version's logged model in the global tracking store
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    model, version = client.get_registered_model(template), client.get_model_version(template, "1")
    for name in names:
        client.create_registered_model(name, description=model.description.replace(template, name))
        made = client.create_model_version(name, version.source, run_id=version.run_id, tags=version.tags,
                                           description=version.description)
        client.transition_model_version_stage(name, made.version, "Production")
        client.set_registered_model_alias(name, "production", made.version)


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


def _cpu(pid: int) -> float:
    """The user and system CPU seconds one process has used so far; 0 for one that is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TreeMemory:
    """Samples the summed RSS and PSS of every process below this one while the block runs, and the CPU
    seconds they used in it (each process's last sample: one that ends between samples loses < 0.2 s)."""

    def __init__(self) -> None:
        self.peak_rss = self.peak_pss = 0
        self._cpu: dict[int, float] = {}
        self._before: dict[int, float] = {}
        self._stop = threading.Event()

    @property
    def cpu_seconds(self) -> float:
        return sum(seconds - self._before.get(pid, 0.0) for pid, seconds in self._cpu.items())

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            rss = pss = 0
            for pid in _tree():
                r, p = _memory(pid)
                rss, pss = rss + r, pss + p
                self._cpu[pid] = max(self._cpu.get(pid, 0.0), _cpu(pid))
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def __enter__(self) -> Self:
        self._before = {pid: _cpu(pid) for pid in _tree()}  # processes already running count from here
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _tree() -> list[int]:
    """Every process below this one."""
    tree, found = _children(), []
    todo = list(tree.get(os.getpid(), []))
    while todo:
        found.append(todo.pop())
        todo += tree.get(found[-1], [])
    return found


def run(args: list[str], env: dict[str, str], cwd: Path) -> dict:
    done = subprocess.run([str(BIN), *args, "--json"], capture_output=True, text=True, env=env, cwd=cwd, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


Measured = tuple[str, float, TreeMemory, float]  # label, wall seconds, memory and CPU, load at the start


def report(models: int, setup: str, rows: list[Measured]) -> None:
    """The Markdown table: wall and CPU time, per-model seconds and peak memory of each run."""
    load = os.getloadavg()
    print(f"### Fleet: {models} models, a no-op cycle of each\n")
    print(f"Machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end; "
          f"{setup}.\n")
    print("| run | load at start | wall s | CPU s of the tree | per model wall s | per model CPU s "
          "| peak RSS of the tree MB | peak PSS of the tree MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, seconds, memory, began_load in rows:
        print(f"| {label} | {began_load:.1f} | {seconds:.1f} | {memory.cpu_seconds:.1f} | {seconds / models:.2f} | "
              f"{memory.cpu_seconds / models:.2f} | {memory.peak_rss / 1024:.0f} | {memory.peak_pss / 1024:.0f} |")


def set_up(folder: Path, models: int, clone: bool, env: dict[str, str]) -> tuple[Path, str]:
    """The fleet's policies and data, every model bootstrapped (Production v1); and what that took."""
    policies = write_fleet(folder, models)
    began = time.perf_counter()
    files = sorted(policies.glob("*.yaml"))
    boot = run(["fleet", "cycle", "--policies", *map(str, files[:1] if clone else files),
                "--as-of", BOOTSTRAP, "--retrain-via", "inprocess", "--jobs", "2"], env, folder)
    assert all(m["outcome"] == "promoted" for m in boot["models"]), boot["counts"]
    if clone:
        clone_fleet(env["MLFLOW_TRACKING_URI"], boot["models"][0]["model"], [p.stem for p in files[1:]])
        return policies, (f"set-up: one model bootstrapped by `fleet cycle`, its model registered under the "
                          f"{models - 1} other names (`clone_fleet`): {time.perf_counter() - began:.0f} s")
    return policies, f"bootstrap of the {models} models by one `fleet cycle --jobs 2`: {time.perf_counter() - began:.0f} s"


def fleet_run(policies: Path, models: int, env: dict[str, str], folder: Path, label: str,
              extra: tuple[str, ...] = ("--jobs", "2")) -> Measured:
    """One no-op `fleet cycle`, checked to decide `no_retrain` for every model."""
    began_load = os.getloadavg()[0]
    with TreeMemory() as memory:
        began = time.perf_counter()
        fleet = run(["fleet", "cycle", "--policies", str(policies), "--as-of", NOOP, *extra], env, folder)
        seconds = time.perf_counter() - began
    assert fleet["counts"] == {"no_retrain": models}, fleet["counts"]
    return label, seconds, memory, began_load


def on_dask(policies: Path, models: int, env: dict[str, str], folder: Path, workers: int) -> Measured:
    """The fleet on a Dask LocalCluster of `workers` single-threaded worker processes, started here (so
    its processes are in the measured tree, their start included in neither wall nor CPU)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        return fleet_run(policies, models, env, folder, f"`fleet cycle --cluster`, LocalCluster of {workers} "
                         "worker process(es)", ("--cluster", cluster.scheduler_address))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=30)
    parser.add_argument("--keep", type=Path, default=None,
                        help="Build the fleet here and keep it; a folder that holds one already is reused as it is.")
    parser.add_argument("--fleet-only", action="store_true", help="Skip the separate processes; one fleet run.")
    parser.add_argument("--clone", action="store_true",
                        help="Bootstrap one model and register its model under every other name (`clone_fleet`).")
    parser.add_argument("--dask", default="", help="Also run the fleet on Dask LocalClusters of these worker "
                                                   "process counts, e.g. 1,2,4.")
    options = parser.parse_args()
    folder = options.keep or Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    os.environ.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")  # the Dask workers are started from here
    try:
        if (folder / "policies").is_dir():
            policies, setup = folder / "policies", f"the fleet set up before in {folder}, reused"
        else:
            policies, setup = set_up(folder, options.models, options.clone, env)
        rows = [fleet_run(policies, options.models, env, folder, "`fleet cycle --jobs 2`")]
        rows += [on_dask(policies, options.models, env, folder, int(n)) for n in options.dask.split(",") if n]
        if options.fleet_only:
            return report(options.models, setup, rows)
        files = sorted(policies.glob("*.yaml"))
        began_load = os.getloadavg()[0]
        with TreeMemory() as alone_memory, ThreadPoolExecutor(2) as two_at_a_time:
            began = time.perf_counter()
            reports = list(two_at_a_time.map(lambda p: run(["cycle", "--config", str(p), "--as-of", NOOP], env, folder),
                                             files))
            alone_seconds = time.perf_counter() - began
        assert all(r["outcome"] == "no_retrain" for r in reports)
        rows.append((f"{options.models} separate `cycle` processes, 2 at a time", alone_seconds, alone_memory,
                     began_load))
        rows.append(fleet_run(policies, options.models, env, folder, "`fleet cycle --jobs 2`, after"))
    finally:
        if options.keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    report(options.models, setup, rows)
    fleet_seconds = (rows[0][1] + rows[-1][1]) / 2
    print(f"\nWall-time ratio (separate / mean of the two fleet runs): **{rows[-2][1] / fleet_seconds:.1f}x**")


if __name__ == "__main__":
    main()
