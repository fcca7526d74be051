"""The README's own-data recipe, run exactly as written: its lines are read from README.md (between
the `own-data recipe` markers), not copied here, and run by a shell in a folder outside the checkout
with the wheel venv first on PATH (`wheel_venv`: the recipe's `pip install`), on generated data
named as the recipe names it. Each command must exit 0, and no cycle may end `blocked`: a first
hour that replays the history in order, then goes on, cannot trap.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from mlflow.tracking import MlflowClient

from synthetic import TARGET, energy_load

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"<!-- own-data recipe[^>]*-->\s*```bash\n(.*?)```\s*<!-- /own-data recipe -->", re.S)


def recipe() -> list[str]:
    """The recipe's command lines, comments stripped (the shell would ignore them too)."""
    found = BLOCK.search(README.read_text())
    assert found, "README.md has no own-data recipe block between its markers"
    return [line.split("  #")[0].strip() for line in found.group(1).splitlines() if line.strip()]


def test_the_readme_recipe_runs_as_written_from_a_wheel_install(wheel_venv, tmp_path):
    lines = recipe()
    install, commands = lines[0], lines[1:]
    assert install.startswith("pip install ")  # done by the session's wheel venv, as a user's pip would
    init = shlex.split(next(c for c in commands if " init " in f" {c} "))
    data, target = init[init.index("--data") + 1], init[init.index("--target") + 1]
    work = tmp_path.resolve() / "own-data"
    work.mkdir()
    # three months of hourly load, named and labelled as the recipe says
    energy_load("2022-01-01", "2022-03-31 23:00").rename(columns={TARGET: target}).to_csv(work / data, index=False)

    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=work, env=wheel_venv.env(), capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, f"{command!r} exited {done.returncode}:\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        if command.split()[:2] == ["mlflow-retrain", "init"]:  # the command it prints next is the recipe's next
            assert f"next: {commands[commands.index(command) + 1]} --config" in done.stdout, done.stdout

    # the store the recipe made: every cycle in order, none blocked, and a model in Production
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    experiment = next(e for e in client.search_experiments() if e.name.endswith("-controller"))
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=1000)
    outcomes = [run.data.tags["outcome"] for run in runs]
    assert len(outcomes) > 3 and "blocked" not in outcomes, outcomes
    assert outcomes[0] == "promoted" and all(run.info.status == "FINISHED" for run in runs)
    as_of = [run.data.tags["retrain.as_of"] for run in runs]
    assert as_of == sorted(as_of), as_of  # history replayed oldest first, the last cycle after it
    model = client.search_registered_models()[0].name
    assert len(client.get_latest_versions(model, ["Production"])) == 1
