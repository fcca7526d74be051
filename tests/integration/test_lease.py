"""The lease under pressure, on a real sqlite store and a real `mlflow server`.

- a cycle frozen (SIGSTOP, a paused VM) past its lease's TTL is taken over, then fenced when it
  wakes: exactly one promotion, and the next cycle finds a healthy registry;
- eight cycles started at once, round after round: one trains and promotes, seven are refused;
- a takeover leaves one lease object, and a dead holder's release frees nothing;
- rollback walks back through the promotions, never toggles between the last two;
- a holder that is gone frees the lease at once, a live one is respected.

A cycle cut during its training (killed, or frozen and fenced) is in test_lease_training.py (a file
of its own, so the suite's two workers can share these slow files).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Self

import forked_cli
import pytest
from mlflow.tracking import MlflowClient

from mlflow_retrain.base import tags as T
from mlflow_retrain.usecases.audit import status
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.base.errors import LeaseHeldError, LeaseLostError, RegistryError
from mlflow_retrain.base.faults import FAULT_LOG
from mlflow_retrain.loop.reconcile import controller_experiment, doctor
from mlflow_retrain.adapters.registry import Registry, utcnow
from mlflow_retrain.adapters.registry.lease import Leases

FIRING = {"metric_threshold": {"max": 60}}


def _cycle_args(path: str) -> list[str]:
    return ["cycle", "--config", path, "--retrain-via", "inprocess", "--json"]


def _cycle_cmd(path: str, as_of: str) -> list[str]:
    return [sys.executable, "-m", "mlflow_retrain.cli", *_cycle_args(path), "--as-of", as_of]


def _cli(*args: str) -> forked_cli.Done:
    return forked_cli.run(args)


def _wait(what: str, ready, timeout: float = 120, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        found = ready()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def _lease_objects(model: str) -> list[str]:
    """Every lease object, hidden or not; none of them is in the registered models list."""
    client = MlflowClient()
    assert not client.search_registered_models(f"name LIKE '{model}.retrain-lease%'")
    return sorted(name for name, _, _ in Leases(client, model).objects(f"{model}.retrain-lease%"))


def _one_production(registry: Registry) -> str:
    """Exactly one version in Production, the alias on it; returns it."""
    versions = registry.versions()
    in_production = [v.version for v in versions if v.stage == "Production"]
    assert len(in_production) == 1, [(v.version, v.stage) for v in versions]
    alias = registry.client.get_registered_model(registry.name).aliases.get(registry.config.registry.production_alias)
    assert str(alias) == in_production[0], (alias, in_production)
    return in_production[0]


def _promoted_by_cycles(registry: Registry) -> list[str]:
    """Versions a cycle made (a trigger recorded) and promoted."""
    return sorted(v.version for v in registry.versions()
                  if T.TRIGGER in v.tags and v.tags.get(T.TRIGGER) != T.BOOTSTRAP and v.tags.get(T.DECISION) == T.PROMOTED)


def _short_lease_and_taker(write_policy, ttl: str) -> tuple[str, str]:
    """The policy of a cycle to be frozen (a lease of `ttl`, to expire while it is), and the same
    policy with the default lease for the cycles that take over: a taker's own short lease could
    run out under a loaded machine's pauses ("too soon to register safely"), which is not the test."""
    written = write_policy(triggers=FIRING)
    taker = written.rename(written.with_name("taker.yaml"))
    return str(write_policy(triggers=FIRING, registry={"lease_ttl": ttl})), str(taker)


# ---- a. a cycle paused past its TTL --------------------------------------------------------------------
def _running_cycle_run(config) -> str | None:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(controller_experiment(config))
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    return next((r.info.run_id for r in runs if r.data.tags.get(T.RUN_KIND) == "cycle"), None)


def _freeze(pid: int, database: Path) -> None:
    """SIGSTOP `pid` at a moment it holds no sqlite lock (a frozen transaction would block everyone:
    that is a sqlite property, not the lease's)."""
    for _ in range(200):
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.05)
        try:
            with sqlite3.connect(database, timeout=0.2, isolation_level=None) as db:
                db.execute("BEGIN EXCLUSIVE")
                db.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.02)
    raise AssertionError("could not freeze the cycle outside a sqlite transaction")


