"""How long `notebooks/degradation.ipynb` takes to execute, against what any MLflow tool pays to start.

The notebook's code cells run in order in a fresh process, as a kernel runs them (the executor of
`tests/integration/test_notebook.py`: nbconvert and ipykernel are not dependencies), from `notebooks/`,
with a scratch tracking store in a temporary folder. In the same run, before and after it so that a
busy machine weighs on both: the floor `python -c "import mlflow, sklearn, pandas"`. Reported: wall
and CPU seconds (user + system of the child) of each, their ratio, the notebook's peak RSS, each code
cell's wall and CPU seconds, and the load average. Results go to stdout as Markdown.

    .venv/bin/python benchmarks/bench_notebook.py [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOOR = ["-c", "import mlflow, sklearn, pandas"]
# run in the child: every code cell in order, timed; the cells' (wall, CPU) seconds go to the last line of stdout
NOTEBOOK = """
import contextlib, io, json, sys, time
sys.path.insert(0, {tests!r})
from test_notebook import execute
notebook = json.loads(open("degradation.ipynb").read())
seconds = []
for index, cell in enumerate(notebook["cells"]):
    if cell["cell_type"] == "code":
        began, cpu = time.perf_counter(), time.process_time()
        execute({{"cells": [cell]}}, namespace=globals().setdefault("ns", {{}}))
        seconds.append((round(time.perf_counter() - began, 1), round(time.process_time() - cpu, 1)))
print(json.dumps(seconds))
"""


def timed(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MB, stdout) of one child process, from its own rusage."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        began = time.perf_counter()
        child = subprocess.Popen([sys.executable, *args], stdout=out, stderr=err, text=True, env=env, cwd=cwd)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if child.returncode != 0:
            raise RuntimeError(f"exited {child.returncode}:\n{err.read()[-3000:]}")
        return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    options = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-notebook-"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore",
           "MLFLOW_TRACKING_URI": f"sqlite:///{scratch / 'mlflow.db'}"}
    code = NOTEBOOK.format(tests=str(REPO / "tests" / "integration"))
    floors, runs = [timed(FLOOR, env, REPO)], []
    for _ in range(options.runs):
        runs.append(timed(["-c", code], env, REPO / "notebooks"))
        floors.append(timed(FLOOR, env, REPO))
    load = os.getloadavg()
    floor_wall, floor_cpu = (statistics.median(f[i] for f in floors) for i in (0, 1))
    wall, cpu = (statistics.median(r[i] for r in runs) for i in (0, 1))
    print("### `notebooks/degradation.ipynb` executed\n")
    print(f"Machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end; "
          f"{options.runs} notebook run(s), {len(floors)} floor runs around them (medians).\n")
    print("| run | wall s | CPU s | peak RSS MB |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| floor `python -c \"import mlflow, sklearn, pandas\"` | {floor_wall:.1f} | {floor_cpu:.1f} | "
          f"{max(f[2] for f in floors):.0f} |")
    print(f"| the notebook, every code cell | {wall:.1f} | {cpu:.1f} | {max(r[2] for r in runs):.0f} |")
    print(f"\nRatio to the floor: wall {wall / floor_wall:.1f}x, CPU {cpu / floor_cpu:.1f}x. "
          f"Code cells' (wall, CPU) seconds (last run): {json.loads(runs[-1][3].splitlines()[-1])}.")


if __name__ == "__main__":
    main()
