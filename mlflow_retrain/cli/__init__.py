"""`mlflow-retrain`: the command line. It parses options, calls one function, prints the result.

Exit codes: 0 success (whatever a cycle decided), 2 a user error (bad config, data, model, stage,
unreachable server), 3 the lease is held by another cycle, 4 monitoring found downtime.

The commands live by group in this package's modules, each registering on `cli` (`group.py`).
"""

from __future__ import annotations

import atexit
import gc
import sys
from typing import Sequence

import click

from mlflow_retrain.cli import analyse, controller, moves, records, services  # noqa: F401  (they register their commands)
from mlflow_retrain.cli.group import cli

__all__ = ["cli", "main"]


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

