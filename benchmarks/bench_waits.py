"""The waits a person sits through (issue 28): `check` and `monitor` on the bundled data, in CPU
seconds against the import floor measured in the same run.

In a fresh folder with the bundled policy and data: bootstrap cycles trained in process at
`--cycles` dates (the cache of audited models filled by them, as on a user's machine), then, interleaved
`--runs` times so that the machine's load weighs on all alike: the floor `python -c "import mlflow,
sklearn, pandas"`, `check --as-of 2012-06-01`, and `monitor --every 1d --no-log` over 2012. CPU is
user + system of the child (`wait4`), the reliable measure on a shared machine; the load average is
printed at the start and end. Medians; results to stdout as Markdown.

    .venv/bin/python benchmarks/bench_waits.py [--runs 3] [--code DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CYCLES = ("2011-05-01", "2011-09-01", "2012-01-01", "2012-04-01")


def timed(cmd: list[str], folder: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, from the child's own rusage) of one command."""
    began = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) not in (0, 4):  # monitor: 4 = the data ends before today
        sys.exit(f"{' '.join(cmd)} failed: {child.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--code", type=Path, default=REPO, help="the folder holding the mlflow_retrain to run "
                        "(e.g. `git archive` of an older commit, for the before)")
    args = parser.parse_args()
    python = sys.executable
    cli = [python, "-m", "mlflow_retrain.cli"]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="bench-waits-") as tmp:
        folder = Path(tmp)
        shutil.copy(REPO / "retrain.yaml", folder)
        shutil.copytree(REPO / "data", folder / "data")
        env = {**os.environ, "PYTHONPATH": str(args.code.resolve()), "MLFLOW_RETRAIN_CACHE_DIR": str(folder / "cache")}
        for as_of in CYCLES:
            timed([*cli, "cycle", "--as-of", as_of, "--retrain-via", "inprocess"], folder, env)
        commands = {
            'floor: `python -c "import mlflow, sklearn, pandas"`': [python, "-c", "import mlflow, sklearn, pandas"],
            "`check --as-of 2012-06-01` (Production v4, after four cycles)": [*cli, "check", "--as-of", "2012-06-01"],
            "`monitor --every 1d --from 2012-01-01 --no-log` (366 windows)":
                [*cli, "monitor", "--every", "1d", "--from", "2012-01-01", "--no-log", "--out", "monitor"],
        }
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, cmd in commands.items():
                samples[name].append(timed(cmd, folder, env))
    floor = statistics.median(cpu for _, cpu in samples[next(iter(commands))])
    print(f"\n| median of {args.runs} | wall, s | CPU, s | CPU / floor |")
    print("| --- | ---: | ---: | ---: |")
    for name, runs in samples.items():
        cpu = statistics.median(c for _, c in runs)
        print(f"| {name} | {statistics.median(w for w, _ in runs):.1f} | {cpu:.2f} | {cpu / floor:.2f}x |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
