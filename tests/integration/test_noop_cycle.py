"""A cycle that changes nothing stays cheap: what it imports and what its audit run carries (issue 15).

Most cycles decide "no retrain". Evidently (with plotly and nltk) costs seconds of imports, and the
drift numbers need Production's training rows downloaded; a no-op cycle needs neither unless its
policy asks: a `data_drift` trigger, or `monitoring.reports: always`. Each cycle here runs as a
user runs it, `mlflow-retrain cycle` in a fresh interpreter, which then lists the modules it
imported. Not a timing test (timing is `benchmarks/bench_noop_cycle.py`): it keeps the imports
from coming back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

# what only drift or reports need: Evidently and what it brings, and our modules over them
HEAVY = ("evidently", "plotly", "nannyml", "nltk", "mlflow_retrain.measure.drift", "mlflow_retrain.adapters.reports")

RUN = """
import json, sys
from mlflow_retrain.cli import main
try:
    main(sys.argv[2:])
finally:
    heavy = json.loads(sys.argv[1])
    print(json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)
"""


def cycle_in_a_process(policy: Path, *args: str) -> tuple[dict, list[str]]:
    """`mlflow-retrain cycle --json` in a new interpreter: its report and the HEAVY modules it imported."""
    done = subprocess.run([sys.executable, "-c", RUN, json.dumps(HEAVY), "cycle", "--config", str(policy), "--json",
                           "--retrain-via", "inprocess", *args], cwd=policy.parent, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), json.loads(done.stderr.strip().splitlines()[-1])


QUIET = {"metric_threshold": {"max": 200}}  # v1's mae on May 2011 is far below: nothing fires
FIRING = {"metric_threshold": {"max": 60}}


@pytest.mark.parametrize("triggers, reports, imported, drift", [
    # the default policy's no-op cycle: no drift trigger, reports on_change
    (QUIET, "on_change", [], False),
    # a drift trigger: drift measured (DriftMeter), but no report is written, so no Evidently
    ({**QUIET, "data_drift": {"max_drift_share": 0.95}}, "on_change", ["mlflow_retrain.measure.drift"], True),
    # reports asked for on every cycle: the drift numbers and Evidently's two reports
    (QUIET, "always", ["evidently", "mlflow_retrain.adapters.reports", "mlflow_retrain.measure.drift"], True),
])
def test_a_no_op_cycle_imports_drift_and_evidently_only_when_its_policy_asks(prod_store, write_policy, triggers,
                                                                              reports, imported, drift):
    policy = write_policy(triggers=triggers, monitoring={"reports": reports})
    report, heavy = cycle_in_a_process(policy, "--as-of", "2011-05-31")
    assert report["outcome"] == "no_retrain" and not report["retrain"]["fired"], report["reason"]
    # plotly and nltk come with Evidently (its business); without Evidently, neither is there
    assert [m for m in heavy if m not in ("plotly", "nltk")] == imported
    assert "evidently" in imported or heavy == imported
    run = MlflowClient().get_run(report["cycle_run_id"]).data
    # what a reviewer reads on every cycle: each trigger's verdict, the window scores, the decision
    assert {"trigger.metric_threshold", "monitor_mae"} <= set(run.metrics) and run.tags["outcome"] == "no_retrain"
    assert ("drift_share" in run.metrics) is drift and (report["drift"] is not None) is drift


def test_a_cycle_that_retrains_measures_drift_and_writes_the_reports_without_a_drift_trigger(prod_store,
                                                                                          write_policy):
    """on_change: the reference is read and Evidently imported once a trigger fired, not before."""
    report, heavy = cycle_in_a_process(write_policy(triggers=FIRING), "--as-of", "2011-05-31")
    assert report["outcome"] == "promoted" and report["retrain"]["fired"] == ["metric_threshold"]
    assert {"evidently", "mlflow_retrain.measure.drift", "mlflow_retrain.adapters.reports"} <= set(heavy)
    assert report["drift"] is not None and "drift_share" in MlflowClient().get_run(report["cycle_run_id"]).data.metrics
    artifacts = {a.path for a in MlflowClient().list_artifacts(report["cycle_run_id"], "reports")}
    assert artifacts == {"reports/data_drift.html", "reports/model_quality.html"}
