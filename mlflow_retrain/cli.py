"""`mlflow-retrain`: the command line. It parses options, calls one function, prints the result.

Exit codes: 0 success (whatever a cycle decided), 2 a user error (bad config, data, model, stage,
unreachable server), 3 the lease is held by another cycle, 4 monitoring found downtime.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Callable, Sequence

import click

from mlflow_retrain.config import Config, load_config
from mlflow_retrain.errors import RetrainError

EXIT_CODES = """\b
Exit codes:
  0  success (whatever the cycle decided)
  2  user error: bad config, data, --as-of, unknown model or stage, unreachable server
  3  another cycle holds the lease on the model
  4  monitoring found downtime (unloadable model, data gap, slow predictions)
"""


class RetrainGroup(click.Group):
    """Turns every RetrainError into one line on stderr and its exit code; bugs still show a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RetrainError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=RetrainGroup, epilog=EXIT_CODES)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def cli(verbose: int) -> None:
    """Keep production models fresh: monitor, retrain, validate, promote, and record why."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "evidently", "git"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def config_option(f: Callable) -> Callable:
    return click.option("-c", "--config", "config_path", default="retrain.yaml", show_default=True,
                        type=click.Path(dir_okay=False), help="The policy file.")(f)


def as_of_option(f: Callable) -> Callable:
    return click.option("--as-of", default=None,
                        help="Treat this time as 'now' (default: the newest timestamp in the data).")(f)


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(f)


def emit(payload: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], str]) -> None:
    click.echo(json.dumps(payload, indent=2, default=str) if as_json else human(payload))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain aligned text table: readable in a terminal and in CI logs."""
    if not rows:
        return "(none)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _load(config_path: str) -> Config:
    return load_config(config_path)


@cli.command(epilog="\b\nExample:\n  mlflow-retrain train --config retrain.yaml --as-of 2011-06-30")
@config_option
@as_of_option
@click.option("--trigger", default="manual", show_default=True, help="Why this retrain happens (tag retrain.trigger).")
@click.option("--reason", default="trained by hand", show_default=True, help="One sentence (tag retrain.reason).")
@click.option("--cycle-run-id", default="", help="The controller cycle that asked for it (set by the controller).")
@json_option
def train(config_path: str, as_of: str | None, trigger: str, reason: str, cycle_run_id: str, as_json: bool) -> None:
    """Fit on the training window, log to MLflow, register a new version.

    The first version (no Production yet) goes to Production if it passes the absolute gate;
    later ones go to Staging for `cycle` / `compare` to validate.
    """
    from mlflow_retrain.train import train as run_train

    result = run_train(_load(config_path), as_of=as_of or None, trigger=trigger, reason=reason,
                       cycle_run_id=cycle_run_id)
    emit(result.to_dict(), as_json, lambda r: table([
        {"version": r["version"], "stage": r["stage"], "train_window": r["train_window"],
         "holdout_window": r["holdout_window"], **{f"holdout_{k}": v for k, v in r["holdout_metrics"].items()},
         "run_id": r["run_id"]}]))


@cli.command(epilog="\b\nExample:\n  mlflow-retrain evaluate --config retrain.yaml --as-of 2012-06-30 --out-dir reports/")
@config_option
@as_of_option
@click.option("--model-uri", default=None, help="Model to score (default: models:/<model_name>/Production).")
@click.option("--out-dir", default=None, type=click.Path(file_okay=False), help="Where to write the HTML reports.")
@click.option("--no-reports", is_flag=True, help="Metrics only; skip the Evidently reports.")
@json_option
def evaluate(config_path: str, as_of: str | None, model_uri: str | None, out_dir: str | None, no_reports: bool,
             as_json: bool) -> None:
    """Score a model on the monitoring window ending at --as-of; log metrics and Evidently reports."""
    from pathlib import Path

    from mlflow_retrain.evaluate import evaluate as run_evaluate
    from mlflow_retrain.tracking import check_tracking

    config = _load(config_path)
    check_tracking()
    result = run_evaluate(config, model_uri=model_uri or None, as_of=as_of or None, with_reports=not no_reports,
                          out_dir=Path(out_dir) if out_dir else None)
    emit(result.to_dict(), as_json, lambda r: table([
        {"version": r["version"], "window": r["window"], "rows": r["rows"], **r["metrics"],
         "drift_share": r.get("drift_share"), "run_id": r["run_id"]}]) + "".join(
        f"\nreport: {p}" for p in r["reports"]))


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="mlflow-retrain")


if __name__ == "__main__":
    main(sys.argv[1:])
