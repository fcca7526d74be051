"""The durable event queue: one sqlite file in the state folder, shared by the server and its worker (or, for
several `serve` replicas, a PostgreSQL database: `pgqueue.py`, chosen by `open_queue`).

Why it is built this way: docs/design.md#serve-queue.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from mlflow_retrain.base.errors import ServeError
from mlflow_retrain.serve.basequeue import (DONE, EVENT_COLUMNS, FAILED, FILE_COLUMNS, IGNORED, META_COLUMNS, PENDING,
                                            RETENTION_SECONDS, RUNNING, Queue)
from mlflow_retrain.serve.events import Action, Queued

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, {EVENT_COLUMNS});
CREATE INDEX IF NOT EXISTS events_status ON events (model, status);
CREATE TABLE IF NOT EXISTS files ({FILE_COLUMNS});
CREATE TABLE IF NOT EXISTS meta ({META_COLUMNS});
"""

QUEUE_ENV = "MLFLOW_RETRAIN_QUEUE"  # the queue's URL: how the server hands it to its worker (never argv: `ps`)


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
