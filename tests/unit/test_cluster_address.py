"""`--cluster` addresses are checked before anything connects: one line naming the expected form."""

from __future__ import annotations

import pytest

from mlflow_retrain.adapters.cluster import check_address
from mlflow_retrain.base.errors import ConfigError


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "tls://scheduler.internal:8786", "tcp://[::1]:8786",
                                     " tcp://dask-scheduler:1 "])
def test_scheduler_addresses_pass(address):
    assert check_address(address) == address.strip()


@pytest.mark.parametrize("address", ["127.0.0.1:8786", "http://host:8786", "tcp://host", "tcp://host:0",
                                     "tcp://host:70000", "tcp://user:secret@host:8786", "tcp://host:8786/path", ""])
def test_anything_else_is_one_line_without_secrets(address):
    with pytest.raises(ConfigError, match=r"is not a Dask scheduler address; expected tcp://HOST:PORT") as caught:
        check_address(address)
    assert "secret" not in str(caught.value) and "\n" not in str(caught.value)
