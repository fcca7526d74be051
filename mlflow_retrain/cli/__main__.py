"""`python -m mlflow_retrain.cli`: the same as the `mlflow-retrain` console script."""

import sys

from mlflow_retrain.cli import main

main(sys.argv[1:])
