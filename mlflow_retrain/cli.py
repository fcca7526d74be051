"""`mlflow-retrain`: the command line. It parses options, calls one function, prints the result.

Exit codes: 0 success (whatever a cycle decided), 2 a user error (bad config, data, model, stage,
unreachable server), 3 the lease is held by another cycle, 4 monitoring found downtime.
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import sys
from typing import Any, Callable, Sequence

import click

from mlflow_retrain.policy.config import Config
from mlflow_retrain.policy.section import check_version
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.base.errors import ConfigError, RetrainError
from mlflow_retrain.adapters.streams import redacted_output, stdout_into

EXIT_CODES = """\b
Exit codes:
  0  success (whatever the cycle decided)
  2  user error: bad config, data, --as-of, unknown model or stage, unreachable server
  3  another cycle holds the lease on the model (or took it over from this one)
  4  monitoring found downtime (unloadable model, data gap, slow predictions), or doctor found
     the registry inconsistent (run doctor --repair)
"""


RESULT = "mlflow_retrain.result"
STDOUT = "mlflow_retrain.stdout"  # the command's real stdout while its work's output goes to stderr


class RetrainGroup(click.Group):
    """Prints a command's result on stdout once its work is done, and turns every RetrainError into
    one line on stderr and its exit code; bugs still show a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from mlflow_retrain.adapters import store
        from mlflow_retrain.base.redact import redact, scrub
        from mlflow_retrain.adapters.tracking import configure_client, server_error

        try:
            try:
                # credentials in URIs are masked in all we print; MLflow's HTTP calls are bounded
                # the store chosen for this command ends with it (`store.scoped`)
                # progress visible, stdout parseable (and printed to early by `print_now`)
                with store.scoped(), redacted_output(), stdout_into(sys.stderr) as stdout:
                    ctx.meta[STDOUT] = stdout
                    configure_client()
                    return super().invoke(ctx)
            finally:
                if RESULT in ctx.meta:
                    click.echo(redact(ctx.meta.pop(RESULT)))
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            # a server that stopped answering is one line whatever surfaced it (MLflow's "API request
            # to ... failed", a requests timeout, a step that failed because of it)
            error = server_error(exc) or (exc if isinstance(exc, RetrainError) else None)
            if error is None:
                scrub(exc)  # a bug: its traceback, without the secrets its message may quote
                raise
            click.echo(f"error: {redact(error)}", err=True)
            ctx.exit(error.exit_code)


@click.group(cls=RetrainGroup, epilog=EXIT_CODES)
@click.version_option(package_name="mlflow-retrain", message="mlflow-retrain %(version)s")
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


def cluster_option(f: Callable) -> Callable:
    return click.option("--cluster", default=None, metavar="tcp://HOST:PORT",
                        help="Run the tasks on the Dask scheduler at this address instead of local processes "
                             "(pip install 'mlflow-retrain[cluster]'); its workers need mlflow-retrain, the "
                             "data at the same paths and the same tracking server.")(f)


