"""Tell people: a cycle's outcome, downtime and failures, sent to the policy's webhooks (`notify:`).

Why it is built this way: docs/design.md#adapters-notify.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import mlflow
from mlflow.tracking import MlflowClient

from mlflow_retrain.adapters import outbox
from mlflow_retrain.base import signing
from mlflow_retrain.base import links
from mlflow_retrain.base import tags as T
from mlflow_retrain.base.redact import redact
from mlflow_retrain.policy.config import Config, NotifyTarget

log = logging.getLogger(__name__)

PROMOTED, REJECTED, AWAITING_APPROVAL, DOWNTIME, FAILED = "promoted", "rejected", T.AWAITING_APPROVAL, "downtime", "failed"
EVENT_HEADER = "X-Mlflow-Retrain-Event"
ATTEMPTS = 3  # per message: the first try and two retries
BACKOFF = 0.5  # seconds before the first retry, doubled before each next one
BUDGET = 10.0  # seconds for all of one batch's messages, retries included
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})  # worth another try; other 4xx will not change


@dataclass(frozen=True)
class Event:
    """Something people should hear about, with why: `kind` is one of `config.NOTIFY_EVENTS`."""

    kind: str
    model_name: str
    title: str  # one line, e.g. "bikes v7 promoted"
    reason: str  # the sentence with the numbers
    report: dict[str, Any] | None = None  # the cycle's report as a dict (`CycleReport.to_dict()`), when a cycle sent it
    details: dict[str, Any] = field(default_factory=dict)  # what else the kind has (health issues, error)


@dataclass(frozen=True)
class Message:
    """One event rendered for one target: the exact body that is signed and sent."""

    target: NotifyTarget
    event: Event
    body: str
    delivery_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # the same on every retry, every cycle


@dataclass(frozen=True)
class Delivery:
    """What became of one message: logged, recorded on the audit run, and returned to callers."""

    target: str  # the target's label (no path, no credentials)
    event: str
    delivered: bool
    attempts: int
    status: int | None
    error: str
    seconds: float
    delivery_id: str = ""


# ---- what to send (pure) ---------------------------------------------------------------------------------
def move_event(model_name: str, action: str, version: str, previous: str | None, reason: str, run_id: str,
               by: str = "") -> Event:
    """A person moved a version (`promote`, `rollback`, `approve`, `reject`): the same kinds a cycle
    sends (promoted, rejected), so a channel that hears of promotions hears of every one."""
    kind = REJECTED if action == "reject" else PROMOTED
    who = f" by {by}" if by else ""
    replacing = f", replacing v{previous}" if previous and kind == PROMOTED else ""
    title = f"{model_name} v{version} {'rejected' if kind == REJECTED else 'promoted to Production'}" \
            f" ({action}{who}){replacing}"
    return Event(kind, model_name, title, reason, None, {"action": action, "version": version, "previous": previous,
                                                          "by": by, "run_id": run_id})


def failure_event(model_name: str, error: BaseException, as_of: str | None = None) -> Event:
    """A cycle that raised: its error in one line, credentials masked."""
    message = redact(str(error).splitlines()[0] if str(error) else type(error).__name__)[:500]
    when = f" as of {as_of}" if as_of else ""
    return Event(FAILED, model_name, f"{model_name}: a cycle{when} failed", f"{type(error).__name__}: {message}",
                 None, {"error": type(error).__name__, "message": message, "as_of": as_of})


def messages(targets: tuple[NotifyTarget, ...] | list[NotifyTarget], events: list[Event]) -> list[Message]:
    """Each event for each target that listens to its kind, rendered in the target's format."""
    render = {"slack": slack_body, "json": json_body}
    return [Message(t, e, json.dumps(render[t.format](e), default=str)) for e in events for t in targets
            if e.kind in t.events]


def json_body(event: Event) -> dict[str, Any]:
    """The generic body: the event, why, and the whole cycle report (`CycleReport.to_dict()`)."""
    return {"event": event.kind, "model_name": event.model_name, "title": event.title, "reason": event.reason,
            "report": event.report, "details": event.details}


