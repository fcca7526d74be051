"""`serve`'s pure parts: MLflow's signature, what an event asks for, how events coalesce, what changed
in a folder; and the sqlite queue's replay, claim and recovery rules on a real file."""

from __future__ import annotations

import json

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from mlflow_retrain.base import tags as T
from mlflow_retrain.base import signing
from mlflow_retrain.serve import parse
from mlflow_retrain.serve.parse import Refused
from mlflow_retrain.serve.signing import verify
from mlflow_retrain.serve.events import (
    CYCLE,
    FORCE,
    IGNORE,
    MARK,
    SIGNOFF,
    VALIDATE,
    Action,
    BadEvent,
    Queued,
    adoption,
    plan,
    signoff_due,
    trigger_action,
    webhook_action,
)
from mlflow_retrain.serve.basequeue import DONE, IGNORED, PENDING, RUNNING
from mlflow_retrain.serve.queue import EventQueue
from mlflow_retrain.serve.watch import changed

SECRET = "s3cret-s3cret-s3cret"
NOW = 1_800_000_000


def test_our_signature_is_mlflows_own_for_the_same_delivery():
    body = json.dumps({"entity": "model_version", "action": "created", "data": {"name": "m", "version": "1"}})
    ours = signing.signature(SECRET, "d-1", str(NOW), body.encode())
    assert ours == _generate_hmac_signature(SECRET, "d-1", str(NOW), body)


def test_verify_accepts_a_good_signature_and_names_the_delivery():
    body = b'{"source": "etl", "reason": "reloaded"}'
    check = verify(SECRET, signing.signed_headers(SECRET, body, now=NOW, delivery_id="abc"), body, now=NOW + 5)
    assert check.ok and check.delivery_id == "abc"


@pytest.mark.parametrize("change, why", [
    (lambda h, b: (h, b + b" "), "does not match"),
    (lambda h, b: ({**h, signing.SIGNATURE: signing.signature("other-secret-000000", "abc", str(NOW), b)}, b),
     "does not match"),
    (lambda h, b: ({k: v for k, v in h.items() if k != signing.SIGNATURE}, b), "missing"),
    (lambda h, b: ({**h, signing.TIMESTAMP: "yesterday"}, b), "whole Unix seconds"),
])
def test_verify_refuses_tampering_and_missing_headers_with_401(change, why):
    body = b'{"a": 1}'
    headers, sent = change(signing.signed_headers(SECRET, body, now=NOW, delivery_id="abc"), body)
    check = verify(SECRET, headers, sent, now=NOW)
    assert not check.ok and check.status == 401 and why in check.reason


def test_verify_refuses_stale_and_future_timestamps_even_when_signed():
    body = b"{}"
    headers = signing.signed_headers(SECRET, body, now=NOW, delivery_id="abc")
    assert verify(SECRET, headers, body, now=NOW + 300).ok
    stale = verify(SECRET, headers, body, now=NOW + 301)
    future = verify(SECRET, headers, body, now=NOW - 301)
    assert "old" in stale.reason and "future" in future.reason and not stale.ok and not future.ok


def test_verify_accepts_any_of_several_signatures_for_secret_rotation():
    body = b"{}"
    headers = signing.signed_headers(SECRET, body, now=NOW, delivery_id="abc")
    headers[signing.SIGNATURE] = "v1,bm90LWl0 " + headers[signing.SIGNATURE]
    assert verify(SECRET, {k.lower(): v for k, v in headers.items()}, body, now=NOW).ok


def created(name: str = "bikes", version: str = "3", tags: dict | None = None) -> dict:
    return {"entity": "model_version", "action": "created",
            "data": {"name": name, "version": version, "source": "models:/m-1", "tags": tags or {}}}


def test_a_version_registered_outside_a_cycle_is_validated():
    action = webhook_action(created(), "bikes")
    assert action.action == VALIDATE and action.version == "3" and "outside a cycle" in action.reason


@pytest.mark.parametrize("payload, why", [
    (created(tags={T.CYCLE_RUN_ID: "run-1"}), "registered by cycle run-1"),
    (created(name="other"), "not the managed model"),
    ({"entity": "model_version", "action": "deleted", "data": {"name": "bikes", "version": "3"}},
     "model_version.created and model_version_tag.set only"),
])
def test_other_webhooks_are_recorded_and_ignored_with_why(payload, why):
    action = webhook_action(payload, "bikes")
    assert action.action == IGNORE and why in action.reason


def tag_set(key: str = T.APPROVAL, value: str = "approved", name: str = "bikes", version: str = "2") -> dict:
    """MLflow's `model_version_tag.set` delivery (`mlflow.webhooks.ModelVersionTagSetPayload`)."""
    return {"entity": "model_version_tag", "action": "set",
            "data": {"name": name, "version": version, "key": key, "value": value}}


