"""The audit contract: tag names written on model versions, the registered model and runs.

One place for the names so the writer (controller, train) and the readers (status, history,
monitor) cannot drift apart. A version's record is kept in two places, read as one
(docs/design.md#base-tags): the few keys a person reads in MLflow's versions list (`SHOWN`) as tags,
the rest in its description's record block (`registry/story.py`). Either way a value once written
stays: a later one is appended as `<key>.<n>` (`appended`), and readers see the newest (`newest`).
"""

import re

TRIGGER = "retrain.trigger"
REASON = "retrain.reason"
DECISION = "retrain.decision"
DECISION_REASON = "retrain.decision_reason"
BASELINE_VERSION = "retrain.baseline_version"
CYCLE_RUN_ID = "retrain.cycle_run_id"
TRAIN_WINDOW = "retrain.train_window"
HOLDOUT_WINDOW = "retrain.holdout_window"
AS_OF = "retrain.as_of"
# on a refit (`training.refit_on_pass`): the validated fit's run, and the rows the refit saw ("<window> (<n> rows)")
REFIT_OF = "retrain.refit_of"
REFIT_ROWS = "retrain.refit_rows"
PROMOTED_AT = "retrain.promoted_at"  # in data time (--as-of), so replays draw the real history
PROMOTED_WALL = "retrain.promoted_wall"  # wall-clock time, orders promotions for rollback
ARCHIVED_AT = "retrain.archived_at"
LAST_CYCLE = "retrain.last_cycle"  # on the registered model: "<run id> <outcome>" of the newest cycle or move
# on a judged version: the gate's numbers, the holdout's hash, the audit run and its reports (JSON;
# `registry/story.py` renders it on the version's page)
EVIDENCE = "retrain.evidence"
LEASE_FOR = "retrain.lease_for"
LEASE_HOLDER = "retrain.lease_holder"
LEASE_EXPIRES = "retrain.lease_expires"
LEASE_GENERATION = "retrain.lease_generation"
LEASE_RELEASED = "retrain.lease_released"
# the holding process (JSON: host, boot id, pid namespace, pid, start time in clock ticks): a taker
# on the same host frees a lease whose holder is provably gone (`registry/lease.py`)
LEASE_PROCESS = "retrain.lease_process"
LEASE_FREED = "retrain.lease_freed"  # on a generation: why it took over a lease whose holder was gone
INTENT = "retrain.intent"  # a registry move in progress (moves.py): finished by the next cycle if cut short
# a `retrain.intent` no version of the tool wrote, set aside as found (`<n>`) with who/when/why (`<n>.record`)
INTENT_CORRUPT = "retrain.intent.corrupt"
# on a version found in Production that neither a gate nor a person approved (moved by hand in the UI):
# `<n>` records each time a repair took it out (what was found, what was restored, by which run, when)
HAND_MOVE = "retrain.hand_move"
ROLLED_BACK_WALL = "retrain.rolled_back_wall"  # clock time a rollback took this version out of Production
CLOSED_BY = "retrain.closed_by"  # on a crashed cycle's run: the cycle that ended it as FAILED
CLOSED_REASON = "retrain.closed_reason"  # ... and why it counted as crashed
RUN_KIND = "retrain.kind"
# a person signs off (`validation.require_approval`, `signoff.py`): the verdict a person gives, set by
# `approve`/`reject` or by hand in the MLflow UI, and who, why and when (data time, clock) from the CLI
APPROVAL = "retrain.approval"  # approved | rejected
APPROVAL_BY = "retrain.approval_by"
APPROVAL_REASON = "retrain.approval_reason"
APPROVAL_AT = "retrain.approval_at"  # data time of the command (--as-of, default the newest row)
APPROVAL_WALL = "retrain.approval_wall"
AWAITING_SINCE = "retrain.awaiting_since"  # data time the gate passed it: approval_ttl counts from here
# a challenger (`validation.challenger`): the labelled data time its rounds start after, and each round
# against Production (`<n>`, JSON: the window, its rows, both scores, won), appended once per window
CHALLENGER_SINCE = "retrain.challenger.since"
CHALLENGER_ROUND = "retrain.challenger.round"

# the tags a person reads in the versions list; anything else written on a version goes into its record
SHOWN = (DECISION, TRIGGER, CYCLE_RUN_ID, AS_OF, APPROVAL)

PROMOTED, REJECTED, PENDING = "promoted", "rejected", "pending"
ABANDONED = "abandoned"  # pending, then superseded by a newer candidate before anyone judged it
AWAITING_APPROVAL = "awaiting_approval"  # passed the gate, waits in Staging for a person
EXPIRED = "expired"  # waited longer than validation.approval_ttl: archived
SUPERSEDED = "superseded"  # a newer (forced) candidate replaced it in Staging while it waited
REFITTED = "refitted"  # passed the gate; its refit through as_of (`training.refit_on_pass`) took its place
CHALLENGER = "challenger"  # inconclusive against Production: waits in Staging (and alias `challenger`), scored per window
APPROVED = "approved"  # values of APPROVAL
# judged by the gate (a cooldown counts from the newest of these), whatever came of it after
JUDGED = (PROMOTED, REJECTED, AWAITING_APPROVAL, EXPIRED, SUPERSEDED, REFITTED, CHALLENGER)
BOOTSTRAP = "bootstrap"

REFERENCE_ARTIFACT = "reference/train.parquet"


_NUMBERED = re.compile(r"(retrain\.[a-z_]+)\.([1-9][0-9]*)")


def newest(values: dict[str, str]) -> dict[str, str]:
    """`values` with each key that has appended values (`<key>.<n>`) reading the newest of them."""
    found: dict[str, tuple[int, str]] = {}
    for key, value in values.items():
        match = _NUMBERED.fullmatch(key)
        if match and match.group(1) in values and int(match.group(2)) > found.get(match.group(1), (1, ""))[0]:
            found[match.group(1)] = (int(match.group(2)), value)
    return {**values, **{key: value for key, (_, value) in found.items()}}


def appended(have: dict[str, str], key: str, value: str) -> str | None:
    """The key to write `value` under, given what a version has (`newest` of it): None when it already
    reads so, the key itself when unset (or a decision still `pending`, which holds no verdict), else
    the next `<key>.<n>`: no audit value is rewritten."""
    current = have.get(key)
    if current == value:
        return None
    if current is None or (key == DECISION and current == PENDING and DECISION + ".2" not in have):
        return key
    numbers = [int(m.group(2)) for k in have if (m := _NUMBERED.fullmatch(k)) and m.group(1) == key]
    return f"{key}.{max(numbers, default=1) + 1}"
