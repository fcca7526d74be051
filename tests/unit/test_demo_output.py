"""`make demo`'s output: the story on the terminal, the training child's output (both streams) in its log."""

from __future__ import annotations

import subprocess
import sys

from mlflow_retrain import demo
from mlflow_retrain.adapters.streams import output_into


def test_the_training_output_goes_to_the_log_not_the_story(tmp_path, capfd):
    child = "import sys; print('v2 table'); print('INFO mlflow.projects: run succeeded', file=sys.stderr)"
    with (tmp_path / "train.log").open("w") as log, output_into(log):
        subprocess.run([sys.executable, "-c", child], check=True)
        print("warning from the cycle", file=sys.stderr)
    print("[ 1/3] cycle as of 2012-11-04")
    out, err = capfd.readouterr()
    logged = (tmp_path / "train.log").read_text()
    assert "v2 table" in logged and "run succeeded" in logged and "warning from the cycle" in logged
    assert out == "[ 1/3] cycle as of 2012-11-04\n" and err == ""


def test_the_closing_hint_names_the_tools_where_they_are(tmp_path, monkeypatch):
    tools = tmp_path / ".venv" / "bin"
    tools.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(tools / "python"))
    monkeypatch.chdir(tmp_path)
    assert demo._bin() == ".venv/bin/"  # `make demo`'s venv: `.venv/bin/mlflow ui ...`, not a bare `mlflow`
    monkeypatch.chdir(tmp_path.parent)
    assert demo._bin() == f"{tmp_path.name}/.venv/bin/"
