"""Over HTTP: a real `mlflow server` subprocess, the deployment CI jobs share.

The lease rests on "creating a registered model that exists fails"; these tests check that holds
through the REST API too, and that a whole cycle (training, reports, audit run) works with the
artifacts proxied through the server.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys

import inprocess_cli
import mlflow
from mlflow.tracking import MlflowClient
from test_registry import _take  # spawned children import it by this name too

from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.adapters.registry import Registry


def _cli(*args: str) -> inprocess_cli.Done:
    return inprocess_cli.run(args)


def test_two_cycles_over_http_one_trains_and_promotes_with_artifacts_on_the_server(server, write_policy):
    path = str(write_policy(triggers={"metric_threshold": {"max": 60}}))
    boot = _cli("train", "--config", path, "--as-of", "2011-04-30", "--json")
    assert boot.returncode == 0, boot.stderr
    cmd = [sys.executable, "-m", "mlflow_retrain.cli", "cycle", "--config", path, "--as-of", "2011-05-31",
           "--retrain-via", "inprocess", "--json"]
    procs = [subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(300), *p.communicate()) for p in procs]
    assert sorted(code for code, _, _ in results) == [0, 3], results
    # MLflow prints "View run ... at: URL" on stdout with a server store; stdout must stay pure JSON
    winner = next(json.loads(out) for code, out, _ in results if code == 0)
    assert winner["outcome"] == "promoted"
    assert "another cycle holds the lease" in next(err for code, _, err in results if code == 3)

    registry = Registry(load_config(path))
    assert [(v.version, v.stage) for v in registry.versions()] == [("2", "Production"), ("1", "Archived")]
    assert registry.get("2").tags[T.DECISION] == "promoted" and registry.lease_state() is None
    # the audit run's artifacts went through the server's proxy, not to a local path
    run = MlflowClient().get_run(winner["cycle_run_id"])
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert any(server.artifacts.rglob("decision.json"))
    decision = json.loads(open(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                                   artifact_path="decision.json")).read())
    assert decision["promotion"]["promote"]
    status = _cli("status", "--config", path, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["production"]["version"] == "2", status.stdout


def test_exactly_one_of_many_concurrent_takers_gets_the_lease_over_http(server, write_policy):
    path = str(write_policy(model_name="bikes-lease"))
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_take, args=(server.uri, path, barrier, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    outcomes = sorted(queue.get(timeout=5)[0] for _ in procs)
    assert outcomes == ["held", "held", "held", "won"]
