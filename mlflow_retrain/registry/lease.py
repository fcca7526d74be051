"""The lease that serialises cycles on one registered model.

MLflow has no compare-and-set, so concurrent cycles are serialised by a *lease*: a registered model
named after ours, whose creation is atomic in every backend (a unique name), with an expiry so a
crashed holder does not block forever.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_retrain import tags as T
from mlflow_retrain.errors import LeaseHeldError
from mlflow_retrain.registry.versions import not_found, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    expires: datetime


class Leases:
    """The lease on one registered model, `<name>.retrain-lease`."""

    def __init__(self, client: MlflowClient, model_name: str):
        self.client, self.model_name = client, model_name
        self.name = f"{model_name}.retrain-lease"

    def acquire(self, ttl: timedelta, holder: str | None = None) -> Lease:
        """Create the lease object; if it exists and has expired, exactly one taker replaces it."""
        holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        for _ in range(3):
            expires = utcnow() + ttl
            try:
                self.client.create_registered_model(
                    self.name,
                    tags={T.LEASE_FOR: self.model_name, T.LEASE_HOLDER: holder, T.LEASE_EXPIRES: expires.isoformat()},
                    description=f"Lease of a running mlflow-retrain cycle on {self.model_name}; removed when it ends.",
                )
                return Lease(self.name, holder, expires)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            current = self.state()
            if current is None:
                continue  # released meanwhile: try again
            other = current.get(T.LEASE_HOLDER, "?")
            until = datetime.fromisoformat(current.get(T.LEASE_EXPIRES, utcnow().isoformat()))
            if until > utcnow():
                raise LeaseHeldError(
                    f"another cycle holds the lease on {self.model_name!r} ({other}, until "
                    f"{until.isoformat(timespec='seconds')}); it will finish or expire, try again later"
                )
            self._take_over(other)
        raise LeaseHeldError(f"could not take the lease on {self.model_name!r}: it keeps changing hands; "
                             "try again later")

    def _take_over(self, expired_holder: str) -> None:
        """Only the process that creates the takeover marker for this expired holder may delete its lease."""
        marker = f"{self.name}.takeover.{expired_holder.replace(':', '-')}"
        try:
            self.client.create_registered_model(marker, tags={T.LEASE_FOR: self.model_name})
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_ALREADY_EXISTS":
                raise LeaseHeldError(f"another cycle is taking over the expired lease on {self.model_name!r}; "
                                     "try again later") from None
            raise
        # The marker stays: deleting it would let a late reader of the old tags take over again.
        log.warning("lease of %s expired; taking it over", expired_holder)
        try:
            self.client.delete_registered_model(self.name)
        except MlflowException as exc:
            if not not_found(exc):
                raise

    def state(self) -> dict[str, str] | None:
        """The lease's tags (holder, expiry), or None when nobody holds it."""
        try:
            return dict(self.client.get_registered_model(self.name).tags)
        except MlflowException as exc:
            if not_found(exc):
                return None
            raise

    def release(self, lease: Lease) -> None:
        """Remove the lease if it is still ours (it may have expired and been taken over)."""
        current = self.state()
        if current is not None and current.get(T.LEASE_HOLDER) == lease.holder:
            self.client.delete_registered_model(lease.name)
