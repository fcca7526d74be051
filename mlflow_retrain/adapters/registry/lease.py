"""The lease that serialises cycles on one registered model: generations, renewal, fencing.

Why it is built this way: docs/design.md#adapters-registry-lease.
"""

from __future__ import annotations

import functools

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mlflow.entities.model_registry.prompt_version import IS_PROMPT_TAG_KEY
from mlflow.exceptions import MlflowException
from mlflow.prompt.registry_utils import is_prompt_supported_registry
from mlflow.tracking import MlflowClient

from mlflow_retrain.base import faults
from mlflow_retrain.base import tags as T
from mlflow_retrain.base.errors import LeaseHeldError, LeaseLostError
from mlflow_retrain.adapters.registry.versions import not_found, utcnow

log = logging.getLogger(__name__)

# the generation of the lease a cycle holds, in the environment of the training child it starts
LEASE_ENV = "MLFLOW_RETRAIN_LEASE_GENERATION"


@dataclass(frozen=True)
class Lease:
    name: str  # the registered model of this generation
    holder: str
    expires: datetime
    generation: int
    ttl: timedelta

    @property
    def margin(self) -> timedelta:
        return self.ttl / 10


@dataclass(frozen=True)
class Generation:
    number: int
    name: str
    tags: dict[str, str]
    hidden: bool = True  # made as a prompt (`Leases.hidden`); False: a plain registered model, from before

    @property
    def expires(self) -> datetime:
        return datetime.fromisoformat(self.tags.get(T.LEASE_EXPIRES, "1970-01-01T00:00:00+00:00"))

    @property
    def free(self) -> bool:
        return self.tags.get(T.LEASE_RELEASED) == "true" or self.expires <= utcnow()


def _stat(pid: int | str) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of a process from /proc, or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
    return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)


