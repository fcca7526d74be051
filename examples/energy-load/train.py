"""This team's own training script, driven by mlflow-retrain through the `train` entry point.

The controller passes the data-time contract (which rows to train on) and registers, compares and
promotes whatever model this run logs. The script needs to know nothing about the registry.
"""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature

from features import make_pipeline

COLUMNS = ["timestamp", "temperature_c", "day_type", "weather"]
TARGET = "load_mw"
# named, so MLflow does not load the model in a subprocess to infer them (about 5 s a run)
REQUIREMENTS = [f"{name}=={version(name)}" for name in ("scikit-learn", "pandas", "cloudpickle")]


def read(path: str) -> pd.DataFrame:
    frame = pd.read_parquet(path) if Path(path).suffix == ".parquet" else pd.read_csv(path)
    return frame.assign(timestamp=pd.to_datetime(frame["timestamp"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("data-path", "train-start", "train-end"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--max-iter", type=int, default=100)
    args, _ = parser.parse_known_args()  # the rest of the contract (holdout, as_of) is not needed here

    frame = read(args.data_path)
    rows = frame[(frame.timestamp > pd.Timestamp(args.train_start)) & (frame.timestamp <= pd.Timestamp(args.train_end))]
    features, target = rows[COLUMNS], rows[TARGET]
    model = make_pipeline(max_iter=args.max_iter).fit(features, target)
    with mlflow.start_run():  # inside `mlflow run` this is the project's own run
        mlflow.log_params({"max_iter": args.max_iter, "train_rows": len(rows)})
        mlflow.sklearn.log_model(model, name="model", signature=infer_signature(features, model.predict(features)),
                                 code_paths=["features.py"], serialization_format="cloudpickle",
                                 pip_requirements=REQUIREMENTS)


if __name__ == "__main__":
    main()
