"""States a person (or a script, or another version of the tool) writes into the registry by hand, on a
real sqlite store with `MlflowClient` exactly as the MLflow UI would: a corrupt `retrain.intent`, and
the `production` alias or the Production stage moved onto a version nobody approved.

`doctor` reports each, with no traceback; `doctor --repair` and the next `cycle` set a corrupt intent
aside (kept as an appended tag) and converge; a hand move is undone, the last audited Production
restored, and every `retrain.*` tag written before is still there, byte for byte: only new keys.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import inprocess_cli
import pytest
from mlflow.tracking import MlflowClient

from mlflow_retrain.adapters.registry import story
from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.signoff import sign_off

QUIET = {"metric_threshold": {"max": 500}}
APPROVAL = {"require_approval": True, "approval_ttl": "7d"}  # as in tests/conftest.py's awaiting_template
CYCLE = ["--as-of", "2011-05-31", "--retrain-via", "inprocess"]


def _cli(*args: str) -> inprocess_cli.Done:
    done = inprocess_cli.run(args)
    assert "Traceback" not in done.stdout + done.stderr, done
    return done


def _doctor(path: Path, *extra: str) -> tuple[int, dict]:
    done = _cli("doctor", "--config", str(path), "--json", *extra)
    return done.returncode, json.loads(done.stdout)


def _audit(client: MlflowClient) -> dict[str, dict[str, str]]:
    """Every version's retrain.* values as written: its tags and its description's record (`<key>.<n>` apart)."""
    return {str(mv.version): {k: v for k, v in {**story.record_in(mv.description), **mv.tags}.items()
                              if k.startswith("retrain.")}
            for mv in client.search_model_versions("name = 'bikes'")}


def _appended_only(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> dict[str, set[str]]:
    """Asserts no tag written before changed or went; returns the new keys, by version."""
    for version, tags in before.items():
        assert {k: after[version].get(k) for k in tags} == tags, version
    return {v: set(after[v]) - set(before.get(v, {})) for v in after if set(after[v]) - set(before.get(v, {}))}


def _production(client: MlflowClient) -> tuple[str, list[str]]:
    """The `production` alias's version, and the versions whose stage is Production."""
    model = client.get_registered_model("bikes")
    stages = sorted(str(mv.version) for mv in client.search_model_versions("name = 'bikes'")
                    if mv.current_stage == "Production")
    return str(model.aliases.get("production")), stages


@pytest.mark.parametrize("text, then", [
    ("{not json", ["doctor", "--repair"]),
    ('{"action": "promote", "version": "99"}', ["cycle", *CYCLE]),  # valid JSON, not an intent
    (json.dumps({"action": "promote", "version": "99", "previous": None, "when": "2011-05-31T00:00:00",
                 "wall": "2024-01-01T00:00:00+00:00", "tags": {}, "previous_tags": {}, "by": ""}),
     ["cycle", *CYCLE]),  # every field well typed, but no version 99
])
def test_a_corrupt_intent_is_reported_then_set_aside_and_the_loop_goes_on(prod_store, write_policy, text, then):
    path = write_policy(triggers=QUIET)
    client = MlflowClient()
    client.set_registered_model_tag("bikes", T.INTENT, text)
    before = _audit(client)
    code, report = _doctor(path)
    assert code == 4 and not report["healthy"]
    (finding,) = report["findings"]
    assert "retrain.intent is corrupt" in finding["problem"] and finding["repair"] == "set_aside_intent"
    assert client.get_registered_model("bikes").tags[T.INTENT] == text  # doctor alone writes nothing

    done = _cli(*then, "--config", str(path))
    assert done.returncode == 0, done
    tags = client.get_registered_model("bikes").tags
    assert T.INTENT not in tags
    assert tags[f"{T.INTENT}.corrupt.1"] == text  # the bad text kept for a person, never lost
    record = json.loads(tags[f"{T.INTENT}.corrupt.1.record"])
    assert record["by"] and record["wall"] and record["why"]
    code, report = _doctor(path)
    assert code == 0 and report["healthy"], report
    assert report["set_aside"] == [f"{T.INTENT}.corrupt.1"]  # still shown: a person should look at it
    assert _production(client) == ("1", ["1"])
    assert _appended_only(before, _audit(client)) == {}


@pytest.fixture
def rejected_store(store: str, awaiting_template: Path, tmp_path: Path, write_policy) -> Path:
    """v1 in Production (the gate's bootstrap); v2 passed the gate, then a person rejected it: archived."""
    shutil.copy(awaiting_template, tmp_path / "mlflow.db")
    path = write_policy(triggers=QUIET, validation=APPROVAL)
    sign_off(load_config(path), "reject", "2", "looks wrong on the weekend rows", by="ana", as_of="2011-06-01")
    return path


def test_a_rejected_version_moved_into_production_by_hand_is_reported_and_the_audited_one_restored(rejected_store):
    path, client = rejected_store, MlflowClient()
    before = _audit(client)
    assert T.newest(before["2"])[T.DECISION] == T.REJECTED and _production(client) == ("1", ["1"])
    assert before["2"][T.DECISION] == T.AWAITING_APPROVAL  # the verdict appended to it: retrain.decision.2

    # one click in the UI: the alias onto the rejected, archived v2
    client.set_registered_model_alias("bikes", "production", "2")
    code, report = _doctor(path)
    assert code == 4
    problems = " ".join(f["problem"] for f in report["findings"])
    assert "v2" in problems and "rejected" in problems and "by hand" in problems, problems
    assert "without retrain.decision" not in problems  # v2 has one: it says rejected
    code, report = _doctor(path, "--repair")
    assert code == 0 and report["healthy"], report
    assert _production(client) == ("1", ["1"])
    after = _audit(client)
    assert _appended_only(before, after) == {"2": {"retrain.hand_move.1"}}
    moved = json.loads(after["2"]["retrain.hand_move.1"])
    assert moved["found"] == "alias production" and moved["restored"] == "1" and moved["by"]

    # the stage variant: v2 transitioned to Production in the UI (archiving v1's stage), alias left on v1
    client.transition_model_version_stage("bikes", "2", "Production", archive_existing_versions=True)
    code, report = _doctor(path)
    assert code == 4 and any("v2" in f["problem"] and "by hand" in f["problem"] for f in report["findings"]), report
    done = _cli("cycle", "--config", str(path), *CYCLE, "--json")
    assert done.returncode == 0, done
    assert _production(client) == ("1", ["1"])
    assert _appended_only(after, _audit(client)) == {"2": {"retrain.hand_move.2"}}
    assert json.loads(_audit(client)["2"]["retrain.hand_move.2"])["found"] == "stage Production"
    assert _doctor(path)[0] == 0
