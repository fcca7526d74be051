"""The shipped GitHub workflow, checked by a real linter (actionlint), not by eye."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"


def actionlint() -> str:
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    assert found, "actionlint is a test dependency (setup.cfg extras 'test')"
    return found


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint(), "-no-color", str(path)], capture_output=True, text=True, cwd=path.parent)


def test_workflow_passes_actionlint():
    result = lint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_linter_really_catches_mistakes(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("${{ inputs.reason ||", "${{ inputs.reasn ||"))
    result = lint(broken)
    assert result.returncode != 0 and "reasn" in result.stdout


def test_workflow_runs_a_cycle_on_schedule_dispatch_and_events_with_a_reason():
    flow = yaml.safe_load(WORKFLOW.read_text())
    on = flow[True]  # YAML 1.1 reads the key `on` as a boolean
    assert on["schedule"][0]["cron"] and "reason" in on["workflow_dispatch"]["inputs"]
    assert on["repository_dispatch"]["types"] == ["retrain"] and on["push"]["paths"] == ["data/**"]  # events
    script = flow["jobs"]["cycle"]["steps"][3]["run"]
    assert "--summary-md \"$GITHUB_STEP_SUMMARY\"" in script and "--force --reason \"$REASON\"" in script


@pytest.mark.parametrize("event, reason, code, expected, exit_code", [
    ("schedule", "", 0, [], 0),
    ("workflow_dispatch", "pricing changed", 0, ["--force", "--reason", "pricing changed"], 0),
    ("repository_dispatch", "labels fixed", 0, ["--event", "repository_dispatch", "--reason", "labels fixed"], 0),
    ("push", "", 3, [], 0),  # another cycle holds the lease: a notice, not a failure
    ("schedule", "", 2, [], 2),
])
def test_the_cycle_step_passes_the_right_request_and_exit_code(tmp_path, event, reason, code, expected, exit_code):
    """Runs the step's real bash script with `mlflow-retrain` replaced by a recorder of its arguments."""
    step = next(s for s in yaml.safe_load(WORKFLOW.read_text())["jobs"]["cycle"]["steps"]
                if s.get("name") == "Run one controller cycle")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorder = bin_dir / "mlflow-retrain"
    recorder.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > "{tmp_path}/args"\necho "{{}}"\nexit {code}\n')
    recorder.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "EVENT": event, "REASON": reason,
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    done = subprocess.run(["bash", "-e", "-c", step["run"]], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == exit_code, done.stderr
    args = (tmp_path / "args").read_text().splitlines()
    assert args[0] == "cycle" and args[args.index("--json") + 1:] == expected
