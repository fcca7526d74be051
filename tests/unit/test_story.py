"""The UI's story, derived from tags alone: the gate on a version's page, Production's history on the model's."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from mlflow_retrain.base import tags as T
from mlflow_retrain.adapters.registry import story
from mlflow_retrain.adapters.registry.versions import VersionInfo, version_markdown
from mlflow_retrain.decide import PromotionDecision
from mlflow_retrain.loop.report import CycleReport
from mlflow_retrain.loop.events import cycle_evidence

EVIDENCE = {"metric": "mae", "candidate": 44.71, "production": 85.2, "production_version": "1",
            "holdout_window": "2011-05-24..2011-05-31", "holdout_digest": "d1g3st", "run_id": "run9",
            "experiment_id": "3", "reports": ["reports/data_drift.html", "reports/model_quality.html"]}


def version(number: str, stage: str = "Archived", **tags: str) -> VersionInfo:
    return VersionInfo(number, stage, (), f"train{number}", "", datetime(2024, 1, int(number), tzinfo=UTC),
                       tags)


def test_a_versions_page_shows_the_gate_table_the_hash_and_links_to_the_run_and_reports():
    v2 = version("2", "Production", **{T.DECISION: T.PROMOTED, T.EVIDENCE: json.dumps(EVIDENCE)})
    text = version_markdown(v2)
    assert "**Gate on the holdout** `2011-05-24..2011-05-31` (rows hashed to `d1g3st`)" in text
    assert "| candidate v2&emsp; | 44.71 |" in text and "| Production v1&emsp; | 85.2 |" in text  # padded cells
    assert "[`run9`](#/experiments/3/runs/run9?workflowType=machine_learning)" in text
    assert "[data drift](#/experiments/3/runs/run9/artifactPath/reports/data_drift.html?workflowType=machine_learning)" in text
    assert "[model quality](#/experiments/3/runs/run9/artifactPath/reports/model_quality.html?workflowType=machine_learning)" in text
    assert text.index("Gate on the holdout") < text.index("_Written by mlflow-retrain")


def test_no_evidence_or_a_broken_tag_shows_no_gate():
    assert story.gate_markdown({}, "2") == [] and story.gate_markdown({T.EVIDENCE: "{not json"}, "2") == []
    first = story.gate_markdown({T.EVIDENCE: json.dumps({**EVIDENCE, "production_version": None, "reports": []})}, "1")
    assert "| Production | none yet |" in first and "no Evidently report this cycle" in "\n".join(first)


def test_production_history_is_newest_promotion_first_with_why_and_where_now():
    v1 = version("1", **{T.PROMOTED_AT: "2011-04-30T00:00:00", T.PROMOTED_WALL: "2024-01-01T00:00:00",
                         T.TRIGGER: "bootstrap", T.REASON: "no Production version", T.ARCHIVED_AT: "2011-05-31"})
    v2 = version("2", **{T.PROMOTED_AT: "2011-05-31T00:00:00", T.PROMOTED_WALL: "2024-01-02T00:00:00",
                         T.TRIGGER: "metric_threshold", T.REASON: "mae 71.2 > max 60 | x",
                         T.EVIDENCE: json.dumps(EVIDENCE), T.ROLLED_BACK_WALL: "2024-01-03"})
    v3 = version("3", **{T.DECISION: T.REJECTED})
    v1_again = version("1", "Production", **{**v1.tags, T.PROMOTED_WALL: "2024-01-03T00:00:00",
                                             T.DECISION_REASON: "rollback: v2 under-predicts"})
    lines = story.history_markdown("bikes", [v3, v2, v1_again])
    assert lines[0] == "### Production history (last 2 of 2, newest first)"
    rows = lines[4:]
    assert rows[0].startswith("| [v1](#/models/bikes/versions/1?workflowType=machine_learning) | `2011-04-30T00:00:00` | by hand, rollback: v2")
    assert rows[0].endswith("| **in Production** |")
    assert "`metric_threshold`: mae 71.2 > max 60 \\| x (gate: mae 44.71 vs 85.2)" in rows[1]
    assert rows[1].endswith("| rolled back |")
    assert story.history_markdown("bikes", [v3])[-1] == "_No version has been promoted yet._"
    assert len(story.history_markdown("bikes", [v1, v2], limit=1)) == 5


def test_the_models_description_keeps_what_a_person_wrote():
    block = ["### Production history", "row"]
    fresh = story.model_description("", block)
    assert fresh == "\n".join([story.BEGIN, *block, story.END])
    mine = story.model_description("Owned by the pricing team.", block)
    assert mine.startswith("Owned by the pricing team.\n\n" + story.BEGIN)
    again = story.model_description(mine + "\n\nMore notes.", ["### Production history", "new row"])
    assert again.startswith("Owned by the pricing team.") and again.endswith("More notes.")
    assert "new row" in again and "\nrow" not in again and again.count(story.BEGIN) == 1


def test_a_cycles_evidence_tag_is_plain_json_the_versions_page_reads():
    """The `retrain.evidence` tag a cycle writes, made from its report: the keys in their order, a score
    that is not a number written as null (JSON has no NaN), and the page drawn from it."""
    report = CycleReport("bikes", "2011-05-31T00:00:00", False, outcome="rejected", production_version="1",
                         cycle_run_id="run9", reports=["reports/data_drift.html"])
    report.candidate_version, report.holdout_window, report.holdout_digest = "2", "2011-05-24..2011-05-31", "d1g3st"
    report.promotion = PromotionDecision(False, ["absolute gate"], "mae", float("nan"), 85.2, 90.0, None)
    tag = cycle_evidence(report, "3").to_json()
    assert tag == ('{"metric": "mae", "candidate": null, "production": 85.2, "production_version": "1", '
                   '"holdout_window": "2011-05-24..2011-05-31", "holdout_digest": "d1g3st", "run_id": "run9", '
                   '"experiment_id": "3", "reports": ["reports/data_drift.html"]}')
    page = story.gate_markdown({T.EVIDENCE: tag}, "2")
    assert "| candidate v2 | - |" in page and "| Production v1 | 85.2 |" in page
    assert "[data drift](#/experiments/3/runs/run9/artifactPath/reports/data_drift.html?workflowType=machine_learning)" in page[-1]
    report.promotion = None
    assert '"candidate": null, "production": null' in cycle_evidence(report, "3").to_json()


def test_the_record_is_kept_in_a_comment_of_the_description_not_tags():
    """A tag would show each value raw in the versions list: the description keeps the record, out of
    sight, reads it back whole (a `--` in a value cannot end the comment early), and a rewrite keeps
    the text before it; a description of a store before (the evidence alone) reads as its evidence."""
    evidence = json.dumps({**EVIDENCE, "holdout_window": "2024-01-01--x -->"})
    record = {T.EVIDENCE: evidence, T.DECISION_REASON: "a -- b", T.ARCHIVED_AT: "2024-01-02"}
    block = story.record_block(record)
    assert block.startswith("<!-- ") and block.endswith(" -->") and block.count("-->") == 1
    described = story.with_record("v2: Promoted\n\n| a | b |\n", record)
    assert story.record_in(described) == record and json.loads(story.record_in(described)[T.EVIDENCE]) == json.loads(evidence)
    assert story.with_record(described, {T.AS_OF: "x"}).startswith("v2: Promoted\n\n| a | b |\n<!-- retrain.record ")
    assert story.record_in("v2: Promoted, written before the block") == {} and story.record_block({}) == ""
    full = story.with_record("x" * 4990, record)  # within the registry's 5,000 characters, the record whole
    assert len(full) <= story.DESCRIPTION_LIMIT and story.record_in(full) == record
    old = "v2: Promoted\n<!-- retrain.evidence " + evidence.replace("--", "-\\u002d") + " -->"
    assert json.loads(story.record_in(old)[T.EVIDENCE]) == json.loads(evidence)


def test_no_value_is_rewritten_a_later_one_is_appended_and_read_as_the_newest():
    """`tags.appended`: the same value is skipped, a pending decision takes its verdict in place (it
    held none), any other change goes under the next `<key>.<n>`; `tags.newest` reads the highest."""
    have = {T.DECISION: T.PENDING, T.ARCHIVED_AT: "2024-01-02", f"{T.HAND_MOVE}.1": "{}"}
    assert T.appended(have, T.ARCHIVED_AT, "2024-01-02") is None
    assert T.appended(have, T.DECISION, T.REJECTED) == T.DECISION and T.appended(have, T.REASON, "r") == T.REASON
    assert T.appended(have, T.ARCHIVED_AT, "2024-02-01") == f"{T.ARCHIVED_AT}.2"
    have = {T.DECISION: T.REJECTED, f"{T.DECISION}.2": T.PROMOTED, f"{T.DECISION}.10": T.PENDING,
            f"{T.HAND_MOVE}.1": "{}", f"{T.HAND_MOVE}.2": "{}"}
    read = T.newest(have)
    assert read[T.DECISION] == T.PENDING and read[f"{T.DECISION}.2"] == T.PROMOTED and T.HAND_MOVE not in read
    assert T.appended(read, T.DECISION, T.PROMOTED) == f"{T.DECISION}.11"  # a pending after a verdict keeps it
