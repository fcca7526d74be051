"""The only package that talks to the MLflow Model Registry, in small pieces behind `Registry`:

- `versions`: reads (by alias first, then by stage), registration, and the audit tags (`tags.py`);
- `moves`: stage and alias moves together, each recorded as an intent first; never a delete;
- `lease`: the lease that serialises cycles (generations, renewal, fencing);
- `repair`: the invariants, checked and restored (`doctor`, and every cycle before it acts).
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

from mlflow.tracking import MlflowClient

from mlflow_retrain.policy.config import Config
from mlflow_retrain.adapters.registry.lease import Lease, Leases, Renewal
from mlflow_retrain.adapters.registry.moves import Intent, Moves
from mlflow_retrain.adapters.registry.versions import ARCHIVED, NONE, PRODUCTION, STAGING, VersionInfo, Versions, utcnow

log = logging.getLogger(__name__)

__all__ = ["ARCHIVED", "NONE", "PRODUCTION", "STAGING", "Intent", "Lease", "Registry", "VersionInfo", "utcnow"]


class Registry(Versions):
    """One registered model: its versions (reads, tags), their moves and the lease. Versions are moved
    through `loop.moves` alone, the one module that decides what a move is tagged with."""

    def __init__(self, config: Config, client: MlflowClient | None = None):
        super().__init__(config, client)
        self.moves = Moves(self)
        self.lease = Leases(self.client, self.name)
        self.held: Lease | None = None  # while in `hold`: the lease, and the event set once it is lost
        self.lost = threading.Event()

    @property
    def lease_name(self) -> str:
        return self.lease.prefix

    def acquire_lease(self, ttl: timedelta, holder: str | None = None) -> Lease:
        return self.lease.acquire(ttl, holder)

    def lease_state(self) -> dict[str, str] | None:
        return self.lease.state()

    def release_lease(self, lease: Lease) -> None:
        self.lease.release(lease)

    def follow(self, generation: int, ttl: timedelta) -> None:
        """In a process a cycle started (its `mlflow run` training child): fence every write with the
        cycle's lease generation, so a child whose cycle lost the lease registers nothing."""
        lease = Lease(f"{self.lease.prefix}.{generation}", "", utcnow(), generation, ttl)
        self.fence = lambda step: self.lease.check(lease, step)

    @contextmanager
    def hold(self, ttl: timedelta) -> Iterator[Lease]:
        """The lease for a block of work: renewed while it runs, checked before every write, released after."""
        lease = self.acquire_lease(ttl)
        self.fence = lambda step: self.lease.check(lease, step)
        renewal = Renewal(self.lease, lease)
        self.held, self.lost = lease, renewal.lost
        try:
            with renewal:
                yield lease
        except BaseException:
            self.held = None
            self.fence = lambda step: None
            try:  # best effort: a dead server must not hide why the work stopped; the lease then expires
                self.release_lease(lease)
            except Exception as exc:
                log.warning("could not release the lease (%s); it expires at %s", type(exc).__name__,
                            lease.expires.isoformat(timespec="seconds"))
            raise
        self.held = None
        self.fence = lambda step: None
        self.release_lease(lease)
