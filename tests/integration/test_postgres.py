"""The registry, the controller and the lease on the deployment teams grow into: a real `mlflow
server` whose backend store is a real PostgreSQL (tests/stores.py), on every `make test`.

Every test here gets a fresh database under one server per worker (`STORE = "postgres"` switches
this module's `store` and `prod_store` fixtures to it; `MLFLOW_RETRAIN_TEST_STORE=postgres` does the
same for the whole suite). Key scenarios of test_registry, test_controller and test_lease run
as they are, plus what PostgreSQL does differently from sqlite:

- stage moves that archive the previous holder (MLflow's `archive_existing_versions` fails on
  PostgreSQL through a server: mlflow#24592);
- unique-name creates and first-time aliases racing in eight processes at once (PostgreSQL reports
  the clash as `UniqueViolation`, sqlite as `IntegrityError`);
- the database going down under a running server, or a `postgresql://` store that cannot be
  reached: one line, exit 2, no password, nothing written.

The concurrent takers are forked (MLflow keys its HTTP sessions by process id): eight spawned
interpreters would each import MLflow again, seconds of CPU apiece on two cores.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from datetime import timedelta

import inprocess_cli
from mlflow.tracking import MlflowClient

# the scenarios of the sqlite modules, collected here again against PostgreSQL
from test_controller import (  # noqa: F401
    test_degradation_retrains_validates_promotes_and_audits,
    test_two_cycles_started_together_one_trains_and_promotes,
)
from test_lease import (
    test_a_takeover_leaves_one_lease_object_and_the_dead_holders_release_frees_nothing,  # noqa: F401
)
from test_registry import (
    test_expired_lease_is_taken_over_and_release_only_frees_our_own,  # noqa: F401
)

from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.base.errors import LeaseHeldError
from mlflow_retrain.adapters.registry import Lease, Registry

STORE = "postgres"
TAKERS = 8


def test_the_store_is_a_server_over_postgresql(store, postgres_server):
    assert store == postgres_server.uri and store.startswith("http://")
    assert postgres_server.server.backend.startswith("postgresql://")


def test_stages_and_aliases_move_together_over_a_postgresql_server(prod_store, write_policy):
    """Promote, stage, archive with stages on: every Production move archives the one before."""
    config = load_config(write_policy())
    client = MlflowClient()
    v1 = client.get_model_version("bikes", "1")
    for _ in range(2):  # two more versions of the same logged model: the moves are the subject, not training
        _same_model_again(client, v1)
    registry = Registry(config)
    registry.moves.promote("2")
    registry.moves.stage_candidate("3")
    registry.moves.promote("3")
    registry.moves.stage_candidate("1")  # an archived version back to Staging replaces nothing in Production
    assert [(v.version, v.stage) for v in registry.versions()] == [("3", "Production"), ("2", "Archived"),
                                                                   ("1", "Staging")]
    assert {k: str(v) for k, v in client.get_registered_model("bikes").aliases.items()} == {"production": "3",
                                                                                             "staging": "1"}
    registry.moves.archive("1")
    assert registry.staging() is None and registry.get("1").stage == "Archived"
    assert len(client.search_model_versions("name = 'bikes'")) == 3  # nothing deleted


def _same_model_again(client: MlflowClient, version) -> None:
    """Another version of the logged model `version` registers (`models:/m-<id>`): no training."""
    client.create_model_version(version.name, version.source, run_id=version.run_id,
                                model_id=version.source.removeprefix("models:/"))


def _take_lease(uri: str, config_path: str, barrier, queue) -> None:
    import mlflow

    mlflow.set_tracking_uri(uri)
    registry = Registry(load_config(config_path))
    barrier.wait()
    try:
        queue.put(("won", registry.acquire_lease(timedelta(minutes=5)).holder))
    except LeaseHeldError as exc:
        queue.put(("held", str(exc)))
    except Exception as exc:  # noqa: BLE001  (anything else is the failure this test looks for)
        queue.put(("error", f"{type(exc).__name__}: {exc}"))
    # every taker lives until all have decided: a winner that exited first is a holder provably gone,
    # which a slower taker rightly takes over (a second "won" the race did not cause)
    barrier.wait(timeout=120)


def _set_alias(uri: str, name: str, version: str, barrier, queue) -> None:
    import mlflow

    from mlflow_retrain.adapters.registry.moves import _retry

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    barrier.wait()
    try:
        _retry(lambda: client.set_registered_model_alias(name, "production", version))
        queue.put(("ok", version))
    except Exception as exc:  # noqa: BLE001  (reported to the test, which fails on it)
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def _race(target, args: tuple, n: int = TAKERS) -> list[tuple[str, str]]:
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    return outcomes


def test_eight_takers_at_once_one_wins_the_lease_round_after_round(store, write_policy):
    """The lease rests on PostgreSQL refusing a second create of one name inside racing transactions."""
    path = str(write_policy(model_name="bikes-race"))
    registry = Registry(load_config(path))
    for _ in range(3):
        outcomes = _race(_take_lease, (store, path))
        assert sorted(kind for kind, _ in outcomes) == ["held"] * (TAKERS - 1) + ["won"], outcomes
        (winner,) = [holder for kind, holder in outcomes if kind == "won"]
        assert registry.lease_state()[T.LEASE_HOLDER] == winner
        top = registry.lease.generations()[-1]  # the winner's process is gone: release on its behalf
        registry.release_lease(Lease(top.name, winner, top.expires, top.number, timedelta(minutes=5)))
        assert registry.lease_state() is None


def test_a_first_alias_set_by_eight_processes_at_once_never_fails(prod_store):
    """Creating an alias row races on PostgreSQL's primary key (`UniqueViolation`); the registry's
    retry must recognise PostgreSQL's wording as well as sqlite's."""
    client = MlflowClient()
    v1 = client.get_model_version("bikes", "1")
    client.delete_registered_model_alias("bikes", "production")
    _same_model_again(client, v1)
    outcomes = _race(_set_alias, (prod_store, "bikes", "2"))
    assert outcomes == [("ok", "2")] * TAKERS
    assert str(client.get_registered_model("bikes").aliases["production"]) == "2"


def _cycle(path: str, uri: str) -> inprocess_cli.Done:
    return inprocess_cli.run(["cycle", "--config", path, "--as-of", "2011-05-31", "--retrain-via", "inprocess",
                           "--force", "--reason", "PostgreSQL down"], env={**os.environ, "MLFLOW_TRACKING_URI": uri})


def _one_error_line(done: inprocess_cli.Done, password: str) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and password not in done.stdout + done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    return errors[0]


def test_postgresql_down_is_one_line_exit_2_and_nothing_written(prod_store, write_policy, postgres_server):
    """The server up and its database down, or a `postgresql://` store that refuses connections: a
    forced cycle stops before any write with one line and exit 2, and never prints the password."""
    path = str(write_policy())
    registry = Registry(load_config(path))
    before = [(v.version, v.stage, v.tags) for v in registry.versions()]
    pg = postgres_server.pg
    pg.stop()
    try:
        line = _one_error_line(_cycle(path, prod_store), pg.password)
        assert "is up but its API does not answer" in line and "database" in line, line
        line = _one_error_line(_cycle(path, pg.uri("mlflow")), pg.password)
        assert line.startswith("error: database store postgresql://***@127.0.0.1") and "cannot be reached" in line
    finally:
        pg.resume()
    assert [(v.version, v.stage, v.tags) for v in registry.versions()] == before
    assert registry.lease_state() is None and registry.moves.pending() is None
    # the direct URI (no server) works the same once the database is back: the registry is the same
    assert [v.version for v in Registry(load_config(path), MlflowClient(pg.uri("mlflow"))).versions()] == ["1"]

