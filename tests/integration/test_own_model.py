"""A user's own model on a user's own data (not the bike data), from a folder of their own.

The example folder `examples/energy-load` is copied to a temp folder with generated hourly load
data; its pipeline derives features from the timestamp. It is driven three ways: the user's own
MLproject as a local folder, the same project as a `file://` git URI of a `git init`ed repository,
and the built-in trainer fitting the user's factory. Everything real: `mlflow.projects.run`
subprocesses, a sqlite store, Evidently drift on the reference the controller logged.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from synthetic import energy_load

import mlflow_retrain
from mlflow_retrain.base import tags as T
from mlflow_retrain.cli import cli
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.adapters.registry import Registry

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "energy-load"
BOOTSTRAP, LATER = "2022-06-30", "2023-03-31"  # the load shifts on 2023-01-01


def user_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "energy"
    shutil.copytree(EXAMPLE, folder)
    energy_load("2022-01-01", "2023-03-31").to_csv(folder / "load.csv", index=False)
    return folder


def cycle(policy: Path, *args: str) -> dict:
    out = CliRunner().invoke(cli, ["cycle", "--config", str(policy), "--json", *args])
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def registry_state(config) -> list[tuple]:
    return [(v.version, v.stage, v.aliases, tuple(sorted(v.tags.items()))) for v in Registry(config).versions()]


def git_repo(folder: Path) -> str:
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=folder, check=True,
                       capture_output=True)

    git("init", "-q", "-b", "main")
    git("add", "MLproject", "train.py", "features.py")
    git("commit", "-q", "-m", "the team's training code")
    return f"file://{folder}"


@pytest.fixture(scope="module")
def project_template(tmp_path_factory: pytest.TempPathFactory, store_template: Path) -> Path:
    """A store where the user's project made v1 (bootstrap, Production), built once for the module."""
    folder = tmp_path_factory.mktemp("own-project")
    shutil.copy(store_template, folder / "mlflow.db")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    try:  # in the template's folder: a new experiment's artifacts go under the working folder's mlruns/
        with contextlib.chdir(folder):
            report = mlflow_retrain.cycle(user_folder(folder) / "retrain-project.yaml", as_of=BOOTSTRAP)
    finally:
        mlflow.set_tracking_uri(previous)
    assert report.outcome == T.PROMOTED, report.to_dict()
    return folder


@pytest.fixture
def project_store(store: str, project_template: Path, tmp_path: Path) -> Path:
    """This test's copy of that store, and the user's folder (its artifacts stay in the template)."""
    shutil.copy(project_template / "mlflow.db", tmp_path / "mlflow.db")
    return user_folder(tmp_path)


def test_the_users_own_mlproject_makes_every_candidate(project_store: Path):
    policy = project_store / "retrain-project.yaml"
    config = load_config(policy)
    first = Registry(config).get("1")
    assert first.stage == "Production" and first.tags[T.TRIGGER] == T.BOOTSTRAP
    run = MlflowClient().get_run(first.run_id)
    assert run.data.tags["mlflow.project.entryPoint"] == "train"
    # the contract reached the script: it trained on exactly the window the version is tagged with
    start, end = first.tags[T.TRAIN_WINDOW].split("..")
    assert (run.data.params["train_start"], run.data.params["train_end"]) == (start, end)
    assert run.data.params["max_iter"] == "100" and run.data.params["data_path"].endswith("energy/load.csv")

    report = cycle(policy, "--as-of", LATER)  # after the shift: the threshold fires, the project retrains
    assert report["retrain"]["fired"] == ["metric_threshold"] and report["outcome"] == T.PROMOTED
    second = Registry(config).get("2")
    assert second.stage == "Production" and second.tags[T.DECISION] == T.PROMOTED
    assert second.tags[T.CYCLE_RUN_ID] == report["cycle_run_id"] and second.tags[T.BASELINE_VERSION] == "1"
    # judged on the same holdout, through the pipeline that derives its features from the timestamp
    gate = report["promotion"]
    assert gate["candidate"] < 40 < gate["baseline"], gate
    # the controller logged the drift reference on the user's run: a drift trigger can measure it
    assert MlflowClient().list_artifacts(second.run_id, "reference")
    check = json.loads(CliRunner().invoke(cli, ["check", "--config", str(policy), "--json"]).output)
    assert check["production_version"] == "2"


