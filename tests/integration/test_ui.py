"""What a reviewer sees in the MLflow UI, read from a real `mlflow server` by headless Chromium.

A cycle promotes v2 and a rollback follows; the run names carry the outcome, the audit run's
description the decision and the gate's numbers, the version's page its trigger and verdict. The
pages are the UI's own rendering (`chromium --dump-dom`), with the helpers `scripts/ui_screenshots.py`
takes its screenshots with. Chromium is Debian's `chromium` (`.ci/run` installs it); without it this
module is skipped with a reason that says so, never passed.
"""

from __future__ import annotations

import html
import importlib.util
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlflow_retrain.base import links
from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.reconcile import controller_experiment
from mlflow_retrain.loop.manual import rollback
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.adapters.notify import run_url
from mlflow_retrain.adapters.registry import Registry
from mlflow_retrain.usecases.audit import LOCAL_UI, status

_spec = importlib.util.spec_from_file_location(
    "ui_screenshots", Path(__file__).resolve().parents[2] / "scripts" / "ui_screenshots.py")
ui = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ui)

needs_chromium = pytest.mark.skipif(
    ui.chromium() is None,
    reason="NOT TESTED: Chromium is not installed, so the MLflow UI pages were not rendered; "
           "run `apt-get install -y chromium` (as .ci/run does)")


def shown(text: str) -> str:
    """Text as it appears in a dumped DOM (`<`, `>` and `&` escaped)."""
    return html.escape(text, quote=False)


@pytest.mark.parametrize("metric, outcome, gate, title", [
    ("mae", "rejected", (61.2, 62.0, ["absolute gate: x (pass)", "relative gate: y (fail)"]),
     "v8 rejected: mae 61.2 < 62 but relative gate failed"),
    ("mae", "rejected", (70.1, 62.0, ["absolute gate: x (pass)", "relative gate: y (fail)"]),
     "v8 rejected: mae 70.1 >= 62"),
    ("r2", "promoted", (0.91, 0.55, ["absolute gate: x (pass)"]), "v8 promoted: r2 0.91 > 0.55"),
    ("mae", "rejected", (130.0, None, ["absolute gate: x (fail)"]),
     "v8 rejected: mae 130 >= max 120 (first model failed the absolute gate, no Production yet)"),
    ("mae", "no_retrain", None, "no retrain: mae 62.1 <= 80"),
    ("r2", "no_retrain", None, "no retrain: r2 0.81 >= 0.7"),
    ("mae", "blocked", None, "no retrain, blocked by cooldown: metric_threshold fired"),
])
def test_a_cycle_run_is_named_after_its_outcome(metric, outcome, gate, title):
    from types import SimpleNamespace

    from mlflow_retrain.loop.report import CycleReport, cycle_title
    from mlflow_retrain.decide import PromotionDecision, RetrainDecision
    from mlflow_retrain.decide.triggers.threshold import metric_threshold
    from mlflow_retrain.decide.verdicts import TriggerResult

    config = SimpleNamespace(higher_is_better=metric == "r2")  # all a name needs of the policy
    report = CycleReport("bikes", "2011-05-31T00:00:00", False, outcome=outcome, metric=metric)
    if gate is not None:
        candidate, baseline, reasons = gate
        report.candidate_version = "8"
        report.promotion = PromotionDecision(outcome == "promoted", reasons, metric, candidate, baseline, 120.0, None)
    elif outcome == "blocked":
        report.decision = RetrainDecision(False, ["metric_threshold"], [], "x; but cooldown", "cooldown")
    else:
        value, limit = (0.81, 0.7) if metric == "r2" else (62.1, 80.0)
        result = metric_threshold(value, metric=metric, higher_is_better=metric == "r2", limit=limit)
        report.decision = RetrainDecision(False, [], [result, TriggerResult(False, "max_age", "young")], "none")
    assert cycle_title(config, report) == title


