"""The command group every command hangs on, its options, and how a result is printed.

A command parses its options, calls one function and hands the result to `emit`; the group prints it
on stdout once the work is over and turns a `RetrainError` into one line on stderr and its exit code.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Callable, Sequence

import click

from mlflow_retrain.base.errors import ConfigError, RetrainError
from mlflow_retrain.policy.config import Config
from mlflow_retrain.policy.section import check_version
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.adapters.streams import redacted_output, stdout_into
from mlflow_retrain.cli.edge import NOISY, process_edge

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
        from mlflow_retrain.base.redact import redact, scrub
        from mlflow_retrain.adapters.tracking import configure_client, server_error

        try:
            try:
                # credentials in URIs are masked in all we print; MLflow's HTTP calls are bounded
                # what the command sets process-wide (its store among it) ends with it (`edge.py`)
                # progress visible, stdout parseable (and printed to early by `print_now`)
                with process_edge(), redacted_output(), stdout_into(sys.stderr) as stdout:
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
    for noisy in NOISY:
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



def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain aligned text table: readable in a terminal and in CI logs."""
    if not rows:
        return "(none)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def load(config_path: str) -> Config:
    """The policy, and the store it names (`store.py`), made this process's store."""
    from mlflow_retrain.adapters import store

    config = load_config(config_path)
    chosen = store.resolve(config)
    store.use(chosen)
    click.get_current_context().meta[STORE] = chosen
    return config


def load_with_data(config_path: str) -> tuple[Config, Any]:
    """The policy and its checked data, read before MLflow is imported: bad input is refused quickly."""
    config = load(config_path)
    from mlflow_retrain.adapters.data import LabelledData

    return config, LabelledData.load(config)

