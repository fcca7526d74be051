"""Controller cycles on a real sqlite store: triggers, gate, transitions, cooldown, rollback, lease."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import inprocess_cli
import mlflow
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from mlflow_retrain.base import tags as T
from mlflow_retrain.usecases.audit import history, status
from mlflow_retrain.cli import cli
from mlflow_retrain.cli.controller import _cycle_human
from mlflow_retrain.decide.triggers.threshold import MetricThreshold
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.reconcile import controller_experiment
from mlflow_retrain.loop.manual import rollback
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.adapters.registry import Registry, story, utcnow
from mlflow_retrain.adapters.registry.repair import examine
from mlflow_retrain.loop.training import train



def state(name: str = "bikes") -> list[tuple]:
    client = MlflowClient()
    model = client.get_registered_model(name)
    return [tuple(sorted((k, str(v)) for k, v in model.aliases.items()))] + sorted(
        (v.version, v.current_stage, tuple(sorted(v.tags.items())))
        for v in client.search_model_versions(f"name = '{name}'"))


def assert_invariants(config) -> None:
    """At most one Production version; every version the tool made carries trigger + decision tags."""
    versions = Registry(config).versions()
    assert sum(v.stage == "Production" for v in versions) <= 1
    for v in versions:
        assert v.tags.get(T.TRIGGER) and v.tags.get(T.DECISION), v


@pytest.mark.parametrize("triggers, fired", [
    ({"metric_threshold": {"max": 50}}, ["metric_threshold"]),
    ({"metric_threshold": {"max": 200}}, []),
    ({"metric_trend": {"windows": 3, "max_relative_increase": 0.05, "noise": 0}}, ["metric_trend"]),
    # the same +11% is within the window-to-window noise of those weeks: the default floor holds it
    ({"metric_trend": {"windows": 3, "max_relative_increase": 0.05}}, []),
    ({"metric_trend": {"windows": 3, "max_relative_increase": 5.0}}, []),
    ({"data_drift": {"max_drift_share": 0.5}}, ["data_drift"]),
    ({"data_drift": {"max_drift_share": 0.95}}, []),
    ({"max_age": "20d"}, ["max_age"]),
    ({"max_age": "60d"}, []),
    ({"new_data": {"min_rows": 500}}, ["new_data"]),
    ({"new_data": {"min_rows": 5000}}, []),
])
def test_each_trigger_fires_or_not_and_check_writes_nothing(prod_store, write_policy, triggers, fired):
    config = load_config(write_policy(triggers=triggers))
    before = state()
    # mid-May v1's weekly mae rose 62 -> 56 -> 69 (+11%); by the end of May it has no trend
    report = run_cycle(config, as_of="2011-05-15" if "metric_trend" in triggers else "2011-05-31", dry_run=True)
    assert report.decision.fired == fired
    assert report.outcome == ("would_retrain" if fired else "no_retrain")
    result = next(r for r in report.decision.results if r.kind == next(iter(triggers)))
    assert result.fired == bool(fired) and any(ch.isdigit() for ch in result.reason)
    assert state() == before and mlflow.get_experiment_by_name(controller_experiment(config)) is None


def test_degradation_retrains_validates_promotes_and_audits(prod_store, write_policy):
    config = load_config(write_policy(triggers={"metric_threshold": {"max": 60}}))
    report = run_cycle(config, as_of="2011-05-31", via="inprocess")
    assert report.outcome == "promoted" and report.candidate_version == "2"
    registry = Registry(config)
    assert registry.production().version == "2" and registry.get("1").stage == "Archived"
    assert report.archived_versions == ["1"]
    v2 = registry.get("2").tags
    assert v2[T.TRIGGER] == "metric_threshold" and v2[T.REASON].startswith("mae ") and "> max 60" in v2[T.REASON]
    assert v2[T.DECISION] == "promoted" and v2[T.BASELINE_VERSION] == "1"
    assert v2[T.CYCLE_RUN_ID] == report.cycle_run_id and "absolute gate" in v2[T.DECISION_REASON]
    # the same holdout, pinned by its hash, scored for both
    run = MlflowClient().get_run(report.cycle_run_id)
    assert run.data.params["holdout_digest"] == report.holdout_digest
    assert run.data.metrics["holdout_candidate_mae"] < run.data.metrics["holdout_production_mae"]
    # the audit's holdout_production_mae is the number the gate compared, not a monitoring window's
    assert run.data.metrics["holdout_production_mae"] == pytest.approx(report.promotion.baseline)
    assert MlflowClient().get_metric_history(run.info.run_id, "monitor_mae")
    assert run.data.tags["outcome"] == "promoted"
    decision = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=report.cycle_run_id,
                                                                   artifact_path="decision.json")).read_text())
    assert decision["promotion"]["promote"] and decision["retrain"]["fired"] == ["metric_threshold"]
    artifacts = {a.path for a in MlflowClient().list_artifacts(report.cycle_run_id, "reports")}
    assert artifacts == {"reports/data_drift.html", "reports/model_quality.html"}
    assert Registry(config).model_tags()[T.LAST_CYCLE].startswith(report.cycle_run_id)
    assert_invariants(config)


def test_candidate_failing_the_absolute_gate_is_archived_not_deleted(prod_store, write_policy):
    config = load_config(write_policy(triggers={"metric_threshold": {"max": 60}, "max_age": "20d"},
                                      validation={"max_metric": 10}))
    report = run_cycle(config, as_of="2011-05-31", via="inprocess")
    assert report.outcome == "rejected" and not report.promotion.promote
    assert "absolute gate" in report.promotion.reasons[0] and "(fail)" in report.promotion.reasons[0]
    registry = Registry(config)
    assert registry.production().version == "1" and registry.get("2").stage == "Archived"
    assert registry.get("2").tags[T.DECISION] == "rejected"
    assert_invariants(config)
    # max_age fired at the rejection; the next day it waits one max age after the rejected candidate
    later = run_cycle(config, as_of="2011-06-01", dry_run=True)
    age = next(r for r in later.decision.results if r.kind == "max_age")
    assert not age.fired and "but a candidate trained 1d before was rejected: next due 2011-06-20" in age.reason
    # `check` warns when the threshold is stricter than Production's own error on its training-time holdout
    holdout = MlflowClient().get_run(registry.get("1").run_id).data.metrics["holdout_mae"]
    strict = load_config(write_policy(triggers={"metric_threshold": {"max": 1}}))
    warned = run_cycle(strict, as_of="2011-06-01", dry_run=True)
    assert warned.warnings == [f"trigger metric_threshold: max 1 is below Production's own mae on its training-time "
                               f"holdout ({holdout:.4g}): even a fresh model crosses it, so it fires on most windows; {MetricThreshold.advice}"]
    assert f"warning: {warned.warnings[0]}" in _cycle_human(warned.to_dict())


def test_candidate_not_better_by_the_relative_minimum_is_rejected(prod_store, write_policy):
    config = load_config(write_policy(triggers={"metric_threshold": {"max": 60}},
                                      validation={"min_relative_improvement": 0.9}))
    report = run_cycle(config, as_of="2011-05-31", via="inprocess")
    assert "| metric_threshold | yes | mae" in report.to_markdown()
    assert report.outcome == "rejected" and "(pass)" in report.promotion.reasons[0]
    assert "required (90% of Production) (fail)" in report.promotion.reasons[1]
    assert "90% of Production" in Registry(config).get("2").tags[T.DECISION_REASON]
    assert_invariants(config)


def test_forced_retrain_that_does_not_beat_production_is_rejected(prod_store, write_policy):
    """Retraining on Production's own window gives the same model: no improvement, rejected."""
    config = load_config(write_policy())
    report = run_cycle(config, as_of="2011-04-30", force=True, reason="urgent: pricing change", via="inprocess")
    assert report.decision.fired == ["on_demand"] and report.outcome == "rejected"
    assert "relative gate" in report.promotion.reasons[1] and "(fail)" in report.promotion.reasons[1]
    v2 = Registry(config).get("2").tags
    assert v2[T.TRIGGER] == "on_demand" and "urgent: pricing change" in v2[T.REASON]
    assert_invariants(config)


