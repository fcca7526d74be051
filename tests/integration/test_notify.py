"""Notifications over real HTTP on 127.0.0.1: a receiver in the test gets what real cycles send.

The receiver is `http.server` in a thread; each test scripts its answers (200, 500, or hang). Bodies
are checked with the verifier `serve` uses (`serve/signing.py`, MLflow's webhook scheme), and the time a
dead or hanging receiver adds to a cycle is measured against the bound.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from mlflow_retrain.adapters import notify as N
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.loop.cycle import run_cycle
from mlflow_retrain.serve import signing

SECRET = "s3cr3t-for-tests"
TOKEN = "xoxb-T0KEN-planted-9f8e7d"  # a Slack webhook path's token, planted in malformed policies


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver: answers each request with the next of `script` (then 200); "hang" holds
    the request open until the test ends."""

    script: list = field(default_factory=list)
    got: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""
    port: int = 0  # 0: any free port

    def __enter__(self) -> Self:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.got.append(Received(dict(self.headers), body))
                answer = receiver.script.pop(0) if receiver.script else 200
                if answer == "hang":
                    receiver.release.wait(60)
                    return
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/path-token"
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def dead_url() -> str:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_undelivered_messages_are_recorded_shown_and_sent_again_with_the_same_id(prod_store, write_policy,
                                                                                 monkeypatch):
    """A promotion told to a receiver that answers 500, one that hangs and a dead port: the cycle's
    outcome stands, its audit run records that nobody was told, `status` and `doctor` show the three
    messages, and the next cycle, with the receivers back, delivers each once with its first id."""
    from mlflow.tracking import MlflowClient

    from mlflow_retrain.cli import cli

    monkeypatch.setattr(N, "BUDGET", 4.0)
    dead = dead_url()
    with Receiver(script=[500, 500, 500]) as failing, Receiver(script=["hang"] * 3) as hanging:
        policy = write_policy(triggers={"metric_threshold": {"max": 60}},
                              notify=[{"url": failing.url, "on": ["promoted"]},
                                      {"url": hanging.url, "on": ["promoted"], "timeout": 1},
                                      {"url": dead, "on": ["promoted"], "timeout": 1}])
        config = load_config(policy)
        report = run_cycle(config, as_of="2011-05-31", via="inprocess")
        assert report.outcome == "promoted" and len(failing.got) == 3
        first_id = failing.got[0].headers["X-MLflow-Delivery-Id"]
        client = MlflowClient()
        run = client.get_run(report.cycle_run_id)
        assert run.data.tags["retrain.notify"].startswith("0 of 3 delivered; not delivered: promoted to http://127.0.0.1")
        assert "path-token" not in run.data.tags["retrain.notify"]
        (record,) = [a.path for a in client.list_artifacts(report.cycle_run_id, "notify")]
        rows = json.loads(Path(client.download_artifacts(report.cycle_run_id, record)).read_text())
        assert [r["delivered"] for r in rows] == [False] * 3 and rows[0]["delivery_id"] == first_id
        for command in ("status", "doctor"):
            out = CliRunner().invoke(cli, [command, "--config", str(policy), "--json"])
            shown = json.loads(out.stdout)["undelivered"]
            assert len(shown) == 3 and {k["event"] for k in shown} == {"promoted"}, out.output
            assert "body" not in shown[0] and "path-token" not in out.output
        human = CliRunner().invoke(cli, ["status", "--config", str(policy)])
        assert "undelivered notifications (3; the next cycle sends them again" in human.stdout
        production = client.get_model_version_by_alias("bikes", "production").version

        port = int(dead.rsplit(":", 1)[1].split("/")[0])
        with Receiver(port=port) as revived:
            again = run_cycle(config, as_of="2011-05-31", via="inprocess")  # nothing to decide: only the retries
    assert again.outcome == "no_retrain"
    assert len(failing.got) == 4 and failing.got[3].headers["X-MLflow-Delivery-Id"] == first_id
    assert failing.got[3].body == failing.got[0].body
    assert len(hanging.got) == 4 and len(revived.got) == 1  # each delivered once more, then never again
    assert MlflowClient().get_model_version_by_alias("bikes", "production").version == production
    out = CliRunner().invoke(cli, ["status", "--config", str(policy), "--json"])
    assert json.loads(out.stdout)["undelivered"] == []
    assert MlflowClient().get_run(again.cycle_run_id).data.tags["retrain.notify"] == "3 of 3 delivered"