class VersionNumber(click.ParamType):
    """A registered model's VERSION, checked as the command line is read: before the policy, the store
    or the lease (`config.check_version`)."""

    name = "version"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return check_version(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(f)


STORE = "mlflow_retrain.adapters.store"


def emit(payload: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    """The command's result: printed on stdout by the group when the work is over. The store the
    command used is part of it (a `store` key in JSON, a line on stderr for people)."""
    ctx = click.get_current_context()
    store = ctx.meta.get(STORE)
    if store is not None and isinstance(payload, dict):
        payload = {**payload, "store": store.to_dict()}
    if store is not None and not as_json:
        click.echo(f"store: {store.describe()}", err=True)
    text = json.dumps(payload, indent=2, default=str) if as_json else human(payload)
    ctx.meta[RESULT] = text


def print_now() -> None:
    """Print the result `emit` holds now, not when the command ends (the group prints nothing more)."""
    from mlflow_retrain.base.redact import redact

    ctx = click.get_current_context()
    if RESULT in ctx.meta and STDOUT in ctx.meta:
        ctx.meta[STDOUT](redact(ctx.meta.pop(RESULT)) + "\n")


def undelivered_lines(kept: list[dict[str, Any]]) -> list[str]:
    """Messages no notify target received: what `status` and `doctor` say of them."""
    if not kept:
        return []
    return ["", f"undelivered notifications ({len(kept)}; the next cycle sends them again, same delivery id):"] + [
        f"  - {k['event']} to {k['target']} since {k['since']}: {k['title']} ({k['error'] or 'not delivered'})"
        for k in kept]


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
    """The policy, and the store it names (`store.py`), made this process's store."""
    from mlflow_retrain.adapters import store

    config = load_config(config_path)
    chosen = store.resolve(config)
    store.use(chosen)
    click.get_current_context().meta[STORE] = chosen
    return config


def _load_with_data(config_path: str) -> tuple[Config, Any]:
    """The policy and its checked data, read before MLflow is imported: bad input is refused quickly."""
    config = _load(config_path)
    from mlflow_retrain.adapters.data import LabelledData

    return config, LabelledData.load(config)


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
@json_option
def init(data_path: str, target: str, timestamp: str | None, task: str | None, model_name: str | None, out: str,
         force: bool, as_json: bool) -> None:
    """Write a commented policy file derived from the data, and print the command to run next.

    Windows come from the data's span and density, thresholds from the target's scale; each value's
    comment says how. `cycle` runs with the file as written.
    """
    from pathlib import Path

    from mlflow_retrain.usecases.init import init as run_init

    result = run_init(Path(data_path), target=target, out=Path(out), timestamp=timestamp, task=task,
                      model_name=model_name, force=force)
    emit(result.to_dict(), as_json, lambda r: "\n".join([
        f"wrote {r['path']}: {r['task']} of {r['target']!r} over {r['timestamp']!r}, "
        f"monitoring every {r['monitoring_window']}, training on {r['training_window']}",
        f"next: {r['next_command']}"]))


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
    from mlflow_retrain.loop.training import train as run_train

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

    from mlflow_retrain.loop.evaluate import evaluate as run_evaluate
    from mlflow_retrain.adapters.tracking import check_tracking

    config = _load(config_path)
    check_tracking()
    result = run_evaluate(config, model_uri=model_uri or None, as_of=as_of or None, with_reports=not no_reports,
                          out_dir=Path(out_dir) if out_dir else None)
    emit(result.to_dict(), as_json, lambda r: table([
        {"version": r["version"], "window": r["window"], "rows": r["rows"], **r["metrics"],
         "drift_share": r.get("drift_share"), "run_id": r["run_id"]}]) + "".join(
        f"\nreport: {p}" for p in r["reports"]))


def _cycle_human(r: dict[str, Any]) -> str:
    lines = [f"outcome: {r['outcome']}  (model {r['model_name']}, as of {r['as_of']}, "
             f"Production was v{r['production_version'] or '-'})"]
    if r["monitoring"]:
        lines += ["", "monitoring", table(r["monitoring"])]
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
    config, data = _load_with_data(config_path)
    from mlflow_retrain.loop.cycle import run_cycle

    def show(report: Any) -> None:  # before the notifications are delivered: a person need not wait for them
        if summary_md:
            with open(summary_md, "a", encoding="utf-8") as out:
                out.write(report.to_markdown())
        emit(report.to_dict(), as_json, _cycle_human)
        print_now()

    run_cycle(config, as_of=as_of, force=force, reason=reason, event=event, dry_run=dry_run, via=retrain_via,
              data=data, bootstrap=bootstrap, on_report=show)


@cli.command(epilog="\b\nExample:\n  mlflow-retrain check --config retrain.yaml --as-of 2012-06-30")
@config_option
@as_of_option
@json_option
def check(config_path: str, as_of: str | None, as_json: bool) -> None:
    """What a cycle would decide now and why; writes nothing."""
    config, data = _load_with_data(config_path)
    from mlflow_retrain.loop.cycle import run_cycle

    emit(run_cycle(config, as_of=as_of, dry_run=True, data=data).to_dict(), as_json, _cycle_human)


@cli.command(epilog="\b\nExample:\n  mlflow-retrain status --config retrain.yaml")
@config_option
@json_option
def status(config_path: str, as_json: bool) -> None:
    """Production and Staging versions, their metrics and trigger tags, the last cycle."""
    from mlflow_retrain.usecases.audit import status as read_status
    from mlflow_retrain.adapters.tracking import check_tracking

    config = _load(config_path)
    check_tracking(write=False)
    result = read_status(config)

    def human(r: dict[str, Any]) -> str:
        lines = [f"model: {r['model_name']}"]
        for stage in ("production", "staging"):
            lines += ["", stage, table([r[stage]]) if r[stage] else "(none)"]
        lines += ["", "versions", table(r["versions"], ["version", "stage", "aliases", "trigger", "decision",
                                                         "baseline_version", "reason"])]
        if r["awaiting"]:
            a = r["awaiting"]
            lines += ["", f"v{a['version']} awaits approval since {a['since'] or '(not recorded)'}, "
                          + (f"expires as of {a['expires']}" if a["expires"] else "no approval_ttl: waits for a person"),
                      f"  {a['approve']}", f"  {a['reject']}", f"  {a['tag']}"]
        lines += ["", f"last cycle: {r['last_cycle'] or '-'}", f"lease: {r['lease'] or 'free'}"]
        return "\n".join(lines + undelivered_lines(r["undelivered"]))

    emit(result.to_dict(), as_json, human)


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

    config = _load(config_path)
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


@cli.command(epilog="\b\nExample:\n  mlflow-retrain promote 7 --reason \"validated offline by the pricing team\"")
@config_option
@click.argument("version", type=VersionNumber())
@click.option("--reason", required=True, help="Why; recorded on the version and in the audit run.")
@as_of_option
@json_option
def promote(config_path: str, version: str, reason: str, as_of: str | None, as_json: bool) -> None:
    """Put VERSION in Production by hand; the old Production is archived.

    The move is stamped with the clock and with the data time it applies to (--as-of, default the
    newest row of the data), so the monitor charges every window to the right version."""
    from mlflow_retrain.loop.manual import promote as run_promote

    move = run_promote(_load(config_path), version, reason, as_of)
    emit(move.to_dict(), as_json, lambda r: f"v{r['version']} is in Production (was v{r['previous'] or '-'}); "
                                            f"audit run {r['run_id']}")


@cli.command(epilog="\b\nExample:\n  mlflow-retrain rollback --reason \"v8 over-predicts weekends\"")
@config_option
@click.option("--reason", required=True, help="Why; recorded on the version and in the audit run.")
@as_of_option
@json_option
def rollback(config_path: str, reason: str, as_of: str | None, as_json: bool) -> None:
    """Back to the version in Production before the current one; the current one is archived.

    Rolling back twice walks further back (v7 -> v6 -> v5), it does not toggle between two."""
    from mlflow_retrain.loop.manual import rollback as run_rollback

    move = run_rollback(_load(config_path), reason, as_of)
    emit(move.to_dict(), as_json, lambda r: f"rolled back to v{r['version']} (from v{r['previous'] or '-'}); "
                                            f"audit run {r['run_id']}")


def _sign_off_command(action: str, example: str, doc: str) -> None:
    """`approve` and `reject`: one person's verdict on the candidate awaiting approval (`signoff.py`)."""

    @cli.command(name=action, help=doc, epilog=f"\b\nExample:\n  mlflow-retrain {action} 7 --reason \"{example}\"")
    @config_option
    @click.argument("version", type=VersionNumber())
    @click.option("--reason", required=True, help="Why; recorded on the version and in the audit run.")
    @click.option("--by", default=None, help="Who signs off (default: your login name).")
    @as_of_option
    @json_option
    def command(config_path: str, version: str, reason: str, by: str | None, as_of: str | None,
                as_json: bool) -> None:
        from mlflow_retrain.loop.signoff import sign_off

        done = sign_off(_load(config_path), action, version, reason, by, as_of)
        emit(done.to_dict(), as_json, lambda r: f"v{r['version']} {r['outcome']} by {r['by']}"
             + (f" (replacing v{r['previous']})" if r["previous"] else "") + f"; audit run {r['run_id']}"
             + (f"\nnote: {r['note']}" if r["note"] else ""))


_sign_off_command("approve", "checked the weekend errors with the ops team", """Approve VERSION, the candidate awaiting a person's sign-off (validation.require_approval):
    it goes to Production now, the old Production is archived.

    The verdict is recorded on the version (retrain.approval, _by, _reason, _at, _wall), then carried
    out under the lease and audited. Setting the tag retrain.approval=approved in the MLflow UI does
    the same at the next cycle.""")
_sign_off_command("reject", "over-predicts the holiday peak", """Reject VERSION, the candidate awaiting a person's sign-off: it is archived, rejected with the reason.

    Setting the tag retrain.approval=rejected in the MLflow UI does the same at the next cycle.""")


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

    config = _load(config_path)
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

    config = _load(config_path)
    check_tracking(write=False)
    rows = read_history(config, limit)
    emit(rows, as_json, lambda r: table(
        r, ["started", "kind", "as_of", "outcome", "triggers", "production", "candidate", "reason"]))


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

    config = _load(config_path)
    span = parse_span(every, "--every") if every else None
    check_tracking(write=not no_log)
    result = run_monitor(config, start=start, end=end, every=span, out_dir=Path(out_dir), with_reports=reports,
                         log_run=not no_log)

    def human(r: dict[str, Any]) -> str:
        lines = [table(r["windows"][-20:], ["end", "version", "rows", "metric", "partial", "drift_share", "fired",
                                                      "health"])]
        if len(r["windows"]) > 20:
            lines.insert(0, f"(last 20 of {len(r['windows'])} windows; all in {r['table']})")
        lines += ["", f"dashboard: {r['dashboard']}", f"health: {'ok' if not r['health'] else r['health'][0]}"]
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
                   "schedule with the configured policy's retrain count is always added.")
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
             budget: str | None, cost: float, label_delay: str | None, folds: int, jobs: int,
             cluster: str | None, out_dir: str, apply: str | None, yes: bool, as_json: bool) -> None:
    """Replay history under several retraining policies: retrains against error, and a recommendation."""
    from pathlib import Path

    from contextlib import nullcontext

    from mlflow_retrain.usecases import adopt
    from mlflow_retrain.usecases.backtest import default_policies, parse_budget, run_backtest, select, write_outputs
    from mlflow_retrain.adapters.cluster import check_address, connect, threads
    from mlflow_retrain.decide.choice import Rule
    from mlflow_retrain.policy.section import parse_span
    from mlflow_retrain.base.errors import ConfigError
    from mlflow_retrain.adapters.tracking import check_tracking

    config = _load(config_path)
    span = parse_span(every, "--every") if every else config.monitoring.window
    if label_delay:
        config = config.with_label_delay(parse_span(label_delay, "--label-delay"))
    try:
        values = [float(v) for v in thresholds.split(",")] if thresholds else None
    except ValueError:
        raise ConfigError(f"--thresholds {thresholds!r} must be comma-separated numbers, e.g. 60,80,100") from None
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    for name, value in (("--resolution", resolution), ("--retrain-cost", cost), ("--folds", folds)):
        if value < 0:
            raise ConfigError(f"{name} must be 0 or more, got {value:g}")
    rule = Rule(tolerance=tolerance, higher_is_better=config.higher_is_better, resolution=resolution,
                budget=parse_budget(budget) if budget else None, cost=cost)
    cadences = [parse_span(v.strip(), "--schedule") for v in schedules.split(",")] if schedules else None
    policies = select(default_policies(config, span, values, cadences), policy_names.split(",") if policy_names else None)
    if apply is not None:
        adopt.check_apply(Path(config_path), apply, [p.name for p in policies])
        if not yes and not sys.stdin.isatty():
            raise ConfigError("--apply asks before it writes the policy file; pass --yes to write without asking")
    if cluster:
        check_address(cluster)
    check_tracking()
    with connect(cluster) if cluster else nullcontext() as client:
        result = run_backtest(config, start=start, end=end, every=span, policies=policies, rule=rule, folds=folds,
                              jobs=threads(client) if client else jobs, client=client)
    write_outputs(config, result, Path(out_dir))
    applied = None if apply is None else _apply(adopt.from_backtest(Path(config_path), result, apply), yes)

    def human(r: dict[str, Any]) -> str:
        return "\n".join([
            f"{r['steps']} steps {r['from']} .. {r['to']}, {r['fits']} fits, {r['seconds']} s",
            table([{**p, "vs_schedule": None if p["vs_schedule"] is None else f"{p['vs_schedule']:+.1%}"}
                   for p in r["policies"]],
                  ["policy", "retrains", "rejected", "mean_metric", "p90_metric", "vs_schedule", "tied_with_best",
                   *(["oos_retrains", "oos_mean_metric", "oos_p90_metric"] if r["walk_forward"] else []),
                   *(["retrains_without_delay", "mean_metric_without_delay"] if r["label_delay"] else [])]),
            "", f"recommended: {r['recommended']} (the cheapest within {r['tolerance']:.0%} of the best mean or "
                "tied with it: a paired bootstrap over the windows"
                + (f", or {r['resolution']:g} apart" if r["resolution"] else "")
                + (f"; at most {r['budget_per_30d']:g} retrains per 30 days" if r["budget_per_30d"] is not None else "")
                + (f"; {r['cost']:g} per retrain" if r["cost"] else "") + ")",
            "vs_schedule: how much less error than a schedule with the same number of retrains",
            *([f"out of sample (oos_*): from {r['walk_forward']['from']}, {r['folds']} folds, each scored with the "
               "policy chosen on the windows before it: " + ", ".join(
                   f"{f['chosen']} from {f['from'][:10]}" for f in r["walk_forward"]["folds"])]
              if r["walk_forward"] else []),
            f"chart: {r['chart']}",
            *([f"--apply {r['applied']['policy']}: " + ("written to " + r["applied"]["path"] if r["applied"]["written"]
                                                       else "nothing written: " + r["applied"]["why"])]
              if r.get("applied") else [])])

    emit({**result.to_dict(), "applied": applied}, as_json, human)


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