def test_a_pending_staging_version_is_validated_before_anything_new_is_trained(prod_store, write_policy):
    """A cycle that died after registering its candidate (or a version trained by hand) leaves Staging
    pending; the next cycle reconciles it instead of leaving it undecided forever."""
    config = load_config(write_policy(triggers={"metric_threshold": {"max": 1}}))  # would fire every time
    left = train(config, as_of="2011-06-30", trigger="metric_threshold", reason="mae 90 > max 80",
                 cycle_run_id="0123456789abcdef")  # as its cycle would have, before being killed
    assert Registry(config).get(left.version).tags[T.DECISION] == T.PENDING
    dry = run_cycle(config, as_of="2011-06-30", dry_run=True)
    assert dry.outcome == "would_validate" and "cycle 0123456789abcdef, which ended" in dry.decision.reason

    report = run_cycle(config, as_of="2011-06-30", via="inprocess")
    assert report.outcome in ("promoted", "rejected") and report.candidate_version == left.version
    assert report.promotion.metric == "mae" and report.holdout_digest
    registry = Registry(config)
    assert [v.version for v in registry.versions()] == ["2", "1"]  # validated, nothing new trained
    assert registry.get("2").tags[T.DECISION] == report.outcome
    summary = report.to_markdown()  # what CI's job summary shows: the gate, no empty trigger table
    assert f"**{report.outcome}**" in summary and "| gate | relative gate:" in summary and "| trigger |" not in summary
    assert_invariants(config)
    # the next cycle is an ordinary one again: the trigger fires and a new candidate is trained
    assert run_cycle(config, as_of="2011-07-31", via="inprocess").candidate_version == "3"


