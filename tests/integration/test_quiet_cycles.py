"""Cycles on data of other shapes than the bike data print no RuntimeWarning (issue 17).

Generated load data with what real tables have: a feature constant everywhere (a site id), a flag
that is one value in most windows, and a sparse end where a monitoring window holds one row and
the next none. A cycle writing Evidently's reports on those windows, `check` and `monitor` are run
as a user runs them, with every RuntimeWarning shown (`python -W always::RuntimeWarning`): a NaN
that is the right answer (the correlation of a constant column, the spread of one row) must not
reach the user's terminal as a warning.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from load_policy import write_load_policy
from synthetic import energy_load

from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.cycle import run_cycle


def odd_shapes(folder: Path) -> Path:
    frame = energy_load("2022-01-01", "2022-04-13").assign(site=7, flag=0)
    frame.loc[frame.index[-30:], "flag"] = 1
    stamp = frame["timestamp"]
    kept = frame[(stamp < "2022-04-08") | (stamp == "2022-04-12 10:00:00")]
    return write_load_policy(folder, kept, training={"window": "30d", "holdout": "3d"},
                             monitoring={"window": "2d", "reports": "always"},
                             triggers={"metric_threshold": {"max": 1}, "data_drift": {"max_drift_share": 0.5}})


def shown(policy: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-W", "always::RuntimeWarning", "-m", "mlflow_retrain.cli", *args,
                           "--config", str(policy)], cwd=policy.parent, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_a_cycle_check_and_monitor_on_constant_and_one_row_windows_print_no_runtime_warning(store, tmp_path):
    policy = odd_shapes(tmp_path)
    run_cycle(load_config(policy), as_of="2022-03-31", via="inprocess")  # Production to monitor
    printed = {command: shown(policy, *args) for command, args in {
        # the newest window holds one row, the one before none; the holdout is that one row
        "cycle": ("cycle", "--retrain-via", "inprocess"),
        "check": ("check",),
        "monitor": ("monitor", "--out", str(tmp_path / "monitor")),
    }.items()}
    assert {command: text for command, text in printed.items() if "RuntimeWarning" in text} == {}
