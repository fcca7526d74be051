"""How long `make demo` takes after the install, against what any MLflow tool pays to start.

The command `make demo` runs once `.venv` exists (`python -m mlflow_retrain.demo`: 22 replayed
cycles, a forced retrain, the registry, the dashboard), in a scratch copy of the checkout's policy
and data, so the checkout's own `mlflow.db` is left alone. In the same run, before and after it so
that a busy machine weighs on both: the floor `python -c "import mlflow, sklearn, pandas"`; with
`--peer`, the demo as it was before issue 28 (`--retrain-via project`: every candidate through
`mlflow run`). Reported: wall and CPU seconds (user + system of the process and its children) of
each, the ratio to the floor, peak RSS, the replay's seconds as the demo prints them, and the load
average. Results go to stdout as Markdown.

    .venv/bin/python benchmarks/bench_demo.py [--runs 1] [--peer]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench_notebook import FLOOR, timed

REPO = Path(__file__).resolve().parents[1]
DEMO = ["-m", "mlflow_retrain.demo"]
PEER = [*DEMO, "--retrain-via", "project"]


def scratch() -> Path:
    """A folder holding what `make demo` reads from the checkout: the policy and the bundled data."""
    folder = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    shutil.copy(REPO / "retrain.yaml", folder)
    shutil.copytree(REPO / "data", folder / "data")
    return folder


def replay_seconds(stdout: str) -> int:
    """The replay's seconds as the demo prints them ("23 controller runs recorded ... (41 s)")."""
    return int(re.search(r"controller runs recorded in experiment .* \((\d+) s\)", stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--peer", action="store_true", help="also the demo with every candidate through `mlflow run`")
    options = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    commands = {"`make demo` (the first candidate through `mlflow run`, the rest in process)": DEMO}
    if options.peer:
        commands["peer: `--retrain-via project` (every candidate through `mlflow run`, before issue 28)"] = PEER
    load_before = os.getloadavg()
    floors, runs = [timed(FLOOR, env, REPO)], {name: [] for name in commands}
    for _ in range(options.runs):
        for name, args in commands.items():
            folder = scratch()
            runs[name].append(timed(args, env, folder))
            shutil.rmtree(folder)  # its store, reports and dashboard: about 100 MB
            floors.append(timed(FLOOR, env, REPO))
    load = os.getloadavg()
    floor_wall, floor_cpu = (statistics.median(f[i] for f in floors) for i in (0, 1))
    print("### `make demo` after the install\n")
    print(f"Machine: {os.cpu_count()} cores, load average {load_before[0]:.1f} at the start, "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end; {options.runs} run(s) of each, "
          f"{len(floors)} floor runs around them (medians).\n")
    print("| run | wall s | CPU s | CPU / floor | peak RSS MB | replay s (printed) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| floor `python -c \"import mlflow, sklearn, pandas\"` | {floor_wall:.1f} | {floor_cpu:.1f} | 1.0x | "
          f"{max(f[2] for f in floors):.0f} | |")
    for name, done in runs.items():
        wall, cpu = (statistics.median(r[i] for r in done) for i in (0, 1))
        replay = statistics.median(replay_seconds(r[3]) for r in done)
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {cpu / floor_cpu:.1f}x | {max(r[2] for r in done):.0f} | "
              f"{replay:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
