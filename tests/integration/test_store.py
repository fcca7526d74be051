"""The store is never a guess: from any folder, a policy reaches the store beside it (or the one it
names), every command says which store it used, and an empty MLFLOW_TRACKING_URI is an error."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import forked_cli
import inprocess_cli
import pytest
import yaml


def _cli(*args: str, cwd: Path, **env: str) -> inprocess_cli.Done:
    base = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    return inprocess_cli.run(args, cwd=cwd, env={**base, **env})


def test_from_another_folder_the_policy_reaches_the_store_beside_it(prod_store, write_policy, tmp_path):
    policy = write_policy()  # beside the store holding v1 in Production
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    status = _cli("status", "--config", str(policy), "--json", cwd=elsewhere)
    assert status.returncode == 0, status.stderr
    result = json.loads(status.stdout)
    assert result["production"]["version"] == "1"
    assert result["store"]["tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert result["store"]["origin"] == "default: mlflow.db beside the policy file"
    people = _cli("status", "--config", str(policy), cwd=elsewhere)
    assert f"store: tracking store sqlite:///{tmp_path / 'mlflow.db'}" in people.stderr
    # a cycle from there: its new experiments keep their artifacts beside the store, not in the working folder
    cycle = _cli("cycle", "--config", str(policy), "--as-of", "2011-05-31", "--force", "--reason", "test",
                 "--retrain-via", "inprocess", "--json", cwd=elsewhere)
    assert cycle.returncode == 0, cycle.stderr
    assert not list(elsewhere.iterdir())  # no mlflow.db, no mlruns/ in the folder it ran from
    assert (tmp_path / "mlruns").is_dir()


def test_an_empty_tracking_uri_is_an_error_not_a_fresh_local_store(prod_store, write_policy, tmp_path):
    policy = write_policy()
    result = _cli("check", "--config", str(policy), cwd=tmp_path, MLFLOW_TRACKING_URI="")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: MLFLOW_TRACKING_URI is set but empty (a missing CI secret?): set it to your tracking server, "
        "or unset it to use the policy's store"]


def test_a_relative_tracking_uri_in_the_policy_is_relative_to_the_policy(prod_store, write_policy, tmp_path):
    raw = yaml.safe_load(write_policy().read_text())
    (tmp_path / "stores").mkdir()
    (tmp_path / "mlflow.db").rename(tmp_path / "stores" / "team.db")
    raw["tracking_uri"] = "sqlite:///stores/team.db"
    policy = tmp_path / "named.yaml"
    policy.write_text(yaml.safe_dump(raw))
    status = _cli("status", "--config", str(policy), "--json", cwd=Path("/"))
    assert status.returncode == 0, status.stderr
    result = json.loads(status.stdout)
    assert result["production"]["version"] == "1"
    assert result["store"] == {"tracking_uri": f"sqlite:///{tmp_path / 'stores' / 'team.db'}",
                               "registry_uri": f"sqlite:///{tmp_path / 'stores' / 'team.db'}",
                               "origin": f"tracking_uri in {policy}"}


def test_a_model_missing_from_the_store_names_the_store(store, write_policy, tmp_path):
    result = _cli("status", "--config", str(write_policy()), cwd=tmp_path)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert line.startswith("error: registered model 'bikes' does not exist in sqlite:///") and "\n" not in line


def test_a_model_missing_where_cycles_finished_before_is_not_bootstrapped_silently(prod_store, write_policy, tmp_path):
    policy = write_policy(triggers={"metric_threshold": {"max": 500}})
    first = _cli("cycle", "--config", str(policy), "--as-of", "2011-05-31", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    renamed = yaml.safe_load(policy.read_text())
    renamed["model_name"] = "bikes-typo"
    renamed["experiment"] = "bikes"  # same experiment, a model name that does not exist
    wrong = tmp_path / "typo.yaml"
    wrong.write_text(yaml.safe_dump(renamed))
    for command in ("check", "cycle"):
        refused = _cli(command, "--config", str(wrong), "--as-of", "2011-05-31", cwd=tmp_path)
        assert refused.returncode == 2 and "pass --bootstrap to start a new model on purpose" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    started = _cli("cycle", "--config", str(wrong), "--as-of", "2011-05-31", "--bootstrap", "--retrain-via",
                   "inprocess", "--json", cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["outcome"] == "promoted"


def _fresh_folder(folder: Path, suffix: str) -> Path:
    """A user's folder before any cycle: generated load data (compressed as named) and a policy."""
    from synthetic import TARGET, energy_load

    energy_load("2022-01-01", "2022-03-31").to_csv(folder / f"load{suffix}", index=False)
    policy = folder / "retrain.yaml"
    policy.write_text(yaml.safe_dump({
        "model_name": "load", "experiment": "load",
        "data": {"path": f"load{suffix}", "timestamp": "timestamp", "target": TARGET},
        "training": {"window": "30d", "holdout": "7d"}, "triggers": {"max_age": "30d"}}))
    return policy


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz"])
def test_check_on_a_folder_without_a_store_creates_none(tmp_path, monkeypatch, suffix):
    """`check` writes nothing: with no mlflow.db yet it says a cycle would start the model, and the
    folder is left as it was (no store file, no mlruns/). Compressed CSV reads like plain CSV."""
    from click.testing import CliRunner

    from mlflow_retrain.cli import cli

    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    policy = _fresh_folder(tmp_path, suffix)
    before = _listing(tmp_path)
    out = CliRunner().invoke(cli, ["check", "--config", str(policy), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["outcome"] == "would_retrain" and report["retrain"]["fired"] == ["bootstrap"]
    assert f"no store yet: the first cycle creates {tmp_path / 'mlflow.db'}" in report["reason"]
    assert _listing(tmp_path) == before


def test_read_only_commands_without_a_store_say_so_and_create_none(tmp_path):
    """status, doctor and compare read the registry: with no store yet they say there is nothing
    registered (one line, exit 2) and create nothing; run as a user would, in a process of its own."""
    policy = _fresh_folder(tmp_path, ".csv")
    before = _listing(tmp_path)
    said = (f"error: no store yet: {tmp_path / 'mlflow.db'} does not exist, so nothing is registered; "
            "`mlflow-retrain cycle` creates it with the first model")
    for command in ("status", "doctor", "compare"):
        result = _cli(command, "--config", str(policy), cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert error == [said], (command, result.stderr)
        assert _listing(tmp_path) == before, command
    history = _cli("history", "--config", str(policy), "--json", cwd=tmp_path)  # no cycle yet: an empty history
    assert history.returncode == 0 and json.loads(history.stdout) == [], history.stderr
    assert _listing(tmp_path) == before


def test_reading_commands_work_on_a_read_only_store(awaiting_template, bootstrapped_template, write_policy,
                                                    tmp_path):
    """Auditors, replicas and backups: status, history, check, compare, doctor and monitor --no-log read a
    store whose file, folder and artifacts nobody may write (file modes held: root's override dropped),
    exit 0 and change nothing; the commands that write say so in one line."""
    import sqlite3

    from stores import rebase

    folder = tmp_path / "replica"
    folder.mkdir()
    db = folder / "mlflow.db"
    shutil.copy(awaiting_template, db)
    for template in (bootstrapped_template, awaiting_template):  # v1's artifacts, v2's
        copy = folder / template.parent.name
        shutil.copytree(template.parent / "mlruns", copy / "mlruns")
        rebase(db, template.parent, copy)
    policy = write_policy(tracking_uri=f"sqlite:///{db}", triggers={"metric_threshold": {"max": 60}},
                          validation={"require_approval": True, "approval_ttl": "7d"})  # as awaiting_template
    subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
    try:
        cli = forked_cli.ForkedCli(forked_cli.drop_permission_override if os.geteuid() == 0 else None)
    except subprocess.SubprocessError as exc:  # root that may not drop its capabilities: modes cannot hold
        pytest.skip(f"cannot run without root's permission override: {exc}")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}

    def dump() -> list[str]:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return [*conn.iterdump(), *_listing(folder)]

    before = dump()
    try:
        for args in (["status"], ["history"], ["check", "--as-of", "2011-06-02"], ["compare", "--as-of", "2011-06-02"],
                     ["doctor"], ["monitor", "--no-log", "--to", "2011-06-30", "--out", str(tmp_path / "monitor")]):
            done = cli.run([*args, "--config", str(policy), "--json"], cwd=tmp_path, env=env)
            assert done.returncode == 0, (args, done.stderr[-3000:])
            assert json.loads(done.stdout) and "Traceback" not in done.stderr
        history = json.loads(cli.run(["history", "--config", str(policy), "--json"], cwd=tmp_path, env=env).stdout)
        assert history[0]["outcome"] == "awaiting_approval"
        for args in (["doctor", "--repair"], ["monitor", "--to", "2011-06-30", "--out", str(tmp_path / "monitor")],
                     ["reject", "2", "--reason", "x"]):
            done = cli.run([*args, "--config", str(policy)], cwd=tmp_path, env=env)
            assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].endswith("fix its permissions"), (
                args, done.stderr[-3000:])
        assert dump() == before
    finally:
        cli.close()
        subprocess.run(["chmod", "-R", "u+w", str(folder)], check=True)
