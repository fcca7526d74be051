"""The bottom rings load without the rings above them (issue 24): the measures without the decision core
or the policy, the decision core (every trigger and gate check found) without the policy, and the policy's
parser, reading a policy that names every section, without the adapters, the loop or an entry point.
`lint-imports` (.importlinter) checks the same of the source, imports inside functions included."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys

def loaded(*prefixes):
    return sorted(m for m in sys.modules if m.startswith(prefixes))

import mlflow_retrain.measure.columns, mlflow_retrain.measure.drift, mlflow_retrain.measure.names
assert not loaded("mlflow_retrain.decide", "mlflow_retrain.policy", "mlflow_retrain.adapters"), loaded("mlflow_retrain")

import mlflow_retrain.decide, mlflow_retrain.decide.plugins as plugins
plugins.installed(plugins.TRIGGERS), plugins.installed(plugins.GATES)
assert not loaded("mlflow_retrain.policy", "mlflow_retrain.adapters"), loaded("mlflow_retrain")
assert not loaded("mlflow.", "evidently", "yaml", "requests"), loaded("mlflow.", "evidently", "yaml", "requests")

from mlflow_retrain.policy.parse import parse_config
from mlflow_retrain.policy.load import load_config
parse_config({"model_name": "m", "data": {"path": "d.csv", "timestamp": "t", "target": "y", "features": ["a", "b"]},
              "training": {"project": {"uri": "."}},
              "monitoring": {"drift": {"exclude": ["b"]}},
              "triggers": {"metric_threshold": {"max": 3}, "data_drift": {}, "max_age": "30d"},
              "validation": {"significance": {}},
              "notify": [{"url": "https://hooks.example.com/x"}]}, "p.yaml")
above = ("mlflow_retrain.adapters", "mlflow_retrain.loop", "mlflow_retrain.usecases", "mlflow_retrain.serve",
         "mlflow_retrain.fleet", "mlflow_retrain.api", "mlflow_retrain.cli", "mlflow_retrain.demo")
assert not loaded(*above), loaded(*above)
"""


def test_each_bottom_ring_loads_and_works_without_the_rings_above_it():
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
