"""What the registry and the store say: `status`, `history` and `doctor`."""

from __future__ import annotations

from typing import Any

import click

from mlflow_retrain.base import tags as T

from mlflow_retrain.cli.group import cli, config_option, emit, json_option, load, table
from mlflow_retrain.decide.words import stamped, unit_for


def undelivered_lines(kept: list[dict[str, Any]]) -> list[str]:
    """Messages no notify target received: what `status` and `doctor` say of them."""
    if not kept:
        return []
    return ["", f"undelivered notifications ({len(kept)}; the next cycle sends them again, same delivery id):"] + [
        f"  - {k['event']} to {k['target']} since {k['since']}: {k['title']} ({k['error'] or 'not delivered'})"
        for k in kept]



def first_model_lines(r: dict[str, Any]) -> list[str]:
    """Nothing in Production because the newest first model failed the gate: its verdict and what to change
    (on its version's decision reason), which the versions table would cut short."""
    newest = r["versions"][0] if r["versions"] else None
    if r["production"] or newest is None or newest["decision"] != T.REJECTED or newest["trigger"] != T.BOOTSTRAP:
        return []
    return ["", f"no version in Production: the first model v{newest['version']} was rejected",
            *(f"  {part}" for part in newest["decision_reason"].split("; "))]


@cli.command(epilog="\b\nExample:\n  mlflow-retrain status --config retrain.yaml")
@config_option
@json_option
def status(config_path: str, as_json: bool) -> None:
    """Production and Staging versions, their metrics and trigger tags, the last cycle."""
    from mlflow_retrain.usecases.audit import status as read_status
    from mlflow_retrain.adapters.tracking import check_tracking

    config = load(config_path)
    check_tracking(write=False)
    result = read_status(config)

    def human(r: dict[str, Any]) -> str:
        lines = [f"model: {r['model_name']}", *first_model_lines(r)]
        for stage in ("production", "staging"):
            lines += ["", stage, table([r[stage]]) if r[stage] else "(none)"]
        lines += ["", "versions", table(r["versions"], ["version", "stage", "aliases", "trigger", "decision",
                                                         "baseline_version", "reason"])]
        unit = unit_for(config.monitoring.window)
        if r["awaiting"]:
            a = r["awaiting"]
            lines += ["", f"v{a['version']} awaits approval since {stamped(a['since'], unit) or '(not recorded)'}, "
                          + (f"expires as of {stamped(a['expires'], unit)}" if a["expires"]
                             else "no approval_ttl: waits for a person"),
                      f"  {a['approve']}", f"  {a['reject']}", f"  {a['tag']}"]
        if r["challenger"]:
            c = r["challenger"]
            lines += ["", f"v{c['version']} is the challenger since {stamped(c['since'], unit)}: {c['so_far']}"]
        lines += ["", f"last cycle: {r['last_cycle'] or '-'}", f"lease: {r['lease'] or 'free'}"]
        lines += [f"MLflow UI, {what}: {page}" for what, page in r["pages"].items()]
        return "\n".join(lines + undelivered_lines(r["undelivered"]))

    emit(result.to_dict(), as_json, human)


@cli.command(epilog="\b\nExample:\n  mlflow-retrain doctor --config retrain.yaml --repair")
@config_option
@click.option("--repair", is_flag=True, help="Take the lease and repair what is found (an audited reconcile run).")
@json_option
def doctor(config_path: str, repair: bool, as_json: bool) -> None:
    """Check the registry's invariants: one Production, stage and alias agreeing, no move cut short,
    nothing pending outside Staging, complete audit tags, no run left RUNNING by a crashed cycle.

    Exit 0 when healthy (or repaired), 4 when something needs --repair."""
    from mlflow_retrain.base.errors import HealthError
    from mlflow_retrain.loop.reconcile import doctor as run_doctor
    from mlflow_retrain.adapters.tracking import check_tracking

    config = load(config_path)
    check_tracking(write=repair)
    report = run_doctor(config, fix=repair)

    def human(r: dict[str, Any]) -> str:
        lines = []
        if r["repaired"] and (r["repaired"]["repairs"] or r["repaired"]["closed_runs"]):
            lines.append(f"repaired (audit run {r['repaired']['run_id']}):")
            lines += [f"  - {f['problem']}" for f in r["repaired"]["repairs"]]
            lines += [f"  - run {run} left RUNNING by a crashed cycle: ended FAILED" for run in r["repaired"]["closed_runs"]]
        if r["healthy"]:
            lines.append(f"{r['model_name']}: healthy (lease: {r['lease'] or 'free'})")
        else:
            lines.append(f"{r['model_name']}: {len(r['findings']) + len(r['crashed_runs'])} problem(s); "
                         "`mlflow-retrain doctor --repair` fixes them:")
            lines += [f"  - {f['problem']} -> {f['repair']}" for f in r["findings"]]
            lines += [f"  - run {run} left RUNNING by a crashed cycle -> end it FAILED" for run in r["crashed_runs"]]
            if r["lease_holder_gone"]:
                lines.append(f"  lease: {r['lease']}")
        if r["set_aside"]:
            lines.append(f"corrupt retrain.intent set aside, for a person to look at (registered model tags): "
                         f"{', '.join(r['set_aside'])}")
        return "\n".join(lines + undelivered_lines(r["undelivered"]))

    emit(report.to_dict(), as_json, human)
    if not report.healthy:
        raise HealthError(f"the registry of {report.model_name!r} needs repair: run `mlflow-retrain doctor --repair`")


@cli.command(epilog="\b\nExample:\n  mlflow-retrain history --config retrain.yaml --limit 20")
@config_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="How many runs, newest first.")
@json_option
def history(config_path: str, limit: int, as_json: bool) -> None:
    """The controller's cycles and manual moves, newest first, with the versions and reasons."""
    from mlflow_retrain.usecases.audit import history as read_history
    from mlflow_retrain.adapters.tracking import check_tracking

    config = load(config_path)
    check_tracking(write=False)
    rows = read_history(config, limit)
    emit(rows, as_json, lambda r: table(
        r, ["started", "kind", "as_of", "outcome", "triggers", "production", "candidate", "reason"]))

