"""Shared fixtures: a real sqlite MLflow store per test, copied from one migrated template.

Creating a sqlite store runs every MLflow migration (seconds), so the session builds one and each
test gets a byte copy in its own tmp_path: real store, isolated, quick.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIKE = REPO / "data" / "bike_sharing_hourly.csv"

warnings.filterwarnings("ignore", category=FutureWarning)
# One OpenMP thread per process (inherited by every subprocess): the suite runs two workers on two
# cores, and scikit-learn's gradient boosting spinning a thread per core in each process made a
# cycle 2.5x slower than on one thread (16 s against 6.5 s, measured under the suite's load).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# An `mlflow server` (MLflow 3) starts six job-runner processes (huey consumers, GenAI jobs this tool
# never submits), each importing MLflow: seconds of CPU per server start, on a two-core machine.
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


def _tmpfs() -> str | None:
    shm = "/dev/shm"
    if not (os.path.isdir(shm) and os.access(shm, os.W_OK)):
        return None
    stats = os.statvfs(shm)
    return shm if stats.f_bavail * stats.f_frsize > 4 << 30 else None  # a session writes about 1 GB


# Every test's sqlite store, and the servers' stores, live in tmp_path: on tmpfs when there is one.
# A sqlite commit syncs the file (fdatasync): 9 ms a commit on the dev machine's disk against
# 0.1-0.4 ms on /dev/shm, and a new store, a bootstrap and one cycle sync 1,376 times (strace): about
# 12 s of waiting per cycle's worth of store on that disk, the same CPU. Set here,
# at import, before pytest (or xdist's controller, which hands each worker a folder under it) picks
# its base temporary folder; PYTEST_DEBUG_TEMPROOT set by the caller wins.
if _tmpfs():
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", _tmpfs())


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The audited-model cache (`mlflow_retrain.adapters.model_cache`) of this test process and the commands it
    starts: its own folder, not the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("model-cache")
    os.environ["MLFLOW_RETRAIN_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("store-template")
    MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


# The one switch for where the integration tests' `store` lives: `sqlite` (a file per test, the
# default), `server` (a real `mlflow server` over sqlite) or `postgres` (a real `mlflow server` over
# a real PostgreSQL, as teams deploy it). A test module can pin its own with a module-level
# `STORE = "postgres"` (tests/integration/test_postgres.py does, so CI covers PostgreSQL every run).
STORE_ENV = "MLFLOW_RETRAIN_TEST_STORE"
STORE_KINDS = ("sqlite", "server", "postgres")


def store_kind(request: pytest.FixtureRequest) -> str:
    kind = getattr(request.module, "STORE", None) or os.environ.get(STORE_ENV, "").strip() or "sqlite"
    if kind not in STORE_KINDS:
        raise pytest.UsageError(f"{STORE_ENV}={kind!r}: use one of {', '.join(STORE_KINDS)}")
    return kind


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory):
    """A real PostgreSQL cluster and an `mlflow server` over it, once per test session and xdist
    worker (started only if a test asks); tests get a fresh database each through `store`."""
    from stores import PostgresServer, postgres_missing

    missing = postgres_missing()
    if missing:
        pytest.skip(f"the PostgreSQL-backed server was not tested: {missing}")
    # one worker process: its threads still race on separate database connections, at half the start-up CPU
    backend = PostgresServer(tmp_path_factory.mktemp("pg-server"), workers=1)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory, store_template: Path):
    """A real `mlflow server` over sqlite, once per session and worker; a fresh database per test."""
    from stores import SqliteServer

    backend = SqliteServer(tmp_path_factory.mktemp("sqlite-server"), store_template)
    yield backend
    backend.close()


def store_backend(request: pytest.FixtureRequest):
    """The server this test's `store` lives on (None for a sqlite file)."""
    kind = store_kind(request)
    return None if kind == "sqlite" else request.getfixturevalue({"server": "sqlite_server",
                                                                   "postgres": "postgres_server"}[kind])