def test_cooldown_blocks_an_unforced_retrain_and_records_the_decision(prod_store, write_policy):
    config = load_config(write_policy(triggers={"metric_threshold": {"max": 30}, "cooldown": "60d"}))
    before = state()
    report = run_cycle(config, as_of="2011-05-31", via="inprocess")
    assert report.outcome == "blocked" and report.decision.blocked_by == "cooldown"
    assert "cooldown 60d" in report.reason and state()[1:] == before[1:]
    assert history(config)[0]["outcome"] == "blocked"  # a decision NOT to retrain is recorded too
    forced = run_cycle(config, as_of="2011-05-31", force=True, reason="override", via="inprocess")
    assert forced.candidate_version == "2"


def written_before(config, version: str) -> dict[str, str]:
    """The version as stores before the record wrote it: every `retrain.*` value a tag, the description
    without the record block. Returns its tags."""
    client, info = MlflowClient(), Registry(config).get(version)
    for key, value in info.tags.items():
        client.set_model_version_tag(config.model_name, version, key, value)
    described = client.get_model_version(config.model_name, version).description
    client.update_model_version(config.model_name, version, description=story.with_record(described, {}))
    assert Registry(config).get(version).record == {}
    return dict(client.get_model_version(config.model_name, version).tags)


def test_rollback_returns_to_the_previous_production(prod_store, write_policy):
    """... and appends to what v1 records, written as an older store did (every value a tag): no tag is
    rewritten, readers (the move, doctor, status, history) see the newest of each value."""
    config = load_config(write_policy(triggers={"metric_threshold": {"max": 60}}))
    before = written_before(config, "1")
    assert len(before) >= 7 and Registry(config).get("1").tags == before  # read as it was written
    run_cycle(config, as_of="2011-05-31", via="inprocess")
    move = rollback(config, reason="v2 over-predicts holidays")
    assert (move.version, move.previous) == ("1", "2")
    registry = Registry(config)
    assert registry.production().version == "1" and registry.get("2").stage == "Archived"
    v1 = registry.get("1")
    assert "rollback: v2 over-predicts holidays" in v1.tags[T.DECISION_REASON]
    assert [row["kind"] for row in history(config)][:2] == ["rollback", "cycle"]
    assert_invariants(config)
    # v1's old tags as they were, the move appended to its record: the gate's reason stays beside the person's
    stored = MlflowClient().get_model_version(config.model_name, "1").tags
    assert {k: stored[k] for k in before} == before and set(stored) == set(before)
    assert v1.record[f"{T.DECISION_REASON}.2"] == v1.tags[T.DECISION_REASON] != before[T.DECISION_REASON]
    assert v1.record[f"{T.PROMOTED_AT}.2"] == v1.tags[T.PROMOTED_AT] and T.ARCHIVED_AT in v1.record
    assert examine(registry, utcnow()).healthy and status(config).production["version"] == "1"
    # a version written now carries a few short tags; the rest is its description's record
    assert set(MlflowClient().get_model_version(config.model_name, "2").tags) <= set(T.SHOWN)


def test_cli_status_history_compare_promote(prod_store, write_policy):
    path = str(write_policy())
    config = load_config(path)
    train(config, as_of="2011-06-30", trigger="manual", reason="by hand")
    runner = CliRunner()
    out = runner.invoke(cli, ["compare", "--config", path, "--as-of", "2011-06-30", "--json"])
    assert out.exit_code == 0, out.output
    compared = json.loads(out.output)
    assert compared["staging"] == "2" and compared["production"]["mae"] > compared["candidate"]["mae"]
    out = runner.invoke(cli, ["promote", "2", "--config", path, "--reason", "checked by hand"])
    assert out.exit_code == 0 and "v2 is in Production (was v1)" in out.output
    out = runner.invoke(cli, ["status", "--config", path, "--json"])
    current = json.loads(out.output)
    assert current["production"]["version"] == "2" and current["lease"] is None
    out = runner.invoke(cli, ["history", "--config", path])
    assert "promote" in out.output and "checked by hand" in out.output