@pytest.mark.parametrize("value", ["approved", "rejected", " Approved "])
def test_a_person_signing_off_in_the_ui_asks_for_a_cycle_that_carries_it_out(value):
    action = webhook_action(tag_set(value=value), "bikes")
    said = value.strip().lower()
    assert action == Action(SIGNOFF, f"v2 {said} (retrain.approval tag, MLflow webhook): a cycle carries it out",
                            version="2")


@pytest.mark.parametrize("payload, why", [
    (tag_set(key=T.DECISION, value=T.PROMOTED), "tag 'retrain.decision' set on v2: serve acts on retrain.approval only"),
    (tag_set(key="owner", value="alice"), "tag 'owner' set on v2"),
    (tag_set(value="yes"), "retrain.approval='yes' on v2 is neither approved nor rejected"),
    (tag_set(value=""), "is neither approved nor rejected"),
    (tag_set(name="other"), "model_version_tag.set for 'other' v2: not the managed model 'bikes'"),
])
def test_other_tags_values_and_models_are_recorded_and_ignored_with_why(payload, why):
    action = webhook_action(payload, "bikes")
    assert action.action == IGNORE and why in action.reason


def test_a_sign_off_without_a_version_number_is_a_bad_event_but_other_tags_are_not_read_that_far():
    with pytest.raises(BadEvent, match="model_version_tag.set without a version number"):
        webhook_action(tag_set(version="latest"), "bikes")
    assert webhook_action(tag_set(key="owner", version="latest"), "bikes").action == IGNORE


@pytest.mark.parametrize("tags, expected, why", [
    ({T.DECISION: T.AWAITING_APPROVAL, T.APPROVAL: "approved"}, SIGNOFF, "awaits approval"),
    ({T.DECISION: T.PROMOTED, T.APPROVAL: "approved"}, IGNORE, "no longer awaits approval (promoted)"),
    ({T.DECISION: T.REJECTED, T.APPROVAL: "rejected"}, IGNORE, "carried out already"),
    ({}, IGNORE, "(no retrain.decision)"),
])
def test_at_run_time_a_sign_off_runs_a_cycle_only_while_the_version_still_waits(tags, expected, why):
    action = signoff_due("2", tags)
    assert action.action == expected and action.version == "2" and why in action.reason


def test_a_sign_off_is_its_own_cycle_between_validation_and_a_forced_or_normal_one():
    events = [Queued(1, Action(CYCLE, "new file")), Queued(2, Action(SIGNOFF, "s", version="2")),
              Queued(3, Action(FORCE, "asked", source="etl")), Queued(4, Action(VALIDATE, "v", version="9")),
              Queued(5, Action(SIGNOFF, "s", version="2"))]
    chosen = plan(events)
    assert [c.kind for c in chosen.calls] == [VALIDATE, SIGNOFF, FORCE]
    assert chosen.calls[1].versions == ("2",) and chosen.calls[1].events == (2, 5)
    assert "(1 to validate, 2 signed off, 1 forced, 1 new data) -> 3 cycle(s)" in chosen.reason
    # a cycle that carries out a verdict evaluates no trigger: new data gets a cycle of its own
    alone = plan([Queued(1, Action(SIGNOFF, "s", version="2")), Queued(2, Action(CYCLE, "new file"))])
    assert [c.kind for c in alone.calls] == [SIGNOFF, CYCLE]


def test_bodies_that_do_not_say_what_they_want_are_refused_400():
    for version in ("x", "\u00b2", "1" * 19):  # a Unicode digit passes str.isdigit(), not int()
        with pytest.raises(BadEvent, match="without a version number") as refused:
            webhook_action(created(version=version), "bikes")
        assert refused.value.status == 400
    with pytest.raises(Refused, match="'reason'"):
        parse.trigger_payload({"source": "etl", "reason": " "})
    with pytest.raises(Refused, match="JSON"):
        parse.json_object(b"not json")
    checked = parse.trigger_payload({"source": " etl ", "reason": "reloaded"})
    assert trigger_action(checked) == Action(FORCE, "reloaded", source="etl")


@pytest.mark.parametrize("tags, expected, why", [
    ({}, MARK, "marked pending"),
    ({T.DECISION: T.PENDING}, VALIDATE, "already pending"),
    ({T.DECISION: T.PENDING, T.CYCLE_RUN_ID: "r"}, IGNORE, "registered by cycle r"),
    ({T.DECISION: T.PROMOTED}, IGNORE, "already judged"),
    ({T.DECISION: T.ABANDONED}, IGNORE, "already judged"),
])
def test_adoption_at_run_time_reads_the_versions_tags_as_they_are_then(tags, expected, why):
    action = adoption("4", tags)
    assert action.action == expected and why in action.reason


