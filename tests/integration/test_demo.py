"""`make demo` as a user runs it (`python -m mlflow_retrain.demo` in a folder holding the policy and
the bundled data), on a short replay: the first candidate is trained through `mlflow run` of the
packaged MLproject, the later ones in the demo's process with the same fit, and the story is the one
the demo told when every candidate went through `mlflow run` (recorded from d30f817 with
`RECORD_SAME_OUTPUT=1` on that code), plus the lines that say so."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient
from test_same_output import masked, same

from mlflow_retrain.demo import FIRST_VIA_PROJECT

REPO = Path(__file__).resolve().parents[2]
SHORT = ["--start", "2012-09-01", "--every", "20W"]  # one replayed cycle (the bootstrap), then the forced retrain


def story(stdout: str, folder: Path) -> str:
    """What the demo printed, its folder, interpreter and measured seconds masked."""
    text = masked(stdout.replace(f"{Path(sys.executable).parent}/", "<bin>/"), folder)
    return re.sub(r"\(\d+ s\)", "(<seconds> s)", text)


def test_the_demo_runs_mlflow_run_once_then_the_same_fit_in_process(tmp_path: Path) -> None:
    shutil.copy(REPO / "retrain.yaml", tmp_path)
    shutil.copytree(REPO / "data", tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID",
                                                            "MLFLOW_EXPERIMENT_ID")}
    done = subprocess.run([sys.executable, "-m", "mlflow_retrain.demo", *SHORT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert FIRST_VIA_PROJECT in done.stdout
    same("demo.txt", story(done.stdout.replace(FIRST_VIA_PROJECT, ""), tmp_path))

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = {str(v.version): client.get_run(v.run_id) for v in client.search_model_versions("name = 'bike-demand'")}
    assert sorted(runs) == ["1", "2"]  # v1 the bootstrap, v2 the forced retrain on v1's window
    assert runs["1"].data.tags.get("mlflow.project.entryPoint") == "train"  # through `mlflow run`
    assert "mlflow.project.entryPoint" not in runs["2"].data.tags  # in the demo's process
    # the same fit either way: the same window gives the same holdout error
    assert runs["1"].data.metrics["holdout_mae"] == runs["2"].data.metrics["holdout_mae"]
    logged = (tmp_path / "demo-out" / "train.log").read_text()
    assert "Running command 'python -m mlflow_retrain.cli train" in logged and runs["1"].info.run_id in logged
