"""The metrics by name: which ones a task may be monitored on, and which way is better.

Apart from `metrics` (numpy, scikit-learn) because every command reads these with its policy file,
and most never score a row.
"""

REGRESSION_METRICS = ("mae", "rmse", "r2")
CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc")
LOWER_IS_BETTER = frozenset({"mae", "rmse"})


def higher_is_better(metric: str) -> bool:
    """Error metrics fall as the model improves; scores rise."""
    return metric not in LOWER_IS_BETTER
