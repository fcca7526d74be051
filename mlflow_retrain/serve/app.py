"""The HTTP side of `serve`: a Starlette app that verifies, records and answers; it never runs a cycle.

Why it is built this way: docs/design.md#serve-app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlflow_retrain.base.redact import redact
from mlflow_retrain.serve import parse, signing
from mlflow_retrain.serve.events import IGNORE, TRIGGER, WEBHOOK, Action, trigger_action, webhook_action
from mlflow_retrain.serve.basequeue import QueueUnavailable
from mlflow_retrain.serve.queue import QUEUE_ENV, open_queue, worker_key
from mlflow_retrain.serve.watch import FolderWatch

log = logging.getLogger(__name__)

SECRET_ENV = "MLFLOW_RETRAIN_SECRET"


@dataclass(frozen=True)
class Settings:
    """Everything `serve` was started with, checked by `service.prepare` before anything starts."""

    config_path: Path
    model: str
    secret: str = field(repr=False)
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 8765
    max_body: int = 256 * 1024
    tolerance: float = signing.TOLERANCE_SECONDS
    data_folder: Path | None = None  # watched when set
    watch_mode: str = "auto"  # auto (native, else polling) | poll
    retrain_via: str = "project"
    grace: float = 120.0  # SIGTERM: how long the running cycle may take to finish before it is abandoned
    verbose: int = 1
    queue_url: str | None = field(default=None, repr=False)  # a PostgreSQL queue replicas share; may hold a password
    claim_ttl: float = 60.0  # on a shared queue: how long a dead replica's events stay claimed

    @property
    def queue_path(self) -> Path:
        return self.state_dir / "queue.sqlite"

    @property
    def queue_shown(self) -> str:
        """Where the queue is, for people: the sqlite file, or the URL with its password masked."""
        return redact(self.queue_url) if self.queue_url else str(self.queue_path)


class WorkerProcess:
    """Starts the cycle worker, restarts it if it dies, stops it on shutdown (finish or abandon)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self.restarts = 0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise())

    async def _spawn(self) -> asyncio.subprocess.Process:
        s = self.settings
        # the worker never needs the secret; it gets the queue's URL from the environment, not argv (`ps`)
        env = {k: v for k, v in os.environ.items() if k not in (SECRET_ENV, QUEUE_ENV)}
        if s.queue_url:
            env[QUEUE_ENV] = s.queue_url
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mlflow_retrain.serve.worker", "--config", str(s.config_path),
            "--state-dir", str(s.state_dir), "--retrain-via", s.retrain_via, "--parent", str(os.getpid()),
            "--claim-ttl", str(s.claim_ttl), "-v", str(s.verbose), stdin=asyncio.subprocess.DEVNULL, env=env,
            start_new_session=True)  # Ctrl-C in a terminal reaches the server, which stops the worker in order

    async def _supervise(self) -> None:
        delay = 1.0
        while not self.stopping:
            started = time.monotonic()
            self.proc = await self._spawn()
            code = await self.proc.wait()
            if self.stopping:
                return
            if time.monotonic() - started > 60:
                delay = 1.0
            log.error("the cycle worker exited with code %s: restarting it in %.0f s (its events are kept)",
                      code, delay)
            self.restarts += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self) -> None:
        """SIGTERM: the worker finishes its running cycle (or is idle and exits at once); after
        `grace` seconds it is killed and the cycle abandoned: its events stay `running`, the next
        worker queues them again, and the lease the cycle held expires for the next cycle."""
        self.stopping = True
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), self.settings.grace)
            except TimeoutError:
                log.warning("the running cycle did not finish within %.0f s: abandoned (its events run again "
                            "on the next start; the lease it held expires)", self.settings.grace)
                self.proc.kill()
                await self.proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) past `limit` bytes without reading the rest (a declared or a streamed size)."""
    parse.content_length(request.headers.get("content-length"), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise parse.Refused(f"body over {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


Handler = Callable[[Request, dict[str, Any]], Awaitable[JSONResponse]]
Payload = dict[str, Any]


def strict(handler: Handler, **query: Callable[[str], Any]) -> Callable[[Request], Awaitable[JSONResponse]]:
    """`handler` behind the strict parser: its query parameters (`query`: name -> parser; any other
    is refused) are parsed first, and any `parse.Refused` it raises while reading headers or body
    is answered with its status, a short JSON error and one log line."""
    async def endpoint(request: Request) -> JSONResponse:
        try:
            return await handler(request, parse.query(request.scope.get("query_string", b""), query))
        except parse.Refused as exc:
            # the route's own path: `request.url` would parse the Host header, which a client chooses
            log.warning("refused %s %s from %s: %d %s", request.method, request.scope["path"],
                        request.client.host if request.client else "?", exc.status, exc.reason)
            return JSONResponse({"error": exc.reason}, status_code=exc.status)

    return endpoint


def limit_param(text: str) -> int:
    return parse.whole_number(text, "limit", 1, 1000)


class OneLineErrors:
    """An exception no route expected: 500 with a short JSON error and one log line, where Starlette
    and uvicorn would log a traceback per request (a flood anyone who can reach the port could cause)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:  # noqa: BLE001 - the point: one line, whatever it was
            log.error("%s %s failed: %s: %s", scope.get("method"), parse.one_line(scope.get("path", "")),
                      type(exc).__name__, parse.one_line(str(exc)))
            if not started:  # else the answer is under way: the connection is closed
                await JSONResponse({"error": "internal error (see the server's log)"}, status_code=500)(
                    scope, receive, send)


