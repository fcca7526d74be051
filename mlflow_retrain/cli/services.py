"""Long-running and many-model commands: `serve` and the `fleet` group."""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import click

from mlflow_retrain.cli.group import EXIT_CODES, as_of_option, cli, cluster_option, config_option, emit, json_option, load, table


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
        load(config_path), Path(config_path), secret_file=Path(secret_file) if secret_file else None,
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

