"""Commands one after another in one process (Click's CliRunner) give what separate processes give.

Each command leaves the process as it found it (`mlflow_retrain/cli/edge.py`): MLflow's tracking URI
and active experiment, the environment, `sys.path`, `sys.stdout` / `sys.stderr` and the file
descriptors behind them, the root logger's handlers and the levels and filters a command sets. The
caller here is a notebook's process: its own tracking URI, no logging configured.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import forked_cli
import mlflow
import pytest
from click.testing import CliRunner
from mlflow.tracking import fluent

from mlflow_retrain.cli import cli

# the loggers a command configures: the root, those it quietens, `serve`'s
LOGGERS = ("", "mlflow", "alembic", "urllib3", "evidently", "git", "mlflow_retrain.serve")


def process_state() -> dict[str, Any]:
    """What a command may change for its whole process."""
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    return {
        "tracking_uri": mlflow.get_tracking_uri(),
        "registry_uri": mlflow.get_registry_uri(),
        "experiment": fluent._active_experiment_id,
        "environ": dict(os.environ),
        "sys.path": list(sys.path),
        "streams": (sys.stdout, sys.stderr),
        "fds": [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2)],
        "root handlers": list(root.handlers),
        "levels and filters": [(logger.name, logger.level, list(logger.filters)) for logger in loggers],
        "handler filters": [list(h.filters) for logger in loggers for h in logger.handlers],
        "record factory": logging.getLogRecordFactory(),
    }


def test_a_sequence_of_commands_in_one_process(tmp_path: Path, small_data: Path, store_template: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(store_template, tmp_path / "mlflow.db")  # the default store, beside the policy init writes
    monkeypatch.chdir(tmp_path)
    # the caller's own store, never opened, in MLflow's globals only (its environment variable would
    # be the store of every command, as it is of a child process)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'notebook' / 'mlflow.db'}")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    pytest_handlers, root.handlers = root.handlers, []  # a notebook: no logging set up
    runner = CliRunner()
    before = process_state()
    try:
        def run(*args: str, code: int = 0) -> Any:
            done = runner.invoke(cli, list(args))
            assert done.exit_code == code, done.output
            after = process_state()
            changed = [key for key in before if after[key] != before[key]]
            assert not changed, f"{args[0]} left the process changed: {changed}"
            return done

        made = run("init", "--data", str(small_data), "--target", "cnt", "--model-name", "bikes")
        assert made.stdout.splitlines()[-1] == "next: mlflow-retrain replay --config retrain.yaml"
        cycle = json.loads(run("cycle", "--config", "retrain.yaml", "--as-of", "2011-06-30", "--retrain-via", "inprocess",
                                "--json").stdout)
        assert cycle["outcome"] == "promoted" and cycle["candidate_version"] == "1"
        assert cycle["store"]["tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
        verbose = run("-v", "status", "--config", "retrain.yaml", "--json")  # -v: the root logger at INFO
        status = json.loads(verbose.stdout)
        assert status["production"]["version"] == "1" and status["last_cycle"]
        history = json.loads(run("history", "--config", "retrain.yaml", "--json").stdout)
        assert [row["outcome"] for row in history] == ["promoted"]
        monitor = json.loads(run("monitor", "--config", "retrain.yaml", "--out", "monitor", "--json").stdout)
        assert monitor["windows"] and (tmp_path / "monitor" / "dashboard.html").is_file()
        bad = run("cycle", "--config", "retrain.yaml", "--as-of", "not-a-date", code=2)
        assert bad.stdout == "" and len(bad.stderr.splitlines()) == 1 and bad.stderr.startswith("error: ")
        assert not (tmp_path / "notebook").exists()  # the caller's store was never touched

        # the same command in a process of its own says the same
        alone = forked_cli.run(["status", "--config", "retrain.yaml", "--json"], cwd=tmp_path,
                               env=dict(os.environ))
        assert alone.returncode == 0, alone.stderr
        assert json.loads(alone.stdout) == json.loads(run("status", "--config", "retrain.yaml", "--json").stdout)
    finally:
        root.handlers = pytest_handlers
        mlflow.set_tracking_uri(None)