def test_twenty_triggers_coalesce_into_one_forced_cycle_naming_every_source_once():
    events = [Queued(i, Action(FORCE, f"reason {i % 3}", source=f"sys-{i % 2}")) for i in range(20)]
    chosen = plan(events)
    assert len(chosen.calls) == 1
    call = chosen.calls[0]
    assert call.kind == FORCE and call.events == tuple(range(20))
    assert call.source == "sys-0,sys-1" and call.reason == "reason 0; reason 1; reason 2"


def test_validation_comes_first_and_a_forced_cycle_absorbs_new_data():
    events = [Queued(1, Action(CYCLE, "new file")), Queued(2, Action(VALIDATE, "v", version="10")),
              Queued(3, Action(FORCE, "asked", source="etl")), Queued(4, Action(VALIDATE, "v", version="9")),
              Queued(5, Action(VALIDATE, "v", version="10"))]
    chosen = plan(events)
    assert [c.kind for c in chosen.calls] == [VALIDATE, FORCE]
    assert chosen.calls[0].versions == ("9", "10") and chosen.calls[0].events == (2, 4, 5)
    assert chosen.calls[1].events == (3, 1)  # every event is served by exactly one cycle
    assert "5 event(s)" in chosen.reason and "-> 2 cycle(s)" in chosen.reason


def test_new_data_alone_is_one_normal_cycle_and_no_events_no_cycle():
    assert [c.kind for c in plan([Queued(1, Action(CYCLE, "a")), Queued(2, Action(CYCLE, "b"))]).calls] == [CYCLE]
    assert plan([]).calls == ()


def test_a_long_joined_reason_is_cut_with_a_count():
    chosen = plan([Queued(i, Action(FORCE, f"reason number {i} " * 10, source="s")) for i in range(50)])
    assert len(chosen.calls[0].reason) <= 500 and chosen.calls[0].reason.endswith("(50 reasons)")


def test_changed_files_are_new_or_modified_and_nothing_on_the_first_look():
    before = {"a.csv": (10, 1), "b.csv": (5, 1)}
    assert changed(None, before) == []
    assert changed(before, {"a.csv": (10, 1), "b.csv": (6, 2), "c.csv": (1, 1)}) == ["b.csv", "c.csv"]
    assert changed(before, {"a.csv": (10, 1)}) == []  # a removed file is not new data


def test_the_queue_refuses_a_delivery_id_twice_even_after_reopening(tmp_path):
    queue = EventQueue(tmp_path / "q.sqlite")
    assert queue.add("trigger", "bikes", "s", Action(FORCE, "r", source="s"), "d-1") == 1
    assert EventQueue(tmp_path / "q.sqlite").add("trigger", "bikes", "s", Action(FORCE, "r", source="s"), "d-1") is None
    assert queue.add("webhook", "bikes", "s", Action(IGNORE, "other model"), "d-2") == 2
    assert queue.counts() == {PENDING: 1, IGNORED: 1}


def test_claim_takes_every_due_event_once_and_recover_requeues_a_dead_workers_batch(tmp_path):
    queue = EventQueue(tmp_path / "q.sqlite")
    for i in range(3):
        queue.add("trigger", "bikes", "s", Action(FORCE, f"r{i}", source="s"), f"d-{i}")
    queue.add("trigger", "other", "s", Action(FORCE, "x", source="s"), "d-x")
    batch, events = queue.claim("bikes")
    assert [e.id for e in events] == [1, 2, 3] and queue.claim("bikes") is None
    assert queue.recover() == 3  # the worker that claimed them died
    batch2, again = queue.claim("bikes")
    assert batch2 == batch + 1 and [e.action.reason for e in again] == ["r0", "r1", "r2"]
    queue.finish({1: {"status": DONE, "outcome": "promoted"}}, batch2)
    queue.release([2, 3], batch, delay=60, why="lease held")  # a stale batch number: fenced, nothing moves
    assert queue.counts()[RUNNING] == 2
    queue.release([2, 3], batch2, delay=60, why="lease held")
    assert queue.claim("bikes") is None  # not due yet
    assert {e["id"]: e["status"] for e in queue.recent()} == {1: DONE, 2: PENDING, 3: PENDING, 4: PENDING}
    assert [e.id for e in queue.claim("bikes", now=10 ** 10)[1]] == [2, 3]
    assert queue.counts()[RUNNING] == 2


def test_events_show_when_each_was_received_as_a_time_a_person_reads():
    from mlflow_retrain.serve.basequeue import as_event

    row = {"id": 3, "received": 1_709_251_200.4, "kind": "new_data", "model": "m", "summary": "s",
           "action": json.dumps(Action(CYCLE, "new file").to_dict()), "status": "done", "batch": None, "result": None}
    assert as_event(row)["received"] == "2024-03-01T00:00:00+00:00"  # the queue keeps Unix seconds