@cli.command(epilog="""\b
Examples:
  MLFLOW_RETRAIN_SECRET=... mlflow-retrain serve --config retrain.yaml
  mlflow-retrain serve --port 9000 --secret-file /run/secrets/retrain --retrain-via inprocess
  PGUSER=retrain PGPASSWORD=... mlflow-retrain serve --queue postgresql://db:5432/retrain   # replicas share it
""" + EXIT_CODES)
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--secret-file", type=click.Path(dir_okay=False), default=None,
              help="A file holding the shared secret (default: $MLFLOW_RETRAIN_SECRET; never on the command line).")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="Where the event queue lives (default: .retrain-serve beside the policy file).")
@click.option("--max-body", default=256 * 1024, show_default=True, type=int, help="Largest request body, bytes (413 above).")
@click.option("--tolerance", default=300.0, show_default=True, type=float,
              help="Seconds a signed request's timestamp may be off (older ones are refused).")
@click.option("--watch", type=click.Choice(["auto", "poll", "off"]), default="auto", show_default=True,
              help="Watch data.path (a folder) for new files: native events with polling as fallback, polling, or not.")
@click.option("--retrain-via", type=click.Choice(["project", "inprocess"]), default="project", show_default=True,
              help="How the worker trains (as for `cycle`).")
