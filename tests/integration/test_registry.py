"""Stages and aliases move together; the lease lets exactly one of several concurrent takers in."""

from __future__ import annotations

import multiprocessing as mp
from datetime import timedelta

import pytest
from mlflow.tracking import MlflowClient

from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.base.errors import LeaseHeldError
from mlflow_retrain.adapters.registry import Registry
from mlflow_retrain.loop.training import train


def test_promote_archive_keep_stages_and_aliases_in_sync(store, write_policy):
    config = load_config(write_policy())
    for as_of in ("2011-04-30", "2011-05-31", "2011-06-30"):
        train(config, as_of=as_of, bootstrap=False)
    registry = Registry(config)
    registry.moves.promote("1")
    registry.moves.stage_candidate("2")
    registry.moves.promote("2")
    registry.moves.stage_candidate("3")  # replaces nothing in Production
    client = MlflowClient()
    assert {k: str(v) for k, v in client.get_registered_model("bikes").aliases.items()} == {"production": "2",
                                                                                             "staging": "3"}
    assert [(v.version, v.stage) for v in registry.versions()] == [("3", "Staging"), ("2", "Production"),
                                                                   ("1", "Archived")]
    assert T.ARCHIVED_AT in registry.get("1").tags
    registry.moves.archive("3")
    assert registry.get("3").stage == "Archived" and registry.staging() is None
    # nothing was deleted
    assert len(client.search_model_versions("name = 'bikes'")) == 3


def test_aliases_alone_when_stages_are_gone(store, write_policy):
    config = load_config(write_policy(registry={"use_stages": False}))
    train(config, as_of="2011-04-30", bootstrap=False)
    train(config, as_of="2011-05-31", bootstrap=False)
    registry = Registry(config)
    registry.moves.promote("1")
    registry.moves.promote("2")
    assert registry.production().version == "2" and registry.get("1").stage == "Archived"
    assert MlflowClient().get_model_version("bikes", "2").current_stage == "None"  # stages untouched


def _take(uri: str, config_path: str, barrier, queue) -> None:
    import mlflow

    mlflow.set_tracking_uri(uri)
    registry = Registry(load_config(config_path))
    barrier.wait()
    try:
        lease = registry.acquire_lease(timedelta(minutes=5))
        queue.put(("won", lease.holder))
    except LeaseHeldError as exc:
        queue.put(("held", str(exc)))


def test_exactly_one_of_many_concurrent_takers_gets_the_lease(store, write_policy):
    path = str(write_policy())
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_take, args=(store, path, barrier, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    outcomes = [queue.get(timeout=5) for _ in procs]
    assert sorted(o[0] for o in outcomes) == ["held", "held", "held", "won"]
    assert all("another cycle holds the lease" in o[1] or "taking over" in o[1] for o in outcomes if o[0] == "held")


def test_expired_lease_is_taken_over_and_release_only_frees_our_own(store, write_policy):
    registry = Registry(load_config(write_policy()))
    stale = registry.acquire_lease(timedelta(seconds=-1), holder="crashed-host:1:dead")
    fresh = registry.acquire_lease(timedelta(minutes=5))
    assert fresh.holder != stale.holder
    registry.release_lease(stale)  # the crashed holder coming back must not free someone else's lease
    with pytest.raises(LeaseHeldError, match="another cycle holds the lease"):
        registry.acquire_lease(timedelta(minutes=5))
    registry.release_lease(fresh)
    assert registry.lease_state() is None
    registry.release_lease(registry.acquire_lease(timedelta(minutes=5)))
