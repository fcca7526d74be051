"""A person signs off (`validation.require_approval`), on a real sqlite store with real cycles.

Every test starts from a copy of `awaiting_template`: v1 in Production, v2 passed the gate as of
2011-05-31 and awaits approval in Staging. Approve or reject through the CLI (carried out at once),
the `retrain.approval` tag set as the MLflow UI sets it (carried out by the next cycle), the TTL
running out in data time, a forced retrain superseding the wait, and bad input changing nothing.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from mlflow_retrain.base import tags as T
from mlflow_retrain.cli import cli
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.reconcile import controller_experiment
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.adapters.registry import Registry, utcnow
from mlflow_retrain.adapters.registry.repair import examine

DEGRADED = {"metric_threshold": {"max": 60}}
APPROVAL = {"require_approval": True, "approval_ttl": "7d"}  # as in tests/conftest.py's awaiting_template


@pytest.fixture
def waiting_store(store: str, awaiting_template: Path, tmp_path: Path) -> str:
    shutil.copy(awaiting_template, tmp_path / "mlflow.db")
    return store


def where(config) -> dict[str, str]:
    """version -> stage, plus the aliases, as one comparable dict."""
    registry = Registry(config)
    model = MlflowClient().get_registered_model(config.model_name)
    return {**{v.version: v.stage for v in registry.versions()}, **{a: str(v) for a, v in model.aliases.items()}}


def healthy(config) -> bool:
    return examine(Registry(config), utcnow()).healthy


def runs_of_kind(config, kind: str) -> list:
    import mlflow

    experiment = mlflow.get_experiment_by_name(controller_experiment(config))
    return [r for r in mlflow.search_runs([experiment.experiment_id], output_format="list")
            if r.data.tags.get(T.RUN_KIND) == kind]


def sign(policy: Path, *args: str):
    return CliRunner().invoke(cli, [*args, "--config", str(policy), "--json"])


def test_status_says_since_when_a_candidate_waits_until_when_and_how_to_sign_off(waiting_store, write_policy):
    policy = write_policy(validation=APPROVAL, triggers=DEGRADED)
    out = CliRunner().invoke(cli, ["status", "--config", str(policy), "--json"])
    awaiting = json.loads(out.stdout)["awaiting"]
    assert (awaiting["version"], awaiting["since"], awaiting["expires"]) == ("2", "2011-05-31T00:00:00",
                                                                             "2011-06-07T00:00:00")
    assert awaiting["approve"] == f'mlflow-retrain approve 2 --config {policy.resolve()} --reason "..."'
    assert "retrain.approval=approved (or rejected) on bikes version 2" in awaiting["tag"]
    human = CliRunner().invoke(cli, ["status", "--config", str(policy)]).stdout
    assert "v2 awaits approval since 2011-05-31, expires as of 2011-06-07" in human  # a daily policy: dates
    assert f"mlflow-retrain reject 2 --config {policy.resolve()}" in human


def test_a_candidate_that_passed_waits_and_approve_promotes_it_at_once(waiting_store, write_policy):
    policy = write_policy(validation=APPROVAL, triggers=DEGRADED)
    config = load_config(policy)
    assert where(config) == {"1": "Production", "2": "Staging", "production": "1", "staging": "2"}
    v2 = Registry(config).get("2").tags
    assert v2[T.DECISION] == T.AWAITING_APPROVAL and v2[T.AWAITING_SINCE] == "2011-05-31T00:00:00"
    assert "absolute gate" in v2[T.DECISION_REASON] and v2[T.BASELINE_VERSION] == "1" and healthy(config)
    (cycle,) = runs_of_kind(config, "cycle")
    assert cycle.data.tags["mlflow.runName"].startswith("v2 awaits approval: mae ")
    assert cycle.data.tags["outcome"] == T.AWAITING_APPROVAL

    out = sign(policy, "approve", "2", "--reason", "checked the weekends", "--by", "alice", "--as-of", "2011-06-02")
    assert out.exit_code == 0, out.output
    done = json.loads(out.stdout)
    assert (done["outcome"], done["previous"], done["by"], done["as_of"]) == ("promoted", "1", "alice",
                                                                                "2011-06-02T00:00:00")
    assert where(config) == {"1": "Archived", "2": "Production", "production": "2"}
    registry = Registry(config)
    v2, v1 = registry.get("2").tags, registry.get("1").tags
    assert v2[T.DECISION] == T.PROMOTED and v2[T.DECISION_REASON].startswith("approved by alice: checked the weekends; ")
    assert "absolute gate" in v2[T.DECISION_REASON]  # the gate's numbers stay with the person's verdict
    assert (v2[T.APPROVAL], v2[T.APPROVAL_BY], v2[T.APPROVAL_REASON], v2[T.APPROVAL_AT]) == (
        "approved", "alice", "checked the weekends", "2011-06-02T00:00:00")
    assert v2[T.PROMOTED_AT] == "2011-06-02T00:00:00" and v2[T.PROMOTED_WALL] and v2[T.APPROVAL_WALL]
    assert v1[T.ARCHIVED_AT] == "2011-06-02T00:00:00" and healthy(config)
    assert T.INTENT not in registry.model_tags()
    (run,) = runs_of_kind(config, "approve")
    assert run.info.run_id == done["run_id"] and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.runName"] == "v2 approved by alice, replacing v1"
    assert run.data.tags["outcome"] == "promoted" and run.data.tags["candidate_version"] == "2"
    assert "Sign-off:** approved by alice" in MlflowClient().get_model_version("bikes", "2").description
    # the next cycle sees nothing waiting: triggers as usual, against the new Production
    assert run_cycle(config, as_of="2011-06-02", dry_run=True).approval is None


def test_a_sign_off_keeps_the_history_in_order_and_says_when_it_comes_after_the_ttl(waiting_store, write_policy):
    policy = write_policy(validation=APPROVAL, triggers=DEGRADED)
    early = sign(policy, "approve", "2", "--reason", "x", "--as-of", "2011-05-20")
    assert early.exit_code == 2 and early.stdout == ""
    assert ("approve as of 2011-05-20 comes before the registry's history, which reaches "
            "2011-05-31 (v2 awaiting_since): pass --as-of 2011-05-31 or later") in early.stderr
    assert Registry(load_config(policy)).get("2").tags[T.DECISION] == T.AWAITING_APPROVAL  # nothing written
    late = sign(policy, "approve", "2", "--reason", "ok", "--as-of", "2011-06-20")
    assert late.exit_code == 0, late.output
    assert json.loads(late.stdout)["note"].startswith("approve as of 2011-06-20 is 13d after v2's "
                                                      "approval_ttl ran out (2011-06-07)")  # daily: dates
    run = MlflowClient().get_run(json.loads(late.stdout)["run_id"])
    assert "**Note:** approve as of 2011-06-20 is 13d after" in run.data.tags["mlflow.note.content"]
    assert "Signed off as of `2011-06-20` on" in run.data.tags["mlflow.note.content"]


def test_reject_archives_the_candidate_with_the_persons_reason(waiting_store, write_policy):
    policy = write_policy(validation=APPROVAL, triggers=DEGRADED)
    config = load_config(policy)
    out = sign(policy, "reject", "2", "--reason", "over-predicts the holiday peak", "--by", "bob", "--as-of",
               "2011-06-02")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["outcome"] == "rejected"
    assert where(config) == {"1": "Production", "2": "Archived", "production": "1"}
    v2 = Registry(config).get("2").tags
    assert v2[T.DECISION] == T.REJECTED and v2[T.ARCHIVED_AT] == "2011-06-02T00:00:00"
    assert v2[T.DECISION_REASON].startswith("rejected by bob: over-predicts the holiday peak; ")
    assert runs_of_kind(config, "reject")[0].data.tags["mlflow.runName"] == "v2 rejected by bob" and healthy(config)


def test_the_tag_set_in_the_ui_is_carried_out_by_the_next_cycle(waiting_store, write_policy):
    config = load_config(write_policy(validation=APPROVAL, triggers=DEGRADED))
    MlflowClient().set_model_version_tag("bikes", "2", T.APPROVAL, "approved")  # what the UI's tag editor does
    before = where(config)
    check = run_cycle(config, as_of="2011-06-03", dry_run=True)
    assert check.outcome == "would_promote" and where(config) == before  # check says so and writes nothing
    report = run_cycle(config, as_of="2011-06-03", via="inprocess")
    assert report.outcome == "promoted" and report.candidate_version == "2" and report.archived_versions == ["1"]
    assert where(config) == {"1": "Archived", "2": "Production", "production": "2"}
    v2 = Registry(config).get("2").tags
    assert v2[T.DECISION] == T.PROMOTED and v2[T.PROMOTED_AT] == "2011-06-03T00:00:00"
    assert "no name recorded" in v2[T.DECISION_REASON] and healthy(config)
    run = MlflowClient().get_run(report.cycle_run_id)
    assert run.data.tags["mlflow.runName"].startswith("v2 promoted: approved through the retrain.approval tag")
    decided = json.loads(Path(MlflowClient().download_artifacts(report.cycle_run_id, "decision.json")).read_text())
    assert decided["approval"]["action"] == "promote"
    # carrying out the approval, the cycle still monitored Production and evaluated its triggers
    assert decided["monitoring"][0]["rows"] == 168 and decided["retrain"]["results"][0]["kind"] == "metric_threshold"


def test_an_unknown_ui_value_is_said_once_everywhere_and_a_ui_approval_records_when(waiting_store, write_policy):
    policy = write_policy(validation=APPROVAL, triggers=DEGRADED)
    client = MlflowClient()
    client.set_model_version_tag("bikes", "2", T.APPROVAL, "yes")  # a person's guess at the value
    out = CliRunner().invoke(cli, ["cycle", "--config", str(policy), "--as-of", "2011-06-02", "--retrain-via",
                                   "inprocess"])
    assert out.exit_code == 0, out.output
    assert "note: retrain.approval='yes' is neither approved nor rejected: ignored" in out.stdout
    config = load_config(policy)
    v2 = Registry(config).get("2").tags
    assert v2["retrain.approval_ignored"].startswith("retrain.approval='yes' ignored as of 2011-06-02")
    (cycle, *_) = sorted(runs_of_kind(config, "cycle"), key=lambda r: -r.info.start_time)
    assert "**Note:** retrain.approval='yes' is neither approved nor rejected" in cycle.data.tags["mlflow.note.content"]
    again = run_cycle(config, as_of="2011-06-03", via="inprocess")
    assert again.approval.ignored == "yes"
    assert [k for k in Registry(config).get("2").tags if k.startswith("retrain.approval_ignored")] == [
        "retrain.approval_ignored"]  # said once, not again each cycle

    client.set_model_version_tag("bikes", "2", T.APPROVAL, "approved")
    done = run_cycle(config, as_of="2011-06-04", via="inprocess")
    assert done.outcome == "promoted"
    v2 = Registry(config).get("2").tags
    assert v2[T.APPROVAL_AT] == "2011-06-04T00:00:00" and v2[T.APPROVAL_WALL]
    assert v2[T.APPROVAL_BY].startswith("not recorded (the retrain.approval tag, set in the MLflow UI")
    assert v2["retrain.approval_ignored"].startswith("retrain.approval='yes'")  # the note stays


def test_while_it_waits_triggers_are_held_then_the_ttl_expires_it(waiting_store, write_policy):
    config = load_config(write_policy(validation=APPROVAL, triggers={"metric_threshold": {"max": 50}}))
    held = run_cycle(config, as_of="2011-06-06", via="inprocess")  # v1's mae 59 > 50: the trigger fires
    assert held.outcome == "blocked" and held.decision.blocked_by == "awaiting_approval"
    assert held.decision.fired == ["metric_threshold"] and held.approval.action == "wait"
    assert "expires as of 2011-06-07 (approval_ttl 7d)" in held.approval.reason  # a daily policy: dates
    assert where(config) == {"1": "Production", "2": "Staging", "production": "1", "staging": "2"}  # no v3
    expired = run_cycle(config, as_of="2011-06-07", via="inprocess")
    assert expired.outcome == "expired" and expired.archived_versions == ["2"]
    assert expired.monitoring and expired.decision.fired == ["metric_threshold"]  # monitored as any cycle
    assert "the next cycle retrains" in expired.decision.reason
    assert where(config) == {"1": "Production", "2": "Archived", "production": "1"}
    v2 = Registry(config).get("2").tags
    assert v2[T.DECISION] == T.EXPIRED and v2[T.ARCHIVED_AT] == "2011-06-07T00:00:00"
    assert "within approval_ttl 7d" in v2[T.DECISION_REASON] and healthy(config)


def test_a_forced_retrain_supersedes_the_waiting_candidate(waiting_store, write_policy):
    config = load_config(write_policy(validation=APPROVAL, triggers=DEGRADED))
    report = run_cycle(config, as_of="2011-06-06", via="inprocess", force=True, reason="new pricing")
    assert report.outcome == "awaiting_approval" and report.candidate_version == "3"
    assert where(config) == {"1": "Production", "2": "Archived", "3": "Staging", "production": "1", "staging": "3"}
    v2 = Registry(config).get("2").tags
    assert v2[T.DECISION] == T.SUPERSEDED and "superseded in Staging by v3" in v2[T.DECISION_REASON]
    assert healthy(config)


def dump(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return list(conn.iterdump())


@pytest.mark.parametrize("args, approval, message", [
    (["approve", "9", "--reason", "x"], True, "model 'bikes' has no version 9"),
    (["approve", "1", "--reason", "x"], True, "v1 does not await approval (it is Production, promoted); v2"),
    (["reject", "2", "--reason", "  "], True, "reject needs --reason"),
    (["approve", "2"], True, "Missing option '--reason'"),
    (["approve", "2", "--reason", "x"], False, "validation.require_approval is off for 'bikes'"),
])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(waiting_store, write_policy, tmp_path, args, approval,
                                                          message):
    policy = write_policy(validation=APPROVAL if approval else {}, triggers=DEGRADED)
    before = dump(tmp_path / "mlflow.db")
    out = CliRunner().invoke(cli, [*args, "--config", str(policy)])
    assert out.exit_code == 2, out.output
    lines = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("store: ")]
    assert message in lines[-1], out.stderr
    assert dump(tmp_path / "mlflow.db") == before  # not even a lease: checked before it is taken


def test_a_first_model_waits_too_and_nothing_serves_until_approved(store, write_policy):
    policy = write_policy(validation=APPROVAL)
    config = load_config(policy)
    report = run_cycle(config, as_of="2011-04-30", via="inprocess")
    assert report.outcome == "awaiting_approval" and report.production_version is None
    assert where(config) == {"1": "Staging", "staging": "1"} and healthy(config)
    out = sign(policy, "approve", "1", "--reason", "first model, checked by hand", "--as-of", "2011-04-30")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["previous"] is None
    assert where(config) == {"1": "Production", "production": "1"} and healthy(config)
