"""How long a no-op `cycle` takes from a wheel install in a fresh folder, against what any MLflow tool pays.

The checkout is built into a wheel and installed (non-editable, with its dependencies) into a fresh
venv, with the functions the tests use (`tests/integration/conftest.py`). In a new folder outside
the repo: generated hourly energy load (`tests/synthetic.py`), `mlflow-retrain init`, a bootstrap
`cycle` (Production v1, trained through the MLproject inside the package), then the measured no-op
`cycle`: Production exists and no trigger fires (init's policy, a month after the bootstrap: the
error is under the threshold and the model is younger than max_age). MLflow's default store
(`sqlite:///mlflow.db` in the folder), as a new user gets it.

The floors run in the same venv, interleaved with the cycles so that a busy machine weighs on all
of them alike: `python -c "import mlflow, sklearn, pandas"` (issue 15's floor: what loading a
scikit-learn model with MLflow pays before doing anything), `python -c "import mlflow"` and
`mlflow-retrain --version` (our console script's start-up), and the floor once more with
`gc.freeze()` at its end: it then skips the last garbage collection at exit, as our command line
does. The cycle runs twice per round: with the audited-model cache (`mlflow_retrain.adapters.model_cache`)
that the bootstrap filled, as every scheduled cycle on the same machine finds it, and with an empty
cache folder, as the first cycle on a fresh CI runner finds it (it loads Production through skops).
Each is run `--runs` times after one discarded warm-up (the first run byte-compiles what the install
did not); the table gives medians of wall time, of CPU time (user + system of the child) and of peak RSS. A last, separate run of the
cycle under `-X importtime` and cProfile says where the time goes, which heavy packages it imported
and how many calls it made to MLflow's stores. Results go to stdout as Markdown.

    .venv/bin/python benchmarks/bench_noop_cycle.py [--runs 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP, NOOP = "2022-06-30", "2022-07-31"
FLOOR = "`python -c \"import mlflow, sklearn, pandas\"`"
FROZEN = "the floor with `gc.freeze()` at its end"
CYCLE = "no-op `mlflow-retrain cycle`"
COLD = "no-op `mlflow-retrain cycle`, empty model cache"
# whether the cycle imported them: the first four only when drift or reports are asked for (issue 15);
# skops (the sklearn model's format) and sqlalchemy (the sqlite store) are what a no-op cycle needs
HEAVY = ("evidently", "plotly", "nannyml", "nltk", "skops.io", "sqlalchemy")

# run in the venv: no-op cycles in one process. The first pays every import; the next three, with
# everything imported, are the cycle's own work (median); a last one is that work under cProfile
# (cumulative seconds of its steps).
PROFILE = """
import cProfile, io, json, pstats, sys, time
from mlflow_retrain.cli import main
from mlflow_retrain.adapters.streams import stdout_into

AS_OF = sys.argv[1]

def once():
    sys.argv = ["mlflow-retrain", "cycle", "--as-of", AS_OF, "--json"]
    try:
        with stdout_into(io.StringIO()):
            main()
    except SystemExit as exc:
        assert not exc.code, exc.code

began = time.perf_counter()
once()
first = time.perf_counter() - began
warm = []
for _ in range(3):
    began = time.perf_counter()
    once()
    warm.append(time.perf_counter() - began)
warm = sorted(warm)[1]
profiler = cProfile.Profile()
began = time.perf_counter()
profiler.runcall(once)
profiled = time.perf_counter() - began
steps = {
    "read the data": ("mlflow_retrain/adapters/data.py", "load"),
    "load Production (registry + model)": ("mlflow_retrain/loop/evaluate.py", "registered"),
    "score the monitoring windows": ("mlflow_retrain/loop/cycle.py", "score_windows"),
    "Evidently quality report (latest window)": ("mlflow_retrain/adapters/reports.py", "quality_report"),
    "Evidently drift report (latest window)": ("mlflow_retrain/adapters/reports.py", "drift_report"),
    "drift reference (download train.parquet)": ("mlflow_retrain/loop/evaluate.py", "load_reference"),
    "audit run: tags, metrics, artifacts": ("mlflow_retrain/loop/cycle.py", "_log_audit"),
    "lease: take": ("mlflow_retrain/adapters/registry/__init__.py", "acquire_lease"),
    "lease: release": ("mlflow_retrain/adapters/registry/__init__.py", "release_lease"),
}
found = {"whole": profiled}
# a store call is a public method of MLflow's tracking or registry store called from outside the
# store (one round trip to a server; one or more SQL transactions on sqlite)
calls = {}
stats = pstats.Stats(profiler).stats
for (path, _, name), (_, _, _, cumulative, callers) in stats.items():
    for label, (suffix, func) in steps.items():
        if name == func and path.endswith(suffix):
            found[label] = max(found.get(label, 0.0), cumulative)
    if "/mlflow/store/" in path and path.endswith("_store.py") and not name.startswith("_"):
        outside = sum(n for (caller, _, _), (_, n, _, _) in callers.items() if "/mlflow/store/" not in caller)
        if outside:
            calls[name] = calls.get(name, 0) + outside