@click.option("--grace", default=120.0, show_default=True, type=float,
              help="On SIGTERM, seconds the running cycle may take to finish before it is abandoned.")
@click.option("--queue", envvar="MLFLOW_RETRAIN_QUEUE", show_envvar=True, default=None, metavar="URL",
              help="A postgresql:// queue that several serve replicas share (default: a sqlite file in the "
                   "state folder). Pass a password through the environment variable or PGPASSWORD, not here.")
@click.option("--claim-ttl", default=60.0, show_default=True, type=float,
              help="With --queue: seconds after which another replica takes over the events of a replica that died.")
def serve(config_path: str, host: str, port: int, secret_file: str | None, state_dir: str | None, max_body: int,
          tolerance: float, watch: str, retrain_via: str, grace: float, queue: str | None, claim_ttl: float) -> None:
    """Turn events into cycles: MLflow registry webhooks (POST /webhook), signed requests from any
    system (POST /trigger) and new files in data.path; GET /healthz and /events report.

    Cycles run one at a time in a worker process; events that arrive meanwhile coalesce into one
    queued cycle, kept in a sqlite queue that survives restarts (or a PostgreSQL one that several
    replicas share: --queue). SIGTERM finishes the running cycle (or abandons it after --grace; the
    lease covers it)."""
    from pathlib import Path

    from mlflow_retrain.serve import service

    settings, sock = service.prepare(
        _load(config_path), Path(config_path), secret_file=Path(secret_file) if secret_file else None,
        state_dir=Path(state_dir) if state_dir else None, host=host, port=port, max_body=max_body,
        tolerance=tolerance, watch=watch, retrain_via=retrain_via, grace=grace,
        verbose=2 if logging.getLogger().getEffectiveLevel() <= logging.INFO else 1, queue=queue, claim_ttl=claim_ttl)
    logging.getLogger("mlflow_retrain.serve").setLevel(logging.INFO)
    click.echo(f"serving {settings.model!r} on http://{host}:{sock.getsockname()[1]} (POST /webhook, POST /trigger, "
               f"GET /healthz, GET /events); queue in {settings.queue_shown}"
               + (f"; watching {settings.data_folder}" if settings.data_folder else ""), err=True)
    service.run(settings, sock)


