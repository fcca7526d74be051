"""`mlflow-retrain serve` over loopback: real HTTP to the real console script, cycles in its worker
process against a real store, and a real `mlflow server` delivering its own webhook to it.

One `serve` (module scope, v1 already in Production) takes the signed, unsigned, stale, replayed,
oversized and burst requests and the folder watch in turn, and is stopped with SIGTERM mid-cycle
at the end; a second one is killed with an event pending and restarted; two more listen to one real
`mlflow server` (module scope, started from a store where v2 of `bikes` awaits approval): one gets a
version registered outside a cycle validated, the other carries out an approval set as the UI does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import inprocess_cli
import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.entities.webhook import WebhookEvent
from mlflow.tracking import MlflowClient

from mlflow_retrain.adapters.registry import story
from mlflow_retrain.base import tags as T
from mlflow_retrain.base.signing import signed_headers

SECRET = "serve-test-secret-0123456789"
CLI = str(Path(sys.executable).parent / "mlflow-retrain")


def call(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Serve:
    """A `mlflow-retrain serve` subprocess on a free loopback port."""

    def __init__(self, folder: Path, env: dict[str, str], *extra: str, state: str = ".retrain-serve"):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [CLI, "serve", "--config", str(folder / "retrain.yaml"), "--port", str(self.port), "--retrain-via",
             "inprocess", "--state-dir", str(folder / state), *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("w"))

    def ready(self, timeout: float = 60) -> dict:
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                status, health = call(f"{self.url}/healthz")
            except OSError:
                return None
            return health if status == 200 and health["worker"]["state"] == "ready" else None

        return wait_for(up, timeout, f"serve on {self.url}")

    def trigger(self, reason: str, source: str = "test-suite", **headers_kw) -> tuple[int, dict]:
        body = json.dumps({"source": source, "reason": reason}).encode()
        return call(f"{self.url}/trigger", body, signed_headers(SECRET, body, **headers_kw))

    def events(self) -> list[dict]:
        return call(f"{self.url}/events?limit=1000")[1]["events"]

    def finished(self, ids: set[int], timeout: float = 90) -> list[dict]:
        def done():
            found = [e for e in self.events() if e["id"] in ids]
            return found if len(found) == len(ids) and all(e["status"] in ("done", "failed") for e in found) else None

        return wait_for(done, timeout, f"events {sorted(ids)} to finish")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def shared(request):
    """The root conftest's helpers, as pytest loaded it (this folder's conftest.py shadows its name)."""
    root = str(Path(__file__).parents[1] / "conftest.py")
    return next(p for p in request.config.pluginmanager.get_plugins() if getattr(p, "__file__", "") == root)


@pytest.fixture(scope="module")
def frame(shared) -> pd.DataFrame:
    return pd.read_csv(shared.BIKE)


@pytest.fixture(scope="module")
def make_folder(shared):
    def make(folder: Path, frame: pd.DataFrame, **overrides) -> Path:
        (folder / "data").mkdir(parents=True)
        frame[frame.timestamp < "2011-10-01"].to_csv(folder / "data" / "bikes.csv", index=False)
        (folder / "retrain.yaml").write_text(yaml.safe_dump(shared.policy(Path("data"), **overrides)))
        return folder

    return make


@pytest.fixture(scope="module")
def local(tmp_path_factory, bootstrapped_template: Path, frame, make_folder) -> tuple[Path, dict[str, str]]:
    """A folder with v1 in Production (a copy of the session's bootstrapped store) and data in a folder."""
    folder = make_folder(tmp_path_factory.mktemp("serve"), frame, triggers={"new_data": {"min_rows": 24}})
    shutil.copy(bootstrapped_template, folder / "mlflow.db")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "MLFLOW_RETRAIN_SECRET": SECRET}
    return folder, env


@pytest.fixture(scope="module")
def served(local):
    folder, env = local
    serve = Serve(folder, env)
    serve.ready()
    yield serve
    serve.stop()


def read(version) -> dict[str, str]:
    """A version's values as the tool reads them: its tags and its description's record, the newest of each."""
    return T.newest({**story.record_in(version.description), **version.tags})


