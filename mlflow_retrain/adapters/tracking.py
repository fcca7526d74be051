"""Where runs go: check the tracking store is reachable, open runs in the right experiment.

An unreachable server would otherwise surface after MLflow's retries as a long traceback; we check
once, up front, with a short timeout, before anything is written.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import os
import re
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from mlflow_retrain.base import links
from mlflow_retrain.base.errors import ConfigError, TrackingServerError
from mlflow_retrain.base.redact import redact

# MLflow draws a progress bar for every artifact download; in CI logs that is noise. Set on import (the
# Python API) and again by `configure_client` (each command: the CLI puts the environment back after one).
NO_PROGRESS_BAR = ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault(*NO_PROGRESS_BAR)


def check_tracking(write: bool = True) -> str:
    """Return the tracking URI; for an HTTP server, prove it answers `/health` first. A command that
    only reads (`write=False`: status, history, check, compare, doctor, monitor --no-log) works on a
    store it may not write (an auditor's copy, a replica, a backup)."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    check_store(uri, write)
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as exc:
            raise TrackingServerError(
                f"tracking server {redact(uri)} is unreachable ({type(exc).__name__}); start it or fix MLFLOW_TRACKING_URI"
            ) from None
        check_server_store(uri)
    else:
        check_database(uri)
    return uri


def check_server_store(uri: str) -> None:
    """The server's own store answers: `/health` says only that the web process is up. With its
    database down, a server answers API calls with 503s, or not at all while it retries creating
    its database engine (minutes); one read of the Default experiment, before anything is written,
    turns that into one line instead of a cycle stopped halfway by timeouts."""
    import requests

    wait = max(limits().call_timeout, 10)  # a worker's first API call opens its database connections
    try:
        answer = requests.get(uri.rstrip("/") + "/api/2.0/mlflow/experiments/get", params={"experiment_id": "0"},
                              timeout=wait)
    except requests.Timeout:
        what = f"no answer within {wait} s"
    except requests.RequestException as exc:
        what = type(exc).__name__
    else:
        if answer.status_code < 500:  # 200, or 401/403 from an auth layer: the API itself answered
            return
        what = f"HTTP {answer.status_code}"
    raise TrackingServerError(f"tracking server {redact(uri)} is up but its API does not answer ({what}): its "
                              "backend store (the database behind it) is likely down; nothing was written. Check "
                              "the server's database, then run the command again")


_DATABASES = ("postgresql", "mysql", "mssql")


def check_database(uri: str) -> None:
    """A database store (`postgresql://...`) accepts a connection within seconds. Otherwise MLflow
    retries creating its engine for about two minutes and then prints a traceback."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in _DATABASES:
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = None
    try:
        engine = sqlalchemy.create_engine(uri, poolclass=NullPool,
                                          connect_args={"connect_timeout": 5} if scheme != "mssql" else {})
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001  (a missing driver, a refused connection, a wrong password, no such database)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise TrackingServerError(f"database store {redact(uri)} cannot be reached ({redact(reason)}); nothing was "
                                  "written. Start the database or fix MLFLOW_TRACKING_URI") from None
    finally:
        if engine is not None:
            engine.dispose()


def check_store(uri: str, write: bool = True) -> None:
    """A store MLflow knows the scheme of; an sqlite store whose folder exists (MLflow would create a
    new, empty store there), whose file is a database and, for a command that writes, which this
    process may write."""
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    try:
        _tracking_store_registry.get_store_builder(uri)
    except Exception:  # MLflow's "unsupported URI": its message lists every scheme, over many lines
        raise TrackingServerError(f"tracking URI {redact(uri)} has a scheme MLflow does not know; use sqlite:///, "
                                  "http(s)://, a database URI or a folder (fix MLFLOW_TRACKING_URI)") from None
    if not uri.startswith("sqlite:///"):
        return
    import sqlite3
    from pathlib import Path

    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    where = f"sqlite store {path}"
    if not path.parent.is_dir():
        raise TrackingServerError(f"{where}: folder {path.parent} does not exist; create it or fix MLFLOW_TRACKING_URI")
    if path.exists():
        from contextlib import closing

        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                db.execute("select count(*) from sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise TrackingServerError(f"{where} is not an sqlite database ({exc}); fix MLFLOW_TRACKING_URI") from None
    for needed in ((path, path.parent) if path.exists() else (path.parent,)) if write else ():
        if not os.access(needed, os.W_OK):
            raise TrackingServerError(f"{where} is not writable: no write permission on {needed} (sqlite also "
                                      "writes a journal beside the file); fix its permissions")


@contextmanager
def start_run(experiment: str, run_name: str, tags: dict[str, str] | None = None) -> Iterator["object"]:
    """A run in `experiment`, or the run `mlflow run` already opened for this entry point.

    Inside `mlflow run`, MLFLOW_RUN_ID names the project's run (and its experiment): we log into it
    rather than set another experiment, which MLflow would refuse.
    """
    import mlflow

    if os.environ.get("MLFLOW_RUN_ID") and mlflow.active_run() is None:
        with mlflow.start_run() as run:
            mlflow.set_tags(tags or {})
            yield run
        return
    from mlflow_retrain.adapters.store import ensure_experiment

    mlflow.set_experiment(experiment_id=ensure_experiment(experiment))
    with mlflow.start_run(run_name=run_name, tags=tags or {}, nested=mlflow.active_run() is not None) as run:
        yield run


def run_page(run_id: str, known: dict[str, str] | None = None, client: Any = None) -> str:
    """A run's link in the UI's model-training mode. It names the run's experiment: the UI's short
    `#/runs/<id>` redirects without the mode. `known` maps run ids to experiments already read (and
    learns the ones read here); a run that cannot be read gets the short form."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    known = {} if known is None else known
    if run_id not in known:
        try:
            known[run_id] = (client or MlflowClient()).get_run(run_id).info.experiment_id
        except MlflowException:
            return links.run(run_id)
    return links.run(run_id, known[run_id])


def experiments_linked(text: str | None) -> dict[str, str]:
    """The experiment of each run `text` links to in full (`links.run`): read back, not asked again."""
    return dict((run, experiment) for experiment, run in re.findall(r"#/experiments/(\w+)/runs/(\w+)", text or ""))


# ---- bounded waits --------------------------------------------------------------------------------
# MLflow's own defaults (120 s per request, 7 retries with backoff) let one call to a dead server take
# about four minutes and a paused server hold a cycle as long as the pause. The tool bounds both:
# each call has a timeout and few retries (MLflow's variables, set here unless the user set them),
# and once a call went unanswered the rest of the command (ending its runs FAILED, releasing a lease)
# gets one short try each, all within `deadline` seconds of that call's start; then it stops.
CALL_TIMEOUT_ENV, CALL_RETRIES_ENV, DEADLINE_ENV = ("MLFLOW_RETRAIN_CALL_TIMEOUT", "MLFLOW_RETRAIN_CALL_RETRIES",
                                                    "MLFLOW_RETRAIN_DEADLINE")
CLEANUP_TIMEOUT = 5.0  # seconds for each best-effort call once the server stopped answering


@dataclass(frozen=True)
class Limits:
    call_timeout: int = 10  # seconds MLflow waits for one HTTP request (connect, then each read)
    retries: int = 2  # retries of one call (connection errors, timeouts, 429/5xx); backoff 1 s, 2 s ...
    deadline: float = 45.0  # seconds from the first unanswered call to giving up on the server altogether

    @property
    def per_call(self) -> float:
        """The longest one call can take: every attempt timed out, plus the backoff between them."""
        return (self.retries + 1) * self.call_timeout + sum(2 ** i for i in range(1, self.retries))


def limits() -> Limits:
    """The limits from MLFLOW_RETRAIN_CALL_TIMEOUT / _CALL_RETRIES / _DEADLINE, else the defaults."""
    d = Limits()

    def read(name: str, kind: type, default: Any, least: float) -> Any:
        raw = os.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            value = None
        if value is None or value < least:
            raise ConfigError(f"{name}={raw!r} must be a {kind.__name__} of at least {least}")
        return value

    return Limits(read(CALL_TIMEOUT_ENV, int, d.call_timeout, 1), read(CALL_RETRIES_ENV, int, d.retries, 0),
                  read(DEADLINE_ENV, float, d.deadline, 1))


def configure_client() -> Limits:
    """Bound every HTTP call MLflow makes for this process (and the training subprocesses it starts,
    which inherit the environment); MLflow variables the user set are kept. Idempotent."""
    chosen = limits()
    os.environ.setdefault(*NO_PROGRESS_BAR)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(chosen.call_timeout))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(chosen.retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.5")
    _install_guard(chosen)
    return chosen


@dataclass
class _Outage:
    since: float | None = None  # monotonic start of the first unanswered call, while unanswered
    host: str = ""
    what: str = ""  # e.g. "connection refused on POST /api/2.0/mlflow/runs/log-batch"


_outage = _Outage()
_lock = threading.Lock()
_limits = Limits()


def outage() -> str | None:
    """What went unanswered, if the tracking server stopped answering this process's calls."""
    with _lock:
        return _outage.what if _outage.since is not None else None


def forget_outage() -> None:
    """The next command starts as a new process would, with full timeouts and retries: an outage one
    command met is not charged to the next one run in the same process (tests, a notebook)."""
    with _lock:
        _outage.since, _outage.host, _outage.what = None, "", ""


_GUARDED = ("mlflow.utils.rest_utils", "mlflow.store.artifact.http_artifact_repo")


def _install_guard(chosen: Limits) -> None:
    """Wrap MLflow's one HTTP entry point (`rest_utils.http_request`: the tracking and registry REST
    calls, and the artifact proxy's uploads and downloads, which import it by name) with the outage
    bookkeeping. MLflow takes a second to import: a command that never uses it (`init`) should not
    pay for this, so a module not imported yet is wrapped when it is."""
    global _limits
    _limits = chosen
    for name in _GUARDED:
        if name in sys.modules:
            _wrap(sys.modules[name])
    if not any(isinstance(f, _WrapOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _WrapOnImport())


def _wrap(module: Any) -> None:
    call = getattr(module, "http_request", None)
    if call is not None and not getattr(call, "_retrain_guard", False):
        module.http_request = _guarded(call)


class _WrapOnImport(importlib.abc.MetaPathFinder):
    """Wraps `http_request` in the modules of `_GUARDED` as they are imported."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in _GUARDED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _wrap(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]  # this spec's own loader
        return spec


def _guarded(call: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        names = ("host_creds", "endpoint", "method")
        given = {**dict(zip(names, args)), **{k: kwargs[k] for k in names if k in kwargs}}
        host = getattr(given.get("host_creds"), "host", "") or ""
        where = f"{given.get('method', '')} {given.get('endpoint', '')}".strip()
        started = time.monotonic()
        with _lock:
            since = _outage.since
        if since is not None:  # the server already failed to answer: one short try within the deadline
            left = since + _limits.deadline - started
            if left <= 0:
                raise TrackingServerError(_stopped_message(host, _outage.what)) from None
            kwargs["max_retries"] = 0
            kwargs["timeout"] = max(0.5, min(CLEANUP_TIMEOUT, _limits.call_timeout, left))
        try:
            response = call(*args, **kwargs)
        except Exception as exc:
            if unanswered(exc):
                with _lock:
                    if _outage.since is None:
                        _outage.since, _outage.host = started, host
                        _outage.what = f"{_cause(exc)} on {where}"
            raise
        with _lock:
            _outage.since = None  # it answers again: later calls get their full timeout and retries
        return response

    guarded._retrain_guard = True  # type: ignore[attr-defined]
    return guarded


_API_FAILURE = re.compile(r"API request to \S+ failed with (?:timeout )?exception")


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def unanswered(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) means the server did not answer: refused, reset or timed-out
    connections, retries exhausted, MLflow's "API request to ... failed with exception"."""
    import requests
    import urllib3.exceptions

    kinds = (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError, urllib3.exceptions.HTTPError,
             ConnectionError, TimeoutError, TrackingServerError)
    for link in _chain(exc):
        if isinstance(link, kinds):
            return True
        if type(link).__name__ == "MlflowException" and _API_FAILURE.search(str(link)):
            return True
    return False


def _cause(exc: BaseException) -> str:
    text = " ".join(str(link) for link in _chain(exc))
    if re.search(r"timed out|timeout", text, re.IGNORECASE):
        return f"no answer within {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', _limits.call_timeout)} s"
    for pattern, said in ((r"Connection refused", "connection refused"),
                          (r"Connection reset|RemoteDisconnected|Connection aborted|closed connection",
                           "connection dropped"),
                          (r"too many (\d+) error responses", "HTTP {0} errors"),
                          (r"Name or service not known|nodename nor servname|Temporary failure in name resolution",
                           "host name not resolved")):
        found = re.search(pattern, text)
        if found:
            return said.format(*found.groups())
    return type(exc).__name__


def _stopped_message(host: str, what: str) -> str:
    return (f"tracking server {redact(host or _current_uri())} stopped answering ({redact(what)}); the work stopped: "
            "runs it opened were ended FAILED where the server allowed, a lease it held expires on its own. "
            "Check the server, then run the command again")


def _current_uri() -> str:
    try:
        import mlflow

        return mlflow.get_tracking_uri()
    except Exception:  # only for a message
        return os.environ.get("MLFLOW_TRACKING_URI", "?")


def server_error(exc: BaseException) -> TrackingServerError | None:
    """The one-line error for `exc` when it means the tracking server stopped answering, else None."""
    if not unanswered(exc):
        return None
    first = next((link for link in _chain(exc) if isinstance(link, TrackingServerError)), None)
    if first is not None:  # ours already says what (unreachable up front, or stopped answering)
        return TrackingServerError(redact(str(first)))
    with _lock:
        host, what = _outage.host, _outage.what
    if not what:
        what = _cause(exc)
    return TrackingServerError(_stopped_message(host, what))
