"""A first model that fails the absolute gate, on generated load data (not the bike data), real sqlite.

There is no Production to fall back on, so the cycle says so plainly (outcome, reason, CLI, the
run's name) and the version gets a final verdict at once: archived, `rejected` with the gate's
reason. The next cycle starts again with a new first model; a later one that passes is promoted,
and the rejected ones keep their verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from load_policy import write_load_policy
from mlflow.tracking import MlflowClient
from synthetic import energy_load

from mlflow_retrain.base import tags as T
from mlflow_retrain.cli import cli
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.adapters.registry import Registry, utcnow
from mlflow_retrain.adapters.registry.repair import examine
from mlflow_retrain.loop.training import train


def load_policy(folder: Path, max_metric: float) -> Path:
    return write_load_policy(folder, energy_load("2022-01-01", "2022-06-30"), validation={"max_metric": max_metric})


def cycle(policy: Path, as_of: str, *extra: str) -> tuple[dict, str]:
    out = CliRunner().invoke(cli, ["cycle", "--config", str(policy), "--as-of", as_of, "--retrain-via", "inprocess",
                                   *extra])
    assert out.exit_code == 0, out.output
    return (json.loads(out.stdout), "") if "--json" in extra else ({}, out.stdout)


def test_a_first_model_failing_the_absolute_gate_is_rejected_for_good(store, tmp_path):
    policy = load_policy(tmp_path, max_metric=1.0)  # no model of this load comes within 1 MW
    config = load_config(policy)

    report, _ = cycle(policy, "2022-04-30", "--json")
    assert report["outcome"] == "rejected" and report["candidate_version"] == "1"
    assert report["production_version"] is None
    assert "first model failed the absolute gate" in report["reason"] and "no version is in Production" in \
        report["reason"]
    registry = Registry(config)
    v1 = registry.get("1")
    assert v1.stage == "Archived" and registry.production() is None and registry.staging() is None
    assert v1.tags[T.DECISION] == T.REJECTED and "absolute gate" in v1.tags[T.DECISION_REASON]
    assert v1.tags[T.ARCHIVED_AT] == "2022-04-30T00:00:00" and v1.tags[T.TRIGGER] == T.BOOTSTRAP
    run = MlflowClient().get_run(report["cycle_run_id"])
    assert run.data.tags["outcome"] == "rejected"
    assert "first model failed the absolute gate" in run.data.tags["mlflow.runName"]
    assert run.data.metrics["holdout_candidate_mae"] > 1.0
    assert examine(registry, utcnow()).healthy
    # it says what to change: the features (a factory, pass_timestamp), or the limit and its key, with a
    # naive forecast's error on the same holdout for scale; and reads as true ("is not below the limit 1")
    naive = run.data.metrics["holdout_naive_mae"]
    assert 1.0 < naive == report["naive"] and f"scores mae {naive:.4g} on the same holdout" in report["reason"]
    assert "is not below the limit 1 (validation.max_metric)" in report["reason"]
    assert "training.pass_timestamp" in report["reason"] and "set the limit validation.max_metric" in report["reason"]
    assert "what to change" in v1.tags[T.DECISION_REASON] and "< max" not in report["reason"]
    shown = CliRunner().invoke(cli, ["status", "--config", str(policy)])
    assert "no version in Production: the first model v1 was rejected" in shown.stdout, shown.output
    assert "  what to change: give the model features" in shown.stdout

    # the next cycle bootstraps again on newer data, in plain words on the command line
    _, printed = cycle(policy, "2022-05-31")
    assert "outcome: rejected" in printed and "first model failed the absolute gate" in printed
    registry = Registry(config)
    assert [(v.version, v.stage, v.tags[T.DECISION]) for v in registry.versions()] == [
        ("2", "Archived", T.REJECTED), ("1", "Archived", T.REJECTED)]
    assert examine(registry, utcnow()).healthy

    # a first model that passes is promoted; the rejected ones keep their verdict
    lenient = load_policy(tmp_path, max_metric=500.0)
    promoted, _ = cycle(lenient, "2022-06-30", "--json")
    assert promoted["outcome"] == "promoted" and promoted["candidate_version"] == "3"
    # recorded like any judged candidate: the gate's verdict in the output, its numbers and the policy's
    # settings in the cycle's run (the bootstrap's run had none)
    assert promoted["promotion"]["reasons"][0].startswith("absolute gate: candidate mae") and \
        "is below the limit 500" in promoted["promotion"]["reasons"][0]
    run = MlflowClient().get_run(promoted["cycle_run_id"]).data
    assert {"holdout_candidate_mae", "holdout_naive_mae"} <= set(run.metrics), run.metrics
    assert run.params["validation.max_metric"] == "500.0" and run.params["metric"] == "mae"
    assert run.params["holdout_window"] == promoted["holdout_window"]
    assert "### Gate on the holdout" in run.tags["mlflow.note.content"]
    registry = Registry(config)
    assert [(v.version, v.stage, v.tags[T.DECISION]) for v in registry.versions()] == [
        ("3", "Production", T.PROMOTED), ("2", "Archived", T.REJECTED), ("1", "Archived", T.REJECTED)]
    assert examine(registry, utcnow()).healthy


def test_a_failed_first_model_left_pending_by_hand_is_rejected_by_the_next_cycle(store, tmp_path):
    """`train` outside a cycle leaves a first model that failed the gate pending in Staging (or a cycle
    killed before judging it does): the next cycle judges it with the same plain verdict."""
    config = load_config(load_policy(tmp_path, max_metric=1.0))
    left = train(config, as_of="2022-04-30")
    assert left.stage == "Staging" and Registry(config).get("1").tags[T.DECISION] == T.PENDING

    report = run_cycle(config, as_of="2022-04-30", via="inprocess")
    assert report.outcome == "rejected" and report.candidate_version == "1" and report.first_model_rejected
    assert "first model failed the absolute gate" in report.reason
    v1 = Registry(config).get("1")
    assert v1.stage == "Archived" and v1.tags[T.DECISION] == T.REJECTED
    assert examine(Registry(config), utcnow()).healthy
