"""Scenario builders shared by the fault-injection test files (split in two so the suite's two
workers share the work): a policy per scenario, copies of a store, kill-everywhere-then-recover."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from fault_harness import (
    TTL,
    TTL_SECONDS,
    Scenario,
    assert_converged,
    kill,
    points,
    recover,
)

CYCLE = {"as_of": "2011-05-31", "via": "inprocess"}
BOOTSTRAP = {"as_of": "2011-04-30", "via": "inprocess"}
QUIET = {"metric_threshold": {"max": 500}}
DEGRADED = {"metric_threshold": {"max": 60}}
PARALLEL = 2  # cycles (killed or recovering) at once: a cycle waits on its store or the server part of the time

Maker = Callable[[Path, int], list[Scenario]]


def policy_file(folder: Path, write_policy, name: str, **overrides) -> Path:
    raw = yaml.safe_load(write_policy(**overrides).read_text())
    raw["registry"] = {"lease_ttl": TTL}
    raw["monitoring"]["reports"] = "never"  # Evidently's HTML is not what a kill tests
    path = folder / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _copies(folder: Path, count: int, write_policy, cycle: dict, recovery: dict, prepare: str, overrides: dict,
            store: Callable[[Path, int], tuple[str, str, dict]]) -> list[Scenario]:
    """`count` copies of a scenario, each in its own folder; `store` gives each copy its name, its
    tracking URI and the policy keys that keep it apart (a model name on a shared server)."""
    folder.mkdir(parents=True)
    made = []
    for i in range(count):
        where = folder / f"s{i}"
        where.mkdir()
        name, uri, own = store(where, i)
        made.append(Scenario(name, where, uri, policy_file(where, write_policy, "retrain.yaml", **own, **overrides),
                             cycle, policy_file(where, write_policy, "recovery.yaml", **own,
                                                **{**overrides, "triggers": QUIET}), recovery, prepare))
    return made


def maker(template: Path | None, write_policy, cycle: dict, prepare: str = "", **overrides) -> Maker:
    """Copies of one scenario, each with its own copy of the store; the next cycle after a kill runs
    a policy whose triggers stay quiet."""
    def store(where: Path, i: int) -> tuple[str, str, dict]:
        if template is not None:
            shutil.copy(template, where / "mlflow.db")
        return f"{where.parent.name}/s{i}", f"sqlite:///{where / 'mlflow.db'}", {}

    return lambda folder, count: _copies(folder, count, write_policy, cycle, CYCLE if template is not None else cycle,
                                         prepare, overrides, store)


def kill_everywhere(tmp_path: Path, make: Maker, skip: list[str] | None = None,
                    pick: Callable[[list[str]], list[str]] | None = None, remember: str | None = None) -> int:
    """List the points with one copy, kill a fresh copy at each, then recover every copy.

    `skip` is another scenario's point list: the points both pass in the same order from the start
    run the same code on the same state, so they are killed once, in that other scenario. `pick`
    narrows the points (e.g. `fault_harness.kinds`). `remember` names the scenario (see `learn`)."""
    found = learn(tmp_path / "probe", make, tmp_path / "points.log", remember)
    found = pick(found) if pick else found
    shared = 0
    while skip and shared < min(len(found), len(skip)) and found[shared] == skip[shared]:
        shared += 1
    todo = found[shared:]
    copies = make(tmp_path / "copies", len(todo))
    killed = at_once(lambda pair: _timed_kill(*pair), zip(copies, todo))
    # each copy recovers once the lease its own killed cycle left has expired: the copies killed
    # first are ready while the last ones are still being killed (one TTL wait in all, not a TTL
    # after the last kill before any recovery starts)
    at_once(lambda item: assert_converged(recover(_after_expiry(item[0], item[2])), item[1], versions_before=1),
            zip(copies, todo, killed))
    return len(todo)


def _timed_kill(scenario: Scenario, point: str) -> float:
    kill(scenario, point)
    return time.monotonic()  # the child is dead: its lease was last renewed before this


def _after_expiry(scenario: Scenario, killed: float) -> Scenario:
    """`scenario`, once a lease its cycle (killed at monotonic time `killed`) left has expired."""
    time.sleep(max(0.0, killed + TTL_SECONDS + 0.5 - time.monotonic()))
    return scenario


def at_once(action: Callable, items) -> list:
    """`action` on each item, PARALLEL at a time: each copy has a store (or a model on the server) of
    its own, so their cycles share nothing; the first failure fails the test."""
    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(action, items))


def probe_points(tmp_path: Path, make: Maker, remember: str | None = None) -> list[str]:
    return learn(tmp_path / "reference", make, tmp_path / "reference.log", remember)


_LEARNED: dict[str, list[str]] = {}  # points of named scenarios, learned once per worker process


def learn(folder: Path, make: Maker, log: Path, remember: str | None = None) -> list[str]:
    """The points a scenario's cycle passes (it completes). A scenario named by `remember` is run
    once per process: a test that kills it and another that only needs its list (a `skip`) share the
    run, a full cycle on a copy of its own (over HTTP it bootstraps v1 first)."""
    if remember is None or remember not in _LEARNED:
        found = points(make(folder, 1)[0], log)
        if remember is None:
            return found
        _LEARNED[remember] = found
    return list(_LEARNED[remember])


def server_maker(server_uri: str, write_policy, cycle: dict, prepare: str = "", **overrides) -> Maker:
    """Copies of a scenario on a real server: a model (and experiments) of its own per copy."""
    def store(where: Path, i: int) -> tuple[str, str, dict]:
        name = f"http-{where.parent.parent.name[-12:]}-{where.parent.name}-{i}"
        return name, server_uri, {"model_name": name, "experiment": name}

    return lambda folder, count: _copies(folder, count, write_policy, cycle, CYCLE, prepare, overrides, store)
