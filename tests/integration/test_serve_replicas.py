"""Two `serve` replicas sharing one PostgreSQL queue (`--queue postgresql://...`), on a real
PostgreSQL cluster (tests/stores.py, run by an unprivileged user when the tests run as root).

First the queue alone: two claimers and a producer at once (each event claimed once), a claim that
is not renewed taken over after its expiry, a renewed one kept, a late `finish` of the dead claimer
fenced, a wrong password refused in one line that does not show it. Then two real `serve`
processes over one MLflow store: the replica whose worker is training the event's cycle is
SIGKILLed (server and worker), and the other one finishes the event; then the database is stopped
under the survivor (503, nothing recorded, the same delivery accepted once it is back).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import inprocess_cli
import pytest
from test_serve import SECRET, Serve, call, cycle_runs, frame, make_folder, shared, wait_for  # noqa: F401
from test_server_faults import SLOW_ESTIMATOR

from mlflow_retrain.base import tags as T
from mlflow_retrain.serve.events import FORCE, Action
from mlflow_retrain.base.signing import signed_headers
from mlflow_retrain.serve.basequeue import DONE, RUNNING
from mlflow_retrain.serve.queue import QUEUE_ENV

MODELS = ("m0", "m1", "m2")
EVENTS = 150


@pytest.fixture(scope="module")
def pg():
    from stores import Postgres, postgres_missing

    missing = postgres_missing()
    if missing:
        pytest.skip(f"the shared serve queue was not tested: {missing}")
    cluster = Postgres().start()
    yield cluster
    cluster.destroy()


def _database(pg, name: str) -> str:
    pg.sql(f'CREATE DATABASE "{name}"')
    return pg.uri(name)


def _connections(queue) -> int:
    """Client connections open to the queue's database (the asking one excluded)."""
    with queue._writing() as db:
        return db.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                          "AND pid <> pg_backend_pid()").fetchone()["n"]


def _trigger(i: int) -> Action:
    return Action(FORCE, f"reason {i}", source="test")