def test_the_command_prints_its_report_before_waiting_on_the_receivers(prod_store, write_policy, tmp_path):
    """A real `mlflow-retrain cycle` whose downtime message goes to a receiver that hangs: its report
    is on stdout seconds before the process ends (the delivery's timeouts), and nothing else is."""
    import os
    import subprocess
    import sys

    with Receiver(script=["hang"] * 3) as hanging:
        policy = write_policy(monitoring={"max_data_gap": "2d"}, triggers={"metric_threshold": {"max": 1000}},
                              notify=[{"url": hanging.url, "timeout": 2}])
        command = [str(Path(sys.executable).parent / "mlflow-retrain"), "cycle", "--config", str(policy), "--json"]
        began = time.monotonic()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path,
                                env={**os.environ, "MLFLOW_TRACKING_URI": prod_store})
        first = proc.stdout.readline()
        printed = time.monotonic() - began
        rest = proc.stdout.read()
        proc.wait(60)
        ended = time.monotonic() - began
    report = json.loads(first + rest)
    assert proc.returncode == 0 and report["outcome"] == "no_retrain" and report["stale"]
    assert len(hanging.got) >= 2 and ended - printed > 2.5, (printed, ended)  # printed, then waited on the receiver


def test_a_typo_on_the_command_line_is_not_told_as_a_failure(prod_store, write_policy):
    from mlflow_retrain.cli import cli

    with Receiver() as receiver:
        policy = write_policy(notify=[{"url": receiver.url, "on": ["failed"]}])
        out = CliRunner().invoke(cli, ["cycle", "--config", str(policy), "--as-of", "2031-01-01"])
        forced = CliRunner().invoke(cli, ["cycle", "--config", str(policy), "--force"])
    assert out.exit_code == forced.exit_code == 2 and "--reason" in forced.output
    assert receiver.got == []


def signed(item: Received) -> bool:
    """Checked as `serve` checks MLflow's deliveries (the scheme the README documents)."""
    return signing.verify(SECRET, item.headers, item.body, now=time.time()).ok


def test_promotion_and_rejection_reach_slack_and_json_receivers_signed(prod_store, write_policy, monkeypatch,
                                                                      caplog):
    monkeypatch.setenv("RETRAIN_HOOK_SECRET", SECRET)
    with Receiver() as slack, Receiver() as generic:
        config = load_config(write_policy(
            triggers={"metric_threshold": {"max": 60}}, ui_url="https://mlflow.example.com/",
            notify=[{"url": slack.url, "format": "slack", "secret_env": "RETRAIN_HOOK_SECRET"},
                    {"url": generic.url, "format": "json", "on": ["promoted", "rejected"],
                     "secret_env": "RETRAIN_HOOK_SECRET"}]))
        with caplog.at_level("INFO", logger="mlflow_retrain.adapters.notify"):
            promoted = run_cycle(config, as_of="2011-05-31", via="inprocess")
            # the same window again: the same model, which cannot beat the one it would replace
            rejected = run_cycle(config, as_of="2011-05-31", force=True, reason="pricing change", via="inprocess")
    assert (promoted.outcome, rejected.outcome) == ("promoted", "rejected")
    assert len(slack.got) == len(generic.got) == 2
    assert all(signed(item) for item in slack.got + generic.got)
    ids = {item.headers["X-MLflow-Delivery-Id"] for item in slack.got + generic.got}
    assert len(ids) == 4  # one delivery id per message

    first, second = (item.json() for item in slack.got)
    assert first["text"] == "[promoted] bikes v2 promoted to Production"
    assert second["text"] == "[rejected] bikes v3 rejected"
    assert promoted.holdout_digest in json.dumps(first["blocks"]) and promoted.cycle_run_id in json.dumps(first)

    body = generic.got[0].json()
    assert body["event"] == "promoted" and body["report"] == json.loads(json.dumps(promoted.to_dict()))
    experiment = MlflowClient().get_run(promoted.cycle_run_id).info.experiment_id
    link = f"https://mlflow.example.com/#/experiments/{experiment}/runs/{promoted.cycle_run_id}?workflowType=machine_learning"
    assert body["details"]["link"] == link and f"<{link}|Open in MLflow>" in json.dumps(first["blocks"])
    assert generic.got[1].json()["report"]["outcome"] == "rejected"
    assert generic.got[1].headers["X-Mlflow-Retrain-Event"] == "rejected"
    logged = caplog.text
    assert "delivered, HTTP 200" in logged and "path-token" not in logged