def slack_body(event: Event) -> dict[str, Any]:
    """A Slack incoming-webhook body: `text` (notifications, clients without blocks) and `blocks`."""
    report = event.report or {}
    facts = [("outcome", report.get("outcome")), ("as of", report.get("as_of")),
             ("Production before", report.get("production_version") and f"v{report['production_version']}"),
             ("holdout", report.get("holdout_window")), ("holdout digest", report.get("holdout_digest")),
             ("audit run", report.get("cycle_run_id")), *((k, v) for k, v in event.details.items()
                                                          if isinstance(v, str) and k not in ("message", "link"))]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": event.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(event.reason)[:2900] or event.kind}},
    ]
    shown = [f"*{name}:* `{_slack_escape(str(value))}`" for name, value in facts if value]
    if event.details.get("link"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": f"<{_slack_escape(event.details['link'])}|Open in MLflow>"}})
    if shown:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": line[:300]} for line in shown[:10]]})
    return {"text": f"[{event.kind}] {event.title}", "blocks": blocks}


def _slack_escape(text: str) -> str:
    """Slack's three control characters in mrkdwn text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---- sending (best effort, bounded) ----------------------------------------------------------------------
def deliver(message: Message, deadline: float, session: Any = None) -> Delivery:
    """POST one message, retrying connection errors, timeouts and 5xx/429 with backoff, never past
    `deadline` (a `time.monotonic()` value): each attempt's timeout is what is left, at most the
    target's own. The delivery id stays the same across retries (a receiver can drop duplicates);
    each attempt is signed with its own timestamp (a retry is not refused as stale)."""
    import requests

    target, started = message.target, time.monotonic()
    session = session or requests
    delivery_id, attempts, status, error = message.delivery_id, 0, None, ""
    body = message.body.encode()
    secret = target.secret()
    if (target.secret_env or target.secret_file) and secret is None:
        error = f"its secret ({target.secret_env or target.secret_file}) is gone: not sent unsigned"
        return Delivery(target.label, message.event.kind, False, 0, None, error, 0.0, delivery_id)
    while attempts < ATTEMPTS:
        left = deadline - time.monotonic()
        if left <= 0.05:
            error = error or "no time left"
            break
        attempts += 1
        if secret:
            headers = signing.signed_headers(secret, body, delivery_id=delivery_id)
        else:
            headers = {"Content-Type": "application/json", signing.DELIVERY_ID: delivery_id,
                       signing.TIMESTAMP: str(int(time.time()))}
        headers[EVENT_HEADER] = message.event.kind
        try:
            response = session.post(target.url, data=body, headers=headers,
                                    timeout=min(target.timeout, left), allow_redirects=False)
            status, error = response.status_code, "" if response.ok else f"HTTP {response.status_code}"
            if response.ok or status not in RETRY_STATUS:
                break
        except requests.RequestException as exc:
            status, error = None, _safe(exc, target)
        log.debug("notify %s (%s): attempt %d failed: %s", target.label, message.event.kind, attempts, error)
        pause = BACKOFF * 2 ** (attempts - 1)
        if attempts < ATTEMPTS and deadline - time.monotonic() > pause:
            time.sleep(pause)
        elif attempts < ATTEMPTS:
            break
    ok = status is not None and 200 <= status < 300
    return Delivery(target.label, message.event.kind, ok, attempts, status, "" if ok else error,
                    time.monotonic() - started, delivery_id)


def _safe(error: Exception, target: NotifyTarget) -> str:
    """An HTTP error in one line without the target's path or credentials (requests quotes the URL)."""
    text = str(error).replace(target.url, target.label)
    path = urlsplit(target.url).path
    if len(path) > 1:
        text = text.replace(path, "/...")
    return f"{type(error).__name__}: {redact(text)[:300]}"


def send(batch: list[Message], budget: float | None = None) -> list[Delivery]:
    """Deliver every message at once, each in a daemon thread, and wait at most `budget` seconds
    (default `BUDGET`): a receiver that hangs costs the caller the budget at worst, never a cycle."""
    if not batch:
        return []
    budget = BUDGET if budget is None else budget
    deadline = time.monotonic() + budget
    results: list[Delivery | None] = [None] * len(batch)

    def run(i: int, message: Message) -> None:
        try:
            results[i] = deliver(message, deadline)
        except Exception as exc:  # noqa: BLE001 - a bug in sending must not reach the cycle either
            results[i] = Delivery(message.target.label, message.event.kind, False, 0, None, _safe(exc, message.target),
                                  0, message.delivery_id)

    threads = [threading.Thread(target=run, args=(i, m), name=f"notify-{i}", daemon=True) for i, m in enumerate(batch)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 0.5)  # deliver stops itself at the deadline
    done = []
    for message, result in zip(batch, results):
        result = result or Delivery(message.target.label, message.event.kind, False, 0, None,
                                    f"still sending after {budget:.0f} s: abandoned", budget, message.delivery_id)
        if result.delivered:
            log.info("notify %s (%s): delivered, HTTP %s", result.target, result.event, result.status)
        else:
            log.error("notify %s (%s): not delivered after %d attempt(s): %s", result.target, result.event,
                      result.attempts, result.error)
        done.append(result)
    return done


def ui_base(config: Config, tracking_uri: str) -> str | None:
    """Where people open the MLflow UI: the policy's `ui_url`, else an http(s) tracking URI (a
    server is its own UI) without credentials or query; None for a local store (no guess)."""
    if config.ui_url:
        return config.ui_url
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path.rstrip('/')}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """A run's page, opened in the UI's model-training mode whatever the browser last used."""
    return links.absolute(base, links.run(run_id, experiment_id))


