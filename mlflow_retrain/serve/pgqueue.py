"""The event queue in PostgreSQL, for several `serve` replicas (one machine or many) sharing one queue.

Why it is built this way: docs/design.md#serve-pgqueue.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty, Full, LifoQueue
from typing import Any

import psycopg
from psycopg.rows import dict_row

from mlflow_retrain.base.errors import ServeError
from mlflow_retrain.base.redact import redact
from mlflow_retrain.serve.events import Action, Queued
from mlflow_retrain.serve.basequeue import (
    DONE,
    EVENT_COLUMNS,
    FAILED,
    FILE_COLUMNS,
    IGNORED,
    META_COLUMNS,
    PENDING,
    RETENTION_SECONDS,
    RUNNING,
    Queue,
    QueueUnavailable,
)

log = logging.getLogger(__name__)

LOCK = 0x72657472  # the class of this queue's advisory locks ("retr"); the second key is 0 or a model's hash
SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS retrain_events (id BIGSERIAL PRIMARY KEY, {EVENT_COLUMNS},
        owner TEXT,  -- host:pid of the worker that claimed it last
        expires DOUBLE PRECISION,  -- when that claim ends unless renewed
        claims INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS retrain_events_status ON retrain_events (model, status)",
    f"CREATE TABLE IF NOT EXISTS retrain_files ({FILE_COLUMNS})",
    f"CREATE TABLE IF NOT EXISTS retrain_meta ({META_COLUMNS})",
    "CREATE SEQUENCE IF NOT EXISTS retrain_batches",
)


class PostgresQueue(Queue):
    """The shared queue at a `postgresql://` URL. Connections are reused from a few kept idle (the
    server's request threads, its watcher, the worker and its renewal thread each take one per call),
    so a burst does not leave a connection open per thread; after a dropped one, all idle ones are
    closed (the database restarted) and the next call connects again."""

    EVENTS, META, FILES = "retrain_events", "retrain_meta", "retrain_files"
    P = "%s"
    CLOCK = "extract(epoch FROM clock_timestamp())::float8"
    IDLE = 4  # connections kept open between calls, per process

    def __init__(self, url: str, claim_ttl: float):
        self.url, self.claim_ttl = url, claim_ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._idle: LifoQueue[psycopg.Connection] = LifoQueue(self.IDLE)
        try:
            with self._writing() as db:
                db.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK,))
                for statement in SCHEMA:
                    db.execute(statement)
        except QueueUnavailable as exc:
            raise ServeError(str(exc)) from None
        except psycopg.Error as exc:  # e.g. no right to create the tables
            raise ServeError(f"cannot use the queue {redact(url)}: {_first_line(exc)}") from None

    @contextmanager
    def _writing(self) -> Iterator[psycopg.Connection]:
        db = None
        try:
            try:
                db = self._idle.get_nowait()
            except Empty:
                db = psycopg.connect(self.url, autocommit=True, connect_timeout=10, row_factory=dict_row)
            with db.transaction():
                yield db
        except psycopg.OperationalError as exc:
            for dropped in [db, *self._drain()]:
                if dropped is not None:
                    dropped.close()
            raise QueueUnavailable(f"the queue {redact(self.url)} cannot be reached: {_first_line(exc)}") from None
        finally:
            if db is not None and not db.closed:
                try:
                    self._idle.put_nowait(db)
                except Full:
                    db.close()

    def _drain(self) -> list[psycopg.Connection]:
        """Every idle connection, taken out of the pool."""
        drained = []
        with contextlib.suppress(Empty):
            while True:
                drained.append(self._idle.get_nowait())
        return drained

    def add(self, kind: str, model: str, summary: str, action: Action, delivery_id: str | None = None) -> int | None:
        """Record an accepted event (committed before the caller answers); None when `delivery_id`
        was seen before, by any replica."""
        status = IGNORED if action.action == "ignore" else PENDING
        with self._writing() as db:
            row = db.execute(
                f"INSERT INTO retrain_events (received, kind, delivery_id, model, summary, action, status, result) "
                f"VALUES ({self.CLOCK}, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (delivery_id) DO NOTHING RETURNING id",
                (kind, delivery_id, model, summary, json.dumps(action.to_dict()), status,
                 json.dumps({"reason": action.reason}) if status == IGNORED else None)).fetchone()
        return row["id"] if row else None

    def claim(self, model: str, now: float | None = None) -> tuple[int, list[Queued]] | None:
        """Every due pending event of `model`, and every running one whose claim expired, under a
        new batch number; None while a live replica runs a batch of the model."""
        with self._writing() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK, model))
            now = db.execute(f"SELECT {self.CLOCK} AS now").fetchone()["now"] if now is None else now
            if db.execute("SELECT 1 FROM retrain_events WHERE model = %s AND status = %s AND expires > %s LIMIT 1",
                          (model, RUNNING, now)).fetchone():
                return None
            rows = db.execute(
                "SELECT id, action, status, owner FROM retrain_events WHERE model = %s AND "
                "((status = %s AND not_before <= %s) OR (status = %s AND expires <= %s)) "
                "ORDER BY id FOR UPDATE SKIP LOCKED", (model, PENDING, now, RUNNING, now)).fetchall()
            if not rows:
                return None
            batch = db.execute("SELECT nextval('retrain_batches') AS n").fetchone()["n"]
            db.execute("UPDATE retrain_events SET status = %s, batch = %s, owner = %s, expires = %s, "
                       "claims = claims + 1 WHERE id = ANY(%s)",
                       (RUNNING, batch, self.owner, now + self.claim_ttl, [row["id"] for row in rows]))
        for owner in {row["owner"] for row in rows if row["status"] == RUNNING}:
            log.warning("events %s: %s stopped renewing its claim (died or stalled mid-cycle): claimed again",
                        [row["id"] for row in rows if row["owner"] == owner], owner)
        return batch, [Queued(row["id"], Action(**json.loads(row["action"]))) for row in rows]

    @contextmanager
    def holding(self, batch: int) -> Iterator[None]:
        """Renew the batch's claim every third of `claim_ttl` while the worker runs it: a replica that
        dies stops, and its events are claimed again one `claim_ttl` later."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.claim_ttl / 3):
                try:
                    with self._writing() as db:
                        db.execute(f"UPDATE retrain_events SET expires = {self.CLOCK} + %s "
                                   "WHERE batch = %s AND status = %s", (self.claim_ttl, batch, RUNNING))
                except QueueUnavailable as exc:  # the database hiccuped: the next tick retries
                    log.warning("renewing the claim on batch %d failed (%s); retrying", batch, exc)

        thread = threading.Thread(target=renew, name="queue-claim-renewal", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(10)

    def finish(self, results: dict[int, dict[str, Any]], batch: int) -> None:
        """Each event's outcome, for the rows this batch still holds; then prune old rows."""
        with self._writing() as db:
            written = sum(db.execute(
                "UPDATE retrain_events SET status = %s, result = %s, expires = NULL "
                "WHERE id = %s AND status = %s AND batch = %s",
                (result.get("status", DONE), json.dumps(result), event, RUNNING, batch)).rowcount
                for event, result in results.items())
            db.execute(f"DELETE FROM retrain_events WHERE status IN (%s, %s, %s) AND received < {self.CLOCK} - %s",
                       (DONE, FAILED, IGNORED, RETENTION_SECONDS))
        if written < len(results):
            log.warning("batch %d: %d event(s) were claimed again by another replica after this one's claim "
                        "expired: their outcome is that replica's to record", batch, len(results) - written)

    def release(self, events: list[int], batch: int, delay: float, why: str) -> None:
        """Put events back to pending, due in `delay` seconds, for any replica (another cycle held the lease)."""
        with self._writing() as db:
            db.execute(f"UPDATE retrain_events SET status = %s, batch = NULL, owner = NULL, expires = NULL, "
                       f"not_before = {self.CLOCK} + %s, result = %s WHERE id = ANY(%s) AND status = %s AND batch = %s",
                       (PENDING, delay, json.dumps({"retry": why}), events, RUNNING, batch))

    def recover(self) -> int:
        """Nothing to do at start: a dead worker's claims expire and the next claim (any replica's)
        takes its events; a lock on one machine cannot tell a dead worker from a live replica."""
        return 0


def _first_line(exc: Exception) -> str:
    """psycopg's message, first line (libpq adds hints below), credentials masked."""
    return redact((str(exc).strip().splitlines() or [type(exc).__name__])[0])