def test_a_receiver_failing_twice_gets_a_third_attempt_with_the_same_delivery_id(tmp_path):
    with Receiver(script=[500, 503]) as receiver:
        target = N.NotifyTarget(receiver.url, "json")
        event = N.failure_event("bikes", RuntimeError("boom"))
        (result,) = N.send(N.messages([target], [event]))
    assert result.delivered and result.attempts == 3 and result.status == 200
    assert len(receiver.got) == 3 and len({r.headers["X-MLflow-Delivery-Id"] for r in receiver.got}) == 1
    assert 1.4 < result.seconds < 5  # backoff 0.5 s, then 1 s


def test_a_client_error_is_not_retried():
    with Receiver(script=[404]) as receiver:
        (result,) = N.send(N.messages([N.NotifyTarget(receiver.url, "slack")],
                                      [N.failure_event("bikes", RuntimeError("x"))]))
    assert not result.delivered and result.attempts == 1 and result.error == "HTTP 404"


def test_a_receiver_that_hangs_costs_at_most_the_budget(monkeypatch):
    monkeypatch.setattr(N, "BUDGET", 2.0)
    with Receiver(script=["hang"] * 5) as receiver:
        began = time.monotonic()
        (result,) = N.send(N.messages([N.NotifyTarget(receiver.url, "json", timeout=30)],
                                      [N.failure_event("bikes", RuntimeError("x"))]))
        took = time.monotonic() - began
    assert not result.delivered and took < 3.0, took


def test_dead_and_hanging_receivers_do_not_fail_or_hold_a_cycle(prod_store, write_policy, monkeypatch, caplog):
    """A live cycle whose labels stopped (the bundled rows end in 2011): downtime, told to a dead port
    and to a receiver that never answers, each with a 1 s timeout; the cycle ends normally."""
    timings: list[float] = []
    real_send = N.send

    def timed(batch, budget=None):
        began = time.monotonic()
        try:
            return real_send(batch, budget)
        finally:
            timings.append(time.monotonic() - began)

    monkeypatch.setattr(N, "send", timed)
    with Receiver(script=["hang"] * 5) as hanging:
        config = load_config(write_policy(monitoring={"max_data_gap": "2d"}, triggers={"metric_threshold": {"max": 1000}},
                                          notify=[{"url": dead_url(), "timeout": 1},
                                                  {"url": hanging.url, "timeout": 1, "format": "slack"}]))
        began = time.monotonic()
        report = run_cycle(config, via="inprocess")
        took = time.monotonic() - began
    assert report.outcome == "no_retrain" and report.stale
    assert len(hanging.got) == 3  # three attempts, each cut off by its timeout
    (spent,) = timings
    print(f"\ncycle {took:.1f} s, of which notifying a dead port and a hanging receiver {spent:.1f} s")
    assert spent < 1 * 3 + N.BACKOFF * 3 + 1.0  # three 1 s timeouts and the backoffs, in parallel
    assert "not delivered after 3 attempt(s)" in caplog.text and "ConnectionError" in caplog.text