@pytest.fixture
def store(tmp_path: Path, store_template: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh real MLflow store in tmp_path, the working directory: a sqlite file, or (see
    STORE_ENV) a freshly reset database behind a real `mlflow server`."""
    import mlflow

    backend = store_backend(request)
    if backend is None:
        shutil.copy(store_template, tmp_path / "mlflow.db")
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    else:
        backend.reset("clean")
        uri = backend.uri
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def bike_frame() -> pd.DataFrame:
    return pd.read_csv(BIKE)


def policy(data_path: Path, **overrides) -> dict:
    """A small, fast policy over the bike columns (short windows, few boosting rounds)."""
    raw = {
        "model_name": "bikes",
        "experiment": "bikes",
        "data": {
            "path": str(data_path),
            "timestamp": "timestamp",
            "target": "cnt",
            "features": ["hour", "season", "holiday", "weekday", "workingday", "weathersit", "temp", "atemp", "hum",
                         "windspeed"],
            "categorical": ["season", "holiday", "weekday", "workingday", "weathersit"],
        },
        "training": {"params": {"max_iter": 30}, "window": "60d", "holdout": "7d"},
        "monitoring": {"window": "7d", "metric": "mae"},
        "triggers": {"metric_threshold": {"max": 80}},
        "validation": {"max_metric": 120, "min_improvement": 0.0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


@pytest.fixture(scope="session")
def small_csv(bike_frame: pd.DataFrame) -> bytes:
    """The CSV text of `small_data`, made once per worker (to_csv took 26 ms a test)."""
    return bike_frame[bike_frame.timestamp < "2011-10-01"].to_csv(index=False).encode()


@pytest.fixture
def small_data(tmp_path: Path, small_csv: bytes) -> Path:
    """Jan-Sep 2011 of the real data: enough for two training windows and later degradation."""
    path = tmp_path / "data" / "bikes.csv"
    path.parent.mkdir()
    path.write_bytes(small_csv)
    return path


@pytest.fixture
def write_policy(tmp_path: Path, small_data: Path):
    def write(**overrides) -> Path:
        path = tmp_path / "retrain.yaml"
        path.write_text(yaml.safe_dump(policy(small_data, **overrides)))
        return path

    return write


@contextlib.contextmanager
def _tracking_at(uri: str) -> Iterator[None]:
    """This process's tracking URI is `uri` for the block, then what it was."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _bootstrap(folder: Path, bike_frame: pd.DataFrame, uri: str, **overrides) -> None:
    """v1 trained as of 2011-04-30 on the small policy (with `overrides`), into the tracking store at `uri`."""
    from mlflow_retrain.policy.load import load_config
    from mlflow_retrain.loop.training import train

    data = folder / "bikes.csv"
    bike_frame[bike_frame.timestamp < "2011-10-01"].to_csv(data, index=False)
    path = folder / "retrain.yaml"
    path.write_text(yaml.safe_dump(policy(data, **overrides)))
    # an experiment's artifact root (mlruns/) is taken from the working folder
    with _tracking_at(uri), contextlib.chdir(folder):
        train(load_config(path), as_of="2011-04-30")


@pytest.fixture(scope="session")
def bootstrapped_template(tmp_path_factory: pytest.TempPathFactory, store_template: Path, bike_frame) -> Path:
    """A store where v1 (trained as of 2011-04-30 on the small policy) is already in Production.

    Built once per session; tests get a copy through `prod_store`. Its artifacts stay in this
    folder, which copies only read.
    """
    folder = tmp_path_factory.mktemp("bootstrapped")
    shutil.copy(store_template, folder / "mlflow.db")
    _bootstrap(folder, bike_frame, f"sqlite:///{folder / 'mlflow.db'}")
    return folder / "mlflow.db"


APPROVAL = {"require_approval": True, "approval_ttl": "7d"}


@pytest.fixture(scope="session")
def awaiting_template(tmp_path_factory: pytest.TempPathFactory, bootstrapped_template: Path, bike_frame) -> Path:
    """The bootstrapped store after one cycle of a policy with `validation.require_approval` (as of
    2011-05-31, v1 degraded): v2 passed the gate and awaits a person's sign-off in Staging."""
    from mlflow_retrain.policy.load import load_config
    from mlflow_retrain.loop.cycle import run_cycle

    folder = tmp_path_factory.mktemp("awaiting")
    shutil.copy(bootstrapped_template, folder / "mlflow.db")
    data = folder / "bikes.csv"
    bike_frame[bike_frame.timestamp < "2011-10-01"].to_csv(data, index=False)
    path = folder / "retrain.yaml"
    path.write_text(yaml.safe_dump(policy(data, triggers={"metric_threshold": {"max": 60}}, validation=APPROVAL)))
    with _tracking_at(f"sqlite:///{folder / 'mlflow.db'}"), contextlib.chdir(folder):
        outcome = run_cycle(load_config(path), as_of="2011-05-31", via="inprocess").outcome
    assert outcome == "awaiting_approval", outcome
    return folder / "mlflow.db"


@pytest.fixture
def prod_store(store: str, tmp_path: Path, request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory, bike_frame: pd.DataFrame) -> str:
    """A fresh copy of the bootstrapped store (v1 in Production) as this test's tracking store."""
    backend = store_backend(request)
    if backend is None:  # the sqlite template is built only when a test needs it
        shutil.copy(request.getfixturevalue("bootstrapped_template"), tmp_path / "mlflow.db")
    elif backend.has("bootstrapped"):
        backend.reset("bootstrapped")
    else:  # the first test of this worker to need it: bootstrap over the server (clean now), save it
        _bootstrap(tmp_path_factory.mktemp("bootstrapped-server"), bike_frame, backend.uri)
        backend.save("bootstrapped")
    return store


@dataclass(frozen=True)
class Server:
    uri: str
    artifacts: Path


@pytest.fixture(scope="module")
def http_server(sqlite_server, request: pytest.FixtureRequest):
    """A real `mlflow server` on 127.0.0.1 with artifacts proxied through it (`mlflow-artifacts:`):
    the deployment CI jobs talk to. A module's tests share it and use distinct model names. It is
    the worker's `sqlite_server` (a start costs ~10 s, seconds of CPU), reset for each module to a
    fresh store with no artifacts: what a server started for the module would be. (When that server
    is the whole suite's store, STORE_ENV=server, `store` resets it per test and its artifacts stay:
    saved snapshots refer to them.)"""
    sqlite_server.reset("clean")
    if store_kind(request) != "server":
        shutil.rmtree(sqlite_server.artifacts, ignore_errors=True)
    yield Server(sqlite_server.uri, sqlite_server.artifacts)


@dataclass(frozen=True)
class ServerStates:
    """Resets the store of the module's `http_server` to a state saved by `server_states`."""

    backend: Any  # the worker's `sqlite_server` (stores.SqliteServer)
    models: tuple[str, ...]  # v1 of each in Production in the bootstrapped state, its experiment of its name

    def clean(self) -> None:
        self.backend.reset("clean")

    def bootstrapped(self) -> None:
        self.backend.reset("http-bootstrapped")


@pytest.fixture(scope="module")
def server_states(http_server: Server, sqlite_server, tmp_path_factory: pytest.TempPathFactory,
                  bike_frame: pd.DataFrame) -> ServerStates:
    """The module's `http_server`, with v1 of two models trained over HTTP once and saved: a test
    that needs many copies of a bootstrapped store on the server resets it for each pair of copies
    (one a model, side by side) instead of training v1 again."""
    sqlite_server.reset("clean")
    models = ("bikes", "bikes-1")
    for name in models:
        _bootstrap(tmp_path_factory.mktemp("bootstrapped-http"), bike_frame, http_server.uri, model_name=name,
                   experiment=name)
    sqlite_server.save("http-bootstrapped")
    return ServerStates(sqlite_server, models)


@pytest.fixture
def server(store: str, http_server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """This test talks to the shared server only: everything it writes goes over HTTP."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", http_server.uri)
    mlflow.set_tracking_uri(http_server.uri)
    return http_server


_leak_key = pytest.StashKey[dict]()
_LEAKS = (REPO / "mlruns", REPO / "notebooks" / "mlruns", REPO / "mlflow.db", REPO / "mlflow_retrain" / "project" / "mlruns")


def _fingerprint(path: Path) -> tuple | None:
    """What a test writing into a store in the checkout would change: files, sizes, times."""
    if not path.exists():
        return None
    if path.is_file():
        return (path.stat().st_size, path.stat().st_mtime_ns)
    return tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()))


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_leak_key] = {path: _fingerprint(path) for path in _LEAKS}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A test whose store or subprocess writes into the checkout fails the run: CI and a user's
    working copy must not collect artifacts (an experiment created while the working folder was the
    repository puts its artifacts under the repository's mlruns/ for good), and `make test` after
    `make demo` must leave the demo's store (mlflow.db, mlruns/ in the checkout) as it was."""
    before = session.config.stash[_leak_key]
    changed = sorted(str(p) for p in _LEAKS if _fingerprint(p) != before[p])
    if changed:
        print(f"\nerror: the tests wrote into the checkout's stores: {', '.join(changed)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# The files that take longest, handed out first. With `--dist loadfile --no-loadscope-reorder` (the
# Makefile) each worker takes the next file in collection order; xdist's default order puts the
# files with most tests first, so a slow file of one test ran alone at the end. Ranked by the files'
# times alone (2026-11-27 and 2026-12-07, `--durations`), after test_wheel_install.py stopped copying
# its venv's dependencies with pip (182 s -> 73 s of CPU alone, at load 15: now beside the server drills); the
# other files keep their order, the unit tests last. The refit kills and the README recipe (284 s and 273 s in
# the 2026-12-07 run of 982 tests, the two longest files) had no rank: handed out in collection order.
SLOWEST_FIRST = ("test_faults_refit.py", "test_readme_recipe.py", "test_faults_http.py", "test_faults_recovery.py",
                 "test_lease.py", "test_own_model.py", "test_faults.py", "test_serve_replicas.py",
                 "test_server_faults.py", "test_wheel_install.py", "test_lease_training.py", "test_cluster.py",
                 "test_flavors.py", "test_controller.py", "test_serve.py", "test_hand_moves.py",
                 "test_faults_challenger.py", "test_demo.py", "test_challenger.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: n for n, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order