def cycle_runs(folder: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bikes-controller")
    return [] if experiment is None else client.search_runs(
        [experiment.experiment_id], f"tags.`{T.RUN_KIND}` = 'cycle' and attributes.status = 'FINISHED'")


def test_refused_requests_cause_nothing(served, local):
    body = json.dumps({"source": "etl", "reason": "x"}).encode()
    good = signed_headers(SECRET, body)
    assert call(f"{served.url}/trigger", body, {**good, "X-MLflow-Signature": "v1,AAAA"})[0] == 401
    assert call(f"{served.url}/trigger", body, signed_headers("not-the-secret-000000", body))[0] == 401
    assert call(f"{served.url}/trigger", body, {"Content-Type": "application/json"})[0] == 401
    status, answer = served.trigger("stale", now=time.time() - 3600)
    assert status == 401 and "old" in answer["error"]
    big = json.dumps({"source": "etl", "reason": "x" * 300_000}).encode()
    assert call(f"{served.url}/trigger", big, signed_headers(SECRET, big))[0] == 413
    assert call(f"{served.url}/trigger", b"[1]", signed_headers(SECRET, b"[1]"))[0] == 400
    assert served.events() == [] and cycle_runs(local[0]) == []


def test_malformed_requests_are_refused_in_one_log_line_each_never_a_500(served, local):
    """Issue 26 item 4: unsigned requests that were 500s with a 45-line traceback each (http.client
    sends `²` as the byte 0xB2, which the server reads as `²`: `str.isdigit()` but not `int()`)."""
    body = json.dumps({"source": "etl", "reason": "x"}).encode()
    good = signed_headers(SECRET, body)

    def signed(raw: bytes) -> dict[str, str]:
        return signed_headers(SECRET, raw)

    webhook = json.dumps({"entity": "model_version", "action": "created",
                          "data": {"name": "bikes", "version": "3", "tags": ["retrain.cycle_run_id"]}}).encode()
    cases = [  # url, body, headers, status, what the answer says
        ("/trigger", body, {**good, "X-MLflow-Timestamp": "²"}, 401, "whole Unix seconds"),
        ("/trigger", body, {**good, "X-MLflow-Timestamp": "9" * 5000}, 401, "whole Unix seconds"),
        ("/events?limit=%C2%B2", None, {}, 400, "limit must be a whole number"),
        ("/events?limit=" + "9" * 5000, None, {}, 400, "query string over"),
        ("/trigger", body, {**good, "X-MLflow-Signature": "v1,é"}, 401, "v1,<base64>"),
        ("/webhook", b"[" * 100_000, signed(b"[" * 100_000), 400, "nested too deeply"),
        ("/webhook", webhook, signed(webhook), 400, "'tags'"),
        ("/webhook", b"1" * 5000, signed(b"1" * 5000), 400, "not JSON"),
    ]
    before = served.log.stat().st_size
    for path, sent, headers, status, says in cases:
        answer = call(f"{served.url}{path}", sent, headers)
        assert answer[0] == status and says in answer[1]["error"], (path, answer)
    with served.log.open() as log:
        log.seek(before)
        lines = log.read().splitlines()
    assert not [line for line in lines if "Traceback" in line or "Exception" in line], lines
    assert len([line for line in lines if " refused " in line]) == len(cases), lines
    assert served.events() == [] and cycle_runs(local[0]) == []


def test_a_signed_trigger_runs_one_forced_cycle_and_its_replay_is_refused(served, local):
    body = json.dumps({"source": "nightly-etl", "reason": "sales table reloaded"}).encode()
    headers = signed_headers(SECRET, body)
    status, answer = call(f"{served.url}/trigger", body, headers)
    assert status == 202 and answer["action"] == "force"
    assert call(f"{served.url}/trigger", body, headers)[0] == 409  # the same delivery again
    [event] = served.finished({answer["event"]})
    result = event["result"]
    assert event["status"] == "done" and result["cycle_run_id"], event
    assert len(cycle_runs(local[0])) == 1
    from mlflow.tracking import MlflowClient

    version = MlflowClient(f"sqlite:///{local[0] / 'mlflow.db'}").get_model_version("bikes", result["candidate_version"])
    assert "event" in version.tags[T.TRIGGER].split(",") and "sales table reloaded" in read(version)[T.REASON]


def test_a_burst_of_twenty_is_answered_and_runs_one_or_two_cycles(served, local):
    before = len(cycle_runs(local[0]))
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: served.trigger(f"burst {i}", source=f"burst-{i % 4}"), range(20)))
    assert [status for status, _ in answers] == [202] * 20
    events = served.finished({answer["event"] for _, answer in answers}, timeout=120)
    cycles = {e["result"]["cycle_run_id"] for e in events}
    assert all(e["status"] == "done" for e in events) and len(cycles) in (1, 2), events
    assert len(cycle_runs(local[0])) - before == len(cycles)
    print(f"burst: 20 events -> {len(cycles)} cycle(s)")


