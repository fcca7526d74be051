"""What both event queues share: the events' states and columns, and the reads and the folder listing
written once in SQL that sqlite and PostgreSQL both speak. The sqlite file is `queue.py`, the shared
PostgreSQL database `pgqueue.py`; `queue.open_queue` picks one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any

from mlflow_retrain.serve.events import Action, Queued

PENDING, RUNNING, DONE, FAILED, IGNORED = "pending", "running", "done", "failed", "ignored"
RETENTION_SECONDS = 7 * 86400  # finished rows older than this are pruned (far beyond the signature tolerance)

# the events' columns after the id, the same in sqlite (types by affinity) and PostgreSQL (`pgqueue.py`)
EVENT_COLUMNS = """
    received DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    delivery_id TEXT UNIQUE,
    model TEXT NOT NULL,
    summary TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    batch BIGINT,
    not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
    result TEXT"""
FILE_COLUMNS = "path TEXT PRIMARY KEY, size BIGINT NOT NULL, mtime_ns BIGINT NOT NULL"
META_COLUMNS = "key TEXT PRIMARY KEY, value TEXT NOT NULL"


class QueueUnavailable(Exception):
    """A shared queue's database cannot be reached: requests answer 503 (senders retry), the worker
    waits and tries again."""


class Queue(ABC):
    """What the server, its folder watch and its worker need of a queue: the sqlite file
    (`queue.EventQueue`) or PostgreSQL (`pgqueue.py`). The reads and the folder listing are written
    once, here, in SQL both databases speak; each subclass names its tables, placeholder and clock."""

    EVENTS, META, FILES = "events", "meta", "files"
    P = "?"  # the driver's placeholder
    CLOCK = "((julianday('now') - 2440587.5) * 86400.0)"  # now, in Unix seconds, by the database's clock

    @abstractmethod
    def _writing(self) -> AbstractContextManager[Any]:
        """A connection inside a transaction, committed when the block ends."""

    def _reading(self) -> AbstractContextManager[Any]:
        """A connection for reads: a transaction unless the database has something lighter."""
        return self._writing()

    @abstractmethod
    def add(self, kind: str, model: str, summary: str, action: Action, delivery_id: str | None = None) -> int | None:
        """Record an accepted event before the caller answers; None when `delivery_id` was seen before."""

    @abstractmethod
    def claim(self, model: str, now: float | None = None) -> tuple[int, list[Queued]] | None:
        """The due events of `model`, moved to `running` under a new batch number."""

    @abstractmethod
    def holding(self, batch: int) -> AbstractContextManager[None]:
        """Keep the batch's claim while the worker runs it."""

    @abstractmethod
    def finish(self, results: dict[int, dict[str, Any]], batch: int) -> None:
        """Each event's outcome, for the events the batch still holds."""

    @abstractmethod
    def release(self, events: list[int], batch: int, delay: float, why: str) -> None:
        """Put the batch's events back to pending, due in `delay` seconds."""

    @abstractmethod
    def recover(self) -> int:
        """At a worker's start: events a dead worker left `running`, queued again."""

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest events and what each caused, for `/events`."""
        with self._reading() as db:
            rows = db.execute(f"SELECT * FROM {self.EVENTS} ORDER BY id DESC LIMIT {self.P}", (limit,)).fetchall()
        return [as_event(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._reading() as db:
            return {r["status"]: r["n"] for r in
                    db.execute(f"SELECT status, COUNT(*) AS n FROM {self.EVENTS} GROUP BY status")}

    def set_meta(self, key: str, value: str) -> None:
        with self._writing() as db:
            self._set_meta(db, key, value)

    def _set_meta(self, db: Any, key: str, value: str) -> None:
        db.execute(f"INSERT INTO {self.META} VALUES ({self.P}, {self.P}) "
                   "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def meta(self, key: str) -> str | None:
        with self._reading() as db:
            row = db.execute(f"SELECT value FROM {self.META} WHERE key = {self.P}", (key,)).fetchone()
        return row["value"] if row else None

    def listing(self) -> dict[str, tuple[int, int]] | None:
        """The watched folder as last seen (path -> size, mtime), or None before the first look."""
        with self._reading() as db:
            if db.execute(f"SELECT value FROM {self.META} WHERE key = 'files_seen'").fetchone() is None:
                return None
            return {r["path"]: (r["size"], r["mtime_ns"]) for r in db.execute(f"SELECT * FROM {self.FILES}")}

    def record_listing(self, files: dict[str, tuple[int, int]], event: tuple[str, str, Action] | None) -> None:
        """The folder's new listing and the `new_data` event it caused, in one transaction: a crash
        between the two would either lose the event or raise it twice."""
        p = self.P
        with self._writing() as db:
            db.execute(f"DELETE FROM {self.FILES}")
            db.cursor().executemany(f"INSERT INTO {self.FILES} VALUES ({p}, {p}, {p})",
                                    [(path, size, mtime) for path, (size, mtime) in files.items()])
            self._set_meta(db, "files_seen", str(time.time()))
            if event is not None:
                model, summary, action = event
                db.execute(f"INSERT INTO {self.EVENTS} (received, kind, model, summary, action, status) "
                           f"VALUES ({self.CLOCK}, 'new_data', {p}, {p}, {p}, {p})",
                           (model, summary, json.dumps(action.to_dict()), PENDING))



def as_event(row: sqlite3.Row | Mapping[str, Any]) -> dict[str, Any]:
    """A queue row as `/events` shows it: `received` as an ISO time (UTC), the queue keeps Unix seconds."""
    received = datetime.fromtimestamp(row["received"], timezone.utc).isoformat(timespec="seconds")
    return {"id": row["id"], "received": received, "kind": row["kind"], "model": row["model"],
            "summary": row["summary"], "action": json.loads(row["action"]), "status": row["status"],
            "batch": row["batch"], "result": json.loads(row["result"]) if row["result"] else None,
            # a shared queue's: which replica's worker claimed it last, and how many times it was claimed
            **{key: row[key] for key in ("owner", "claims") if key in row.keys()}}