def create_app(settings: Settings) -> Starlette:
    queue = open_queue(settings.queue_url, settings.state_dir, settings.claim_ttl)
    worker = WorkerProcess(settings)
    watch = FolderWatch(settings.data_folder, queue, settings.model, mode=settings.watch_mode) \
        if settings.data_folder is not None else None

    async def accept(request: Request, kind: str, shape: Callable[[Payload], Payload], decide: Callable[[Payload], Action],
                     summary: Callable[[Payload], str]) -> JSONResponse:
        """Read, verify, check and decide (each may refuse) before the one piece of work: the queue."""
        body = await read_body(request, settings.max_body)
        check = signing.verify(settings.secret, request.headers.items(), body, now=time.time(),
                               tolerance=settings.tolerance)
        if not check.ok:
            raise parse.Refused(check.reason, check.status)
        payload = shape(parse.json_object(body))
        action = decide(payload)
        event = await run_in_threadpool(queue.add, kind, settings.model, parse.one_line(summary(payload)), action,
                                        check.delivery_id)
        if event is None:
            raise parse.Refused(f"delivery {check.delivery_id} was seen before: ignored", 409)
        log.info("event %d (%s): %s: %s", event, kind, action.action, parse.one_line(action.reason))
        return JSONResponse({"event": event, **action.to_dict()}, status_code=200 if action.action == IGNORE else 202)

    async def webhook(request: Request, _: dict[str, Any]) -> JSONResponse:
        def summary(p: Payload) -> str:
            data = p["data"]
            # model_version_tag.set: which tag (a cycle's JSON tags are long: the value is cut)
            tag = f" {data.get('key')}={str(data.get('value'))[:80]}" if "key" in data else ""
            return f"{p['entity']}.{p['action']} {data.get('name')} v{data.get('version')}{tag}"

        return await accept(request, WEBHOOK, parse.webhook_payload, lambda p: webhook_action(p, settings.model),
                            summary)

    async def trigger(request: Request, _: dict[str, Any]) -> JSONResponse:
        return await accept(request, TRIGGER, parse.trigger_payload, trigger_action,
                            lambda p: f"{p['source']}: {p['reason']}")

    async def healthz(request: Request, _: dict[str, Any]) -> JSONResponse:
        counts = await run_in_threadpool(queue.counts)
        state = await run_in_threadpool(queue.meta, worker_key(settings.state_dir))
        ready = worker.alive() and state == f"{worker.proc.pid} ready"
        return JSONResponse({
            "status": "ok" if worker.alive() else "worker down", "model": settings.model,
            "worker": {"pid": worker.proc.pid if worker.alive() else None,
                       "state": "ready" if ready else ("starting" if worker.alive() else "down"),
                       "restarts": worker.restarts},
            "queue": counts,
            "watch": {"folder": str(settings.data_folder), "observer": watch.kind} if watch else None,
        }, status_code=200 if worker.alive() else 503)

    async def events(request: Request, query: dict[str, Any]) -> JSONResponse:
        return JSONResponse({"events": await run_in_threadpool(queue.recent, query.get("limit", 50))})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await worker.start()
        if watch is not None:
            await run_in_threadpool(watch.start)
            log.info("watching %s for new data (%s observer)", settings.data_folder, watch.kind)
        yield
        if watch is not None:
            watch.stop()
        await worker.stop()

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.scope["path"], parse.one_line(str(exc)))
        return JSONResponse({"error": "the event queue is unavailable: nothing was recorded, try again"},
                            status_code=503)

    app = Starlette(exception_handlers={QueueUnavailable: unavailable}, routes=[
        Route("/webhook", strict(webhook), methods=["POST"]),
        Route("/trigger", strict(trigger), methods=["POST"]),
        Route("/healthz", strict(healthz), methods=["GET"]),
        Route("/events", strict(events, limit=limit_param), methods=["GET"]),
    ], middleware=[Middleware(OneLineErrors)], lifespan=lifespan)
    # `/events/` is a 404, not a redirect built from the request's URL, which decodes the query
    # string the client sent without the strict parser
    app.router.redirect_slashes = False
    return app
