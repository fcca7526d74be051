""""The same holdout" as evidence: a cycle's `holdout_digest` equals the digest of the holdout dataset
its candidate's training run logged, so the two runs can be matched on the rows the gate judged.

The bike data carries columns the policy does not use (casual, registered): the digests agree only
because both sides hash the same columns in the same order (`models.dataset_columns`).
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.adapters.registry import Registry


def logged_digest(run_id: str, context: str) -> str:
    """The digest of the dataset a run logged as input for `context` (training or holdout)."""
    (digest,) = [d.dataset.digest for d in MlflowClient().get_run(run_id).inputs.dataset_inputs
                 if any(t.key == "mlflow.data.context" and t.value == context for t in d.tags)]
    return digest


def test_a_cycles_holdout_digest_is_its_candidates_training_holdout_digest(prod_store, write_policy):
    config = load_config(write_policy())
    report = run_cycle(config, as_of="2011-05-31", force=True, reason="pin the holdout", via="inprocess")
    candidate = Registry(config).get(report.candidate_version)
    audit = MlflowClient().get_run(report.cycle_run_id).data.params
    assert audit["holdout_digest"] == report.holdout_digest == logged_digest(candidate.run_id, "holdout")
    assert logged_digest(candidate.run_id, "training") != report.holdout_digest
