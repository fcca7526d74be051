"""mlflow-retrain: keep production models fresh on top of the MLflow Model Registry.

`mlflow_retrain.cycle(policy, data=frame)` and `mlflow_retrain.check(...)` run the controller from
Python (see `mlflow_retrain.api`); they load on first use so the command line starts fast.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["check", "cycle"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mlflow_retrain import api

        return getattr(api, name)
    raise AttributeError(f"module 'mlflow_retrain' has no attribute {name!r}")
