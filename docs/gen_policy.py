"""The policy reference (docs/policy.md), derived from the parser itself: an MkDocs hook.

`parse_config` reads every key through `section.Section`; `section.recording_reads` records each read
(section, key, kind, default). Parsing `FULL_POLICY`, which opens every section, lists every key
the parser knows, and `DESCRIPTIONS` gives each its line. A key without a description, or a
description of a key the parser no longer reads, fails the build (and tests/unit/test_docs.py).
"""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

# this checkout's package, not an installed one; imported now, as MkDocs restores sys.path after loading hooks
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mlflow_retrain  # noqa: E402,F401

MARKER = "<!-- policy-reference -->"

# a policy that opens every section (every key of a section is read, given or not)
FULL_POLICY: dict[str, Any] = {
    "model_name": "bike-demand",
    "data": {"path": "data.csv", "timestamp": "timestamp", "target": "cnt"},
    "training": {"project": {"uri": ".", "contract": {}}},
    "monitoring": {"label_delay": "7d", "drift": {"columns": {"temp": {"method": "wasserstein"}}}},
    "triggers": {"metric_threshold": {"max": 80}, "metric_trend": {"windows": 4, "max_slope": 10},
                 "data_drift": {}, "estimated_metric": {"max": 80}, "max_age": "120d", "new_data": {},
                 "debounce": {}, "cooldown": "7d"},
    "validation": {"max_metric": 90, "significance": {}, "checks": {}, "challenger": {}},
    "registry": {"aliases": {}},
    "notify": [{"url": "https://hooks.example.com/x"}],
}

