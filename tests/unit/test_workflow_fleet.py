"""The shipped workflow with a fleet (repository variable RETRAIN_FLEET): scheduled and push runs cycle
every model in one job; a request names one model and is never cancelled by the fleet's runs."""

from __future__ import annotations

import subprocess

import pytest
from test_workflow import _group, cycle_step, recording_bin

FLEET = {"vars.RETRAIN_FLEET": "policies/"}


def test_fleet_runs_share_one_group_and_each_request_has_its_own():
    scheduled = _group("schedule", "11", **FLEET)
    assert scheduled == _group("push", "12", **FLEET) == "mlflow-retrain-fleet-cycle"
    assert _group("schedule", "11") == "mlflow-retrain-retrain.yaml-cycle"  # without the variable: one model
    # a fleet run started by hand is a request too: never cancelled by a scheduled one
    assert _group("workflow_dispatch", "13", **FLEET) == "mlflow-retrain-fleet-request-13"
    requests = [_group("workflow_dispatch", "21", **FLEET, **{"inputs.config": "policies/north.yaml",
                                                             "inputs.reason": "pricing"}),
                _group("repository_dispatch", "22", **FLEET, **{"github.event.client_payload.config": "policies/north.yaml"}),
                _group("repository_dispatch", "23", **FLEET, **{"github.event.client_payload.config": "policies/north.yaml"})]
    assert len(set(requests)) == 3 and scheduled not in requests
    assert all("policies/north.yaml" in g for g in requests)


def run_step(tmp_path, code: int, **env: str) -> tuple[subprocess.CompletedProcess, list[str] | None]:
    """The step's real bash script, with `mlflow-retrain` replaced by a recorder of its arguments."""
    step, bin_dir = cycle_step(), recording_bin(tmp_path, code)
    done = subprocess.run(["bash", "-e", "-c", step["run"]], check=False, cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
                               "CONFIG": env.get("ONE_MODEL") or "retrain.yaml", **env})
    args = tmp_path / "args"
    return done, args.read_text().splitlines() if args.exists() else None


@pytest.mark.parametrize("event, code, exit_code", [
    ("schedule", 0, 0), ("push", 0, 0),
    ("schedule", 3, 0),  # a request holds some model's lease: a notice, that request runs its cycle
    ("schedule", 2, 2), ("schedule", 4, 4), ("schedule", 1, 1),
])
def test_a_scheduled_run_cycles_the_whole_fleet(tmp_path, event, code, exit_code):
    done, args = run_step(tmp_path, code, EVENT=event, FLEET="policies/")
    assert done.returncode == exit_code, done.stdout + done.stderr
    assert args == ["fleet", "cycle", "--policies", "policies/", "--jobs", "2", "--summary-md",
                    str(tmp_path / "summary.md"), "--json"]


@pytest.mark.parametrize("event, env, expected", [
    ("workflow_dispatch", {"REASON": "pricing changed"}, ["--force", "--reason", "pricing changed"]),
    ("repository_dispatch", {"REASON": "labels fixed"}, ["--event", "repository_dispatch", "--reason", "labels fixed"]),
    ("workflow_dispatch", {}, []),
])
def test_a_request_naming_one_model_runs_that_models_cycle(tmp_path, event, env, expected):
    done, args = run_step(tmp_path, 0, EVENT=event, FLEET="policies/", ONE_MODEL="policies/north.yaml", **env)
    assert done.returncode == 0, done.stderr
    assert args[:3] == ["cycle", "--config", "policies/north.yaml"] and args[args.index("--json") + 1:] == expected


@pytest.mark.parametrize("event, env", [("workflow_dispatch", {"REASON": "pricing changed"}),
                                        ("repository_dispatch", {})])
def test_a_request_that_names_no_model_of_a_fleet_is_refused(tmp_path, event, env):
    done, args = run_step(tmp_path, 0, EVENT=event, FLEET="policies/", **env)
    assert done.returncode == 2 and args is None
    assert "names one model's policy file" in done.stdout
