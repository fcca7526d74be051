"""What a cycle tells people (pure), the `notify:` policy key, and the signature MLflow's webhooks use."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlflow_retrain.adapters import notify as N
from mlflow_retrain.loop import events as E
from mlflow_retrain.policy.config import NOTIFY_EVENTS, NotifyTarget
from mlflow_retrain.policy.parse import parse_config
from mlflow_retrain.loop.report import CycleReport
from mlflow_retrain.decide import PromotionDecision, RetrainDecision
from mlflow_retrain.usecases.monitor_events import downtime_events
from mlflow_retrain.base.errors import ConfigError

MINIMAL = {"model_name": "bikes", "data": {"path": "d.csv", "timestamp": "t", "target": "y", "features": ["a"]}}
URL = "https://hooks.example.com/services/T000/B000/s3cr3tpath"


def report(outcome: str, **extra) -> CycleReport:
    r = CycleReport("bikes", "2011-05-31T00:00:00", False, outcome=outcome, production_version="1",
                    cycle_run_id="abc123", **extra)
    r.decision = RetrainDecision(True, ["metric_threshold"], [], "mae 71.2 > max 60", None)
    if outcome in ("promoted", "rejected", "awaiting_approval", "expired", "challenger"):
        r.candidate_version = "2"
        r.promotion = PromotionDecision(outcome != "rejected", ["absolute gate: 44.7 < 90 (pass)"], "mae", 44.7,
                                        85.2, 90.0, None)
        r.holdout_window, r.holdout_digest = "2011-05-24..2011-05-31", "d1g3st"
    return r


@pytest.mark.parametrize("outcome, kinds", [
    ("promoted", ["promoted"]), ("rejected", ["rejected"]), ("awaiting_approval", ["awaiting_approval"]),
    ("expired", ["rejected"]),  # nobody signed off within approval_ttl: archived, told as a rejection
    ("no_retrain", []), ("blocked", []), ("would_retrain", []),
    ("challenger", ["challenger"]),  # inconclusive: waits beside Production (`validation.challenger`)
])
def test_a_cycle_tells_its_verdict_on_a_candidate_only(outcome, kinds):
    events = E.cycle_events(report(outcome))
    assert [e.kind for e in events] == kinds
    for event in events:
        assert "v2" in event.title and "mae 71.2 > max 60" in event.reason and event.report["outcome"] == outcome


def test_a_data_gap_is_downtime_whatever_the_cycle_decided():
    events = E.cycle_events(report("no_retrain", stale="no labelled data since 2011-05-20 (max 2d)"))
    assert [e.kind for e in events] == ["downtime"] and "2011-05-20" in events[0].reason
    both = E.cycle_events(report("promoted", stale="gap"))
    assert [e.kind for e in both] == ["promoted", "downtime"]


def test_the_awaiting_approval_message_says_how_to_sign_off_and_until_when():
    config = parse_config({**MINIMAL, "validation": {"require_approval": True, "approval_ttl": "7d"}})
    (event,) = E.cycle_events(report("awaiting_approval"), config)
    assert event.details["approve"] == 'mlflow-retrain approve 2 --config retrain.yaml --reason "..."'
    assert event.details["expires"] == "2011-06-07T00:00:00" and event.details["since"] == "2011-05-31T00:00:00"
    assert "mlflow-retrain reject 2" in event.reason and "retrain.approval=approved" in event.reason
    assert "expires as of 2011-06-07" in event.reason and "T00:00" not in event.reason  # a daily policy: a date
    assert "mlflow-retrain approve 2" in json.dumps(N.slack_body(event))


def test_links_go_to_the_ui_people_open_in_model_training_mode():
    local, server = parse_config(MINIMAL), parse_config({**MINIMAL, "ui_url": "https://ui.example.com/mlflow/"})
    assert N.ui_base(server, "sqlite:///x.db") == "https://ui.example.com/mlflow"  # ui_url wins
    assert N.ui_base(local, "https://bob:pw@mlflow.example.com:8443/base/?token=t") == "https://mlflow.example.com:8443/base"
    assert N.ui_base(local, "sqlite:////tmp/mlflow.db") is None  # a local store: no guess at where a UI runs
    assert N.run_url("http://h:5000", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    with pytest.raises(ConfigError, match="ui_url must be an http:// or https:// URL with a host and no credentials"):
        parse_config({**MINIMAL, "ui_url": "https://bob:pw@ui.example.com"})


def test_a_dry_run_tells_nobody():
    r = report("promoted")
    r.dry_run = True
    assert E.cycle_events(r) == []


def test_a_first_model_rejected_says_nothing_serves():
    r = report("rejected")
    r.production_version = None
    (event,) = E.cycle_events(r)
    assert "nothing in Production yet" in event.title


def test_monitor_downtime_and_a_failure_are_events_with_their_reasons():
    result = SimpleNamespace(health=["load: v3 does not load", "data_gap: no labelled data since x"], run_id="r1",
                             dashboard=Path("/tmp/d.html"))
    (event,) = downtime_events("bikes", result)
    assert event.kind == "downtime" and event.reason == "load: v3 does not load (+1 more)"
    assert event.details["health"] == result.health
    assert downtime_events("bikes", SimpleNamespace(health=[])) == []
    failed = N.failure_event("bikes", RuntimeError("store at http://u:pw@host:5000 down\ntrace"), "2011-05-31")
    assert failed.kind == "failed" and "pw" not in failed.reason and "trace" not in failed.reason
    assert failed.reason.startswith("RuntimeError: store at http://***@host:5000 down")


def test_messages_go_to_the_targets_listening_in_their_format():
    slack = NotifyTarget(URL, "slack", ("promoted",))
    generic = NotifyTarget("http://127.0.0.1:9/hook", "json")
    events = E.cycle_events(report("promoted")) + [N.failure_event("bikes", ValueError("x"))]
    out = N.messages([slack, generic], events)
    assert [(m.target.format, m.event.kind) for m in out] == [("slack", "promoted"), ("json", "promoted"),
                                                             ("json", "failed")]
    body = json.loads(out[0].body)
    assert set(body) == {"text", "blocks"} and body["text"] == "[promoted] bikes v2 promoted to Production"
    assert body["blocks"][0]["type"] == "header" and "d1g3st" in json.dumps(body["blocks"])
    generic_body = json.loads(out[1].body)
    assert generic_body["event"] == "promoted" and generic_body["report"] == json.loads(json.dumps(
        report("promoted").to_dict()))


def test_the_signature_is_mlflows_own_and_serve_verifies_it():
    """Notifications are signed by the code `serve` verifies with (`serve/signing.py`), which is
    MLflow's construction: one receiver-side check fits MLflow's webhooks and ours."""
    from mlflow.webhooks.delivery import _generate_hmac_signature

    from mlflow_retrain.base import signing
    from mlflow_retrain.serve.signing import verify

    body = json.dumps({"a": 1})
    ours = signing.signature("k3y", "id-1", "1700000000", body.encode())
    assert ours == _generate_hmac_signature("k3y", "id-1", "1700000000", body)
    headers = {"x-mlflow-delivery-id": "id-1", "X-MLflow-Timestamp": "1700000000", "X-MLflow-Signature": ours}
    assert verify("k3y", headers, body.encode(), now=1700000100).ok
    assert not verify("wrong", headers, body.encode(), now=1700000100).ok


def test_the_url_never_shows_in_a_target_or_its_label():
    target = NotifyTarget("https://user:pw@hooks.example.com/services/T/B/s3cr3t", "slack")
    assert "s3cr3t" not in repr(target) and "pw" not in target.label
    assert target.label == "https://hooks.example.com (slack)"


# ---- the policy key ----------------------------------------------------------------------------------
def parse(notify, origin="f.yaml"):
    return parse_config({**MINIMAL, "notify": notify}, origin=origin)


def test_notify_targets_parse_with_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("HOOK_SECRET", "k3y-of-sixteen-chars")
    (tmp_path / "secret").write_text("from-a-file-16-chars\n")
    policy = tmp_path / "retrain.yaml"
    policy.write_text(yaml.safe_dump({**MINIMAL, "notify": [
        {"url": URL, "format": "slack", "secret_env": "HOOK_SECRET"},
        {"url": "http://127.0.0.1:8000/x", "on": ["failed", "downtime"], "secret_file": "secret", "timeout": 1}]}))
    from mlflow_retrain.policy.load import load_config

    slack, generic = load_config(policy).notify
    assert slack.events == NOTIFY_EVENTS and slack.secret() == "k3y-of-sixteen-chars" and slack.timeout == 5
    assert generic.format == "json" and generic.events == ("failed", "downtime") and generic.timeout == 1
    assert generic.secret_file == tmp_path / "secret" and generic.secret() == "from-a-file-16-chars"
    assert parse_config(MINIMAL).notify == ()


def test_a_bare_on_key_in_yaml_is_the_events_not_true():
    raw = yaml.safe_load("model_name: m\ndata: {path: d, timestamp: t, target: y}\n"
                         "notify:\n  - url: http://127.0.0.1:9/x\n    on: [promoted]\n")
    assert parse_config(raw).notify[0].events == ("promoted",)


@pytest.mark.parametrize("notify, message", [
    ({"url": URL}, "f.yaml: notify must be a list, got a mapping"),
    ([{"url": "ftp://host/x"}], "f.yaml: notify[0].url must be an http:// or https:// URL with a host"),
    ([{"url": "hooks.example.com/x"}], "notify[0].url must be an http:// or https:// URL"),
    ([{"url": "http://host:port/x"}], "notify[0].url is not a URL"),
    ([{"format": "slack"}], "notify[0].url is required"),
    ([{"url": URL, "format": "teams"}], "notify[0].format must be one of slack, json, got 'teams'"),
    ([{"url": URL, "on": ["promoted", "deployed"]}], ("notify[0].on names unknown event 'deployed'; events: promoted, "
                                                       "rejected, awaiting_approval, challenger, downtime, failed")),
    ([{"url": URL, "on": []}], "notify[0].on is empty"),
    ([{"url": URL, "secret": "hunter22"}], "notify[0].secret must not be written in the policy"),
    ([{"url": URL, "secret_env": "NO_SUCH_VAR_FOR_NOTIFY"}], ("notify[0].secret_env names NO_SUCH_VAR_FOR_NOTIFY, "
                                                              "which is not set")),
    ([{"url": URL, "secret_file": "/nonexistent/secret"}], "notify[0].secret_file names a file that does not exist"),
    ([{"url": URL, "timeout": 0}], "notify[0].timeout must be positive"),
    ([{"url": URL, "retries": 3}], "notify[0] has 1 key(s) that are not known here"),
])
def test_bad_notify_input_is_one_line_naming_the_key(notify, message):
    with pytest.raises(ConfigError) as info:
        parse(notify)
    text = str(info.value)
    assert message in text and "\n" not in text and "hunter22" not in text


TOKEN = "xoxb-T0KEN-planted-9f8e7d"
SLACK = f"https://hooks.slack.com/services/T0/B0/{TOKEN}"


def _shapes(leaf: st.SearchStrategy) -> st.SearchStrategy:
    """Any YAML-like shape with the token somewhere inside: what a slipped indent or dash makes."""
    scalars = st.one_of(leaf, st.integers(), st.booleans(), st.none(), st.sampled_from(["json", "slack", "x"]))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(["url", "url_env", "url_file", "format", "on", "secret",
                                                   "secret_env", "timeout", "uri"]), leaf), inner, max_size=3)),
        max_leaves=6)


TOKENS = st.sampled_from([SLACK, TOKEN, f"http://user:{TOKEN}@host/x", f"{TOKEN}:{TOKEN}", f"https://h:{TOKEN}/p"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(["notify", "notify-item", "url", "tracking_uri", "project-uri", "secret"]),
       value=_shapes(TOKENS))
def test_no_error_about_a_field_that_may_hold_a_secret_repeats_it(field, value):
    """Whatever shape a value that may hold a token takes, an error names the key and the type only."""
    raw = dict(MINIMAL)
    if field == "notify":
        raw["notify"] = value
    elif field == "notify-item":
        raw["notify"] = [value]
    elif field == "project-uri":
        raw["training"] = {"project": {"uri": value}}
    elif field == "tracking_uri":
        raw["tracking_uri"] = value
    else:
        raw["notify"] = [{field: value, "url": "http://127.0.0.1:9/x"} if field == "secret" else {field: value}]
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("PLANTED_URL", value if isinstance(value, str) else SLACK)
            parse_config(raw, origin="f.yaml")
    except ConfigError as exc:
        assert TOKEN not in str(exc) and "\n" not in str(exc)


@pytest.mark.parametrize("notify", [
    {"url": SLACK}, SLACK, [SLACK], [{"url": [SLACK]}], [{"url": {"href": SLACK}}], [{SLACK: None}],
    [{"url": SLACK, SLACK: 1}], [{"url": f"ftp://{TOKEN}"}], [{"url": f"https://h:{TOKEN}/x"}],
    [{"url_env": "PLANTED_URL"}], [{"url_file": "planted.url"}],
])
def test_the_shapes_of_issue_30_name_the_key_never_the_token(monkeypatch, tmp_path, notify):
    monkeypatch.setenv("PLANTED_URL", f"hooks.slack.com/{TOKEN}")  # no scheme: refused
    (tmp_path / "planted.url").write_text(f"ftp://x/{TOKEN}\n")
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, "notify": notify}, origin="f.yaml", source=tmp_path / "retrain.yaml")
    assert TOKEN not in str(info.value) and str(info.value).startswith("f.yaml: notify")


def test_the_url_may_come_from_a_variable_or_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("PLANTED_URL", SLACK)
    (tmp_path / "hook.url").write_text(SLACK + "\n")
    source = tmp_path / "retrain.yaml"
    env, file = parse_config({**MINIMAL, "notify": [{"url_env": "PLANTED_URL", "format": "slack"},
                                                    {"url_file": "hook.url"}]}, source=source).notify
    assert env.url == file.url == SLACK and TOKEN not in env.label
    with pytest.raises(ConfigError, match="notify.0..url has alternatives: give one of url, url_env"):
        parse_config({**MINIMAL, "notify": [{"url": SLACK, "url_env": "PLANTED_URL"}]})
    monkeypatch.delenv("PLANTED_URL")
    with pytest.raises(ConfigError, match="notify.0..url_env names PLANTED_URL, which is not set"):
        parse_config({**MINIMAL, "notify": [{"url_env": "PLANTED_URL"}]})


@pytest.mark.parametrize("length, ok", [(1, False), (15, False), (16, True)])
def test_a_signing_secret_shorter_than_serve_accepts_is_refused(monkeypatch, tmp_path, length, ok):
    monkeypatch.setenv("HOOK_SECRET", "k" * length)
    (tmp_path / "s").write_text("k" * length)
    for key, value in (("secret_env", "HOOK_SECRET"), ("secret_file", str(tmp_path / "s"))):
        raw = {**MINIMAL, "notify": [{"url": URL, key: value}]}
        if ok:
            assert parse_config(raw).notify[0].secret() == "k" * length
        else:
            with pytest.raises(ConfigError, match=f"notify.0..{key} holds a secret shorter than 16 characters"):
                parse_config(raw)


def test_the_documented_verifier_accepts_what_we_sign_and_mlflow_signs():
    """The receiver's snippet in the documentation (docs/notifications.md), run as written."""
    from mlflow.webhooks.delivery import _generate_hmac_signature

    page = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text()
    snippet = page.split("To verify\non the receiving side", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 - the documented snippet, run as written
    body = json.dumps({"event": "promoted"})
    stamp = str(int(__import__("time").time()))
    from mlflow_retrain.base import signing

    ours = signing.signed_headers("k3y", body.encode(), delivery_id="id-7", now=int(stamp))["X-MLflow-Signature"]
    for signature in (ours, _generate_hmac_signature("k3y", "id-7", stamp, body)):
        headers = {"X-MLflow-Delivery-Id": "id-7", "X-MLflow-Timestamp": stamp, "X-MLflow-Signature": signature}
        assert scope["verify"]("k3y", headers, body.encode())
        assert not scope["verify"]("other", headers, body.encode())


def test_moves_by_hand_are_promotions_or_rejections():
    from mlflow_retrain.adapters.notify import move_event

    approved = move_event("bikes", "approve", "7", "6", "checked the weekend", "r1", "ana")
    assert (approved.kind, approved.title) == ("promoted", "bikes v7 promoted to Production (approve by ana), replacing v6")
    rejected = move_event("bikes", "reject", "7", None, "holiday peak", "r2", "ana")
    assert (rejected.kind, rejected.title, rejected.reason) == ("rejected", "bikes v7 rejected (reject by ana)",
                                                                "holiday peak")