def test_a_cycle_frozen_past_its_lease_is_fenced_and_only_the_taker_promotes(prod_store, write_policy, tmp_path):
    path, taker = _short_lease_and_taker(write_policy, "0.05m")  # A's: 3 s, renewed every second
    config = load_config(path)
    registry = Registry(config)
    points = tmp_path / "a.points"
    out_a, err_a = (tmp_path / "a.stdout").open("w"), (tmp_path / "a.stderr").open("w")
    a = subprocess.Popen(_cycle_cmd(path, "2011-05-31"), env={**os.environ, FAULT_LOG: str(points)},
                         stdout=out_a, stderr=err_a)
    try:
        # A holds generation 1 (it swept) and works: its cycle run is open, training comes next
        _wait("cycle A to take the lease", lambda: points.exists() and "lease.sweep@1" in points.read_text())
        assert [g.number for g in registry.lease.generations()] == [1]
        run_a = _wait("cycle A to open its run", lambda: _running_cycle_run(config))
        assert a.poll() is None, "cycle A ended before it could be frozen"
        _freeze(a.pid, tmp_path / "mlflow.db")
        # its renewal is frozen too: the lease expires one TTL after the last renewal
        _wait("A's lease to expire", lambda: registry.lease.generations()[-1].expires < utcnow(), timeout=30)
        assert registry.lease_state() is None
        b = _cli("cycle", "--config", taker, "--as-of", "2011-05-31", "--retrain-via", "inprocess", "--json")
        assert b.returncode == 0, b.stderr
        report_b = json.loads(b.stdout)
        assert report_b["outcome"] == "promoted", report_b
        # B closed A's open run as crashed (A could not be told apart from a dead process)
        assert run_a in report_b["reconciled"]["closed_runs"]
        assert _lease_objects("bikes") == ["bikes.retrain-lease.2"]  # A's generation swept
    finally:
        os.kill(a.pid, signal.SIGCONT)
    assert a.wait(300) == 3
    out_a.close()
    err_a.close()
    stderr = (tmp_path / "a.stderr").read_text()
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "lost the lease" in errors[0], stderr
    assert errors == stderr.strip().splitlines()[-1:], stderr  # the error is its last word
    assert (tmp_path / "a.stdout").read_text() == ""

    # exactly one promotion: B's candidate; A placed nothing (fenced before registering)
    production = _one_production(registry)
    assert production == report_b["candidate_version"]
    assert _promoted_by_cycles(registry) == [production]
    mine = [v for v in registry.versions() if v.tags.get(T.CYCLE_RUN_ID) == run_a]
    assert all(v.stage != "Production" for v in mine), mine
    assert registry.lease_state() is None and registry.moves.pending() is None

    # the next cycle converges: the registry, the runs and the lease are clean
    c = _cli("cycle", "--config", taker, "--as-of", "2011-06-30", "--retrain-via", "inprocess", "--json")
    assert c.returncode == 0, c.stderr
    report = doctor(config)
    assert report.healthy, report.to_dict()
    assert report.lease is None and _lease_objects("bikes") == ["bikes.retrain-lease.3"]
    _one_production(registry)


# ---- b. eight cycles at once, round after round ------------------------------------------------------
# One parent pays MLflow's import once for all the rounds of a test, forks each round's eight cycles
# and lets them go together (a byte each on a pipe); each child is a whole `mlflow-retrain cycle` (the CLI's entry point: its stdout, stderr
# and exit code) in its own process with its own connections. Eight interpreters each importing
# MLflow cost ~40 s of CPU per round on two cores, and the first would finish before the last began.
RUNNER = """
import importlib.util, json, os, sys
import mlflow, mlflow.pyfunc, mlflow.sklearn, sklearn.ensemble  # what every cycle loads before the lease
import mlflow_retrain.cli as cli, mlflow_retrain.loop.cycle, mlflow_retrain.adapters.train
if importlib.util.find_spec("skops"):
    import skops.io  # MLflow's sklearn loader imports it (a second of CPU)
n, args = int(sys.argv[1]), sys.argv[2:]
while line := sys.stdin.readline():  # a round: its folder and its as-of
    folder, as_of = line.rstrip("\\n").split("\\t")
    read, write = os.pipe()
    children = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            os.close(write)
            for fd, name in ((1, "out"), (2, "err")):
                os.dup2(os.open(os.path.join(folder, f"{i}.{name}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            os.read(read, 1)  # the start signal
            cli.main([*args, "--as-of", as_of])  # exits with the command's code
            sys.exit(0)
        children.append(pid)
    os.close(read)
    os.write(write, b"g" * n)
    os.close(write)
    print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]), flush=True)
"""