# one line per key, as the annotated retrain.yaml in docs/policy.md and the pages say it
DESCRIPTIONS: dict[str, str] = {
    "model_name": "The registered model in the MLflow Model Registry.",
    "experiment": "The experiment of the training runs; cycles go to `<experiment>-controller`.",
    "task": "`regression` or `classification`.",
    "tracking_uri": "The store, relative to this file; `MLFLOW_TRACKING_URI` wins. Default `sqlite:///mlflow.db` "
                    "beside the policy.",
    "ui_url": "The MLflow UI's address (no credentials), written into messages as links.",
    "data": "Where the labelled data is and which columns mean what.",
    "training": "How a candidate is made.",
    "monitoring": "How Production is scored over time.",
    "triggers": "Reasons to retrain; leave one out to switch it off.",
    "validation": "The gate a candidate must pass to reach Production.",
    "registry": "Aliases, stages and the lease.",
    "notify": "A list of webhooks told what happened (see [Notifications](notifications.md)).",
    "data.path": "A CSV/Parquet file or a folder of them (a new file is new data); relative to this file.",
    "data.timestamp": "The timestamp column.",
    "data.target": "The target column.",
    "data.features": "Optional: by default every column but the timestamp, the target and `exclude`.",
    "data.categorical": "Optional: text columns are categorical by default.",
    "data.exclude": "Never features (with `features` left out, every other column is).",
    "data.duplicates": "`keep` | `drop` (exact repeats) | `refuse` (repeats or conflicting labels).",
    "training.estimator": "A scikit-learn-API class, or a factory `module:function` returning an estimator "
                          "or a `Pipeline`.",
    "training.project": "Your own MLproject makes the candidate instead (see [Your own model](own-model.md)).",
    "training.params": "Passed to the estimator or the factory.",
    "training.window": "Train on `(as_of - holdout - window, as_of - holdout]`.",
    "training.holdout": "Validate on `(as_of - holdout, as_of]`.",
    "training.seed": "The random seed.",
    "training.pass_timestamp": "`true`: the model gets the timestamp column too.",
    "training.refit_on_pass": "`true`: a candidate that passes the gate is fitted again on "
                              "`(as_of - holdout - window, as_of]` (holdout included); that refit is registered "
                              "and promoted, with the gate's evidence (see [Refit after the gate](design.md#refit-after-the-gate)).",
    "training.project.contract": "Rename a contract parameter, or `\"\"` to not pass it.",
    "training.project.contract.data_path": "The parameter that receives the data's path.",
    "training.project.contract.train_start": "The parameter that receives the training window's start.",
    "training.project.contract.train_end": "The parameter that receives the training window's end.",
    "training.project.contract.holdout_start": "The parameter that receives the holdout's start.",
    "training.project.contract.holdout_end": "The parameter that receives the holdout's end.",
    "training.project.contract.as_of": "The parameter that receives the cycle's `as_of`.",
    "training.project.contract.cycle_run_id": "The parameter that receives the cycle's audit run id.",
    "training.project.uri": "A folder (relative to this file) or a git URI.",
    "training.project.entry_point": "The entry point to run.",
    "training.project.parameters": "Your own parameters, passed as they are.",
    "training.project.env_manager": "`local` | `virtualenv` | `conda` | `uv`.",
    "training.project.backend": "`local` | `databricks` | `kubernetes` | a plugin (see "
                                "[Training backends](training-backends.md)).",
    "training.project.backend_config": "The backend's `.json` config file, relative to this file.",
    "training.project.version": "A git commit or branch.",
    "monitoring.window": "Each monitoring window.",
    "monitoring.metric": "Regression: `mae` | `rmse` | `r2`; classification: `accuracy` | `f1` | `roc_auc`.",
    "monitoring.max_latency_ms": "`monitor`: slower predictions per window are downtime.",
    "monitoring.reports": "Evidently HTML: `on_change` (a trigger fired) | `always` | `never`.",
    "monitoring.max_data_gap": "No new labels for longer is downtime (`monitor`); a cycle says so.",
    "monitoring.label_delay": "Labels arrive late: score, train and validate on labels up to `as_of - delay`, "
                              "drift on features up to `as_of`.",
    "monitoring.drift": "Every drift number (trigger, monitor, backtest, report).",
    "monitoring.drift.exclude": "Columns not measured (calendar columns drift by the calendar alone).",
    "monitoring.drift.columns": "Per column: `{method, threshold}`.",
    "monitoring.drift.columns.<column>": "One column's rule.",
    "monitoring.drift.columns.<column>.method": "`ks` | `chisquare` | `z` | `wasserstein` | `jensenshannon`.",
    "monitoring.drift.columns.<column>.threshold": "The column's drift threshold.",
    "triggers.debounce": "The threshold must hold in `k` of the last `n` windows.",
    "triggers.debounce.k": "Windows that must cross.",
    "triggers.debounce.n": "Windows looked at.",
    "triggers.cooldown": "No second retrain within the span unless `--force`.",
    "triggers.metric_threshold": "Absolute limit on Production's metric.",
    "triggers.metric_threshold.max": "Retrain when an error is above it.",
    "triggers.metric_threshold.min": "Retrain when a score is below it.",
    "triggers.metric_trend": "Rate of change of the metric.",
    "triggers.metric_trend.windows": "Windows the trend is measured over.",
    "triggers.metric_trend.max_relative_increase": "Largest relative increase allowed.",
    "triggers.metric_trend.max_slope": "Largest slope allowed (metric units per window).",
    "triggers.metric_trend.noise": "Only beyond noise x the window-to-window spread (0 = off).",
    "triggers.metric_trend.min_change": "Only beyond this change.",
    "triggers.data_drift": "Evidently DataDriftPreset share of drifted columns.",
    "triggers.data_drift.max_drift_share": "Retrain above this share.",
    "triggers.estimated_metric": "With `label_delay`: the newest rows' metric estimated without labels.",
    "triggers.estimated_metric.max": "Retrain when the estimated error is above it.",
    "triggers.estimated_metric.min": "Retrain when the estimated score is below it.",
    "triggers.max_age": "Schedule-style freshness: retrain when Production is older.",
    "triggers.new_data": "Labelled rows newer than Production's training.",
    "triggers.new_data.min_rows": "Retrain once this many rows arrived.",
    "validation.max_metric": "Absolute gate: the candidate's error must be below it.",
    "validation.min_metric": "Absolute gate for a score: the candidate's must be above it.",
    "validation.min_improvement": "Must beat Production by more than this (0 = strictly better).",
    "validation.min_relative_improvement": "... and by this fraction of Production's metric (0.02 = 2%).",
    "validation.max_ratio_to_naive": "Error at most this times a naive baseline's (seasonal naive or last value) "
                                     "on the same holdout rows (1.0 = no worse); follows a growing target.",
    "validation.significance": "Optional paired bootstrap on per-row errors (mae, rmse, r2, accuracy).",
    "validation.significance.confidence": "The bootstrap's confidence, in [0.5, 1).",
    "validation.significance.n_boot": "Bootstrap resamples.",
    "validation.compare": "better, not_worse (rejected only when worse beyond noise) or non_inferior (promoted only "
                          "when shown within the margin): see [The policy file](policy.md), Beyond noise.",
    "validation.margin": "not_worse / non_inferior: a fraction of Production's mean per-row loss (0.02 = 2%).",
    "validation.challenger": "Optional: a candidate whose comparison is inconclusive (rejected by it alone, the "
                             "paired CI containing 0) waits as the `challenger` and is scored beside Production "
                             "per window: see [The policy file](policy.md), The challenger.",
    "validation.challenger.windows": "The rounds (labelled `monitoring.window`s) it plays at most.",
    "validation.challenger.wins": "The rounds it must win (a lower error on the same rows) to be promoted.",
    "validation.checks": "Gate checks of installed packages, by name (see [Architecture](architecture.md)).",
    "validation.require_approval": "A candidate that passes waits in Staging for a person "
                                   "(see [Approvals](approvals.md)).",
    "validation.approval_ttl": "A candidate nobody decided is archived as expired after this span of data time.",
    "registry.aliases": "The alias names.",
    "registry.aliases.production": "The alias of Production.",
    "registry.aliases.staging": "The alias of Staging.",
    "registry.use_stages": "`false` = aliases only (MLflow without stages).",
    "registry.lease_ttl": "A crashed cycle's lease expires after this (default 5m; at once when its holder is provably gone on this host).",
    "notify[].url": "The webhook's URL (a Slack incoming webhook, Mattermost, any receiver).",
    "notify[].url_env": "An environment variable holding the URL: kept out of the repository.",
    "notify[].url_file": "A file holding the URL, relative to the policy.",
    "notify[].format": "`slack`: `{\"text\", \"blocks\"}` | `json`: the event and the cycle report.",
    "notify[].on": "The events it gets.",
    "notify[].secret": "Refused: a secret is never written in the policy.",
    "notify[].secret_env": "An environment variable holding the signing secret (at least 16 characters).",
    "notify[].secret_file": "A file holding the signing secret.",
    "notify[].timeout": "Seconds per request.",
}


