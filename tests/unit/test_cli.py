"""The command line's own surface: version, help with the exit codes, one line per user error."""

from __future__ import annotations

from click.testing import CliRunner

from mlflow_retrain.cli import cli


def test_version_and_help_document_the_exit_codes():
    out = CliRunner().invoke(cli, ["--version"])
    assert out.exit_code == 0 and out.output.startswith("mlflow-retrain ")
    out = CliRunner().invoke(cli, ["--help"])
    assert out.exit_code == 0
    for code in ("0  success", "2  user error", "3  another cycle holds the lease", "4  monitoring found downtime"):
        assert code in out.output
