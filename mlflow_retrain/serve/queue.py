"""The durable event queue: one sqlite file in the state folder, shared by the server and its worker
(or, for several `serve` replicas, a PostgreSQL database: `pgqueue.py`, chosen by `open_queue`).

Why an accepted event cannot be lost:
- The server answers 202 only after the event's row is committed (WAL journal, `synchronous=FULL`:
  the commit is on disk when `add` returns). A crash before the commit means no 202 was sent, so
  the sender (MLflow retries 5xx and connection errors) still owns the event.
- The worker moves rows `pending -> running` (with a batch number) in one transaction, and
  `running -> done/failed` after the cycle. A worker killed in between leaves rows `running`; the
  next worker recovers them to `pending` (`recover`) before it claims anything, and only once it
  holds the worker lock, which the dead one released by dying: a worker still finishing a cycle
  for a server that was killed keeps its lock, so its rows are never run a second time.
- A delivery id is a UNIQUE column of the same row, so a replay is refused by the same commit that
  accepts the original, across restarts too.

What is left: a worker killed after its cycle ended but before it recorded `done` (milliseconds)
runs that cycle again on restart (at-least-once). Closing it needs the cycle's audit run to carry
the batch number, checked on recovery. A lost disk loses the queue: for several servers or
machines, `--queue postgresql://...` puts it in a shared database (`pgqueue.py`).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from mlflow_retrain.base.errors import ServeError
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
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, {EVENT_COLUMNS});
CREATE INDEX IF NOT EXISTS events_status ON events (model, status);
CREATE TABLE IF NOT EXISTS files ({FILE_COLUMNS});
CREATE TABLE IF NOT EXISTS meta ({META_COLUMNS});
"""


class QueueUnavailable(Exception):
    """A shared queue's database cannot be reached: requests answer 503 (senders retry), the worker
    waits and tries again."""


QUEUE_ENV = "MLFLOW_RETRAIN_QUEUE"  # the queue's URL: how the server hands it to its worker (never argv: `ps`)


class Queue(ABC):
    """What the server, its folder watch and its worker need of a queue: the sqlite file here
    (`EventQueue`) or PostgreSQL (`pgqueue.py`). The reads and the folder listing are written once,
    here, in SQL both databases speak; each subclass names its tables, placeholder and clock."""

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


def open_queue(url: str | None, state_dir: Path, claim_ttl: float) -> Queue:
    """The sqlite file in `state_dir` (no URL), or the PostgreSQL queue at `url` that replicas share;
    its schema is created if missing. `claim_ttl`: how long a PostgreSQL claim lasts unrenewed."""
    if not url:
        return EventQueue(state_dir / "queue.sqlite")
    try:
        from mlflow_retrain.serve.pgqueue import PostgresQueue
    except ModuleNotFoundError as exc:
        if exc.name != "psycopg":
            raise
        raise ServeError("a postgresql:// queue needs psycopg: pip install 'mlflow-retrain[serve-postgres]'") from None
    return PostgresQueue(url, claim_ttl)


def as_event(row: sqlite3.Row | Mapping[str, Any]) -> dict[str, Any]:
    """A queue row as `/events` shows it."""
    return {"id": row["id"], "received": row["received"], "kind": row["kind"], "model": row["model"],
            "summary": row["summary"], "action": json.loads(row["action"]), "status": row["status"],
            "batch": row["batch"], "result": json.loads(row["result"]) if row["result"] else None,
            # a shared queue's: which replica's worker claimed it last, and how many times it was claimed
            **{key: row[key] for key in ("owner", "claims") if key in row.keys()}}


def worker_key(state_dir: Path) -> str:
    """The meta key where one replica's worker says it is ready: replicas sharing a queue each have
    their own (one host, one state folder)."""
    return f"worker {socket.gethostname()}:{state_dir}"


class EventQueue(Queue):
    """The events table and the watched folder's last listing. A connection per call: the server's
    request threads, its watcher thread and the worker process each use it safely."""

    def __init__(self, path: Path):
        self.path = path
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            db.row_factory = sqlite3.Row
            yield db
        finally:
            db.close()

    def _reading(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._connect()

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def add(self, kind: str, model: str, summary: str, action: Action, delivery_id: str | None = None) -> int | None:
        """Record an accepted event (durably, before the caller answers); None when `delivery_id` was
        seen before. An `ignore` action is recorded as finished: it shows in /events, queues nothing."""
        status = IGNORED if action.action == "ignore" else PENDING
        try:
            with self._writing() as db:
                cursor = db.execute(
                    "INSERT INTO events (received, kind, delivery_id, model, summary, action, status, result) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (time.time(), kind, delivery_id, model, summary, json.dumps(action.to_dict()), status,
                     json.dumps({"reason": action.reason}) if status == IGNORED else None))
                return cursor.lastrowid
        except sqlite3.IntegrityError:
            return None

    def claim(self, model: str, now: float | None = None) -> tuple[int, list[Queued]] | None:
        """Every pending event of `model` that is due, moved to `running` under a new batch number."""
        now = time.time() if now is None else now
        with self._writing() as db:
            rows = db.execute("SELECT id, action FROM events WHERE model = ? AND status = ? AND not_before <= ? "
                              "ORDER BY id", (model, PENDING, now)).fetchall()
            if not rows:
                return None
            # numbered from a counter, not from the rows: a recovered batch's number is never reused
            row = db.execute("SELECT value FROM meta WHERE key = 'batches'").fetchone()
            batch = int(row[0]) + 1 if row else 1
            db.execute("INSERT OR REPLACE INTO meta VALUES ('batches', ?)", (str(batch),))
            db.executemany("UPDATE events SET status = ?, batch = ? WHERE id = ?",
                           [(RUNNING, batch, row["id"]) for row in rows])
        return batch, [Queued(row["id"], Action(**json.loads(row["action"]))) for row in rows]

    def holding(self, batch: int) -> AbstractContextManager[None]:
        """Nothing to renew: the worker lock, not an expiry, keeps a live worker's batch its own."""
        return contextlib.nullcontext()

    def finish(self, results: dict[int, dict[str, Any]], batch: int) -> None:
        """Each event's outcome (`{"status": done|failed, ...what it caused}`), then prune old rows."""
        with self._writing() as db:
            db.executemany("UPDATE events SET status = ?, result = ? WHERE id = ? AND status = ? AND batch = ?",
                           [(result.get("status", DONE), json.dumps(result), event, RUNNING, batch)
                            for event, result in results.items()])
            db.execute("DELETE FROM events WHERE status IN (?, ?, ?) AND received < ?",
                       (DONE, FAILED, IGNORED, time.time() - RETENTION_SECONDS))

    def release(self, events: list[int], batch: int, delay: float, why: str) -> None:
        """Put events back to pending, due in `delay` seconds (another cycle held the lease)."""
        with self._writing() as db:
            db.executemany("UPDATE events SET status = ?, batch = NULL, not_before = ?, result = ? "
                           "WHERE id = ? AND status = ? AND batch = ?",
                           [(PENDING, time.time() + delay, json.dumps({"retry": why}), event, RUNNING, batch)
                            for event in events])

    def recover(self) -> int:
        """Events a dead worker left `running` go back to pending. Only the worker holding the lock calls it."""
        with self._writing() as db:
            return db.execute("UPDATE events SET status = ?, batch = NULL WHERE status = ?",
                              (PENDING, RUNNING)).rowcount
