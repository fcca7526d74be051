"""The decision core: observations in, a decision with its reasons out. Imports neither MLflow nor
Evidently (a unit test holds it to that); the cycle, `check`, the backtest and the monitor call it.

- `assess`: whether to retrain, from window scores, drift, versions' times and the clock;
- `triggers/`: one file per trigger (its options, its verdict, its dashboard mark);
- `gate.judge`: whether to promote, from both models' numbers on the same holdout;
- `plugins`: the installed triggers and gate checks, built-in and from entry points;
- `verdicts`, `observations`: the plain data passed in and out;
- `settings`: what the core reads of the policy, as protocols the policy implements (the core imports no policy).
"""

from mlflow_retrain.decide.assess import assess, monitoring_depth, out_of_sample, recent_windows
from mlflow_retrain.decide.gate import Comparison, GateCheck, PromotionDecision, Scores, gate, judge
from mlflow_retrain.decide.observations import Observations, WindowScore
from mlflow_retrain.decide.triggers import PolicyContext, Trigger
from mlflow_retrain.decide.verdicts import RetrainDecision, TriggerResult, format_span

__all__ = ["Comparison", "GateCheck", "Observations", "PolicyContext", "PromotionDecision",
           "RetrainDecision", "Scores", "Trigger", "TriggerResult", "WindowScore", "assess", "format_span", "gate",
           "judge", "monitoring_depth", "out_of_sample", "recent_windows"]
