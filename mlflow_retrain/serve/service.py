"""Start `serve`: check everything a user can get wrong first, then run uvicorn until SIGTERM.

Bad input is one line and exit 2 before anything starts (no worker, no watch, no socket left
open): no secret, an unreadable secret file, a port in use, a state folder that cannot be written,
a `--queue` that is not a PostgreSQL URL or cannot be reached (its password masked).
The secret comes from the environment (`MLFLOW_RETRAIN_SECRET`) or a file, never the command line,
where `ps` and shell history would show it; it is never printed or logged.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
from pathlib import Path

from mlflow_retrain.policy.notify import MIN_SECRET
from mlflow_retrain.policy.config import Config
from mlflow_retrain.base.errors import ServeError
from mlflow_retrain.base.redact import redact
from mlflow_retrain.serve.app import SECRET_ENV, Settings, create_app
from mlflow_retrain.serve.queue import open_queue


def read_secret(secret_file: Path | None, environ: dict[str, str] | None = None) -> str:
    """The shared secret from `secret_file` (surrounding whitespace dropped) or `MLFLOW_RETRAIN_SECRET`."""
    environ = os.environ if environ is None else environ
    if secret_file is not None:
        try:
            secret = secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ServeError(f"cannot read the secret file {secret_file}: {exc.strerror}") from None
        where = f"the secret file {secret_file}"
    else:
        secret = environ.get(SECRET_ENV, "").strip()
        where = f"${SECRET_ENV}"
    if not secret:
        raise ServeError(f"no secret: set {SECRET_ENV} or pass --secret-file FILE (the MLflow webhook's secret, "
                         "also used to sign POST /trigger)")
    if len(secret) < MIN_SECRET:
        raise ServeError(f"{where} is shorter than {MIN_SECRET} characters: use a random one, e.g. "
                         "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return secret


def prepare(config: Config, config_path: Path, *, secret_file: Path | None, state_dir: Path | None, host: str,
            port: int, max_body: int, tolerance: float, watch: str, retrain_via: str, grace: float,
            verbose: int, queue: str | None = None, claim_ttl: float = 60.0) -> tuple[Settings, socket.socket]:
    """The checked settings and the listening socket (bound here, so a busy port is refused before
    anything starts and nothing else can take it before uvicorn does). A PostgreSQL queue is reached
    and its schema created here, so a wrong URL or password stops `serve` before it listens."""
    secret = read_secret(secret_file)
    for name, value in (("--max-body", max_body), ("--tolerance", tolerance), ("--grace", grace),
                        ("--claim-ttl", claim_ttl)):
        if value <= 0:
            raise ServeError(f"{name} must be more than 0, got {value:g}")
    if queue and not queue.startswith(("postgresql://", "postgres://")):
        raise ServeError(f"--queue {redact(queue)}: not a postgresql:// URL (leave it out for the sqlite file "
                         "in the state folder)")
    state = (state_dir or config_path.resolve().parent / ".retrain-serve").resolve()
    try:
        state.mkdir(parents=True, exist_ok=True)
        (state / ".write-check").touch()
        (state / ".write-check").unlink()
    except OSError as exc:
        raise ServeError(f"cannot use the state folder {state}: {exc.strerror}") from None
    data = config.data_path()
    if watch != "off" and not data.is_dir():
        if watch != "auto":
            raise ServeError(f"--watch {watch}: data.path {data} is not a folder, so there is nothing to watch")
        data = None
    if queue:
        open_queue(queue, state, claim_ttl)
    settings = Settings(config_path=config_path.resolve(), model=config.model_name, secret=secret, state_dir=state,
                        host=host, port=port, max_body=max_body, tolerance=tolerance,
                        data_folder=data if watch != "off" else None, watch_mode=watch, retrain_via=retrain_via,
                        grace=grace, verbose=verbose, queue_url=queue or None, claim_ttl=claim_ttl)
    return settings, listen(host, port)


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = "the port is in use (another serve? pick --port)" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ServeError(f"cannot listen on {host}:{port}: {why}") from None
    sock.listen(128)
    return sock


def run(settings: Settings, sock: socket.socket) -> None:
    """Serve until SIGTERM or Ctrl-C; the worker's running cycle finishes (or is abandoned after
    `grace`) before this returns."""
    import uvicorn

    config = uvicorn.Config(create_app(settings), log_level="info" if settings.verbose else "warning",
                            access_log=settings.verbose > 1, lifespan="on", timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it is done; a handler here makes that a
    # normal return, so a clean shutdown exits 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])
    if not server.started:
        raise ServeError("serve did not start: see the lines above")