print("PROFILE " + json.dumps({"first": first, "warm": warm, "steps": found, "calls": calls}), file=sys.__stderr__)
"""


def load_wheel_helpers():
    """The wheel and venv builders of the test session, loaded by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("wheel_venv_helpers", REPO / "tests/integration/conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Timed:
    wall: float  # s
    cpu: float  # s, user + system of the child
    rss: float  # MB, the child's peak resident set
    stdout: str
    stderr: str


def timed(cmd: list[str], folder: Path, env: dict[str, str]) -> Timed:
    """Wall time, CPU time and peak RSS of one command, from its own rusage (`wait4`), so that no
    other child of this process is counted in."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        began = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=folder, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        result = Timed(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read(), err.read())
    if child.returncode:
        sys.exit(f"{' '.join(cmd)} exited {child.returncode}:\n{result.stderr[-3000:]}")
    return result


def top_level_imports(stderr: str) -> list[tuple[str, float, dict[str, float]]]:
    """`-X importtime` as (module imported at top level, cumulative s, self s per package inside it).

    Python prints a module after the modules its import pulled in, so the lines before a top-level
    one (indent 0) are its subtree.
    """
    found, inside = [], defaultdict(float)
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:"):].split("|")
        inside[name.strip().split(".")[0]] += int(self_us) / 1e6
        if len(name) - len(name.lstrip()) == 1:
            found.append((name.strip(), int(cumulative_us) / 1e6, dict(inside)))
            inside = defaultdict(float)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    helpers = load_wheel_helpers()
    sys.path.insert(0, str(REPO / "tests"))
    from synthetic import TARGET, energy_load

    with tempfile.TemporaryDirectory(prefix="bench-noop-") as tmp:
        home = helpers.venv_home(Path(tmp))
        try:
            began = time.perf_counter()
            venv = helpers.install_venv(home, helpers.build_wheel(Path(tmp) / "build"))
            install = time.perf_counter() - began
            folder = Path(tmp) / "energy"
            folder.mkdir()
            energy_load().to_csv(folder / "energy-load.csv", index=False)
            # a user's shell writes bytecode: without it every run compiles MLflow, scikit-learn and
            # pandas again (the install is --no-compile) and the floors measure the compiler
            env = {k: v for k, v in venv.env().items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["MLFLOW_RETRAIN_CACHE_DIR"] = str(Path(tmp) / "model-cache")
            cold = Path(tmp) / "cold-cache"
            cold_env = {**env, "MLFLOW_RETRAIN_CACHE_DIR": str(cold)}
            cli = str(venv.script("mlflow-retrain"))
            timed([cli, "init", "--data", "energy-load.csv", "--target", TARGET], folder, env)
            boot = timed([cli, "cycle", "--as-of", BOOTSTRAP, "--json"], folder, env)
            assert json.loads(boot.stdout)["outcome"] == "promoted", boot.stdout
            commands = {
                FLOOR: [str(venv.python), "-c", "import mlflow, sklearn, pandas"],
                FROZEN: [str(venv.python), "-c", "import mlflow, sklearn, pandas, gc; gc.freeze()"],
                "`python -c \"import mlflow\"`": [str(venv.python), "-c", "import mlflow"],
                "`mlflow-retrain --version`": [cli, "--version"],
                CYCLE: [cli, "cycle", "--as-of", NOOP, "--json"],
                COLD: [cli, "cycle", "--as-of", NOOP, "--json"],
            }
            samples: dict[str, list[Timed]] = {name: [] for name in commands}
            first: dict[str, float] = {}
            for i in range(args.runs + 1):
                for name, cmd in commands.items():
                    if name == COLD:
                        shutil.rmtree(cold, ignore_errors=True)
                    run = timed(cmd, folder, cold_env if name == COLD else env)
                    if name in (CYCLE, COLD):
                        report = json.loads(run.stdout)
                        fired = [t["kind"] for t in report["retrain"]["results"] if t["fired"]]
                        assert report["outcome"] == "no_retrain" and not fired, (report["outcome"], fired)
                    if i == 0:
                        first[name] = run.wall  # warm-up: byte-compiles what init and the bootstrap did not import
                    else:
                        samples[name].append(run)
            imports = timed([str(venv.python), "-X", "importtime", "-m", "mlflow_retrain.cli", "cycle",
                             "--as-of", NOOP, "--json"], folder, env)
            profiled = timed([str(venv.python), "-c", PROFILE, NOOP], folder, env)
        finally:
            shutil.rmtree(home, ignore_errors=True)

    def median(name: str, what: str) -> float:
        return statistics.median(getattr(run, what) for run in samples[name])

    wall = {name: median(name, "wall") for name in commands}
    cpu = {name: median(name, "cpu") for name in commands}
    print(f"wheel built and installed with its dependencies in a fresh venv: {install:.0f} s; "
          f"bootstrap cycle (trains v1 through the packaged MLproject): {boot.wall:.1f} s\n")
    print(f"| median of {args.runs} (after one warm-up) | wall, s | CPU, s | peak RSS, MB | warm-up run (discarded), s "
          f"| no-op cycle / this, wall | CPU |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in commands:
        print(f"| {name} | {wall[name]:.2f} | {cpu[name]:.2f} | {median(name, 'rss'):.0f} | {first[name]:.2f} "
              f"| {wall[CYCLE] / wall[name]:.2f}x | {cpu[CYCLE] / cpu[name]:.2f}x |")
    print()
    for cycle in (CYCLE, COLD):
        for floor in (FLOOR, FROZEN):
            paired = [c.wall / f.wall for c, f in zip(samples[cycle], samples[floor])]
            paired_cpu = [c.cpu / f.cpu for c, f in zip(samples[cycle], samples[floor])]
            print(f"{cycle} / {floor}, the median of the {args.runs} paired runs: "
                  f"{statistics.median(paired):.2f}x wall, {statistics.median(paired_cpu):.2f}x CPU")
    print("(issue 15's goal: the no-op cycle within 1.5x of the floor)\n")
    line = next(text for text in profiled.stderr.splitlines() if text.startswith("PROFILE "))
    profile = json.loads(line[len("PROFILE "):])
    steps, whole = profile["steps"], profile["steps"].pop("whole")
    print(f"No-op cycles in one process, interpreter start-up left out: the first {profile['first']:.1f} s, "
          f"the next ones (everything already imported) {profile['warm']:.1f} s (median of 3).\n")
    print(f"| one more cycle in that process, under cProfile ({whole:.1f} s with the profiler), cumulative | s | share |")
    print("| --- | ---: | ---: |")
    for label, seconds in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {seconds:.2f} | {seconds / whole:.0%} |")
    calls = profile["calls"]
    print(f"\nMLflow store calls in that cycle: {sum(calls.values())} ("
          + ", ".join(f"{name} {n}" for name, n in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0]))) + ")\n")
    statements = sorted(top_level_imports(imports.stderr), key=lambda t: -t[1])
    total = sum(t[1] for t in statements)
    print(f"| `-X importtime` of a no-op cycle ({total:.1f} s of imports): imported first by | s | heaviest inside |")
    print("| --- | ---: | --- |")
    for name, seconds, inside in statements[:8]:
        heavy = ", ".join(f"{p} {v:.1f}" for p, v in sorted(inside.items(), key=lambda kv: -kv[1])[:4])
        print(f"| `{name}` | {seconds:.2f} | {heavy} |")
    loaded = imported(imports.stderr)
    print("\nimported by the no-op cycle: " + ", ".join(f"{name} {'yes' if name in loaded else 'no'}" for name in HEAVY))


def imported(importtime: str) -> set[str]:
    """Every module named in `-X importtime` output."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime.splitlines()
            if line.startswith("import time:") and "self [us]" not in line}


if __name__ == "__main__":
    main()
