"""What `monitor` tells people: its findings of downtime as plain events for `adapters/notify.py`.

Here, above the adapters, because the events are made of a `MonitorResult`, which notify does not know.
"""

from __future__ import annotations

from mlflow_retrain.adapters.notify import DOWNTIME, Event
from mlflow_retrain.usecases.monitor import MonitorResult


def downtime_events(model_name: str, result: MonitorResult) -> list[Event]:
    """`monitor` found downtime (a model that does not load or predict, slow windows, labels that
    stopped): the same finding that makes it exit 4, told to people."""
    if not result.health:
        return []
    more = f" (+{len(result.health) - 1} more)" if len(result.health) > 1 else ""
    return [Event(DOWNTIME, model_name, f"{model_name}: monitoring found {len(result.health)} health issue(s)",
                  result.health[0] + more, None,
                  {"health": result.health, "monitor_run_id": result.run_id, "dashboard": str(result.dashboard)})]
