"""The command line's own surface: version, help with the exit codes, one line per user error; a command
run in a process that goes on leaves the next one what a new process would start with."""

from __future__ import annotations

import time
from pathlib import Path

from click.testing import CliRunner

from mlflow_retrain.cli import cli

BIKE = Path(__file__).resolve().parents[2] / "data" / "bike_sharing_hourly.csv"


def test_version_and_help_document_the_exit_codes():
    out = CliRunner().invoke(cli, ["--version"])
    assert out.exit_code == 0 and out.output.startswith("mlflow-retrain ")
    out = CliRunner().invoke(cli, ["--help"])
    assert out.exit_code == 0
    for code in ("0  success", "2  user error", "3  another cycle holds the lease", "4  monitoring found downtime"):
        assert code in out.output


def test_a_command_starts_without_the_outage_an_earlier_one_in_the_process_met(tmp_path):
    """A server that stopped answering one command leaves the next one its full timeouts and retries,
    as a process of its own would have (the CLI run in-process: tests, a notebook)."""
    from mlflow_retrain.adapters import tracking

    with tracking._lock:
        tracking._outage.since, tracking._outage.what = time.monotonic(), "connection refused on GET /x"
    assert tracking.outage() == "connection refused on GET /x"
    data = tmp_path / "bikes.csv"
    data.write_text("".join(BIKE.read_text().splitlines(keepends=True)[:3000]))
    out = CliRunner().invoke(cli, ["init", "--data", str(data), "--target", "cnt", "--out", str(tmp_path / "r.yaml")])
    assert out.exit_code == 0, out.output
    assert tracking.outage() is None