@pytest.mark.parametrize("args, message", [
    (["status"], "registered model 'ghost' does not exist"),
    (["cycle", "--as-of", "2030-01-01"], "is outside the data"),
    (["promote", "9", "--reason", "x"], "has no version 9"),
    (["cycle", "--force"], "--force and --event need --reason"),
    (["cycle", "--event", "repository_dispatch"], "--force and --event need --reason"),
    (["cycle", "--event", " ", "--reason", "x"], "--event needs the name of the system"),
])
def test_cli_bad_input_one_line_exit_2_registry_unchanged(prod_store, write_policy, args, message):
    model = "ghost" if args == ["status"] else "bikes"
    path = str(write_policy(model_name=model))
    before, runs = state(), len(mlflow.search_runs(search_all_experiments=True))
    out = CliRunner().invoke(cli, [args[0], "--config", path, *args[1:]])
    assert out.exit_code == 2 and message in out.output and len(out.output.strip().splitlines()) == 1
    assert state() == before and len(mlflow.search_runs(search_all_experiments=True)) == runs  # no audit run either


def test_an_event_from_another_system_is_a_requested_retrain_recorded_as_event(prod_store, write_policy):
    path = str(write_policy(triggers={"metric_threshold": {"max": 500}, "cooldown": "60d"}))
    out = CliRunner().invoke(cli, ["cycle", "--config", path, "--as-of", "2011-05-31", "--event", "repository_dispatch",
                                   "--reason", "labels for May corrected", "--retrain-via", "inprocess", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["retrain"]["fired"] == ["event"] and report["candidate_version"] == "2"  # cooldown does not apply
    tags = Registry(load_config(path)).get("2").tags
    assert tags[T.TRIGGER] == "event" and tags[T.REASON] == "event from repository_dispatch: labels for May corrected"
    assert_invariants(load_config(path))


def test_no_production_and_no_data_is_an_error(store, write_policy, small_data):
    small_data.write_text(small_data.read_text().splitlines()[0] + "\n")
    out = CliRunner().invoke(cli, ["cycle", "--config", str(write_policy())])
    assert out.exit_code == 2 and "holds no rows" in out.output
    assert MlflowClient().search_registered_models() == []


def test_two_cycles_started_together_one_trains_and_promotes(prod_store, write_policy):
    path = str(write_policy(triggers={"metric_threshold": {"max": 60}}))
    env = {**os.environ, "MLFLOW_TRACKING_URI": prod_store}
    cmd = [sys.executable, "-m", "mlflow_retrain.cli", "cycle", "--config", path, "--as-of", "2011-05-31",
           "--retrain-via", "inprocess", "--json"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(300), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 3], results
    winner = next(json.loads(out) for code, out, _ in results if code == 0)
    loser = next(err for code, _, err in results if code == 3)
    assert winner["outcome"] == "promoted" and "another cycle holds the lease" in loser
    config = load_config(path)
    assert [v.version for v in Registry(config).versions()] == ["2", "1"]
    assert_invariants(config)


def test_retrain_through_the_mlproject_train_entry_point(prod_store, write_policy, tmp_path):
    """The default path, from the command line: `cycle --json` stays parseable although the train
    entry point runs as a subprocess that prints its own table. No MLproject beside the policy: the
    one shipped inside the package runs."""
    assert not (tmp_path / "MLproject").exists()
    path = write_policy(triggers={"metric_threshold": {"max": 60}})
    done = inprocess_cli.run(["cycle", "--config", str(path), "--as-of", "2011-05-31", "--json"],
                             env={**os.environ, "MLFLOW_TRACKING_URI": prod_store})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcome"] == "promoted"
    assert "holdout_window" in done.stderr  # the entry point's own table is still shown, on stderr
    config = load_config(path)
    run = MlflowClient().get_run(Registry(config).get("2").run_id)
    assert run.data.tags["mlflow.project.entryPoint"] == "train"
    assert run.data.params["trigger"] == "metric_threshold"
    assert run.data.tags["mlflow.source.name"].replace("#", "/").endswith("mlflow_retrain/project")