def test_a_failed_cycle_is_told_then_raised(prod_store, write_policy, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("trainer crashed at http://user:hunter2@example.com")

    monkeypatch.setattr("mlflow_retrain.loop.cycle.make_candidate", crash)
    with Receiver() as receiver:
        config = load_config(write_policy(notify=[{"url": receiver.url, "on": ["failed"]}]))
        with pytest.raises(RuntimeError, match="trainer crashed"):
            run_cycle(config, as_of="2011-05-31", force=True, reason="test", via="inprocess")
    (item,) = receiver.got
    body = item.json()
    assert body["event"] == "failed" and body["details"]["error"] == "RuntimeError"
    assert "hunter2" not in item.body.decode() and "trainer crashed" in body["reason"]
    assert "X-MLflow-Signature" not in item.headers  # no secret configured: unsigned


def test_monitor_tells_its_downtime(prod_store, write_policy, monkeypatch, tmp_path):
    from mlflow_retrain.cli import cli

    monkeypatch.setenv("RETRAIN_HOOK_SECRET", SECRET)
    secret = tmp_path / "hook.secret"
    secret.write_text(SECRET + "\n")
    with Receiver() as receiver:
        policy = write_policy(monitoring={"max_data_gap": "2d"},
                              notify=[{"url": receiver.url, "on": ["downtime"], "secret_file": str(secret)}])
        out = CliRunner().invoke(cli, ["monitor", "--config", str(policy), "--out", str(tmp_path / "mon")])
    assert out.exit_code == 4, out.output
    (item,) = receiver.got
    assert signed(item) and item.json()["event"] == "downtime" and "data_gap" in item.json()["reason"]


@pytest.mark.parametrize("notify, message", [
    ([{"url": "localhost:8000/hook"}], "notify[0].url must be an http:// or https:// URL with a host"),
    ([{"url": "http://127.0.0.1:9/x", "format": "teams"}], "notify[0].format must be one of slack, json"),
    ([{"url": "http://127.0.0.1:9/x", "on": ["deployed"]}], "notify[0].on names unknown event 'deployed'"),
    ([{"url": "http://127.0.0.1:9/x", "secret_env": "UNSET_HOOK_SECRET"}],
     "notify[0].secret_env names UNSET_HOOK_SECRET, which is not set"),
    # a slipped dash or indent with a Slack URL (its path is the token): the key and the type, never the value
    ({"url": f"https://hooks.slack.com/services/T0/B0/{TOKEN}"}, "notify must be a list, got a mapping"),
    (f"https://hooks.slack.com/services/T0/B0/{TOKEN}", "notify must be a list, got a string"),
    ([{"url": [f"https://hooks.slack.com/services/T0/B0/{TOKEN}"]}], "notify[0].url must be a string, got a list"),
    ([{"url": "http://127.0.0.1:9/x", "secret_env": "SHORT_HOOK_SECRET"}],
     "notify[0].secret_env holds a secret shorter than 16 characters"),
])
def test_bad_notify_policy_is_one_line_exit_2_before_anything_runs(write_policy, tmp_path, monkeypatch, notify,
                                                                   message):
    from mlflow_retrain.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("UNSET_HOOK_SECRET", raising=False)
    monkeypatch.setenv("SHORT_HOOK_SECRET", "x")
    out = CliRunner().invoke(cli, ["cycle", "--config", str(write_policy(notify=notify))])
    assert out.exit_code == 2 and message in out.output and TOKEN not in out.output
    assert out.output.count("\n") == 1 and out.output.startswith("error: ")
    assert not Path(tmp_path / "mlflow.db").exists() and not Path(tmp_path / "mlruns").exists()


def test_a_move_by_hand_is_told_like_a_cycle_s(prod_store, write_policy, monkeypatch):
    """`rollback` (and `promote`, `approve`, `reject`) moves Production outside a cycle: the channel
    that hears of promotions hears of it, with who asked and why."""
    from mlflow_retrain.loop.manual import rollback

    monkeypatch.setenv("RETRAIN_HOOK_SECRET", SECRET)
    with Receiver() as generic:
        config = load_config(write_policy(triggers={"metric_threshold": {"max": 60}},
                                          notify=[{"url": generic.url, "format": "json", "on": ["promoted"],
                                                   "secret_env": "RETRAIN_HOOK_SECRET"}]))
        assert run_cycle(config, as_of="2011-05-31", via="inprocess").outcome == "promoted"
        move = rollback(config, reason="v2 over-predicts the holiday peak")
    assert len(generic.got) == 2 and all(signed(item) for item in generic.got)
    body = generic.got[1].json()
    assert body["event"] == "promoted" and body["title"] == "bikes v1 promoted to Production (rollback), replacing v2"
    assert body["reason"] == "v2 over-predicts the holiday peak" and body["details"]["run_id"] == move.run_id