def test_a_new_file_in_the_data_folder_runs_a_normal_cycle(served, local, frame):
    folder = local[0]
    known = {e["id"] for e in served.events()}
    month = frame[(frame.timestamp >= "2011-10-01") & (frame.timestamp < "2011-10-08")]
    month.to_csv(folder / "data" / ".october.csv.tmp", index=False)  # hidden while written
    os.rename(folder / "data" / ".october.csv.tmp", folder / "data" / "october.csv")
    new = wait_for(lambda: [e for e in served.events() if e["id"] not in known], 30, "a new_data event")
    assert [e["kind"] for e in new] == ["new_data"] and "october.csv" in new[0]["summary"]
    [event] = served.finished({new[0]["id"]})
    assert event["status"] == "done" and event["result"]["cycle"] == "cycle" and event["result"]["cycle_run_id"]
    assert "new labelled rows" in event["result"]["reason"], event["result"]  # the new_data trigger decided


def test_sigterm_lets_the_running_cycle_finish_then_exits_cleanly(served):
    status, answer = served.trigger("last one before the shutdown")
    assert status == 202
    wait_for(lambda: any(e["id"] == answer["event"] and e["status"] == "running" for e in served.events()), 30,
             "the cycle to start")
    worker = call(f"{served.url}/healthz")[1]["worker"]["pid"]
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(90) == 0
    from mlflow_retrain.serve.queue import EventQueue

    [event] = [e for e in EventQueue(served.log.parent / ".retrain-serve" / "queue.sqlite").recent()
               if e["id"] == answer["event"]]
    assert event["status"] == "done" and event["result"]["outcome"], event
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)


def test_an_event_pending_when_serve_was_killed_runs_once_after_the_restart(local):
    folder, env = local
    serve = Serve(folder, env, "--watch", "off", state="restart-state")
    wait_for(lambda: serve.proc.poll() is None and _health(serve), 30, "serve to answer")
    worker = _health(serve)["worker"]["pid"]
    status, answer = serve.trigger("accepted, then the server died")
    assert status == 202
    serve.proc.kill()
    os.kill(worker, signal.SIGKILL)  # its own session: a worker still importing MLflow never claimed it
    serve.proc.wait(10)
    before = len(cycle_runs(folder))
    again = Serve(folder, env, "--watch", "off", state="restart-state")
    again.ready()
    [event] = again.finished({answer["event"]})
    again.stop()
    assert event["status"] == "done" and event["result"]["cycle_run_id"], event
    assert len(cycle_runs(folder)) - before == 1
    assert again.proc.returncode == 0


def _health(serve: Serve) -> dict | None:
    try:
        return call(f"{serve.url}/healthz")[1]
    except OSError:
        return None