def test_two_claimers_take_each_event_once_and_a_dead_claim_is_taken_over_after_its_expiry(pg, write_policy):
    from mlflow_retrain.base.errors import ServeError
    from mlflow_retrain.serve.pgqueue import PostgresQueue

    url = _database(pg, "claims")
    with ThreadPoolExecutor(2) as pool:  # two replicas starting at once create the schema once
        a, b = pool.map(lambda _: PostgresQueue(url, claim_ttl=30), range(2))
    a.owner, b.owner = "replica-a", "replica-b"
    claimed: dict[str, list[tuple[int, list[int]]]] = {"replica-a": [], "replica-b": []}
    added: list[int] = []
    producing = threading.Event()

    def produce() -> None:
        for i in range(EVENTS):
            added.append(a.add("trigger", MODELS[i % len(MODELS)], f"event {i}", _trigger(i), f"d-{i}"))
        producing.set()

    def consume(queue: PostgresQueue) -> None:
        while not (producing.is_set() and queue.counts() == {DONE: EVENTS}):
            for model in MODELS:
                got = queue.claim(model)
                if got:
                    batch, events = got
                    claimed[queue.owner].append((batch, [e.id for e in events]))
                    queue.finish({e.id: {"status": DONE} for e in events}, batch)

    threads = [threading.Thread(target=produce, daemon=True),
               *(threading.Thread(target=consume, args=(q,), daemon=True) for q in (a, b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    taken = [event for batches in claimed.values() for _, ids in batches for event in ids]
    assert sorted(taken) == sorted(added) and len(added) == EVENTS  # every event claimed, none twice
    assert all(claimed.values()), {k: len(v) for k, v in claimed.items()}  # both replicas took batches
    rows = a.recent(1000)
    assert {(r["status"], r["claims"]) for r in rows} == {(DONE, 1)}
    assert {r["owner"] for r in rows} == {"replica-a", "replica-b"}
    print(f"{EVENTS} events: {len(claimed['replica-a'])} + {len(claimed['replica-b'])} batches, none twice")

    # a burst from many request threads (alive after it, as a server's are) leaves at most IDLE
    # connections open, not one per thread
    before = _connections(a)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: a.counts(), range(64)))
        wait_for(lambda: _connections(a) <= before + 4, 10, "the burst's extra connections to close")

    # a claim that is not renewed (its replica died) is taken over after `claim_ttl`; until then
    # the model's newer events wait too (one batch at a time per model across replicas)
    dead, alive = PostgresQueue(url, claim_ttl=1.0), PostgresQueue(url, claim_ttl=1.0)
    dead.owner, alive.owner = "replica-dead", "replica-alive"
    first = dead.add("trigger", "solo", "first", _trigger(1), "solo-1")
    lost, _ = dead.claim("solo")
    second = alive.add("trigger", "solo", "second", _trigger(2), "solo-2")
    assert alive.claim("solo") is None
    time.sleep(1.3)
    batch, events = alive.claim("solo")
    assert batch > lost and [e.id for e in events] == [first, second]
    with alive.holding(batch):  # renewed every third of the TTL: not taken over while it runs
        time.sleep(1.5)
        assert dead.claim("solo") is None
    dead.finish({first: {"status": DONE, "by": "dead"}}, lost)  # the dead one's late record: fenced
    assert {r["id"]: (r["status"], r["owner"], r["claims"]) for r in alive.recent(2)} == {
        first: (RUNNING, "replica-alive", 2), second: (RUNNING, "replica-alive", 1)}
    alive.finish({first: {"status": DONE, "by": "alive"}, second: {"status": DONE, "by": "alive"}}, batch)
    assert [r["result"]["by"] for r in alive.recent(2)] == ["alive", "alive"]

    # a wrong password: one line, exit 2, the password not shown, nothing started
    wrong = pg.uri("claims", password="not-the-password-4242")
    with pytest.raises(ServeError) as refused:
        PostgresQueue(wrong, 1.0)
    assert "not-the-password-4242" not in str(refused.value) and "postgresql://***@127.0.0.1" in str(refused.value)
    env = {**os.environ, "MLFLOW_RETRAIN_SECRET": SECRET, QUEUE_ENV: wrong}
    for args, why in ((["--port", "0"], "password authentication failed"),
                      (["--port", "0", "--queue", "mysql://u:not-the-password-4242@h/db"], "not a postgresql:// URL")):
        done = inprocess_cli.run(["serve", "--config", str(write_policy()), "--watch", "off", *args], env=env)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert why in done.stderr and "***" in done.stderr, done.stderr
        assert "not-the-password-4242" not in done.stdout + done.stderr


def test_a_replica_killed_mid_cycle_leaves_its_event_to_the_other_which_finishes_it_once(
        pg, tmp_path, frame, make_folder, bootstrapped_template):  # noqa: F811  (fixtures imported from test_serve)
    """Both replicas poll the queue; the one that claims the forced event is SIGKILLed (server and
    worker) while its cycle trains, with a second event queued meanwhile; the other replica takes
    both once the claim expires and runs one cycle: both events done, one finished cycle run, one
    Production version, the database password never printed."""
    import shutil

    from mlflow.tracking import MlflowClient

    from mlflow_retrain.policy.load import load_config
    from mlflow_retrain.adapters.registry import Registry

    # a short claim (8 s); the registry lease keeps its default TTL: the survivor's cycle takes the dead
    # cycle's lease at once (its holder, a process of this host, is gone), and its own lease is not
    # one a loaded machine's pauses could run out
    folder = make_folder(tmp_path, frame, training={"estimator": "slowfit.SlowFit"})
    (folder / "slowfit.py").write_text(SLOW_ESTIMATOR)
    shutil.copy(bootstrapped_template, folder / "mlflow.db")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "MLFLOW_RETRAIN_SECRET": SECRET,
           QUEUE_ENV: _database(pg, "replicas"), "SLOWFIT_SECONDS": "4"}
    replicas = [Serve(folder, {**env, "SLOWFIT_MARKER": str(folder / f"fitting-{name}")}, "--watch", "off",
                      "--claim-ttl", "8", state=f"state-{name}") for name in "ab"]
    try:
        workers = [serve.ready()["worker"]["pid"] for serve in replicas]
        status, first = replicas[0].trigger("the first event")
        assert status == 202
        fitting = wait_for(lambda: [i for i, name in enumerate("ab") if (folder / f"fitting-{name}").exists()], 120,
                           "a replica's cycle to start training")
        victim, survivor = fitting[0], 1 - fitting[0]
        status, second = replicas[survivor].trigger("the second event, queued meanwhile")
        assert status == 202
        running = {e["id"]: e for e in replicas[survivor].events()}
        assert running[first["event"]]["status"] == RUNNING and running[second["event"]]["status"] == "pending"
        assert running[first["event"]]["owner"].endswith(f":{workers[victim]}")
        killed = time.monotonic()
        replicas[victim].proc.kill()
        os.kill(workers[victim], signal.SIGKILL)  # its own session: the server's kill does not reach it
        replicas[victim].proc.wait(10)
        events = replicas[survivor].finished({first["event"], second["event"]}, timeout=150)
        print(f"the survivor finished both events {time.monotonic() - killed:.0f} s after the kill")
        health = call(f"{replicas[survivor].url}/healthz")[1]
        outage = _through_an_outage(pg, replicas[survivor])
        replicas[survivor].stop()
        assert replicas[survivor].proc.returncode == 0
    finally:
        for serve in replicas:
            if serve.proc.poll() is None:
                serve.proc.kill()
                serve.proc.wait(10)
    owner = f":{workers[survivor]}"
    assert all(e["status"] == DONE and e["owner"].endswith(owner) for e in events), events
    by_id = {e["id"]: e for e in events}
    assert by_id[first["event"]]["claims"] >= 2 and by_id[second["event"]]["claims"] >= 1  # ran at most once more
    [cycle] = {e["result"]["cycle_run_id"] for e in events}  # both events in one cycle
    assert [run.info.run_id for run in cycle_runs(folder)] == [cycle]  # the killed cycle never finished
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("bikes-controller").experiment_id],
                              f"tags.`{T.RUN_KIND}` = 'cycle'")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]  # twice: killed (ended by reconcile), once
    assert health["queue"] == {DONE: 2} and health["worker"]["state"] == "ready"

    registry = Registry(load_config(folder / "retrain.yaml"), MlflowClient(env["MLFLOW_TRACKING_URI"]))
    versions = registry.versions()
    assert [v.stage for v in versions].count("Production") == 1, [(v.version, v.stage) for v in versions]
    assert registry.lease_state() is None and registry.moves.pending() is None
    logs = "".join(serve.log.read_text() for serve in replicas)
    assert pg.password not in logs and "queue in postgresql://***@127.0.0.1" in logs
    assert outage == [503, 503, 200, 200] and "Traceback" not in logs, (outage, logs[-3000:])


def _through_an_outage(pg, serve: Serve) -> list[int]:
    """The queue's database stopped under a running replica: a delivery is answered 503 and not
    recorded, so MLflow's retry of the same delivery (same id) is accepted once the database is back."""
    body = json.dumps({"entity": "model_version", "action": "created", "data": {"name": "other", "version": "1"}})
    headers = signed_headers(SECRET, body.encode())
    pg.stop()
    try:
        statuses = [call(f"{serve.url}/webhook", body.encode(), headers)[0], call(f"{serve.url}/healthz")[0]]
    finally:
        pg.resume()
    statuses.append(call(f"{serve.url}/webhook", body.encode(), headers)[0])
    statuses.append(wait_for(lambda: call(f"{serve.url}/healthz")[0] == 200 and 200, 30, "the replica to recover"))
    return statuses
