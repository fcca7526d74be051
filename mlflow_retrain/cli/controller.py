"""The controller's commands: `train`, `evaluate`, `cycle`, `check` and `compare`."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

import click

from mlflow_retrain.decide.words import DAY, moment, period, unit_for
from mlflow_retrain.cli.group import EXIT_CODES, as_of_option, cli, config_option, emit, json_option, load, load_with_data, print_now, table


@cli.command(epilog="\b\nExample:\n  mlflow-retrain train --config retrain.yaml --as-of 2011-06-30")
@config_option
@as_of_option
@click.option("--trigger", default="manual", show_default=True, help="Why this retrain happens (tag retrain.trigger).")
@click.option("--reason", default="trained by hand", show_default=True, help="One sentence (tag retrain.reason).")
@click.option("--cycle-run-id", default="", help="The controller cycle that asked for it (set by the controller).")
@click.option("--refit-of", default="", help="Fit through --as-of, holdout included, as the refit of this validated "
                                             "run (set by the controller: training.refit_on_pass).")
@json_option
def train(config_path: str, as_of: str | None, trigger: str, reason: str, cycle_run_id: str, refit_of: str,
          as_json: bool) -> None:
    """Fit on the training window, log to MLflow, register a new version.

    The first version (no Production yet) goes to Production if it passes the absolute gate;
    later ones go to Staging for `cycle` / `compare` to validate.
    """
    from mlflow_retrain.loop.training import train as run_train

    result = run_train(load(config_path), as_of=as_of or None, trigger=trigger, reason=reason,
                       cycle_run_id=cycle_run_id, refit_of=refit_of)
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

    from mlflow_retrain.loop.evaluate import evaluate as run_evaluate
    from mlflow_retrain.adapters.tracking import check_tracking

    config = load(config_path)
    check_tracking()
    result = run_evaluate(config, model_uri=model_uri or None, as_of=as_of or None, with_reports=not no_reports,
                          out_dir=Path(out_dir) if out_dir else None)
    emit(result.to_dict(), as_json, lambda r: table([
        {"version": r["version"], "window": r["window"], "rows": r["rows"], **r["metrics"],
         "drift_share": r.get("drift_share"), "run_id": r["run_id"]}]) + "".join(
        f"\nreport: {p}" for p in r["reports"]))


def _cycle_human(r: dict[str, Any], unit: str = DAY) -> str:
    """A cycle's report for people: its times in the policy's words (`decide.words`), the JSON keeps ISO."""
    lines = [f"outcome: {r['outcome']}  (model {r['model_name']}, as of {moment(datetime.fromisoformat(r['as_of']), unit)}, "
             f"Production was v{r['production_version'] or '-'})"]
    if r["monitoring"]:
        lines += ["", "monitoring", table([{**w, "window": period(w["window"], unit)} for w in r["monitoring"]])]
    if r["retrain"] and r["retrain"]["results"]:
        lines += ["", "triggers", table([{"trigger": t["kind"], "fired": t["fired"], "reason": t["reason"]}
                                         for t in r["retrain"]["results"]])]
    if r["promotion"]:
        lines += ["", "validation gate", *(f"  {x}" for x in r["promotion"]["reasons"])]
    if r["candidate_version"]:
        lines.append(f"candidate: v{r['candidate_version']}")
    lines += ["", f"reason: {r['reason']}"]
    if r.get("approval") and r["approval"].get("ignored"):
        lines.append(f"note: {r['approval']['reasons'][0]}")
    if r.get("stale"):
        lines.append(f"data gap: {r['stale']}")
    if r.get("data"):
        lines.append(f"data: {r['data']['summary']}")
    lines += [f"warning: {w}" for w in r.get("warnings", ())]
    if r["cycle_run_id"]:
        lines.append(f"audit run: {r['cycle_run_id']}")
    return "\n".join(lines)


@cli.command(epilog="""\b
Examples:
  mlflow-retrain cycle --config retrain.yaml
  mlflow-retrain cycle --force --reason "new pricing launched" --summary-md "$GITHUB_STEP_SUMMARY"
""" + EXIT_CODES)
@config_option
@as_of_option
@click.option("--force", is_flag=True, help="Retrain now whatever the triggers say (needs --reason).")
@click.option("--event", default=None, metavar="SOURCE",
              help="Retrain now because another system asked (e.g. repository_dispatch); trigger `event`, "
                   "needs --reason.")
@click.option("--reason", default=None, help="Why a forced retrain happens; recorded on the version.")
@click.option("--dry-run", is_flag=True, help="Decide and print, write nothing (same as `check`).")
@click.option("--bootstrap", is_flag=True,
              help="Start a new registered model even though cycles of this policy finished in the store before.")
@click.option("--retrain-via", type=click.Choice(["project", "inprocess"]), default="project", show_default=True,
              help="Train through the MLproject `train` entry point, or in this process.")
@click.option("--summary-md", type=click.Path(dir_okay=False), default=None,
              help="Append a Markdown summary of the decision (e.g. $GITHUB_STEP_SUMMARY).")
@json_option
def cycle(config_path: str, as_of: str | None, force: bool, event: str | None, reason: str | None, dry_run: bool,
          bootstrap: bool, retrain_via: str, summary_md: str | None, as_json: bool) -> None:
    """One controller cycle: monitor Production, check triggers, retrain, validate, promote or reject."""
    config, data = load_with_data(config_path)
    from mlflow_retrain.loop.cycle import run_cycle

    def show(report: Any) -> None:  # before the notifications are delivered: a person need not wait for them
        if summary_md:
            with open(summary_md, "a", encoding="utf-8") as out:
                out.write(report.to_markdown())
        emit(report.to_dict(), as_json, partial(_cycle_human, unit=unit_for(config.monitoring.window)))
        print_now()

    run_cycle(config, as_of=as_of, force=force, reason=reason, event=event, dry_run=dry_run, via=retrain_via,
              data=data, bootstrap=bootstrap, on_report=show)


@cli.command(epilog="""\b
Examples:
  mlflow-retrain replay --config retrain.yaml
  mlflow-retrain replay --from 2011-05-01 --every 7d --retrain-via inprocess
""" + EXIT_CODES)
@config_option
@click.option("--from", "start", default=None,
              help="First cycle, the first model (default: a training window and a holdout after the first row).")
@click.option("--to", "end", default=None, help="Last cycle (default: the newest labelled row).")
@click.option("--every", default=None, help="Step between cycles, e.g. 1d or 12h (default: monitoring.window).")
@click.option("--retrain-via", type=click.Choice(["project", "inprocess"]), default="project", show_default=True,
              help="Train through the MLproject `train` entry point, or in this process.")
@json_option
def replay(config_path: str, start: str | None, end: str | None, every: str | None, retrain_via: str,
           as_json: bool) -> None:
    """Replay the data's history into the store: one real cycle per step, oldest first, as cycles run on a
    schedule would have (versions, audit runs, reports). `backtest` replays in memory instead."""
    import sys

    from mlflow_retrain.policy.section import parse_span
    from mlflow_retrain.usecases.history import history_steps, replay_cycles, step_line

    config, data = load_with_data(config_path)
    span = parse_span(every, "--every") if every else config.monitoring.window
    steps = history_steps(config, data, start, end, span)
    reports = replay_cycles(config, data, steps, via=retrain_via, log=sys.stderr, each=lambda i, report: click.echo(
        step_line(f"{i + 1}/{len(steps)}", "cycle", report), err=True))
    rows = [{"as_of": r.as_of, "outcome": r.outcome, "production_version": r.production_version,
             "candidate_version": r.candidate_version, "reason": r.reason, "cycle_run_id": r.cycle_run_id}
            for r in reports]
    unit = unit_for(config.monitoring.window)
    emit({"model_name": config.model_name, "cycles": rows}, as_json, lambda p: table(
        [{"as_of": moment(datetime.fromisoformat(r["as_of"]), unit), "outcome": r["outcome"],
          "production": r["production_version"], "candidate": r["candidate_version"]} for r in p["cycles"]]))


@cli.command(epilog="\b\nExample:\n  mlflow-retrain check --config retrain.yaml --as-of 2012-06-30")
@config_option
@as_of_option
@json_option
def check(config_path: str, as_of: str | None, as_json: bool) -> None:
    """What a cycle would decide now and why; writes nothing."""
    config, data = load_with_data(config_path)
    from mlflow_retrain.loop.cycle import run_cycle

    emit(run_cycle(config, as_of=as_of, dry_run=True, data=data).to_dict(), as_json,
         partial(_cycle_human, unit=unit_for(config.monitoring.window)))



@cli.command(epilog="\b\nExample:\n  mlflow-retrain compare --config retrain.yaml")
@config_option
@as_of_option
@json_option
def compare(config_path: str, as_of: str | None, as_json: bool) -> None:
    """Score Staging and Production on the same holdout and apply the gate; moves nothing."""
    from mlflow_retrain.loop.validate import compare as run_compare
    from mlflow_retrain.adapters.data import LabelledData, Window
    from mlflow_retrain.base.errors import RegistryError
    from mlflow_retrain.adapters.registry import Registry
    from mlflow_retrain.adapters.tracking import check_tracking

    config = load(config_path)
    data = LabelledData.load(config)
    stamp = data.resolve_as_of(as_of)
    check_tracking(write=False)
    registry = Registry(config)
    registry.require()
    staging = registry.staging()
    if staging is None:
        raise RegistryError(f"model {config.model_name!r} has no Staging version to compare")
    decision, evidence = run_compare(config, data, Window.ending(stamp, config.training.holdout), staging,
                                     registry.production())
    payload = {"staging": staging.version, **evidence, "decision": decision.to_dict()}

    def human(r: dict[str, Any]) -> str:
        names = sorted(r["candidate"])
        rows = [{"metric": m, "staging": r["candidate"][m],
                 "production": (r["production"] or {}).get(m)} for m in names]
        return "\n".join([f"holdout {r['holdout_window']} ({r['holdout_rows']} rows, digest {r['holdout_digest']})",
                          table(rows), "", f"would promote: {r['decision']['promote']}",
                          *(f"  {x}" for x in r["decision"]["reasons"])])

    emit(payload, as_json, human)


