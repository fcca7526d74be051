"""A person's moves in the registry: `promote`, `rollback`, `approve` and `reject`."""

from __future__ import annotations

import click

from mlflow_retrain.cli.group import VersionNumber, as_of_option, cli, config_option, emit, json_option, load


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

    move = run_promote(load(config_path), version, reason, as_of)
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

    move = run_rollback(load(config_path), reason, as_of)
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

        done = sign_off(load(config_path), action, version, reason, by, as_of)
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