FLEET_EXAMPLES = """\b
Policies: each *.yaml/*.yml of a folder is one policy (as for `cycle --config`); a fleet file holds
`defaults:` (policy keys) and `models:` (a list of policies merged over them). Exit code: the worst
model's (1 a crash > 2 a user error > 4 downtime > 3 a held lease > 0).
"""


@cli.group(epilog=FLEET_EXAMPLES)
def fleet() -> None:
    """Many models at once: a command over every policy of a folder or fleet file, in a pool of
    worker processes that import once and serve many models. One model's failure is its own row;
    a model named by two policies is refused before anything runs."""


def _fleet_command(name: str, doc: str, example: str, extra: Sequence[Callable] = ()) -> Callable:
    """A `fleet` subcommand: the options every one shares, then the command's own."""

    def decorate(f: Callable) -> Callable:
        for option in reversed([
            click.option("--policies", "policies", required=True, multiple=True, type=click.Path(),
                         help="A folder of policy files, or a policy or fleet file (repeatable)."),
            click.option("--select", "select", multiple=True, metavar="TAG=VALUE",
                         help="Only models whose registered model carries this tag, e.g. retrain.enabled=true "
                              "(repeatable: all must hold)."),
            click.option("--jobs", default=2, show_default=True, type=click.IntRange(min=1),
                         help="Worker processes."),
            cluster_option, *extra, json_option]):
            f = option(f)
        return fleet.command(name=name, help=doc, epilog=f"\b\nExample:\n  {example}\n" + EXIT_CODES)(f)

    return decorate