@needs_chromium
def test_the_ui_explains_each_cycle_and_version(prod_store, write_policy, tmp_path):
    config = load_config(write_policy(triggers={"metric_threshold": {"max": 60}}))
    report = run_cycle(config, as_of="2011-05-31", via="inprocess")
    assert report.outcome == "promoted" and report.candidate_version == "2"
    move = rollback(config, reason="v2 under-predicts the June heat", as_of="2011-06-01")
    client = MlflowClient()

    # the experiments the tool made open in the UI's model-training mode and say what they hold
    controller = client.get_experiment_by_name(controller_experiment(config))
    for experiment, holds in ((controller, "audit trail"), (client.get_experiment_by_name(config.experiment),
                                                           "training runs")):
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development", experiment.name
        assert holds in experiment.tags["mlflow.note.content"], experiment.name
    # only models in the registry's list: the lease the cycle and the rollback took is kept out of it
    registry = Registry(config)
    assert [m.name for m in client.search_registered_models()] == [config.model_name]
    assert registry.lease.objects(f"{config.model_name}.retrain-lease.%")  # (it is there, hidden)

    # names, tags and descriptions, as stored
    cycle = client.get_run(report.cycle_run_id)
    gate = report.promotion
    title = f"v2 promoted: mae {gate.candidate:.4g} < {gate.baseline:.4g}"
    assert cycle.info.run_name == title
    note = cycle.data.tags["mlflow.note.content"]
    v2 = registry.get("2")
    trained_in = client.get_run(v2.run_id).info.experiment_id
    assert f"[`{v2.run_id}`]({links.run(v2.run_id, trained_in)})" in note and "| `metric_threshold`&emsp; | **yes**&emsp; |" in note
    assert client.get_run(v2.run_id).info.run_name == "v2 · metric_threshold · as of 2011-05-31"
    assert client.get_run(move.run_id).info.run_name == "rollback to v1 from v2"
    history = client.get_metric_history(report.cycle_run_id, "monitor_mae")
    assert [p.timestamp for p in history][-1] == 1306800000000  # the last window's end, 2011-05-31, in ms
    stored = client.get_model_version(config.model_name, "2")
    described = stored.description
    # the evidence is no tag (a raw JSON in the versions list) but the description's hidden end; v1,
    # trained outside a cycle, has no empty cycle tag; the first line is plain text
    assert T.EVIDENCE not in stored.tags and T.EVIDENCE in v2.tags and described.rstrip().endswith("-->")
    assert T.CYCLE_RUN_ID not in registry.get("1").tags
    assert described.startswith("v2: Promoted to Production as of 2011-05-31") and "Rolled back" in described
    # the gate's table with the holdout's hash, and links to the audit run and its Evidently reports
    experiment = controller.experiment_id
    assert f"(rows hashed to `{report.holdout_digest}`)" in described
    # (cells end in an em space: MLflow's stylesheet does not pad them, "Production v1" + "68.71" ran together)
    assert f"| candidate v2&emsp; | {gate.candidate:.4g} |" in described
    assert f"| Production v1&emsp; | {gate.baseline:.4g} |" in described
    drift_link = links.run(report.cycle_run_id, experiment, "reports/data_drift.html")
    assert f"[data drift]({drift_link})" in described
    # the registered model's page: Production's history, newest first, rebuilt after the rollback
    history = client.get_registered_model(config.model_name).description
    rows = [line for line in history.splitlines() if line.startswith("| [v")]
    assert rows[0].startswith(f"| [v1]({links.model('bikes', '1')})") and "by hand, rollback: v2 under-predicts" in rows[0]
    assert rows[0].endswith("**in Production** |") and rows[1].startswith("| [v2]") and "rolled back" in rows[1]
    assert "`metric_threshold`" in rows[1] and history.startswith("Managed by mlflow-retrain")
    # every link the tool wrote opens in model-training mode
    notes = [note, described, history, client.get_run(v2.run_id).data.tags["mlflow.note.content"],
             client.get_run(move.run_id).data.tags["mlflow.note.content"]]
    written = {link for text in notes for link in re.findall(r"\]\((#/[^)]*)\)", text)}
    # (each run's with its experiment: the UI's short `#/runs/<id>` redirects without the mode)
    assert len(written) >= 6 and [link for link in written if not link.endswith("?" + links.MODE)
                                  or not link.startswith(("#/experiments/", "#/models/"))] == [], written
    pages = status(config).pages  # what `status` (and the demo's closing lines) print, for `mlflow ui`

    # and as the UI renders them, each link opened in a fresh browser profile
    with ui.serve(tmp_path / "mlflow.db") as url:
        def opened(link: str) -> str:
            return ui.dump_dom(link.replace(LOCAL_UI, url) if link.startswith("http") else f"{url}/{link}")

        run_page = opened(run_url(url, experiment, report.cycle_run_id))  # a notification's link (`notify.run_url`)
        version_page = opened(links.model(config.model_name, "2"))  # the cycle's link to its candidate
        training_page = opened(links.run(v2.run_id, trained_in))  # the version's link to its training run
        runs_page = opened(pages["cycles"])
        model_page = opened(pages["model"])
        report_page = opened(drift_link)
        models_page = opened(f"{url}/#/models")
    for page, text in ((run_page, title), (version_page, "v2: Promoted to Production"), (runs_page, title),
                       (training_page, "v2 · metric_threshold · as of 2011-05-31"), (model_page, "Production history"),
                       (report_page, "data_drift.html")):
        assert shown(text) in page and in_training_mode(page), (text, visible(page)[:3000])
    # the registered models list (MLflow's own `#/models`, which keeps the browser's mode: no link of ours)
    assert f">{config.model_name}<" in models_page and "Registered Models" in models_page
    for text in ("Cycle as of", "Candidate", v2.run_id, "holdout_candidate_mae", "holdout_production_mae",
                 "monitor_mae"):
        assert text in run_page, text
    assert f'href="#/experiments/{trained_in}/runs/{v2.run_id}' in run_page  # the link to the training run survives
    assert shown(v2.tags[T.REASON]) in version_page  # the trigger's reason, with its numbers
    for text in ("v2: Promoted to Production", "metric_threshold", "relative gate", "Baseline:", "v1",
                 "v2 · metric_threshold · as of 2011-05-31", "Rolled back"):
        assert shown(text) in version_page, text
    assert shown("rollback to v1 from v2") in runs_page
    for text in ("Gate on the holdout", report.holdout_digest, "candidate v2", "Production v1", "data drift",
                 "model quality", report.cycle_run_id):
        assert shown(text) in version_page, text
    assert f'href="{drift_link}"' in version_page.replace("&amp;", "&")
    for text in ("Production history", "by hand, rollback: v2 under-predicts the June heat", "in Production",
                 "rolled back", "metric_threshold"):
        assert shown(text) in model_page, text
    assert "mlflow-retrain: Production history" not in model_page.split("<body", 1)[-1].replace("<!--", "")
    # Markdown tables render as tables; no raw `**` nor the evidence's JSON anywhere, the versions list included
    assert "<td>candidate v2\u2003</td>" in version_page and "<th>version\u2003</th>" in model_page
    for page in (version_page, model_page, run_page):
        assert "**" not in visible(page) and "retrain.evidence" not in visible(page)
    assert "retrain-lease" not in models_page and "retrain-lease" not in model_page
    # the versions list: a few short `retrain.*` tags per row, the decision among them (the rest is the
    # description's hidden record; v2 carried 12 before, cut to a few characters each)
    rows = [visible(row) for row in re.findall(r'role="row".*?(?=role="row"|$)', model_page.split("<body", 1)[-1],
                                               flags=re.S)[1:]]
    shown_tags = [re.findall(r"(retrain\.[a-z_.0-9]+) :", row) for row in rows]
    assert [re.search(r"Version (\d+)", row).group(1) for row in rows] == ["2", "1"], rows
    assert all(2 <= len(t) <= 5 for t in shown_tags), shown_tags
    assert "retrain.decision : promoted" in rows[0] and "retrain.as_of : 2011-05-31" in rows[0]
    assert set(stored.tags) <= set(T.SHOWN) and "retrain.reason" not in rows[0]
    assert "reports/data_drift.html" in report_page  # the artifact viewer opens on the report


def visible(page: str) -> str:
    """A dumped page's text as a person reads it (no markup, styles or scripts)."""
    body = re.sub(r"<(style|script)\b.*?</\1>", " ", page.split("<body", 1)[-1], flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def in_training_mode(page: str) -> bool:
    """Whether the UI shows a page in its model-training mode: the sidebar links the model registry, and
    nothing of the GenAI side (its overview's "Detect Issues", the AI Gateway) is there."""
    text = visible(page)
    return "Model registry" in text and "Detect Issues" not in text and "AI Gateway" not in text
