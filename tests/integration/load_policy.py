"""A policy over generated load data (`synthetic.energy_load`): tests on data that is not the bike data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml
from synthetic import TARGET


def write_load_policy(folder: Path, frame: pd.DataFrame, **overrides: dict) -> Path:
    """`load.csv` and `retrain.yaml` in `folder`: model `load`, small fast fits; each override merges
    into its section."""
    frame.to_csv(folder / "load.csv", index=False)
    raw: dict = {"model_name": "load", "experiment": "load",
                 "data": {"path": "load.csv", "timestamp": "timestamp", "target": TARGET},
                 "training": {"params": {"max_iter": 20}, "window": "60d", "holdout": "7d"},
                 "monitoring": {"window": "7d", "metric": "mae", "reports": "never"},
                 "triggers": {"metric_threshold": {"max": 500}}}
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value}
    path = folder / "retrain.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