def test_bad_input_is_one_line_and_exit_2_before_anything_starts(local):
    folder, env = local
    no_secret = {k: v for k, v in env.items() if k != "MLFLOW_RETRAIN_SECRET"}
    run = inprocess_cli.run(["serve", "--config", str(folder / "retrain.yaml")], env=no_secret, timeout=60)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        ("error: no secret: set MLFLOW_RETRAIN_SECRET or pass --secret-file FILE (the MLflow webhook's secret, also "
         "used to sign POST /trigger)")]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        run = inprocess_cli.run(["serve", "--config", str(folder / "retrain.yaml"), "--port",
                                 str(taken.getsockname()[1])], env=env, timeout=60)
    assert run.returncode == 2 and "port is in use" in run.stderr and SECRET not in run.stderr + run.stdout
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


@dataclass(frozen=True)
class Hooks:
    """A real `mlflow server` that delivers webhooks to 127.0.0.1 over http."""

    uri: str
    client: MlflowClient


@pytest.fixture(scope="module")
def hooks(tmp_path_factory, awaiting_template: Path):
    """One `mlflow server` for the webhook tests (seconds to start), on a copy of the store where
    `bikes` v1 is in Production and v2 awaits approval. The env vars are the ones MLflow needs to
    deliver to http://127.0.0.1 and to keep webhook secrets; a webhook cache of 1 s makes a webhook
    created by a test active for its next change."""
    from cryptography.fernet import Fernet

    folder = tmp_path_factory.mktemp("mlflow-server")
    shutil.copy(awaiting_template, folder / "server.db")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server_env = {**os.environ, "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
                  "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true", "MLFLOW_WEBHOOK_CACHE_TTL": "1",
                  "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode()}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--artifacts-destination",
                               str(folder / "artifacts"), "--workers", "1"], env=server_env,
                              stdout=subprocess.DEVNULL, stderr=(folder / "server.log").open("w"),
                              start_new_session=True)
    try:
        wait_for(lambda: _up(f"{uri}/health") or server.poll() is not None, 90, "mlflow server")
        assert server.poll() is None, (folder / "server.log").read_text()[-2000:]
        yield Hooks(uri, MlflowClient(uri))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


@contextlib.contextmanager
def webhook(hooks: Hooks, serve: Serve, *events: WebhookEvent) -> Iterator[None]:
    """A webhook to `serve` for `events`, deleted afterwards so the next test's changes are not
    delivered to a serve that is gone."""
    hook = hooks.client.create_webhook(name="retrain", url=f"{serve.url}/webhook", secret=SECRET, events=list(events))
    try:
        yield
    finally:
        hooks.client.delete_webhook(hook.webhook_id)


def test_a_real_mlflow_server_webhook_gets_a_version_registered_outside_a_cycle_validated(tmp_path, frame, hooks,
                                                                                          make_folder, shared):
    folder = make_folder(tmp_path, frame, model_name="hooked", experiment="hooked")
    serve = Serve(folder, {**os.environ, "MLFLOW_TRACKING_URI": hooks.uri, "MLFLOW_RETRAIN_SECRET": SECRET},
                  "--watch", "off")
    try:
        serve.ready()
        with webhook(hooks, serve, WebhookEvent("model_version", "created")):
            version = _register_outside_a_cycle(hooks.uri, frame, shared.policy(Path("data"))["data"])
            [event] = wait_for(lambda: serve.events(), 60, "MLflow's delivery")
            assert event["kind"] == "webhook" and event["action"] == {
                "action": "validate", "version": version,
                "reason": f"v{version} of 'hooked' was registered outside a cycle (MLflow webhook): validate it "
                          "against Production"}
            [event] = serve.finished({event["id"]})
        assert event["status"] == "done" and event["result"]["cycle"] == "validate", event
        assert event["result"]["outcome"] in (T.PROMOTED, T.REJECTED)
        judged = hooks.client.get_model_version("hooked", version)
        assert judged.tags[T.DECISION] == event["result"]["outcome"] and judged.tags[T.TRIGGER] == "event"
    finally:
        serve.stop()


