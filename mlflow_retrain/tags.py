"""The audit contract: tag names written on model versions, the registered model and runs.

One place for the names so the writer (controller, train) and the readers (status, history,
monitor) cannot drift apart.
"""

TRIGGER = "retrain.trigger"
REASON = "retrain.reason"
DECISION = "retrain.decision"
DECISION_REASON = "retrain.decision_reason"
BASELINE_VERSION = "retrain.baseline_version"
CYCLE_RUN_ID = "retrain.cycle_run_id"
TRAIN_WINDOW = "retrain.train_window"
HOLDOUT_WINDOW = "retrain.holdout_window"
AS_OF = "retrain.as_of"
PROMOTED_AT = "retrain.promoted_at"  # in data time (--as-of), so replays draw the real history
PROMOTED_WALL = "retrain.promoted_wall"  # wall-clock time, orders promotions for rollback
ARCHIVED_AT = "retrain.archived_at"
LAST_CYCLE = "retrain.last_cycle"
LEASE_FOR = "retrain.lease_for"
LEASE_HOLDER = "retrain.lease_holder"
LEASE_EXPIRES = "retrain.lease_expires"
LEASE_GENERATION = "retrain.lease_generation"
LEASE_RELEASED = "retrain.lease_released"
INTENT = "retrain.intent"  # a registry move in progress (moves.py): finished by the next cycle if cut short
ROLLED_BACK_WALL = "retrain.rolled_back_wall"  # clock time a rollback took this version out of Production
CLOSED_BY = "retrain.closed_by"  # on a crashed cycle's run: the cycle that ended it as FAILED
RUN_KIND = "retrain.kind"

PROMOTED, REJECTED, PENDING = "promoted", "rejected", "pending"
ABANDONED = "abandoned"  # pending, then superseded by a newer candidate before anyone judged it
JUDGED = (PROMOTED, REJECTED)
BOOTSTRAP = "bootstrap"

REFERENCE_ARTIFACT = "reference/train.parquet"
