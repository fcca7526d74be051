"""Scenario builders shared by the fault-injection test files (split in two so the suite's two
workers share the work): a policy per scenario, copies of a store, kill-everywhere-then-recover."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from fault_harness import Outcome, Scenario, assert_converged, kill, points, recover

CYCLE = {"as_of": "2011-05-31", "via": "inprocess"}
BOOTSTRAP = {"as_of": "2011-04-30", "via": "inprocess"}
QUIET = {"metric_threshold": {"max": 500}}
DEGRADED = {"metric_threshold": {"max": 60}}
PARALLEL = 2  # cycles (killed or recovering) at once: a cycle waits on its store part of the time

Maker = Callable[[Path, int], list[Scenario]]
Restore = Callable[[], None]  # puts a shared server's store back to the state every copy starts from


def policy_file(folder: Path, write_policy, name: str, **overrides) -> Path:
    """The scenario's policy; the lease keeps its default TTL (minutes): the cycle after a kill takes
    the dead cycle's lease at once, and no renewal races a short TTL on a loaded machine."""
    raw = yaml.safe_load(write_policy(**overrides).read_text())
    raw["monitoring"]["reports"] = "never"  # Evidently's HTML is not what a kill tests
    path = folder / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _copies(folder: Path, count: int, write_policy, cycle: dict, recovery: dict, prepare: str, overrides: dict,
            store: Callable[[Path, int], tuple[str, str, dict]]) -> list[Scenario]:
    """`count` copies of a scenario, each in its own folder; `store` gives each copy its name, its
    tracking URI and the policy keys that keep it apart (a model of its own on a shared server)."""
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


def server_maker(server_uri: str, models: tuple[str, ...], write_policy, cycle: dict, prepare: str = "",
                 **overrides) -> Maker:
    """Copies of a scenario on a real server's one store, run with a `Restore` PARALLEL at a time:
    side by side, copies use different `models` (each with the experiment of its name)."""
    assert len(models) >= PARALLEL, models

    def store(where: Path, i: int) -> tuple[str, str, dict]:
        model = models[i % PARALLEL]
        return f"http/{where.parent.parent.name}/s{i}", server_uri, {"model_name": model, "experiment": model}

    return lambda folder, count: _copies(folder, count, write_policy, cycle, CYCLE, prepare, overrides, store)


def kill_everywhere(tmp_path: Path, make: Maker, skip: list[str] | None = None,
                    pick: Callable[[list[str]], list[str]] | None = None, remember: str | None = None,
                    restore: Restore | None = None) -> int:
    """List the points with one copy, kill a fresh copy at each, and recover each copy at once.

    `skip` is another scenario's point list: the points both pass in the same order from the start
    run the same code on the same state, so they are killed once, in that other scenario. `pick`
    narrows the points (e.g. `fault_harness.kinds`). `remember` names the scenario (see `learn`).
    Copies run PARALLEL at a time; with `restore` (one server's store), each group of PARALLEL
    starts from the restored state."""
    found = learn(tmp_path / "probe", make, tmp_path / "points.log", remember, restore)
    found = pick(found) if pick else found
    shared = 0
    while skip and shared < min(len(found), len(skip)) and found[shared] == skip[shared]:
        shared += 1
    todo = found[shared:]
    copies = list(zip(make(tmp_path / "copies", len(todo)), todo))
    if restore is None:
        at_once(lambda pair: kill_and_recover(*pair), copies)
        return len(todo)
    for first in range(0, len(copies), PARALLEL):
        restore()
        at_once(lambda pair: kill_and_recover(*pair), copies[first:first + PARALLEL])
    return len(todo)


def kill_and_recover(scenario: Scenario, point: str, versions_before: int = 1,
                     check: Callable[[Outcome, str], None] | None = None) -> None:
    """Kill the scenario at `point`, then run its next cycle at once: it must take the dead cycle's
    lease (a live holder's would refuse it and fail the recovery), converge, and pass `check`."""
    kill(scenario, point)
    outcome = recover(scenario)
    assert_converged(outcome, point, versions_before)
    if check is not None:
        check(outcome, point)


def at_once(action: Callable, items) -> list:
    """`action` on each item, PARALLEL at a time: each copy has a store of its own, so their cycles
    share nothing; the first failure fails the test."""
    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(action, items))


def probe_points(tmp_path: Path, make: Maker, remember: str | None = None, restore: Restore | None = None) -> list[str]:
    return learn(tmp_path / "reference", make, tmp_path / "reference.log", remember, restore)


_LEARNED: dict[str, list[str]] = {}  # points of named scenarios, learned once per worker process


def learn(folder: Path, make: Maker, log: Path, remember: str | None = None,
          restore: Restore | None = None) -> list[str]:
    """The points a scenario's cycle passes (it completes). A scenario named by `remember` is run
    once per process: a test that kills it and another that only needs its list (a `skip`) share the
    run, a full cycle on a copy of its own (or on the restored server store)."""
    if remember is None or remember not in _LEARNED:
        if restore is not None:
            restore()
        found = points(make(folder, 1)[0], log)
        if remember is None:
            return found
        _LEARNED[remember] = found
    return list(_LEARNED[remember])
