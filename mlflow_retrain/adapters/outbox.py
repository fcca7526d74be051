"""Messages nobody received are kept, shown and sent again, never lost without a trace.

A message that no attempt delivered is kept as a registered-model tag `retrain.outbox.<delivery id>`
(one tag each, so two writers never lose each other's entries) holding its target's label, a hash
of its URL (the URL may be the token, so it is never stored), the event and the exact body. The next
`notify` of the model (a cycle, a move, `monitor`) sends it again with the same delivery id, so a
receiver that got it after all drops the duplicate; delivered, the tag is removed. `status` and
`doctor` list what is waiting. Each batch's results are also recorded on the audit run that sent it
(`notify/deliveries-*.json` and a `retrain.notify` tag): the record of who was told.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from mlflow_retrain.policy.config import NotifyTarget

log = logging.getLogger(__name__)

PREFIX = "retrain.outbox."
RUN_TAG = "retrain.notify"
MAX_BODY = 90_000  # characters: a registered-model tag holds 100,000


@dataclass(frozen=True)
class Kept:
    """One undelivered message, as kept in its tag."""

    delivery_id: str
    target: str  # the target's label (scheme and host)
    key: str  # which configured target: a hash of its URL
    event: str
    title: str
    since: str  # when it first failed (UTC, ISO)
    run_id: str | None
    body: str
    error: str = ""

    def to_dict(self, body: bool = True) -> dict[str, Any]:
        out = dict(self.__dict__)
        if not body:
            out.pop("body")
        return out


def target_key(target: NotifyTarget) -> str:
    """Names a target across cycles without storing its URL (a Slack URL's path is its token)."""
    return hashlib.sha256(target.url.encode()).hexdigest()[:16]


def pending(client: Any, model_name: str) -> list[Kept]:
    """The model's undelivered messages, oldest first; none when the model is not registered yet. A
    tag that does not parse is skipped with a warning (it is shown by `doctor` as unreadable)."""
    try:
        tags = client.get_registered_model(model_name).tags
    except Exception:  # noqa: BLE001 - no model yet, or a store that is down: nothing to retry now
        return []
    kept = []
    for name, value in tags.items():
        if not name.startswith(PREFIX):
            continue
        try:
            kept.append(Kept(**json.loads(value)))
        except (ValueError, TypeError):
            log.warning("notify: the outbox tag %s does not parse; left for a person to look at", name)
    return sorted(kept, key=lambda k: k.since)


def listed(client: Any, model_name: str) -> list[dict[str, Any]]:
    """The undelivered messages as `status` and `doctor` list them (without their bodies)."""
    return [k.to_dict(body=False) for k in pending(client, model_name)]


def keep(client: Any, model_name: str, kept: Kept) -> bool:
    """Keep an undelivered message for the next notify; False (and one log line) when it cannot be."""
    if len(kept.body) > MAX_BODY:
        log.error("notify %s (%s): body of %d characters is too large to keep for a retry", kept.target,
                  kept.event, len(kept.body))
        return False
    try:
        client.set_registered_model_tag(model_name, PREFIX + kept.delivery_id, json.dumps(kept.__dict__))
        return True
    except Exception as exc:  # noqa: BLE001 - a store that is down: the message is lost, said once
        log.error("notify %s (%s): could not be kept for a retry: %s", kept.target, kept.event,
                  type(exc).__name__)
        return False


def drop(client: Any, model_name: str, delivery_id: str) -> None:
    """Delivered at last: its outbox tag goes (the delivery is recorded on the run that sent it)."""
    try:
        client.delete_registered_model_tag(model_name, PREFIX + delivery_id)
    except Exception as exc:  # noqa: BLE001 - kept, so it is sent once more; receivers drop it by id
        log.warning("notify: delivered %s but could not clear its outbox tag: %s", delivery_id, type(exc).__name__)


def record(client: Any, run_id: str | None, results: list[dict[str, Any]]) -> None:
    """The batch's results on the audit run that sent it: a JSON artifact and a one-line tag."""
    if not run_id or not results:
        return
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    missed = [r for r in results if not r["delivered"]]
    line = f"{len(results) - len(missed)} of {len(results)} delivered"
    if missed:
        line += "; not delivered: " + ", ".join(f"{r['event']} to {r['target']} ({r['error']})" for r in missed)
    try:
        client.log_text(run_id, json.dumps(results, indent=2), f"notify/deliveries-{stamp}.json")
        client.set_tag(run_id, RUN_TAG, line[:5000])
    except Exception as exc:  # noqa: BLE001 - the deliveries themselves are logged either way
        log.warning("notify: could not record the deliveries on run %s: %s", run_id, type(exc).__name__)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