def test_the_same_project_from_a_git_uri(project_store: Path):
    source = project_store / "team-repo"
    source.mkdir()
    for name in ("MLproject", "train.py", "features.py"):
        shutil.copy(project_store / name, source / name)
    uri = git_repo(source)
    raw = yaml.safe_load((project_store / "retrain-project.yaml").read_text())
    raw["training"]["project"]["uri"] = uri
    raw["training"]["refit_on_pass"] = True  # the candidate that passes is made again, through as_of
    policy = project_store / "retrain-git.yaml"
    policy.write_text(yaml.safe_dump(raw))
    report = cycle(policy, "--as-of", LATER, "--force", "--reason", "new charging tariff")
    assert report["outcome"] == T.PROMOTED and report["candidate_version"] == "3"
    validated, refit = (Registry(load_config(policy)).get(v) for v in ("2", "3"))
    run = MlflowClient().get_run(refit.run_id)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True).stdout.strip()
    assert run.data.tags["mlflow.source.git.commit"] == head  # the training code's exact commit is on record
    # the refit: the same entry point, its training window running through the holdout's end
    assert (validated.tags[T.DECISION], refit.tags[T.REFIT_OF]) == (T.REFITTED, validated.run_id)
    assert run.data.params["train_end"] == refit.tags[T.HOLDOUT_WINDOW].split("..")[1]
    assert pd.Timestamp(run.data.params["train_end"]) == pd.Timestamp(refit.tags[T.AS_OF])  # (a date, as the list shows it)
    assert run.data.params["train_start"] == validated.tags[T.TRAIN_WINDOW].split("..")[0]