def _run_fleet(command: str, policies: Sequence[str], select: Sequence[str], jobs: int, cluster: str | None,
               as_json: bool,
               summary_md: str | None = None, **options: Any) -> None:
    from pathlib import Path

    from mlflow_retrain.fleet import footer, run_fleet, summary_rows, to_markdown

    result = run_fleet(command, [Path(p) for p in policies], jobs=jobs, select=select, cluster=cluster, **options)
    if summary_md:
        with open(summary_md, "a", encoding="utf-8") as out:
            out.write(to_markdown(result))
    emit(result.to_dict(), as_json, lambda r: "\n".join([
        table(summary_rows(result.rows), ["model", "production", "age", "last_metric", "decision", "reason"]),
        "", footer(result), *([f"dashboard: {result.dashboard}"] if result.dashboard else [])]))
    if result.exit_code:
        failed = [r for r in result.rows if r.exit_code]
        click.echo(f"error: {len(failed)} of {len(result.rows)} model(s) did not succeed, first {failed[0].model}: "
                   f"{failed[0].reason.splitlines()[0] if failed[0].reason else failed[0].outcome}", err=True)
        click.get_current_context().exit(result.exit_code)


@_fleet_command("cycle", "One controller cycle per model (each under its own lease), in parallel.",
                "mlflow-retrain fleet cycle --policies policies/ --jobs 2 --select retrain.enabled=true", [
                    as_of_option,
                    click.option("--retrain-via", type=click.Choice(["project", "inprocess"]), default="project",
                                 show_default=True, help="How a model that needs it is trained (as for `cycle`)."),
                    click.option("--summary-md", type=click.Path(dir_okay=False), default=None,
                                 help="Append the table as Markdown (e.g. $GITHUB_STEP_SUMMARY).")])
