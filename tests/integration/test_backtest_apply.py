"""`backtest --apply` on data that is not the bike data: the policy it writes decides, in the next
backtest, exactly as the row it came from did, and nothing else in the file moves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_backtest_schedules import daily_sales, write

from mlflow_retrain.cli import cli
from mlflow_retrain.policy.load import load_config

COMMENTED = "# the shop's sales model: keep this comment\n"


def backtest(policy: Path, *args: str, stdin: str | None = None) -> tuple[int, dict, str]:
    run = CliRunner().invoke(cli, ["backtest", "--config", str(policy), "--from", "2021-02-15", "--to", "2021-04-15",
                                   "--every", "1d", "--folds", "0", "--out", str(policy.parent / "out"), "--json",
                                   *args], input=stdin)
    out = json.loads(run.stdout[run.stdout.index("{"):]) if run.exit_code == 0 else {}
    return run.exit_code, out, run.output


def row(result: dict, policy: str) -> tuple[int, float, int]:
    found = next(r for r in result["policies"] if r["policy"] == policy)
    return found["retrains"], found["mean_metric"], found["rejected"]


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = write(tmp_path, daily_sales(days=160))
    path.write_text(COMMENTED + path.read_text())
    return path


def outside_triggers(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith(("triggers:", "  "))]


@pytest.mark.parametrize("chosen", ["threshold-4", "every-10d"])
def test_the_applied_policy_replays_as_its_row(store, policy, chosen):
    before = policy.read_text()
    code, first, output = backtest(policy, "--thresholds", "4,8", "--schedule", "10d",
                                   "--policy", f"{chosen},configured", "--apply", chosen, "--yes")
    assert code == 0, output
    assert first["applied"]["written"] and first["applied"]["policy"] == chosen
    assert "+triggers:" in first["applied"]["diff"]
    after = policy.read_text()
    assert after.startswith(COMMENTED) and "backtest --apply" in after
    assert outside_triggers(after) == outside_triggers(before)

    code, second, output = backtest(policy, "--policy", "configured", "--thresholds", "4")
    assert code == 0, output
    assert row(second, "configured") == row(first, chosen)
    assert row(first, chosen)[0] >= 2  # it did retrain: the equality is not two empty histories


def test_the_recommendation_by_default_and_no_write_without_a_yes(store, policy):
    before = policy.read_text()
    code, _, output = backtest(policy, "--thresholds", "4,8", "--policy", "never,threshold-4", "--apply")
    assert code == 2 and "--yes" in output and policy.read_text() == before  # refused before the run
    assert not (policy.parent / "out").exists()

    code, result, output = backtest(policy, "--thresholds", "4,8", "--policy", "never,threshold-4", "--apply", "--yes")
    assert code == 0, output
    assert result["applied"]["policy"] == result["recommended"]
    assert load_config(policy).triggers.configured or result["recommended"] == "never"


def test_a_searched_training_value_is_applied_and_replays_as_its_row(store, policy):
    """--search: the policies under other training windows and holdouts; --apply writes the chosen
    variant's triggers and training keys, and the next backtest's configured row equals its row."""
    code, first, output = backtest(policy, "--schedule", "10d", "--policy", "never,every-10d", "--search",
                                   "window,holdout,gate", "--fit-budget", "40", "--apply", "every-10d/holdout-2d", "--yes")
    assert code == 0, output
    search = first["search"]
    assert search["values"] == ["window all (104d: all the history there was)", "window 15d", "holdout 2d",
                                "holdout 1d", "gate not-worse"] and search["policies"] == ["never", "every-10d"]
    rows = {r["policy"]: r for r in first["policies"]}
    assert rows["every-10d/window-all"]["variant"].startswith("window all") and rows["every-10d"]["variant"] is None
    assert row(first, "every-10d/holdout-2d") != row(first, "every-10d")  # another holdout: other models
    assert 0 < search["fits"] <= len(search["values"]) * (2 + rows["every-10d"]["retrains"]) and first["applied"]["written"]
    applied = load_config(policy)
    assert applied.training.holdout.days == 2 and applied.training.window.days == 30
    assert policy.read_text().startswith(COMMENTED) and "holdout: 2d  # mlflow-retrain backtest --apply" in policy.read_text()
    code, second, output = backtest(policy, "--policy", "configured")
    assert code == 0, output
    assert row(second, "configured") == row(first, "every-10d/holdout-2d")


@pytest.mark.parametrize("args, message", [(["--apply", "threshold-99"], "no such policy"),
                                           (["--apply", "configured", "--yes", "--folds", "-1"], "--folds"),
                                           (["--search", "window,colour"], "--search 'colour': choose from window"),
                                           (["--search", "window", "--fit-budget", "0"], "--fit-budget")])
def test_bad_apply_input_is_one_line_and_writes_nothing(store, policy, args, message):
    before = policy.read_text()
    code, _, output = backtest(policy, "--thresholds", "4,8", *args)
    assert code == 2 and message in output and "Traceback" not in output
    assert policy.read_text() == before and not (policy.parent / "out").exists()