def test_the_built_in_trainer_fits_the_users_factory_then_monitors_it(store: str, tmp_path: Path):
    folder = user_folder(tmp_path)
    policy = folder / "retrain-factory.yaml"
    raw = yaml.safe_load(policy.read_text())
    raw["training"]["refit_on_pass"] = True  # the packaged MLproject's `--refit-of` makes what serves
    policy.write_text(yaml.safe_dump(raw))
    assert cycle(policy, "--as-of", BOOTSTRAP)["outcome"] == T.PROMOTED  # through the packaged MLproject
    report = cycle(policy, "--as-of", LATER)
    assert report["outcome"] == T.PROMOTED and report["candidate_version"] == "3", report
    validated, version = (Registry(load_config(policy)).get(v) for v in ("2", "3"))
    assert version.stage == "Production" and version.tags[T.REFIT_OF] == validated.run_id
    assert MlflowClient().get_run(version.run_id).data.params["train_window"] == version.tags[T.TRAIN_WINDOW]
    # the model carries the user's module, so it loads where features.py is not importable
    model_dir = Path(mlflow.artifacts.download_artifacts("models:/energy-load/3"))
    assert (model_dir / "code" / "features.py").is_file()
    requirements = (model_dir / "requirements.txt").read_text()
    assert "scikit-learn==" in requirements and "features" not in requirements
    assert version.tags[T.TRIGGER] == "metric_threshold"
    out = CliRunner().invoke(cli, ["monitor", "--config", str(policy), "--out", str(tmp_path / "monitor"), "--json"])
    assert out.exit_code in (0, 4), out.output
    windows = [w for w in json.loads(out.output)["windows"] if w["metric"] is not None]
    assert {w["version"] for w in windows} == {"1"}  # v2 was promoted at the newest data
    before = [w["metric"] for w in windows if w["end"] <= "2023-01-01"]
    after = [w["metric"] for w in windows if w["start"] >= "2023-01-01"]
    # the user's model, scored on its own columns: about the noise before the shift, far worse after
    assert before and after and sorted(before)[len(before) // 2] < 20 and min(after) > 100


def test_the_python_api_runs_a_cycle_on_a_dataframe(store: str, tmp_path: Path):
    folder = user_folder(tmp_path)
    raw = yaml.safe_load((folder / "retrain-factory.yaml").read_text())
    del raw["data"]["path"]
    frame = pd.read_csv(folder / "load.csv")
    import sys

    sys.path.insert(0, str(folder))  # a notebook beside features.py
    try:
        first = mlflow_retrain.cycle(raw, data=frame, as_of=BOOTSTRAP)
        later = mlflow_retrain.check(raw, data=frame, as_of=LATER)
    finally:
        sys.path.remove(str(folder))
    assert first.outcome == T.PROMOTED and first.production_version is None
    assert later.outcome == "would_retrain" and later.decision.fired == ["metric_threshold"]


FAILING = '''
import sys
print("reading load.csv")
print("fitting 120 days")
raise SystemExit("KeyError: 'temperature' (the column was renamed upstream)")
'''
NO_MODEL = '''
import mlflow
with mlflow.start_run():
    mlflow.log_param("forgot", "to log the model")
'''
WRONG_SCHEMA = '''
import mlflow, pandas as pd
from mlflow.models import infer_signature
from sklearn.dummy import DummyRegressor
frame = pd.read_csv("{data}").head(100)
columns = ["timestamp", "temperature_c", "day_type", "weather", "hour"]  # `hour` is excluded by the policy
model = DummyRegressor().fit(frame[["temperature_c"]], frame.load_mw)
with mlflow.start_run():
    mlflow.sklearn.log_model(model, name="model", signature=infer_signature(frame[columns], frame.load_mw))
'''


def audit_runs(status: str) -> int:
    return len(mlflow.search_runs(experiment_names=["energy-load-controller"], filter_string=f"status = '{status}'"))


@pytest.mark.parametrize("script, message", [
    (FAILING, "(the column was renamed upstream)"),
    (NO_MODEL, "succeeded but logged no model"),
    (WRONG_SCHEMA, "needs column(s) hour that the policy does not give it"),
])
def test_a_failing_project_is_one_line_exit_2_registry_unchanged_audit_failed(project_store: Path, script, message):
    (project_store / "train.py").write_text(script.replace("{data}", str(project_store / "load.csv")))
    policy = project_store / "retrain-project.yaml"
    config = load_config(policy)
    before, failed = registry_state(config), audit_runs("FAILED")
    out = CliRunner().invoke(cli, ["cycle", "--config", str(policy), "--as-of", LATER, "--force", "--reason", "x"])
    assert out.exit_code == 2 and message in out.output, out.output
    assert len(out.output.strip().splitlines()) == 1 and "Traceback" not in out.output
    assert "the 'train' entry point of" in out.output or "needs column" in out.output
    if script is FAILING:  # which run failed, and what it said last
        assert "(run " in out.output and "fitting 120 days" in out.output
    assert registry_state(config) == before and audit_runs("FAILED") == failed + 1
    assert Registry(config).lease_state() is None


@pytest.mark.parametrize("change, message", [
    ({"training": {"project": {"uri": "file:///nowhere/team-repo.git"}}}, "is not a git repository git can read"),
    ({"training": {"project": {"uri": "no-such-folder"}}}, "no MLproject file there"),
    ({"training": {"project": {"uri": ".", "entry_point": "fit"}}}, "has no entry point 'fit' (it has train)"),
    ({"training": {"estimator": "feature:make_pipeline"}}, "training.estimator 'feature:make_pipeline' cannot be imported"),
])
def test_a_trainer_that_cannot_be_found_stops_before_the_lease_and_any_run(project_store: Path, change, message):
    raw = yaml.safe_load((project_store / "retrain-project.yaml").read_text())
    raw["training"].pop("project")
    raw["training"].update(change["training"])
    policy = project_store / "retrain-broken.yaml"
    policy.write_text(yaml.safe_dump(raw))
    before, runs = registry_state(load_config(policy)), len(mlflow.search_runs(search_all_experiments=True))
    out = CliRunner().invoke(cli, ["cycle", "--config", str(policy), "--as-of", LATER, "--force", "--reason", "x"])
    assert out.exit_code == 2 and message in out.output and len(out.output.strip().splitlines()) == 1, out.output
    assert registry_state(load_config(policy)) == before
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs  # not even an audit run


def test_the_backtest_replays_the_users_project(project_store: Path, tmp_path: Path):
    """Each fit of the replay is a real run of the user's entry point; the registry is not touched."""
    policy = project_store / "retrain-project.yaml"
    before = registry_state(load_config(policy))
    out = CliRunner().invoke(cli, ["backtest", "--config", str(policy), "--from", "2022-07-01", "--every", "45d",
                                   "--policy", "never,configured", "--out", str(tmp_path / "bt"), "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    table = {row["policy"]: row for row in result["policies"]}
    assert table["configured"]["retrains"] >= 1 and table["configured"]["promoted"] >= 1
    assert table["configured"]["mean_metric"] < table["never"]["mean_metric"]  # retraining after the shift pays
    runs = mlflow.search_runs(experiment_names=["energy-load-backtest"],
                              filter_string="tags.`mlflow.project.entryPoint` = 'train'")
    assert len(runs) == result["fits"] >= 2
    assert registry_state(load_config(policy)) == before
