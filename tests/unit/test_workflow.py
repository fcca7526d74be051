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


def cycle_step() -> dict:
    """The workflow's step that runs `mlflow-retrain`."""
    return next(s for s in yaml.safe_load(WORKFLOW.read_text())["jobs"]["cycle"]["steps"]
                if s.get("name") == "Run one controller cycle")


def recording_bin(tmp_path: Path, code: int) -> Path:
    """A folder whose `mlflow-retrain` writes its arguments to tmp_path/args, prints {} and exits `code`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorder = bin_dir / "mlflow-retrain"
    recorder.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > "{tmp_path}/args"\necho "{{}}"\nexit {code}\n')
    recorder.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("event, reason, code, expected, exit_code", [
    ("schedule", "", 0, [], 0),
    ("workflow_dispatch", "pricing changed", 0, ["--force", "--reason", "pricing changed"], 0),
    ("repository_dispatch", "labels fixed", 0, ["--event", "repository_dispatch", "--reason", "labels fixed"], 0),
    ("push", "", 3, [], 0),  # another cycle holds the lease: a notice, not a failure
    ("schedule", "", 2, [], 2),
])
def test_the_cycle_step_passes_the_right_request_and_exit_code(tmp_path, event, reason, code, expected, exit_code):
    """Runs the step's real bash script with `mlflow-retrain` replaced by a recorder of its arguments."""
    step, bin_dir = cycle_step(), recording_bin(tmp_path, code)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "EVENT": event, "REASON": reason,
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    done = subprocess.run(["bash", "-e", "-c", step["run"]], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == exit_code, done.stderr
    args = (tmp_path / "args").read_text().splitlines()
    assert args[0] == "cycle" and args[args.index("--json") + 1:] == expected


def _render(template: str, context: dict[str, str]) -> str:
    """Evaluate the `${{ }}` expressions of `template` the way GitHub does for the operators used here
    (`||`, `&&`, `==`, `format`, string literals; a missing property is null, i.e. falsy)."""
    import re

    def evaluate(match: re.Match) -> str:
        code = match.group(1).replace("&&", " and ").replace("||", " or ")
        code = re.sub(r"\b(?:inputs|github|vars)(?:\.\w+)+", lambda n: f"_get({n.group(0)!r})", code)
        value = eval(code, {"__builtins__": {}, "_get": lambda key: context.get(key, ""),
                            "format": lambda text, *args: text.format(*args)})
        return str(value)

    return re.sub(r"\$\{\{(.*?)\}\}", evaluate, template, flags=re.DOTALL)


def _group(event: str, run_id: str = "1", **context: str) -> str:
    concurrency = yaml.safe_load(WORKFLOW.read_text())["concurrency"]
    assert concurrency["cancel-in-progress"] is False
    return _render(concurrency["group"], {"github.event_name": event, "github.run_id": run_id, **context})


def test_cycles_share_a_group_per_model_and_requests_each_get_their_own():
    """GitHub keeps one pending run per concurrency group and cancels the older pending one: scheduled
    and push cycles may replace each other, a requested retrain must never be the one cancelled."""
    scheduled = _group("schedule", "11")
    assert scheduled == _group("push", "12") == _group("schedule", "13")  # one group per model
    assert "retrain.yaml" in scheduled
    assert _group("schedule", "14", **{"inputs.config": "other.yaml"}) != scheduled  # another model
    requests = [_group("workflow_dispatch", "21", **{"inputs.reason": "pricing"}), _group("workflow_dispatch", "22"),
                _group("repository_dispatch", "23", **{"github.event.client_payload.reason": "labels"}),
                _group("repository_dispatch", "24")]
    assert len(set(requests)) == len(requests) and scheduled not in requests
    assert all("retrain.yaml" in g for g in requests)
    assert "other.yaml" in _group("repository_dispatch", "25", **{"github.event.client_payload.config": "other.yaml"})


@pytest.mark.parametrize("event, reason, codes, runs, exit_code", [
    ("workflow_dispatch", "pricing changed", [3, 3, 0], 3, 0),  # a request waits for the lease, then runs
    ("repository_dispatch", "labels fixed", [3, 0], 2, 0),
    ("workflow_dispatch", "pricing changed", [3, 3, 3, 3], 3, 3),  # ... for LEASE_TRIES tries at most
    ("schedule", "", [3, 0], 1, 0),  # a normal cycle that finds the lease held has nothing to do
    ("workflow_dispatch", "", [3, 0], 1, 0),  # a cycle run by hand without a reason is a normal cycle
])
def test_a_requested_retrain_waits_for_the_lease_instead_of_being_dropped(tmp_path, event, reason, codes, runs,
                                                                          exit_code):
    step = next(s for s in yaml.safe_load(WORKFLOW.read_text())["jobs"]["cycle"]["steps"]
                if s.get("name") == "Run one controller cycle")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "codes").write_text("\n".join(map(str, codes)) + "\n")
    recorder = bin_dir / "mlflow-retrain"
    recorder.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > "{tmp_path}/args"\necho run >> "{tmp_path}/runs"\n'
                        f'code=$(head -n1 "{tmp_path}/codes"); sed -i 1d "{tmp_path}/codes"\necho "{{}}"\nexit $code\n')
    recorder.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "EVENT": event, "REASON": reason, "CONFIG": "bikes.yaml",
           "LEASE_TRIES": "3", "LEASE_WAIT_SECONDS": "0", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    done = subprocess.run(["bash", "-e", "-c", step["run"]], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == exit_code, done.stdout + done.stderr
    assert len((tmp_path / "runs").read_text().splitlines()) == runs
    args = (tmp_path / "args").read_text().splitlines()
    assert args[:3] == ["cycle", "--config", "bikes.yaml"]
    assert step["env"]["LEASE_TRIES"] and step["env"]["LEASE_WAIT_SECONDS"]
