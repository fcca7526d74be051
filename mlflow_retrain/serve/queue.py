"""The durable event queue: one sqlite file in the state folder, shared by the server and its worker.

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
machines, put the queue in a shared database (PostgreSQL, `SELECT ... FOR UPDATE SKIP LOCKED`) or
a broker with acknowledgements.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow_retrain.serve.events import Action, Queued

PENDING, RUNNING, DONE, FAILED, IGNORED = "pending", "running", "done", "failed", "ignored"
RETENTION_SECONDS = 7 * 86400  # finished rows older than this are pruned (far beyond the signature tolerance)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received REAL NOT NULL,
    kind TEXT NOT NULL,
    delivery_id TEXT UNIQUE,
    model TEXT NOT NULL,
    summary TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    batch INTEGER,
    not_before REAL NOT NULL DEFAULT 0,
    result TEXT
);
CREATE INDEX IF NOT EXISTS events_status ON events (model, status);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class EventQueue:
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

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
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
            with self._transaction() as db:
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
        with self._transaction() as db:
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

    def finish(self, results: dict[int, dict[str, Any]]) -> None:
        """Each event's outcome (`{"status": done|failed, ...what it caused}`), then prune old rows."""
        with self._transaction() as db:
            db.executemany("UPDATE events SET status = ?, result = ? WHERE id = ? AND status = ?",
                           [(result.get("status", DONE), json.dumps(result), event, RUNNING)
                            for event, result in results.items()])
            db.execute("DELETE FROM events WHERE status IN (?, ?, ?) AND received < ?",
                       (DONE, FAILED, IGNORED, time.time() - RETENTION_SECONDS))

    def release(self, events: list[int], delay: float, why: str) -> None:
        """Put events back to pending, due in `delay` seconds (another cycle held the lease)."""
        with self._transaction() as db:
            db.executemany("UPDATE events SET status = ?, batch = NULL, not_before = ?, result = ? "
                           "WHERE id = ? AND status = ?",
                           [(PENDING, time.time() + delay, json.dumps({"retry": why}), event, RUNNING)
                            for event in events])

    def recover(self) -> int:
        """Events a dead worker left `running` go back to pending. Only the worker holding the lock calls it."""
        with self._transaction() as db:
            return db.execute("UPDATE events SET status = ?, batch = NULL WHERE status = ?",
                              (PENDING, RUNNING)).rowcount

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest events and what each caused, for `/events`."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{"id": r["id"], "received": r["received"], "kind": r["kind"], "model": r["model"],
                 "summary": r["summary"], "action": json.loads(r["action"]), "status": r["status"],
                 "batch": r["batch"], "result": json.loads(r["result"]) if r["result"] else None} for r in rows]

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            return {r["status"]: r["n"] for r in db.execute("SELECT status, COUNT(*) AS n FROM events GROUP BY status")}

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    def listing(self) -> dict[str, tuple[int, int]] | None:
        """The watched folder as last seen (path -> size, mtime), or None before the first look."""
        with self._connect() as db:
            if db.execute("SELECT value FROM meta WHERE key = 'files_seen'").fetchone() is None:
                return None
            return {r["path"]: (r["size"], r["mtime_ns"]) for r in db.execute("SELECT * FROM files")}

    def record_listing(self, files: dict[str, tuple[int, int]], event: tuple[str, str, Action] | None) -> None:
        """The folder's new listing and the `new_data` event it caused, in one transaction: a crash
        between the two would either lose the event or raise it twice."""
        with self._transaction() as db:
            db.execute("DELETE FROM files")
            db.executemany("INSERT INTO files VALUES (?, ?, ?)", [(p, s, m) for p, (s, m) in files.items()])
            db.execute("INSERT OR REPLACE INTO meta VALUES ('files_seen', ?)", (str(time.time()),))
            if event is not None:
                model, summary, action = event
                db.execute("INSERT INTO events (received, kind, model, summary, action, status) "
                           "VALUES (?, 'new_data', ?, ?, ?, ?)",
                           (time.time(), model, summary, json.dumps(action.to_dict()), PENDING))
