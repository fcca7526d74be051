"""Scenario builders shared by the fault-injection test files (split in two so the suite's two
workers share the work): a policy per scenario, copies of a store, kill-everywhere-then-recover."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import yaml

from fault_harness import TTL, Scenario, assert_converged, kill, points, recover, wait_for_expiry

CYCLE = {"as_of": "2011-05-31", "via": "inprocess"}
BOOTSTRAP = {"as_of": "2011-04-30", "via": "inprocess"}
QUIET = {"metric_threshold": {"max": 500}}
DEGRADED = {"metric_threshold": {"max": 60}}

Maker = Callable[[Path, int], list[Scenario]]


def policy_file(folder: Path, write_policy, name: str, **overrides) -> Path:
    raw = yaml.safe_load(write_policy(**overrides).read_text())
    raw["registry"] = {"lease_ttl": TTL}
    raw["monitoring"]["reports"] = "never"  # Evidently's HTML is not what a kill tests
    path = folder / name
    path.write_text(yaml.safe_dump(raw))
    return path


def maker(template: Path | None, write_policy, cycle: dict, prepare: str = "", **overrides) -> Maker:
    """`count` independent copies of one scenario, each in its own folder with its own store copy;
    the next cycle after a kill runs a policy whose triggers stay quiet."""
    def make(folder: Path, count: int) -> list[Scenario]:
        folder.mkdir()
        made = []
        for i in range(count):
            where = folder / f"s{i}"
            where.mkdir()
            if template is not None:
                shutil.copy(template, where / "mlflow.db")
            made.append(Scenario(f"{folder.name}/s{i}", where, f"sqlite:///{where / 'mlflow.db'}",
                                 policy_file(where, write_policy, "retrain.yaml", **overrides), cycle,
                                 policy_file(where, write_policy, "recovery.yaml", **{**overrides, "triggers": QUIET}),
                                 CYCLE if template is not None else cycle, prepare))
        return made
    return make


def kill_everywhere(tmp_path: Path, make: Maker, skip: list[str] | None = None) -> int:
    """List the points with one copy, kill a fresh copy at each, then recover every copy.

    `skip` is another scenario's point list: the points both pass in the same order from the start
    run the same code on the same state, so they are killed once, in that other scenario."""
    found = points(make(tmp_path / "probe", 1)[0], tmp_path / "points.log")
    shared = 0
    while skip and shared < min(len(found), len(skip)) and found[shared] == skip[shared]:
        shared += 1
    todo = found[shared:]
    copies = make(tmp_path / "copies", len(todo))
    for scenario, point in zip(copies, todo):
        kill(scenario, point)
    wait_for_expiry()
    for scenario, point in zip(copies, todo):
        assert_converged(recover(scenario), point, versions_before=1)
    return len(todo)


def probe_points(tmp_path: Path, make: Maker) -> list[str]:
    return points(make(tmp_path / "reference", 1)[0], tmp_path / "reference.log")