def _linked(config: Config, client: Any, events: list[Event], run_id: str | None) -> list[Event]:
    """The events with a link to the run that sent them, when the UI's address is known."""
    base = ui_base(config, mlflow.get_tracking_uri())
    if not run_id or base is None or not events:
        return events
    try:
        link = run_url(base, client.get_run(run_id).info.experiment_id, run_id)
    except Exception as exc:  # noqa: BLE001 - a message without its link is still worth sending
        log.warning("notify: no link to run %s (%s)", run_id, type(exc).__name__)
        return events
    return [dataclasses.replace(e, details={**e.details, "link": link}) for e in events]


def notify(config: Config, events: list[Event], budget: float | None = None, run_id: str | None = None) -> list[Delivery]:
    """Send `events` to the policy's targets, with the messages earlier sends could not deliver
    (`outbox`), and record what became of each on `run_id`; never raises (a notification is never
    worth a failure). What is still undelivered is kept for the next send. Without a run (a cycle
    that failed, perhaps because the store did) the events are only sent: the store is not waited on."""
    try:
        if run_id is None:
            return send(messages(config.notify, events), budget)
        client = MlflowClient()
        retries = _retries(config, outbox.pending(client, config.model_name))
        batch = messages(config.notify, _linked(config, client, events, run_id))
        results = send(retries + batch, budget)
        _settle(config, client, len(retries), retries + batch, results, run_id)
        return results
    except Exception:
        log.exception("notify: could not send %s", ", ".join(e.kind for e in events))
        return []


def _retries(config: Config, kept: list[outbox.Kept]) -> list[Message]:
    """The kept messages whose target the policy still lists, to be sent again with their own ids."""
    targets = {outbox.target_key(t): t for t in config.notify}
    return [Message(targets[k.key], Event(k.event, config.model_name, k.title, ""), k.body, k.delivery_id)
            for k in kept if k.key in targets]


def _settle(config: Config, client: Any, retried: int, batch: list[Message], results: list[Delivery],
            run_id: str | None) -> None:
    """Delivered retries leave the outbox; new messages nobody received join it; all are recorded."""
    rows = []
    for i, (message, result) in enumerate(zip(batch, results)):
        if i < retried and result.delivered:
            outbox.drop(client, config.model_name, message.delivery_id)
        elif i >= retried and not result.delivered:
            outbox.keep(client, config.model_name, outbox.Kept(
                message.delivery_id, result.target, outbox.target_key(message.target), message.event.kind,
                message.event.title, outbox.now(), run_id, message.body, result.error))
        rows.append({**result.__dict__, "retry": i < retried})
    outbox.record(client, run_id, rows)
