"""The shipped GitHub workflow, checked by a real linter (actionlint), not by eye."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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
