"""Independent tasks on a Dask distributed cluster (`--cluster tcp://HOST:PORT`).

Why it is built this way: docs/design.md#adapters-cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlflow_retrain.base.errors import ClusterError, ConfigError
from mlflow_retrain.base.redact import redact

_ADDRESS = re.compile(r"^(tcp|tls)://(\[[0-9a-fA-F:.]+\]|[^\s/:@\[\]]+):(\d{1,5})$")
CONNECT_SECONDS = 10.0  # a scheduler that has not answered by then is taken as down


def check_address(address: str) -> str:
    """The scheduler address as given, refused unless it reads SCHEME://HOST:PORT (tcp or tls)."""
    match = _ADDRESS.match(address.strip())
    if not match or not 0 < int(match.group(3)) < 65536:
        raise ConfigError(f"--cluster {redact(address)!r} is not a Dask scheduler address; "
                          "expected tcp://HOST:PORT (or tls://HOST:PORT), e.g. tcp://127.0.0.1:8786")
    return address.strip()


@contextmanager
def connect(address: str, timeout: float = CONNECT_SECONDS) -> Iterator[Any]:
    """A `distributed.Client` of the scheduler at `address` with at least one worker, closed on exit.

    Checked before anything runs: a missing package, a scheduler that does not answer and one
    without workers are each one line (exit 2), not a task that waits forever."""
    address = check_address(address)
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError("--cluster needs Dask's distributed package: "
                           "pip install 'mlflow-retrain[cluster]'") from None
    # raised outside the handlers: a ClusterError carrying a socket error as its context would read
    # as a tracking server that stopped answering (`tracking.server_error` follows the chain)
    client, failure = None, None
    try:
        client = Client(address, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        failure = type(exc).__name__
    if client is None:
        raise ClusterError(f"no Dask scheduler answered at {redact(address)} within {timeout:g} s "
                           f"({failure}); start one (dask scheduler) or fix --cluster")
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError):
            failure = "no workers"
        if failure:
            raise ClusterError(f"the Dask scheduler at {redact(address)} has no workers after {timeout:g} s; "
                               "start some (dask worker ADDRESS)")
        yield client
    finally:
        client.close()


def threads(client: Any) -> int:
    """How many tasks the cluster runs at once: its workers' threads."""
    return max(1, sum(client.nthreads().values()))


def workers(client: Any) -> int:
    """How many cycles the cluster runs at once: one per worker process (`fleet.work.run_remote`)."""
    return max(1, len(client.nthreads()))
