"""mlflow-retrain: keep production models fresh on top of the MLflow Model Registry."""

__version__ = "0.1.0"