# two rounds: the first races for a lease never taken, the second for the one the first released (a
# third round raced that way again, ~15 s more)
ROUNDS = ("2011-05-31", "2011-06-30")
ALWAYS = {"metric_threshold": {"max": 1}}  # every round's Production is over it: the winner retrains


class Rounds:
    """One RUNNER for all the rounds of a test (its imports paid once): `round` starts n cycles at
    once and returns each one's (exit code, stdout, stderr)."""

    def __init__(self, path: str, folder: Path, n: int = 8):
        self.log = folder / "runner.stderr"
        command = [sys.executable, "-c", RUNNER, str(n), *_cycle_args(path)]  # each round adds its --as-of
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("w"),
                                     env=os.environ.copy(), text=True)

    def round(self, as_of: str, folder: Path, timeout: float = 600) -> list[tuple[int, str, str]]:
        folder.mkdir()
        self.proc.stdin.write(f"{folder}\t{as_of}\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"the round as of {as_of} did not end in {timeout} s"
        line = self.proc.stdout.readline()
        assert line, self.log.read_text()[-3000:]
        return [(code, (folder / f"{i}.out").read_text(), (folder / f"{i}.err").read_text())
                for i, code in enumerate(json.loads(line))]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stdin.close()  # no more rounds: the runner ends
        try:
            self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def _eight_at_once(path: str, tmp_path: Path, rounds: tuple[str, ...]) -> None:
    config = load_config(path)
    registry = Registry(config)
    winners: list[str] = []
    with Rounds(path, tmp_path) as runner:
        for number, as_of in enumerate(rounds):
            _judge_round(config, registry, runner.round(as_of, tmp_path / f"round-{number}"), winners)
    assert runner.proc.returncode == 0, runner.log.read_text()[-3000:]
    # one new version per round: the seven refused cycles trained nothing
    assert winners == [str(n + 2) for n in range(len(rounds))]
    assert _promoted_by_cycles(registry) == winners
    assert [v.version for v in registry.versions()] == [str(n) for n in range(len(rounds) + 1, 0, -1)]


def _judge_round(config, registry: Registry, results: list[tuple[int, str, str]], winners: list[str]) -> None:
    """One round: exactly one cycle promoted (its version appended to `winners`), seven refused."""
    codes = sorted(code for code, _, _ in results)
    assert codes == [0] + [3] * 7, [(code, err[-600:]) for code, _, err in results]
    (winner,) = [json.loads(out) for code, out, _ in results if code == 0]
    assert winner["outcome"] == "promoted", winner
    for code, out, err in results:
        if code == 3:
            assert out == "" and "Traceback" not in err, err
            assert err.strip().splitlines()[-1].startswith("error: another cycle holds the lease"), err
    winners.append(winner["candidate_version"])
    assert _one_production(registry) == winner["candidate_version"]
    assert registry.lease_state() is None and len(_lease_objects(config.model_name)) == 1
    assert doctor(config).healthy


def test_eight_cycles_at_once_one_promotes_seven_are_refused_on_sqlite(prod_store, write_policy, tmp_path):
    _eight_at_once(str(write_policy(triggers=ALWAYS)), tmp_path, ROUNDS)


def test_eight_cycles_at_once_one_promotes_seven_are_refused_over_http(server, write_policy, tmp_path):
    path = str(write_policy(model_name="bikes-eight", triggers=ALWAYS))
    boot = _cli("train", "--config", path, "--as-of", "2011-04-30", "--json")
    assert boot.returncode == 0, boot.stderr
    _eight_at_once(path, tmp_path, ROUNDS)


# ---- c. release frees only our own; a takeover leaves no litter -------------------------------------
def test_a_takeover_leaves_one_lease_object_and_the_dead_holders_release_frees_nothing(prod_store, write_policy):
    config = load_config(write_policy())
    registry = Registry(config)
    dead = registry.acquire_lease(timedelta(seconds=-1), holder="crashed-host:1:dead")
    assert _lease_objects("bikes") == ["bikes.retrain-lease.1"] and registry.lease_state() is None
    live = registry.acquire_lease(timedelta(minutes=5))
    assert live.generation == 2 and live.holder != dead.holder
    assert _lease_objects("bikes") == ["bikes.retrain-lease.2"]  # the dead generation is swept

    # the dead holder wakes up: it cannot write, renew or release anything of its successor's
    with pytest.raises(LeaseLostError, match="lost the lease"):
        registry.lease.check(dead, "promoting")
    assert registry.lease.renew(dead) is False
    registry.release_lease(dead)
    assert _lease_objects("bikes") == ["bikes.retrain-lease.2"]
    assert registry.lease_state()[T.LEASE_HOLDER] == live.holder
    assert T.LEASE_RELEASED not in registry.lease.generations()[-1].tags
    with pytest.raises(LeaseHeldError, match="another cycle holds the lease"):
        registry.acquire_lease(timedelta(minutes=5))
    registry.lease.check(live, "promoting")  # still ours
    assert _lease_objects("bikes") == ["bikes.retrain-lease.2"]  # a refused taker leaves nothing either

    held = doctor(config)
    assert held.healthy, held.to_dict()
    assert live.holder in held.lease

    registry.release_lease(live)
    assert registry.lease_state() is None
    assert _lease_objects("bikes") == ["bikes.retrain-lease.2"]  # kept between cycles, marked released
    assert registry.lease.generations()[-1].tags[T.LEASE_RELEASED] == "true"
    free = doctor(config)
    assert free.healthy and free.lease is None, free.to_dict()

    after = registry.acquire_lease(timedelta(minutes=5))
    assert after.generation == 3 and _lease_objects("bikes") == ["bikes.retrain-lease.3"]
    registry.release_lease(live)  # an earlier holder's late release: its object is gone, nothing happens
    assert registry.lease_state()[T.LEASE_HOLDER] == after.holder
    registry.release_lease(after)
    assert registry.lease_state() is None


def test_a_taker_that_died_before_sweeping_leaves_a_lower_generation_its_release_cannot_free(
        prod_store, write_policy, monkeypatch):
    config = load_config(write_policy())
    registry = Registry(config)
    dead = registry.acquire_lease(timedelta(seconds=-1), holder="crashed-host:1:dead")
    with monkeypatch.context() as patch:  # the taker dies between creating its generation and sweeping
        patch.setattr(type(registry.lease), "_sweep", lambda self, mine, objects: None)
        live = registry.acquire_lease(timedelta(minutes=5))
    assert _lease_objects("bikes") == ["bikes.retrain-lease.1", "bikes.retrain-lease.2"]
    registry.release_lease(dead)  # marks its own, lower generation: the lease stays with the higher one
    assert registry.lease.generations()[0].tags[T.LEASE_RELEASED] == "true"
    assert registry.lease_state()[T.LEASE_HOLDER] == live.holder
    with pytest.raises(LeaseHeldError):
        registry.acquire_lease(timedelta(minutes=5))
    registry.lease.check(live, "promoting")
    assert doctor(config).healthy
    # once the live holder is done, the next taker sweeps both generations below its own
    registry.release_lease(live)
    nxt = registry.acquire_lease(timedelta(minutes=5))
    assert nxt.generation == 3 and _lease_objects("bikes") == ["bikes.retrain-lease.3"]
    registry.release_lease(nxt)


# ---- d. rollback walks back ---------------------------------------------------------------------------
def test_rollback_walks_back_through_the_promotions_never_toggles(prod_store, write_policy):
    from mlflow_retrain.loop.manual import promote, rollback
    from mlflow_retrain.loop.training import train

    config = load_config(write_policy())
    registry = Registry(config)
    assert _one_production(registry) == "1"
    for as_of in ("2011-05-31", "2011-06-30"):
        version = train(config, as_of=as_of).version
        assert registry.get(version).stage == "Staging"
        promote(config, version, f"trained as of {as_of}, promoted by hand")
        assert _one_production(registry) == version
    assert [(v.version, v.stage) for v in registry.versions()] == [("3", "Production"), ("2", "Archived"),
                                                                   ("1", "Archived")]

    first = rollback(config, "v3 misbehaves")
    assert (first.version, first.previous) == ("2", "3")
    assert _one_production(registry) == "2"
    second = rollback(config, "v2 misbehaves too")
    assert (second.version, second.previous) == ("1", "2")  # walks back, not v2 -> v3
    assert _one_production(registry) == "1"
    assert registry.get("1").tags[T.DECISION_REASON] == "rollback: v2 misbehaves too"
    assert all(T.ROLLED_BACK_WALL in registry.get(v).tags for v in ("2", "3"))
    with pytest.raises(RegistryError, match="no earlier Production version"):
        rollback(config, "and again")
    assert _one_production(registry) == "1"
    assert doctor(config).healthy

    # a version promoted again after its rollback is a rollback target again
    promote(config, "3", "fixed upstream, v3 again")
    assert rollback(config, "v3 after all no").version == "1"


# ---- e. a holder that is gone frees the lease at once; a live one is respected ------------------------
HOLD = """
import sys, time
from datetime import timedelta
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.adapters.registry import Registry
Registry(load_config(sys.argv[1])).acquire_lease(timedelta(minutes=5))
print("held", flush=True)
time.sleep(600)
"""


def test_a_lease_whose_holder_process_is_gone_is_taken_at_once_a_live_holders_is_not(
        prod_store, write_policy, caplog):
    path = str(write_policy())
    config = load_config(path)
    registry = Registry(config)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, path], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LeaseHeldError, match="another cycle holds the lease"):  # alive: respected
            registry.acquire_lease(timedelta(minutes=5))
        alive = doctor(config)
        assert alive.lease_holder_gone is None and f":{holder.pid}:" in alive.lease, alive.to_dict()
    finally:
        holder.kill()
        holder.wait()
    gone = doctor(config)  # the lease has five minutes left, but nobody holds it any more
    assert f"process {holder.pid} no longer runs" in gone.lease_holder_gone, gone.to_dict()
    assert "holder is gone" in gone.lease and gone.to_dict()["lease_holder_gone"] == gone.lease_holder_gone
    assert "holder is gone" in status(config).lease  # `status` says so too
    with caplog.at_level("WARNING", logger="mlflow_retrain.adapters.registry.lease"):
        taken = registry.acquire_lease(timedelta(minutes=5))  # at once, not in five minutes
    assert taken.generation == 2 and _lease_objects("bikes") == ["bikes.retrain-lease.2"]
    freed = registry.lease.generations()[-1].tags[T.LEASE_FREED]
    assert freed.startswith("generation 1 of ") and f"process {holder.pid} no longer runs" in freed, freed
    assert any("freed before its expiry" in r.getMessage() for r in caplog.records), caplog.text

    # this process holds it now: alive, so respected; the same pid with another start time is a
    # recycled pid, no longer the holder
    with pytest.raises(LeaseHeldError):
        registry.acquire_lease(timedelta(minutes=5))
    recorded = json.loads(registry.lease.generations()[-1].tags[T.LEASE_PROCESS])
    assert recorded["pid"] == os.getpid()
    registry.client.set_prompt_tag(taken.name, T.LEASE_PROCESS, json.dumps({**recorded, "start": recorded["start"] - 1}))
    third = registry.acquire_lease(timedelta(minutes=5))
    assert "is another process now" in registry.lease.generations()[-1].tags[T.LEASE_FREED]
    # a lease of the earlier format (holder `host:pid:...`, no process recorded) is read as well
    registry.client.delete_prompt_tag(third.name, T.LEASE_PROCESS)
    registry.client.set_prompt_tag(third.name, T.LEASE_HOLDER, f"{socket.gethostname()}:{holder.pid}:old")
    fourth = registry.acquire_lease(timedelta(minutes=5))
    assert fourth.generation == 4
    registry.release_lease(fourth)
    elsewhere = registry.acquire_lease(timedelta(minutes=5), holder=f"another-host:{holder.pid}:x")
    with pytest.raises(LeaseHeldError):  # another host's pid proves nothing here
        registry.acquire_lease(timedelta(minutes=5))
    registry.release_lease(elsewhere)


def test_a_lease_generation_of_the_earlier_kind_is_respected_then_swept_and_the_models_list_holds_models(store):
    """Stores written before kept the generations as plain registered models: still the lease."""
    client = MlflowClient()
    client.create_registered_model("bikes")
    client.create_registered_model("bikes.retrain-lease.1", tags={
        T.LEASE_FOR: "bikes", T.LEASE_HOLDER: "another-host:1:x", T.LEASE_GENERATION: "1",
        T.LEASE_EXPIRES: (utcnow() + timedelta(minutes=5)).isoformat()})
    leases = Leases(client, "bikes")
    with pytest.raises(LeaseHeldError, match="another-host:1:x"):
        leases.acquire(timedelta(minutes=5))
    client.set_registered_model_tag("bikes.retrain-lease.1", T.LEASE_RELEASED, "true")
    lease = leases.acquire(timedelta(minutes=5))
    assert lease.generation == 2 and _lease_objects("bikes") == ["bikes.retrain-lease.2"]  # the old one swept
    assert [m.name for m in client.search_registered_models()] == ["bikes"]
    leases.check(lease, "writing")
    assert leases.renew(lease) and leases.state()[T.LEASE_HOLDER] == lease.holder