def this_process() -> dict[str, Any] | None:
    """What identifies this process for good on this machine, or None without a readable /proc."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            boot_id = boot.read().strip()
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    stat = _stat(os.getpid())
    if stat is None:
        return None
    return {"host": socket.gethostname(), "boot": boot_id, "pidns": pidns, "pid": os.getpid(), "start": stat[1]}


def holder_gone(tags: Mapping[str, str]) -> str | None:
    """Why the holder of a lease (a generation's tags) is provably gone, or None when it may live.

    Proof needs the same host, boot and pid namespace (pids mean nothing elsewhere), then: the pid
    runs no process, or a zombie, or a process started at another time than the holder (a recycled
    pid). A lease of the earlier format records `host:pid:...` only: its pid running nothing is proof."""
    here = this_process()
    if here is None:
        return None
    raw = tags.get(T.LEASE_PROCESS)
    if raw is None:  # the earlier format: the holder string alone
        host, _, rest = tags.get(T.LEASE_HOLDER, "").partition(":")
        pid_text = rest.partition(":")[0]
        if not pid_text.isdigit():
            return None
        pid, start, same = int(pid_text), None, True
    else:
        try:
            recorded = json.loads(raw)
            host, pid, start = recorded["host"], int(recorded["pid"]), int(recorded["start"])
            same = recorded["boot"] == here["boot"] and recorded["pidns"] == here["pidns"]
        except (ValueError, TypeError, KeyError):  # written by something else: it proves nothing
            return None
    if host != here["host"] or not same or pid <= 0:
        return None
    stat = _stat(pid)
    if stat is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"process {pid} no longer runs on {host}"
        except OSError:
            pass
        return None  # it runs, but /proc does not show it (another user's, hidden): no proof
    if stat[0] in "ZX":
        return f"process {pid} on {host} has exited"
    if start is not None and stat[1] != start:
        return f"process {pid} on {host} is another process now (started at another time)"
    return None


def held_by(held: Mapping[str, str]) -> tuple[str, str | None]:
    """A held lease as `status` and `doctor` show it (holder, expiry, and whether the holder is
    provably gone), and why it is gone (None while it may live)."""
    gone = holder_gone(held)
    text = f"{held.get(T.LEASE_HOLDER)} until {held.get(T.LEASE_EXPIRES)}"
    if gone is not None:
        text += f", but its holder is gone ({gone}): the next cycle on this host takes it over at once"
    return text, gone


class Leases:
    """The lease on one registered model (see the module docstring for the protocol)."""

    def __init__(self, client: MlflowClient, model_name: str):
        self.client, self.model_name = client, model_name
        self.prefix = f"{model_name}.retrain-lease"

    @functools.cached_property
    def hidden(self) -> bool:
        """Where the registry has prompts (all but Databricks' workspace registry), a generation is one:
        the same registry object, unique by name, which the registered models list leaves out. Asked
        when first needed: reading the client's registry opens the store, which a read-only command
        must leave uncreated."""
        return is_prompt_supported_registry(getattr(self.client, "_registry_uri", None))

    def generations(self, objects: list[tuple[str, dict[str, str], bool]] | None = None) -> list[Generation]:
        """Every generation object, lowest first, among `objects` (read now when not given); other objects
        under the prefix are ignored. They are registry objects the models list hides (see `objects`),
        and, from before, plain registered models."""
        found = []
        for name, tags, hidden in self.objects(self.prefix + ".%") if objects is None else objects:
            suffix = name[len(self.prefix) + 1:]
            if name.startswith(self.prefix + ".") and suffix.isdigit():
                found.append(Generation(int(suffix), name, tags, hidden))
        return sorted(found, key=lambda g: g.number)

    def objects(self, pattern: str) -> list[tuple[str, dict[str, str], bool]]:
        """The name, tags and whether hidden of each registry object named like `pattern`: the hidden
        ones (prompts, which the registered models list and search leave out), then the plain ones."""
        found, marked = [], f"tags.`{IS_PROMPT_TAG_KEY}` = 'true'"
        for where, hidden in ((f"name LIKE '{pattern}' AND {marked}", True), (f"name LIKE '{pattern}'", False)):
            token = None
            while True:
                page = self.client.search_registered_models(where, max_results=100, page_token=token)
                found += [(model.name, dict(model.tags), hidden) for model in page]
                token = page.token
                if not token:
                    break
        return found

    def acquire(self, ttl: timedelta, holder: str | None = None) -> Lease:
        """Take the lease: free, expired, or held by a process provably gone (`holder_gone`).

        `holder` names a holder other than this process (tests): then no process is recorded."""
        process = None if holder else this_process()
        holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        for _ in range(5):
            known = self.generations()
            top = known[-1] if known else None
            gone = None
            if top is not None and not top.free:
                gone = holder_gone(top.tags)
                if gone is None:
                    raise LeaseHeldError(
                        f"another cycle holds the lease on {self.model_name!r} ({top.tags.get(T.LEASE_HOLDER, '?')}, "
                        f"until {top.expires.isoformat(timespec='seconds')}); it will finish or expire, try again later")
            mine = (top.number if top else 0) + 1
            expires = utcnow() + ttl
            name = f"{self.prefix}.{mine}"
            tags = {T.LEASE_FOR: self.model_name, T.LEASE_HOLDER: holder, T.LEASE_EXPIRES: expires.isoformat(),
                    T.LEASE_GENERATION: str(mine)}
            if process is not None:
                tags[T.LEASE_PROCESS] = json.dumps(process)
            if gone is not None:
                tags[T.LEASE_FREED] = (f"generation {top.number} of {top.tags.get(T.LEASE_HOLDER, '?')} freed before "
                                       f"its expiry: {gone}")[:5000]
            faults.point("lease.create")
            try:
                description = (f"Lease of mlflow-retrain cycles on {self.model_name} (generation {mine}); the "
                               "highest unreleased, unexpired generation holds it.")
                create = self.client.create_prompt if self.hidden else self.client.create_registered_model
                create(name, tags=tags, description=description)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                continue  # another taker won this generation: look again
            now = self.objects(self.prefix + ".%")
            now_known = self.generations(now)
            if now_known[-1].number != mine:  # a taker that read an older state got past us: back off
                self._delete(name, self.hidden)
                continue
            if gone is not None:
                log.warning("the lease of %s (generation %d) freed before its expiry: %s; taken over",
                            top.tags.get(T.LEASE_HOLDER), top.number, gone)
            elif top is not None and top.tags.get(T.LEASE_RELEASED) != "true":
                log.warning("the lease of %s (generation %d) expired; taken over", top.tags.get(T.LEASE_HOLDER), top.number)
            self._sweep(mine, now)
            return Lease(name, holder, expires, mine, ttl)
        raise LeaseHeldError(f"could not take the lease on {self.model_name!r}: it keeps changing hands; "
                             "try again later")

    def _sweep(self, mine: int, objects: list[tuple[str, dict[str, str], bool]]) -> None:
        """Delete generations below ours and takeover markers of the earlier protocol (never ours), as
        the read right after ours was made found them (`objects`, everything under the prefix): one
        made below ours after that read is a taker that read an older state, and deletes its own."""
        faults.point("lease.sweep")
        for generation in self.generations(objects):
            if generation.number < mine:
                self._delete(generation.name, generation.hidden)
        for name, _, hidden in objects:
            if name.startswith(f"{self.prefix}.takeover."):
                self._delete(name, hidden)

    def _delete(self, name: str, hidden: bool) -> None:
        try:
            (self.client.delete_prompt if hidden else self.client.delete_registered_model)(name)
        except MlflowException as exc:
            if not not_found(exc):
                raise

    def check(self, lease: Lease, before: str) -> None:
        """Fencing: raise `LeaseLostError` unless `lease` is still the live, highest generation."""
        known = self.generations()
        top = known[-1] if known else None
        if top is None or top.number != lease.generation or top.tags.get(T.LEASE_RELEASED) == "true":
            by = f"{top.tags.get(T.LEASE_HOLDER, '?')} (generation {top.number})" if top else "nobody"
            raise LeaseLostError(f"this cycle lost the lease on {self.model_name!r} to {by} before {before}; "
                                 "it wrote nothing more, the next cycle reconciles")
        if top.expires - utcnow() < lease.margin:
            raise LeaseLostError(f"the lease on {self.model_name!r} expires at "
                                 f"{top.expires.isoformat(timespec='seconds')}, too soon to {before} safely; "
                                 "raise registry.lease_ttl (renewal could not keep it)")

    def renew(self, lease: Lease) -> bool:
        """Push our generation's expiry one TTL ahead; False (and nothing written) if it is no longer ours."""
        try:
            self.check(lease, "renewing")
        except LeaseLostError:
            return False
        self._tag(lease.name, T.LEASE_EXPIRES, (utcnow() + lease.ttl).isoformat())
        return True

    def state(self) -> dict[str, str] | None:
        """The live generation's tags (holder, expiry, generation), or None when nobody holds the lease."""
        known = self.generations()
        return dict(known[-1].tags) if known and not known[-1].free else None

    def release(self, lease: Lease) -> None:
        """Mark our own generation released (a successor's generation is another object: untouched)."""
        faults.point("lease.release")
        try:
            self._tag(lease.name, T.LEASE_RELEASED, "true")
        except MlflowException as exc:
            if not not_found(exc):  # swept by a successor after our lease expired: nothing to release
                raise


    def _tag(self, name: str, key: str, value: str) -> None:
        """A tag on our own generation (made by this version of the tool: hidden where it can be)."""
        (self.client.set_prompt_tag if self.hidden else self.client.set_registered_model_tag)(name, key, value)


class Renewal:
    """Renews a lease every third of its TTL on a daemon thread until stopped (a `with` block);
    `lost` is set once a renewal finds the lease taken over."""

    def __init__(self, leases: Leases, lease: Lease):
        self.leases, self.lease = leases, lease
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-renewal", daemon=True)

    def _run(self) -> None:
        every = max(self.lease.ttl.total_seconds() / 3, 0.2)
        while not self._stop.wait(every):
            try:
                if not self.leases.renew(self.lease):
                    log.warning("lease on %s lost; renewal stopped", self.leases.model_name)
                    self.lost.set()
                    return
            except Exception as exc:  # a server hiccup: the next tick retries; fencing catches real loss
                log.warning("lease renewal failed (%s); retrying", type(exc).__name__)

    def __enter__(self) -> "Renewal":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
