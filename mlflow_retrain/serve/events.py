"""What an event asks for, and how queued events become cycles: pure decisions with reasons.

Why it is built this way: docs/design.md#serve-events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlflow_retrain.base import tags as T
from mlflow_retrain.serve.parse import Refused, version_number

WEBHOOK, TRIGGER, NEW_DATA = "webhook", "trigger", "new_data"
VALIDATE, FORCE, CYCLE, IGNORE = "validate", "force", "cycle", "ignore"
SIGNOFF = "signoff"  # a person's verdict on a waiting candidate: a normal cycle carries it out
CREATED, TAG_SET = "model_version.created", "model_version_tag.set"  # the MLflow webhook events serve acts on
MARK = "mark"  # adoption: tag the version pending first, then validate it
REASON_LIMIT = 500  # the joined reason of a coalesced cycle; a tag, read by people


@dataclass(frozen=True)
class Action:
    """What one event asks for (`validate` / `signoff` / `force` / `cycle` / `ignore`) and why."""

    action: str
    reason: str
    version: str | None = None  # validate: the version to judge; signoff: the version signed off
    source: str | None = None  # force: the system that asked

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class BadEvent(Refused):
    """A signed, well-formed body that does not say what it asks for: answered 400, nothing queued."""


def webhook_action(payload: Mapping[str, Any], model_name: str) -> Action:
    """The action an MLflow webhook delivery asks for (payload: MLflow's `entity`, `action`, `data`;
    `data` is `ModelVersionCreatedPayload` or `ModelVersionTagSetPayload` of `mlflow.webhooks`), its
    form checked by `parse.webhook_payload`."""
    event = f"{payload.get('entity')}.{payload.get('action')}"
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    name, version = data.get("name"), data.get("version")
    if event not in (CREATED, TAG_SET):
        return Action(IGNORE, f"{event} for {name!r}: serve acts on {CREATED} and {TAG_SET} only")
    if name != model_name:
        return Action(IGNORE, f"{event} for {name!r} v{version}: not the managed model {model_name!r}")
    if event == TAG_SET and data.get("key") != T.APPROVAL:
        # every tag a cycle writes arrives here too: only a person's verdict asks for anything
        return Action(IGNORE, f"tag {data.get('key')!r} set on v{version}: serve acts on {T.APPROVAL} only")
    number = version_number(version)
    if number is None:
        raise BadEvent(f"{event} without a version number: {version!r}")
    if event == TAG_SET:
        return approval_action(number, data.get("value"))
    cycle = (data.get("tags") or {}).get(T.CYCLE_RUN_ID)
    if cycle:
        return Action(IGNORE, f"v{number} was registered by cycle {cycle}, which judges it itself")
    return Action(VALIDATE, f"v{number} of {name!r} was registered outside a cycle (MLflow webhook): "
                            "validate it against Production", version=number)


def approval_action(version: str, value: Any) -> Action:
    """`retrain.approval` set on `version` (in the MLflow UI, or by `approve`/`reject` through an
    mlflow server): approved/rejected asks for a cycle to carry it out; any other value is ignored,
    read as `decide.approval.review` reads it (a typo must not move anything)."""
    said = str(value or "").strip().lower()
    if said not in (T.APPROVED, T.REJECTED):
        return Action(IGNORE, f"{T.APPROVAL}={value!r} on v{version} is neither {T.APPROVED} nor {T.REJECTED}: "
                              "nothing to carry out")
    return Action(SIGNOFF, f"v{version} {said} ({T.APPROVAL} tag, MLflow webhook): a cycle carries it out",
                  version=version)


def trigger_action(payload: Mapping[str, Any]) -> Action:
    """A `POST /trigger` body `{"source": ..., "reason": ...}` (both checked by `parse.trigger_payload`):
    a forced cycle, both recorded on the version."""
    return Action(FORCE, payload["reason"].strip(), source=payload["source"].strip())


def new_data_action(files: Sequence[str]) -> Action:
    shown = ", ".join(files[:5]) + (f" (+{len(files) - 5} more)" if len(files) > 5 else "")
    return Action(CYCLE, f"new or changed data files: {shown}")


def adoption(version: str, tags: Mapping[str, str]) -> Action:
    """At run time, from the version's tags as the registry has them now: mark it pending for the
    cycle to validate, leave it (already pending: the cycle validates it), or skip it (a cycle made
    it or it was judged since the event arrived)."""
    cycle, decision = tags.get(T.CYCLE_RUN_ID), tags.get(T.DECISION)
    if cycle:
        return Action(IGNORE, f"v{version} was registered by cycle {cycle}", version=version)
    if decision in (*T.JUDGED, T.ABANDONED):
        return Action(IGNORE, f"v{version} was already judged: {decision}", version=version)
    if decision == T.PENDING:
        return Action(VALIDATE, f"v{version} is already pending: the cycle validates it", version=version)
    return Action(MARK, f"v{version} was registered outside a cycle: marked pending to be validated",
                  version=version)


def signoff_due(version: str, tags: Mapping[str, str]) -> Action:
    """At run time, from the version's tags as the registry has them now: a cycle is due while the
    version still awaits approval (the cycle's review reads the verdict). Otherwise it was carried out
    already (`approve`/`reject` do it at once, and their tag write is delivered too) or by a cycle
    since, and a cycle now would only be an unasked-for one."""
    decision = tags.get(T.DECISION)
    if decision == T.AWAITING_APPROVAL:
        return Action(SIGNOFF, f"v{version} awaits approval: the cycle carries out the sign-off", version=version)
    return Action(IGNORE, f"v{version} no longer awaits approval ({decision or 'no retrain.decision'}): "
                          "the sign-off was carried out already", version=version)


@dataclass(frozen=True)
class CycleCall:
    """One `run_cycle` to make: forced (with `event` = the sources) or normal, and which events it serves."""

    kind: str  # validate | signoff | force | cycle
    events: tuple[int, ...]
    versions: tuple[str, ...] = ()
    source: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "events": list(self.events), "versions": list(self.versions),
                "source": self.source, "reason": self.reason}


@dataclass(frozen=True)
class Plan:
    """The cycles for one batch of queued events, and why this many."""

    calls: tuple[CycleCall, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"calls": [c.to_dict() for c in self.calls], "reason": self.reason}


@dataclass(frozen=True)
class Queued:
    """An accepted event as the queue holds it."""

    id: int
    action: Action


def plan(events: Sequence[Queued]) -> Plan:
    """Coalesce every waiting event into at most three cycles: one that validates the versions
    registered outside a cycle, one that carries out sign-offs, then one forced cycle (any
    `/trigger`) or else one normal cycle (new data). A forced cycle subsumes new data: it retrains
    on the newest rows anyway."""
    validate = [e for e in events if e.action.action == VALIDATE]
    signoff = [e for e in events if e.action.action == SIGNOFF]
    forced = [e for e in events if e.action.action == FORCE]
    normal = [e for e in events if e.action.action == CYCLE]
    calls = []
    if validate:
        calls.append(CycleCall(VALIDATE, tuple(e.id for e in validate), _versions(validate)))
    if signoff:
        calls.append(CycleCall(SIGNOFF, tuple(e.id for e in signoff), _versions(signoff)))
    if forced:
        sources = ",".join(dict.fromkeys(e.action.source or "" for e in forced))
        reason = _joined([e.action.reason for e in forced])
        calls.append(CycleCall(FORCE, tuple(e.id for e in forced + normal), source=sources, reason=reason))
    elif normal:
        calls.append(CycleCall(CYCLE, tuple(e.id for e in normal)))
    counts = ", ".join(f"{len(group)} {name}" for name, group in
                       (("to validate", validate), ("signed off", signoff), ("forced", forced),
                        ("new data", normal)) if group)
    return Plan(tuple(calls), f"{len(events)} event(s) ({counts or 'none'}) -> {len(calls)} cycle(s)")


def _versions(events: Sequence[Queued]) -> tuple[str, ...]:
    return tuple(sorted({e.action.version for e in events if e.action.version}, key=int))


def _joined(reasons: Sequence[str]) -> str:
    distinct = list(dict.fromkeys(r for r in reasons if r))
    text = "; ".join(distinct)
    if len(text) <= REASON_LIMIT:
        return text
    return text[:REASON_LIMIT - 20].rstrip() + f"... ({len(distinct)} reasons)"