def _section(where: str) -> str:
    """`notify[2]` -> `notify[]`, `monitoring.drift.columns.temp` -> `...columns.<column>`."""
    where = re.sub(r"^notify\[\d+\]", "notify[]", where)
    return re.sub(r"^(monitoring\.drift\.columns)\.[^.]+", r"\1.<column>", where)


def reference() -> dict[str, dict[str, tuple[str, Any]]]:
    """section -> key -> (kind, default), every key `parse_config` reads, in the order it reads them."""
    from mlflow_retrain.policy.parse import parse_config
    from mlflow_retrain.policy.section import recording_reads

    with recording_reads() as reads:
        parse_config(FULL_POLICY, "docs/gen_policy.py")
    sections: dict[str, dict[str, tuple[str, Any]]] = {}
    for where, key, kind, default in reads:
        section = _section(where)
        key = "<column>" if section == "monitoring.drift.columns" else key
        sections.setdefault(section, {}).setdefault(key, (kind, default))
    return sections


def _full(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def _default(value: Any) -> str:
    if value is None or value == [] or value == {}:
        return ""
    if isinstance(value, timedelta):
        days, seconds = value.days, value.seconds
        return f"`{days}d`" if not seconds else f"`{int(value.total_seconds() // 60)}m`"
    if value == "required":
        return "required"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


# defaults that depend on another key, said in words
SAID_DEFAULTS = {"experiment": "the `model_name`", "monitoring.metric": "`mae`, or `accuracy` for classification",
                 "training.estimator": "`sklearn.ensemble.HistGradientBoostingRegressor` (`...Classifier` for "
                                       "classification)"}


def _row(section: str, key: str, kind: str, default: Any) -> str:
    """One table row; a `|` inside a cell is escaped so it does not split the cell."""
    name = _full(section, key)
    cells = [f"`{key}`", kind, SAID_DEFAULTS.get(name, _default(default)), DESCRIPTIONS[name]]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render() -> str:
    """The reference as Markdown: one table per section."""
    sections = reference()
    keys = {_full(s, k) for s, found in sections.items() for k in found}
    if missing := sorted(keys - set(DESCRIPTIONS)):
        raise ValueError(f"docs/gen_policy.py: no description for policy key(s) {', '.join(missing)}")
    if stale := sorted(set(DESCRIPTIONS) - keys):
        raise ValueError(f"docs/gen_policy.py: described key(s) the parser does not read: {', '.join(stale)}")
    out = []
    for section, found in sections.items():
        out += [f"### `{section or 'top level'}`", "", "| key | type | default | what it does |",
                "| --- | --- | --- | --- |"]
        out += [_row(section, k, kind, default) for k, (kind, default) in found.items()]
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """MkDocs hook: put the reference where the page holds the marker."""
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown
