"""A policy from data and a look back: `init`, `monitor` and `backtest` (and its `--apply`)."""

from __future__ import annotations

import sys
from typing import Any

import click

from mlflow_retrain.cli.group import EXIT_CODES, cli, cluster_option, config_option, emit, json_option, load, table


@cli.command(epilog="""\b
Examples:
  mlflow-retrain init --data sales.csv.gz --target units
  mlflow-retrain init --data data/ --target churned --timestamp signup_date --task classification --out policy.yaml
""")
@click.option("--data", "data_path", required=True, type=click.Path(),
              help="A CSV (plain or .gz/.bz2/.zip/.xz) or Parquet file, or a folder of them (hive partitions too).")
@click.option("--target", required=True, help="The column to predict.")
@click.option("--timestamp", default=None, help="The time column (default: detected from the data).")
@click.option("--task", type=click.Choice(["regression", "classification"]), default=None,
              help="Default: classification for labels or up to 20 whole values, else regression.")
@click.option("--model-name", default=None, help="Registered model name (default: the data's file or folder name).")
@click.option("--out", default="retrain.yaml", show_default=True, type=click.Path(dir_okay=False),
              help="Where to write the policy file.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--budget", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds of walk-forward fits that calibrate the trigger, gate and training window (0: one "
                   "fit point).")
@json_option
def init(data_path: str, target: str, timestamp: str | None, task: str | None, model_name: str | None, out: str,
         force: bool, budget: float, as_json: bool) -> None:
    """Write a commented policy file derived from the data, and print the command to run next.

    Windows come from the data's span and density; the trigger threshold, the gate and the training
    window from a quick walk-forward of the estimator against a naive baseline (a progress bar on
    stderr); each value's comment says how. `cycle` runs with the file as written.
    """
    from pathlib import Path

    from mlflow_retrain.usecases.init import init as run_init

    result = run_init(Path(data_path), target=target, out=Path(out), timestamp=timestamp, task=task,
                      model_name=model_name, force=force, budget=budget)
    emit(result.to_dict(), as_json, lambda r: "\n".join([
        f"wrote {r['path']}: {r['task']} of {r['target']!r} over {r['timestamp']!r}, "
        f"monitoring every {r['monitoring_window']}, training on {r['training_window']}",
        f"next: {r['next_command']}"]))


@cli.command(epilog="""\b
Examples:
  mlflow-retrain monitor --config retrain.yaml --every 1d --out monitor/
  mlflow-retrain monitor --from 2012-01-01 --to 2012-07-01 --reports
""" + EXIT_CODES)
@config_option
@click.option("--from", "start", default=None, help="First window start (default: the first promotion).")
@click.option("--to", "end", default=None, help="Last window end (default: the newest data).")
@click.option("--every", default=None, help="Window length, e.g. 1d or 12h (default: monitoring.window).")
@click.option("--out", "out_dir", default="monitor", show_default=True, type=click.Path(file_okay=False),
              help="Folder for dashboard.html and monitor.csv.")
@click.option("--reports", is_flag=True, help="Also write Evidently reports for each window where something fired.")
@click.option("--no-log", "no_log", is_flag=True,
              help="Do not log the series as an MLflow run (a store this process may only read).")
@json_option
def monitor(config_path: str, start: str | None, end: str | None, every: str | None, out_dir: str, reports: bool,
            no_log: bool, as_json: bool) -> None:
    """The error over time of whichever model was in Production, drift, and downtime; a dashboard."""
    from pathlib import Path

    from mlflow_retrain.policy.section import parse_span
    from mlflow_retrain.usecases.monitor import raise_if_unhealthy, run_monitor
    from mlflow_retrain.adapters.tracking import check_tracking

    config = load(config_path)
    span = parse_span(every, "--every") if every else None
    check_tracking(write=not no_log)
    result = run_monitor(config, start=start, end=end, every=span, out_dir=Path(out_dir), with_reports=reports,
                         log_run=not no_log)

    def human(r: dict[str, Any]) -> str:
        estimated = ["estimate"] if any(w["estimate"] is not None for w in r["windows"]) else []
        lines = [table(r["windows"][-20:], ["end", "version", "rows", "metric", *estimated, "partial", "drift_share",
                                            "fired", "health"])]
        if len(r["windows"]) > 20:
            lines.insert(0, f"(last 20 of {len(r['windows'])} windows; all in {r['table']})")
        lines += ["", f"dashboard: {r['dashboard']}", f"health: {'ok' if not r['health'] else r['health'][0]}",
                  *(f"warning: {w}" for w in r["warnings"])]
        return "\n".join(lines)

    emit(result.to_dict(), as_json, human)
    if end is None:  # live, not a replay of the past: downtime is news, told to the `notify:` targets
        from mlflow_retrain.adapters.notify import notify
        from mlflow_retrain.usecases.monitor_events import downtime_events

        notify(config, downtime_events(config.model_name, result), run_id=result.run_id)
    raise_if_unhealthy(result)


@cli.command(epilog="""\b
Examples:
  mlflow-retrain backtest --config retrain.yaml --from 2011-05-01 --every 1d --jobs 2
  mlflow-retrain backtest --from 2011-05-01 --policy never,configured,threshold-80 --thresholds 60,80,100
""")
@config_option
@click.option("--from", "start", required=True, help="First step (the bootstrap).")
@click.option("--to", "end", default=None, help="Last step (default: the newest data).")
@click.option("--every", default=None, help="Step between cycles, e.g. 1d (default: monitoring.window).")
@click.option("--policy", "policy_names", default=None, help="Comma-separated policy names (default: all).")
@click.option("--thresholds", default=None, help="Comma-separated values for the threshold sweep.")
@click.option("--schedule", "schedules", default=None,
              help="Comma-separated schedules to compare, e.g. 28d,90d (default: 7 and 30 steps). The "
                   "schedule with the configured policy's retrain count is always added; a schedule named "
                   "here is replayed even when --policy leaves it out.")
@click.option("--tolerance", default=0.05, show_default=True, type=float,
              help="Recommend the cheapest policy whose mean metric is within this fraction of the best "
                   "(for a score: of its distance from 1).")
@click.option("--resolution", default=0.0, show_default=True, type=float,
              help="Differences in mean metric up to this (metric units) are ties; so are differences "
                   "inside a paired bootstrap interval over the windows. Ties go to fewer retrains.")
@click.option("--budget", default=None, help="At most N retrains per 30 days, e.g. 2/30d: the recommendation is "
                                             "the best policy within it.")
@click.option("--retrain-cost", "cost", default=0.0, show_default=True, type=float,
              help="The cost of one retrain in metric units, added to the error (spread over the windows).")
@click.option("--label-delay", "label_delay", default=None,
              help="Labels arrive this long after the features, e.g. 7d (default: monitoring.label_delay); "
                   "each policy is also replayed with labels at once, for the cost of the delay.")
@click.option("--folds", default=4, show_default=True, type=int,
              help="Walk-forward folds: choose on each fold's past, score on the fold (0: in sample only).")
@click.option("--search", "dimensions", default=None,
              help="Also choose these, comma-separated: window (the training window: all history, half), holdout "
                   "(a half and a quarter), gate (each gate kind the installed version knows); the cheapest "
                   "policies are replayed under each value.")
@click.option("--fit-budget", "fit_budget", default=None, type=int,
              help="With --search: about this many fits more in all (default: as many as the policies took).")
@click.option("--jobs", default=1, show_default=True, type=int, help="Cores for fitting.")
@cluster_option
@click.option("--out", "out_dir", default="backtest", show_default=True, type=click.Path(file_okay=False),
              help="Folder for backtest.csv and backtest.html.")
@click.option("--apply", "apply", is_flag=False, flag_value="recommended", default=None, metavar="[POLICY]",
              help="Write the recommended policy's triggers (or POLICY's) into the policy file, exactly as "
                   "replayed; the diff is shown and confirmed first. Other lines and comments stay.")
@click.option("--yes", is_flag=True, help="With --apply: write without asking (CI).")
@json_option
def backtest(config_path: str, start: str, end: str | None, every: str | None, policy_names: str | None,
             thresholds: str | None, schedules: str | None, tolerance: float, resolution: float,
             budget: str | None, cost: float, label_delay: str | None, folds: int, dimensions: str | None,
             fit_budget: int | None, jobs: int, cluster: str | None, out_dir: str, apply: str | None, yes: bool,
             as_json: bool) -> None:
    """Replay history under several retraining policies: retrains against error, and a recommendation."""
    from pathlib import Path

    from contextlib import nullcontext

    from mlflow_retrain.usecases import adopt
    from mlflow_retrain.usecases.backtest import default_policies, parse_budget, run_backtest, select, write_outputs
    from mlflow_retrain.usecases.search import parse_search
    from mlflow_retrain.adapters.cluster import check_address, connect, threads
    from mlflow_retrain.decide.choice import Rule
    from mlflow_retrain.policy.section import parse_span
    from mlflow_retrain.base.errors import ConfigError
    from mlflow_retrain.adapters.tracking import check_tracking

    config = load(config_path)
    span = parse_span(every, "--every") if every else config.monitoring.window
    if label_delay:
        config = config.with_label_delay(parse_span(label_delay, "--label-delay"))
    try:
        values = [float(v) for v in thresholds.split(",")] if thresholds else None
    except ValueError:
        raise ConfigError(f"--thresholds {thresholds!r} must be comma-separated numbers, e.g. 60,80,100") from None
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    searched = parse_search(dimensions)
    if fit_budget is not None and fit_budget < 1:
        raise ConfigError(f"--fit-budget must be at least 1, got {fit_budget}")
    for name, value in (("--resolution", resolution), ("--retrain-cost", cost), ("--folds", folds)):
        if value < 0:
            raise ConfigError(f"{name} must be 0 or more, got {value:g}")
    rule = Rule(tolerance=tolerance, higher_is_better=config.higher_is_better, resolution=resolution,
                budget=parse_budget(budget) if budget else None, cost=cost)
    cadences = [parse_span(v.strip(), "--schedule") for v in schedules.split(",")] if schedules else None
    policies = select(default_policies(config, span, values, cadences), policy_names.split(",") if policy_names else None,
                      cadences or ())
    if apply is not None:
        adopt.check_apply(Path(config_path), apply, [p.name for p in policies], searched=bool(searched))
        if not yes and not sys.stdin.isatty():
            raise ConfigError("--apply asks before it writes the policy file; pass --yes to write without asking")
    if cluster:
        check_address(cluster)
    check_tracking()
    with connect(cluster) if cluster else nullcontext() as client:
        result = run_backtest(config, start=start, end=end, every=span, policies=policies, rule=rule, folds=folds,
                              jobs=threads(client) if client else jobs, client=client, dimensions=searched,
                              fit_budget=fit_budget)
    write_outputs(config, result, Path(out_dir))
    applied = None if apply is None else _apply(adopt.from_backtest(Path(config_path), result, apply), yes)

    def human(r: dict[str, Any]) -> str:
        return "\n".join([
            f"{r['steps']} steps {r['from']} .. {r['to']}, {r['fits']} fits, {r['seconds']} s",
            table([{**p, "vs_schedule": None if p["vs_schedule"] is None else f"{p['vs_schedule']:+.1%}",
                    "rejected_by": ", ".join(f"{k} {v}" for k, v in (p["rejected_by"] or {}).items()) or None}
                   for p in r["policies"]],
                  ["policy", *(["variant"] if r["search"] else []), "retrains", "rejected", "rejected_by", "mean_metric", "p90_metric", "vs_schedule", "tied_with_best",
                   *(["oos_retrains", "oos_mean_metric", "oos_p90_metric"] if r["walk_forward"] else []),
                   *(["retrains_without_delay", "mean_metric_without_delay"] if r["label_delay"] else [])]),
            "", f"recommended: {r['walk_forward']['reason']}" if r["walk_forward"] else
            f"recommended: {r['recommended']} (the cheapest within {r['tolerance']:.0%} of the best mean, up to "
                f"{2 * r['tolerance']:.0%} for one that saves most retrains, or tied with it: a paired bootstrap "
                "over the windows" + (f", or {r['resolution']:g} apart" if r["resolution"] else "")
                + (f"; at most {r['budget_per_30d']:g} retrains per 30 days" if r["budget_per_30d"] is not None else "")
                + (f"; {r['cost']:g} per retrain" if r["cost"] else "") + ")",
            "vs_schedule: how much less error than a schedule with the same number of retrains; rejected_by: "
            "the gate checks the rejected candidates failed",
            *([_searched(r["search"])] if r["search"] else []),
            *(f"note: {w}" for w in r["warnings"]),
            *([f"out of sample (oos_*): from {r['walk_forward']['from']}, {r['folds']} folds, each scored with the "
               "policy chosen on the windows before it: " + ", ".join(
                   f"{f['chosen']} from {f['from'][:10]}" for f in r["walk_forward"]["folds"])]
              if r["walk_forward"] else []),
            f"chart: {r['chart']}", *(f"warning: {w}" for w in r["warnings"]),
            *([f"--apply {r['applied']['policy']}: " + ("written to " + r["applied"]["path"] if r["applied"]["written"]
                                                       else "nothing written: " + r["applied"]["why"])]
              if r.get("applied") else [])])

    emit({**result.to_dict(), "applied": applied}, as_json, human)


def _searched(search: dict[str, Any]) -> str:
    """What `--search` tried, with which policies, for how many fits."""
    head = f"searched {', '.join(search['dimensions'])}: "
    if not search["values"]:
        return head + "no value to try beside the configured ones"
    if not search["policies"]:
        return head + f"the fit budget ({search['budget']}) covers no policy; raise --fit-budget"
    return head + (f"{', '.join(search['values'])}, each with {', '.join(search['policies'])}: {search['fits']} fits "
                   f"(budget {search['budget']})")


def _apply(adoption: Any, yes: bool) -> dict[str, Any]:
    """Show the policy file's diff on stderr (stdout stays clean for --json), confirm, write."""
    from mlflow_retrain.usecases import adopt

    why = adoption.why or ("" if adoption.changed else "the file already has these triggers")
    if not why:
        click.echo(adoption.diff(), err=True)
        if not yes and not click.confirm(f"write {adoption.path}?", err=True):
            why = "not confirmed"
    if not why:
        adopt.write(adoption)
    return {**adoption.to_dict(), "why": why, "written": not why}

