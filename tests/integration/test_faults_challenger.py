"""Crash anywhere, converge next cycle: a real SIGKILL at each new registry write of the challenger
(`validation.challenger`): the alias and tags that place it, a round appended, the alias dropped as its
win promotes it. The next cycle at the same data time converges; a challenger serves only with the
rounds that won recorded on it, and its alias is never left on a version that is not the challenger."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from fault_harness import Outcome
from faults_common import _copies, at_once, kill_and_recover, learn

from mlflow_retrain.base import tags as T

CHALLENGER = {"significance": {}, "challenger": {"windows": 3, "wins": 2}}
QUIET = {"metric_threshold": {"max": 1000}}
PLACE = {"as_of": "2011-07-09", "via": "inprocess", "force": True, "reason": "a retrain asked for"}


def _template(folder: Path, source: Path, write_policy, *cycles: dict) -> Path:
    """The bootstrapped store after `cycles` (run here, in its folder): v2 serves from 2011-07-02."""
    import mlflow

    from mlflow_retrain.loop.cycle import run_cycle
    from mlflow_retrain.policy.load import load_config

    folder.mkdir()
    shutil.copy(source, folder / "mlflow.db")
    config = load_config(write_policy(triggers=QUIET, validation=CHALLENGER))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    try:
        with contextlib.chdir(folder):
            for cycle in cycles:
                run_cycle(config, **cycle)
    finally:
        mlflow.set_tracking_uri(previous)
    return folder / "mlflow.db"


def _scenarios(template: Path, write_policy, cycle: dict, validation: dict):
    def store(where: Path, i: int) -> tuple[str, str, dict]:
        shutil.copy(template, where / "mlflow.db")
        return f"{where.parent.name}/s{i}", f"sqlite:///{where / 'mlflow.db'}", {}

    recovery = {"as_of": cycle["as_of"], "via": "inprocess"}
    return lambda folder, count: _copies(folder, count, write_policy, cycle, recovery, "",
                                         {"triggers": QUIET, "validation": validation}, store)


def _kept_apart(serves: str):
    """The alias only on the challenger in Staging, and `serves` in Production: v2, or v3 once the round
    it won is recorded on it (the recovery replays a round cut short; a repair never promotes)."""
    def check(outcome: Outcome, point: str) -> None:
        alias = outcome.aliases.get("challenger")
        if alias is not None:
            assert outcome.stages[alias] == "Staging" and outcome.tags[alias][T.DECISION] == T.CHALLENGER, point
        assert outcome.aliases["production"] == serves, (point, outcome)
        if serves == "3":
            tags = outcome.tags["3"]
            assert tags[T.DECISION_REASON].startswith("challenger won 1 of 1"), point
            assert '"won": true' in tags[f"{T.CHALLENGER_ROUND}.1"] and "challenger" not in outcome.aliases, point
        else:
            assert alias == "3", (point, outcome)  # placed again by the recovery, or finished from its intent

    return check


def _writes(point: str, wanted: str) -> bool:
    """`point` is the write of `wanted`; a version's record values are written together, as
    `tag k1,k2,...@n` (`Versions.tag`)."""
    name = point.split("@", 1)[0]
    if wanted.startswith("tag ") and name.startswith("tag "):
        return wanted[4:] in name[4:].split(",")
    return name == wanted


def test_a_kill_at_each_new_write_of_a_challenger_converges(tmp_path, bootstrapped_template, write_policy, store):
    served = _template(tmp_path / "served", bootstrapped_template, write_policy,
                       {"as_of": "2011-07-02", "via": "inprocess", "force": True, "reason": "a retrain asked for"})
    placed = _template(tmp_path / "placed", served, write_policy, PLACE)
    # placing it (its tags, its alias), then a round and the promotion that round's win decides
    place = _scenarios(served, write_policy, PLACE, CHALLENGER)
    play = _scenarios(placed, write_policy, {"as_of": "2011-07-16", "via": "inprocess"},
                      {"significance": {}, "challenger": {"windows": 1, "wins": 1}})
    todo = []
    for name, make, wanted, serves in (("place", place, (f"tag {T.CHALLENGER_SINCE}", "alias challenger"), "2"),
                                       ("play", play, (f"tag {T.CHALLENGER_ROUND}.1", "drop alias challenger"), "3")):
        found = learn(tmp_path / f"probe-{name}", make, tmp_path / f"{name}.log")
        points = [next(p for p in found if _writes(p, w)) for w in wanted]
        todo += [(scenario, point, _kept_apart(serves)) for scenario, point in
                 zip(make(tmp_path / f"copies-{name}", len(points)), points)]
    at_once(lambda job: kill_and_recover(job[0], job[1], versions_before=2, check=job[2]), todo)
    assert len(todo) == 4
