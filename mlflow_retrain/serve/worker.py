"""The cycle worker: a process of its own that takes queued events and runs the cycles they ask for.

Why it is built this way: docs/design.md#serve-worker.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.config import Config
from mlflow_retrain.serve.events import (
    FORCE,
    MARK,
    SIGNOFF,
    VALIDATE,
    Action,
    CycleCall,
    Queued,
    adoption,
    plan,
    signoff_due,
)
from mlflow_retrain.serve.basequeue import DONE, FAILED, Queue, QueueUnavailable
from mlflow_retrain.serve.queue import QUEUE_ENV, open_queue, worker_key

if TYPE_CHECKING:
    from mlflow_retrain.adapters.registry import Registry

log = logging.getLogger("mlflow_retrain.serve.worker")  # not __main__: it runs as `python -m`

POLL_SECONDS = 0.25
LEASE_RETRY_SECONDS = 15.0  # another cycle (cron, CI) holds the lease: the batch waits, then runs
QUEUE_RETRY_SECONDS = 5.0  # a shared queue's database is down: the worker waits, then claims again


class Worker:
    def __init__(self, config: Config, queue: Queue, via: str, stop: threading.Event):
        self.config, self.queue, self.via, self.stop = config, queue, via, stop

    def run_batch(self, batch: int, events: list[Queued]) -> None:
        """Run the plan for one batch and record what each event caused; a failed cycle is recorded
        on its events, never retried blindly (it would fail again), except a held lease. The batch's
        claim is held (renewed on a shared queue) until its last cycle is recorded."""
        chosen = plan(events)
        log.info("batch %d: %s", batch, chosen.reason)
        with self.queue.holding(batch):
            for call in chosen.calls:
                self.run_one(batch, call, chosen.reason)

    def run_one(self, batch: int, call: CycleCall, why: str) -> None:
        """One cycle of a batch, its outcome recorded on the events it serves."""
        from mlflow_retrain.base.errors import LeaseHeldError, RetrainError
        from mlflow_retrain.base.redact import redact

        started = time.time()
        try:
            outcome = self.run_call(call)
            status = DONE
        except LeaseHeldError as exc:
            log.warning("batch %d: %s; retrying in %.0f s", batch, redact(str(exc)), LEASE_RETRY_SECONDS)
            self.queue.release(list(call.events), batch, LEASE_RETRY_SECONDS, redact(str(exc)))
            return
        except RetrainError as exc:
            outcome, status = {"error": redact(str(exc))}, FAILED
            log.error("batch %d: %s cycle failed: %s", batch, call.kind, outcome["error"])
        except Exception as exc:  # a bug: recorded and logged with its traceback; the worker goes on
            log.exception("batch %d: %s cycle crashed", batch, call.kind)
            outcome, status = {"error": f"{type(exc).__name__}: {redact(str(exc))}"}, FAILED
        result = {"status": status, "batch": batch, "cycle": call.kind, "plan": why,
                  "seconds": round(time.time() - started, 1), **outcome}
        self.queue.finish({event: result for event in call.events}, batch)
        log.info("batch %d: %s cycle -> %s", batch, call.kind, outcome.get("outcome", outcome.get("error")))

    def run_call(self, call: CycleCall) -> dict[str, Any]:
        from mlflow_retrain.loop.cycle import run_cycle

        if call.kind in (VALIDATE, SIGNOFF):
            # a normal cycle validates a pending version or carries out a verdict before anything else
            skipped = self.adopt(call.versions) if call.kind == VALIDATE else self.awaiting(call.versions)
            if skipped is not None:
                return {"outcome": "skipped", "reason": skipped}
            report = run_cycle(self.config, via=self.via)
        elif call.kind == FORCE:
            report = run_cycle(self.config, event=call.source, reason=call.reason, via=self.via)
        else:
            report = run_cycle(self.config, via=self.via)
        return {"outcome": report.outcome, "reason": report.reason, "cycle_run_id": report.cycle_run_id,
                "candidate_version": report.candidate_version}

    def adopt(self, versions: Sequence[str]) -> str | None:
        """Versions registered outside a cycle are tagged pending (under the lease, as every registry
        write) so the cycle's reconcile stages and judges them; None when there is one to validate,
        else why nothing is."""
        from mlflow_retrain.adapters.registry import Registry

        registry = Registry(self.config)
        actions = self.examine(registry, versions, adoption)
        marks = [a for a in actions if a.action == MARK]
        if marks:
            with registry.hold(self.config.registry.lease_ttl):
                for action in marks:
                    current = registry.get(action.version).tags
                    wanted = {T.DECISION: T.PENDING, T.TRIGGER: "event",
                              T.REASON: "registered outside a cycle; validated on MLflow's model_version.created webhook"}
                    registry.tag(action.version, {k: v for k, v in wanted.items() if k not in current or k == T.DECISION})
        return self.skipped(actions, (MARK, VALIDATE))

    def awaiting(self, versions: Sequence[str]) -> str | None:
        """None when a signed-off version still awaits approval (the cycle carries the verdict out),
        else why no cycle is needed: `approve`/`reject` carried it out at once, or a cycle did."""
        from mlflow_retrain.adapters.registry import Registry

        return self.skipped(self.examine(Registry(self.config), versions, signoff_due), (SIGNOFF,))

    @staticmethod
    def examine(registry: Registry, versions: Sequence[str],
                decide: Callable[[str, Mapping[str, str]], Action]) -> list[Action]:
        """`decide` over each version's tags as the registry has them now; a version deleted since
        its event is left out (and logged)."""
        from mlflow_retrain.base.errors import RegistryError

        actions = []
        for version in versions:
            try:
                actions.append(decide(version, registry.get(version).tags))
            except RegistryError as exc:  # deleted since the webhook
                log.info("%s", exc)
        return actions

    @staticmethod
    def skipped(actions: Sequence[Action], go: tuple[str, ...]) -> str | None:
        """None when any action asks for the cycle (one of `go`), else why none does."""
        if any(a.action in go for a in actions):
            return None
        return "; ".join(a.reason for a in actions) or "the versions no longer exist"

    def loop(self, parent: int) -> None:
        """Claim and run batches until asked to stop or the server is gone (then the current batch ends first)."""
        while not self.stop.is_set() and os.getppid() == parent:
            try:
                claimed = self.queue.claim(self.config.model_name)
                if claimed is None:
                    time.sleep(POLL_SECONDS)
                    continue
                self.run_batch(*claimed)
            except QueueUnavailable as exc:  # a batch whose outcome it could not record runs again
                log.warning("%s; trying again in %.0f s", exc, QUEUE_RETRY_SECONDS)
                self.stop.wait(QUEUE_RETRY_SECONDS)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlflow_retrain.serve.worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--retrain-via", default="project")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--claim-ttl", type=float, default=60.0)
    parser.add_argument("-v", "--verbose", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s worker %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("mlflow", "alembic", "urllib3", "evidently", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # stdout of MLflow and of training subprocesses goes to the log, like the CLI does
    os.dup2(2, 1)
    stop = threading.Event()  # SIGTERM: end after the running cycle; the server kills after its grace
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when its worker stops

    state = Path(args.state_dir)
    queue = open_queue(os.environ.get(QUEUE_ENV), state, args.claim_ttl)
    with open(state / "worker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # an orphaned worker finishing a cycle keeps it until it ends
        from mlflow_retrain.adapters import store
        from mlflow_retrain.policy.load import load_config
        from mlflow_retrain.base.redact import install_log_filter
        from mlflow_retrain.adapters.tracking import configure_client

        install_log_filter()
        config = load_config(args.config)
        store.use(store.resolve(config))
        configure_client()
        import mlflow_retrain.loop.cycle  # noqa: F401  (imported once here, not in the first cycle)

        worker = Worker(config, queue, args.retrain_via, stop)
        recovered = queue.recover()
        if recovered:
            log.warning("%d event(s) left running by a worker that died: queued again", recovered)
        queue.set_meta(worker_key(state), f"{os.getpid()} ready")
        log.info("ready: cycles for %r", config.model_name)
        worker.loop(args.parent)
        queue.set_meta(worker_key(state), f"{os.getpid()} stopped")


if __name__ == "__main__":
    main()