def fleet_cycle(policies: tuple[str, ...], select: tuple[str, ...], jobs: int, cluster: str | None, as_of: str | None,
                retrain_via: str, summary_md: str | None, as_json: bool) -> None:
    _run_fleet("cycle", policies, select, jobs, cluster, as_json, summary_md, as_of=as_of, via=retrain_via)


@_fleet_command("check", "What a cycle of each model would decide now and why; writes nothing.",
                "mlflow-retrain fleet check --policies fleet.yaml --json", [as_of_option])
def fleet_check(policies: tuple[str, ...], select: tuple[str, ...], jobs: int, cluster: str | None,
                as_of: str | None, as_json: bool) -> None:
    _run_fleet("check", policies, select, jobs, cluster, as_json, as_of=as_of)


@_fleet_command("status", "Each model's Production, its age, and its last cycle's decision and reason.",
                "mlflow-retrain fleet status --policies policies/")
def fleet_status(policies: tuple[str, ...], select: tuple[str, ...], jobs: int, cluster: str | None,
                 as_json: bool) -> None:
    _run_fleet("status", policies, select, jobs, cluster, as_json)


@_fleet_command("monitor", "Each model's monitor and own dashboard, and the fleet's dashboard linking them.",
                "mlflow-retrain fleet monitor --policies policies/ --out fleet-monitor/", [
                    click.option("--out", "out_dir", default="fleet-monitor", show_default=True,
                                 type=click.Path(file_okay=False),
                                 help="Folder for the fleet's dashboard.html and each model's own folder.")])
def fleet_monitor(policies: tuple[str, ...], select: tuple[str, ...], jobs: int, cluster: str | None, out_dir: str,
                  as_json: bool) -> None:
    from pathlib import Path

    _run_fleet("monitor", policies, select, jobs, cluster, as_json, out_dir=Path(out_dir))


def main(argv: Sequence[str] | None = None) -> None:
    """The entry point: a bad option or argument is one line on stderr too (click's usage text is the
    command's --help), exit 2."""
    # At exit CPython's last collection walks every object the imports made (MLflow, scikit-learn,
    # pandas, SQLAlchemy): about 1 s of CPU at the end of a 4-5 s no-op cycle, to free memory the OS
    # takes back anyway. Frozen objects are left out of it; the atexit handlers (MLflow's end of run,
    # logging's flush, temporary folders) run as before. Registered here, not at import, so that a
    # process that only imports the CLI (pytest) exits as usual.
    atexit.register(gc.freeze)
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="mlflow-retrain",
                        standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "mlflow-retrain"
        click.echo(f"error: {exc.format_message()} (see {where} --help)", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