def test_an_approval_set_as_the_mlflow_ui_sets_it_is_carried_out_by_serve_at_once(tmp_path, frame, hooks,
                                                                                 make_folder):
    """Issue 16 section 2: `retrain.approval=approved` typed on the version's page is carried out on
    MLflow's `model_version_tag.set` webhook, not at the next scheduled cycle."""
    from mlflow_retrain.policy.load import load_config
    from mlflow_retrain.adapters.registry import Registry, utcnow
    from mlflow_retrain.adapters.registry.repair import examine

    folder = make_folder(tmp_path, frame, validation={"require_approval": True, "approval_ttl": "7d"},
                         triggers={"metric_threshold": {"max": 60}})  # as `awaiting_template` was made
    client = hooks.client
    model = client.get_registered_model("bikes")
    assert client.get_model_version("bikes", "2").tags[T.DECISION] == T.AWAITING_APPROVAL
    assert {a: str(v) for a, v in model.aliases.items()} == {"production": "1", "staging": "2"}
    serve = Serve(folder, {**os.environ, "MLFLOW_TRACKING_URI": hooks.uri, "MLFLOW_RETRAIN_SECRET": SECRET},
                  "--watch", "off")
    try:
        with webhook(hooks, serve, WebhookEvent("model_version_tag", "set")):
            serve.ready()  # longer than the server's 1 s webhook cache: the new webhook is seen
            client.set_model_version_tag("bikes", "2", T.APPROVAL, "approved")  # what the UI's tag editor does
            signed = wait_for(lambda: [e for e in serve.events() if e["action"]["action"] == "signoff"], 60,
                              "MLflow's delivery of the tag")
            assert [e["summary"] for e in signed] == ["model_version_tag.set bikes v2 retrain.approval=approved"]
            [event] = serve.finished({signed[0]["id"]})
            events = serve.events()
    finally:
        serve.stop()
    assert event["status"] == "done" and event["result"]["cycle"] == "signoff", event
    assert event["result"]["outcome"] == T.PROMOTED and event["result"]["candidate_version"] == "2", event
    # the cycle's own tag writes came back as webhooks too: recorded, ignored, no second cycle
    others = [e for e in events if e["id"] != event["id"]]
    assert others and {e["status"] for e in others} == {"ignored"}, others
    assert all("serve acts on retrain.approval only" in e["result"]["reason"] for e in others)

    v1, v2 = client.get_model_version("bikes", "1"), client.get_model_version("bikes", "2")
    aliases = {a: str(v) for a, v in client.get_registered_model("bikes").aliases.items()}
    assert (v1.current_stage, v2.current_stage, aliases) == ("Archived", "Production", {"production": "2"})
    v1, v2 = read(v1), read(v2)
    assert v2[T.DECISION] == T.PROMOTED and v2[T.PROMOTED_AT] and v1[T.ARCHIVED_AT]
    assert v2[T.DECISION_REASON].startswith("approved through the retrain.approval tag (no name recorded")
    assert client.get_run(event["result"]["cycle_run_id"]).data.tags[T.RUN_KIND] == "cycle"
    mlflow.set_tracking_uri(hooks.uri)
    try:  # every invariant of the registry holds: one Production, stage and alias agree, audit tags complete
        assert examine(Registry(load_config(folder / "retrain.yaml")), utcnow()).healthy
    finally:
        mlflow.set_tracking_uri(None)


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _register_outside_a_cycle(uri: str, frame: pd.DataFrame, data: dict) -> str:
    """Someone's own pipeline registers a version through the server: a Ridge on the policy's columns."""
    features = data["features"]
    import mlflow
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rows = frame[(frame.timestamp >= "2011-07-01") & (frame.timestamp < "2011-09-15")]
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("someone-else")
        with mlflow.start_run():
            encode = make_column_transformer((OneHotEncoder(handle_unknown="ignore"), data["categorical"]),
                                             remainder="passthrough")
            model = make_pipeline(encode, Ridge()).fit(rows[features], rows["cnt"])
            # requirements named: MLflow would otherwise load the model in a new interpreter to infer them
            info = mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                                            input_example=rows[features].head(3), registered_model_name="hooked",
                                            pip_requirements=["scikit-learn"])
    finally:
        mlflow.set_tracking_uri(None)
    return str(info.registered_model_version)
