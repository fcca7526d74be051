"""The policy file (`retrain.yaml`) as a typed object: the dataclasses every other module takes.

Every other module takes these, never raw dicts, so a typo in the file is caught once, when it is
read (`load.load_config`, `parse.parse_config`), with a message that names the key and the file,
before anything touches the registry.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

from mlflow_retrain.measure.columns import DriftConfig
from mlflow_retrain.measure.names import higher_is_better

if TYPE_CHECKING:
    import pandas as pd

    from mlflow_retrain.decide.challenge import ChallengerRule
    from mlflow_retrain.decide.gate import Significance


@dataclass(frozen=True)
class DataConfig:
    """The columns as declared in the policy file.

    `features=None` means every column but the timestamp, the target and `exclude`;
    `categorical=None` means the feature columns whose dtype holds labels (text, category). A list is
    taken as written. Both are resolved against the data when it is read (`LabelledData.spec`),
    because only the data knows its columns and dtypes.

    `drift` is the policy's `monitoring.drift`, kept with the columns because every drift measure
    (monitor, backtest, cycle, Evidently's report) is handed this resolved spec.

    `duplicates` is what happens to rows that repeat another exactly and to rows that differ from
    another only in the target (label noise a classifier learns as a probability): `keep` them all,
    `drop` the exact repeats, or `refuse` data holding either (`data.check_duplicates`).
    """

    path: str
    timestamp: str
    target: str
    features: tuple[str, ...] | None = None
    categorical: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    drift: DriftConfig = DriftConfig()
    duplicates: str = "keep"


# What the controller tells a training entry point about data time, and the parameter name each
# goes by unless `training.project.contract` renames it (or turns it off with an empty name).
CONTRACT = ("as_of", "train_start", "train_end", "holdout_start", "holdout_end", "cycle_run_id", "data_path")
ENV_MANAGERS = ("local", "virtualenv", "conda", "uv")
DUPLICATES = ("keep", "drop", "refuse")


@dataclass(frozen=True)
class ProjectConfig:
    """A user's own MLproject whose entry point makes the candidate (`training.project`)."""

    uri: str
    entry_point: str = "train"
    parameters: Mapping[str, Any] = field(default_factory=dict)
    env_manager: str = "local"
    backend: str = "local"  # local | databricks | kubernetes | an installed MLflow project backend plugin
    backend_config: str | None = None  # a .json file, as written (resolved against the policy's folder)
    version: str | None = None  # a git commit or branch of a git URI: the training code pinned
    contract: Mapping[str, str] = field(default_factory=lambda: {name: name for name in CONTRACT})

    @property
    def is_git(self) -> bool:
        return self.uri.startswith(("git+", "git@", "https://", "http://", "ssh://", "file://"))


@dataclass(frozen=True)
class TrainingConfig:
    """How a candidate is made: the built-in trainer (`estimator`) or the user's `project`.

    `estimator` is a dotted class (wrapped in a one-hot pipeline for categorical columns) or a
    factory `package.module:function` whose estimator or Pipeline gets the raw feature columns.
    """

    estimator: str = "sklearn.ensemble.HistGradientBoostingRegressor"
    params: Mapping[str, Any] = field(default_factory=dict)
    window: timedelta = timedelta(days=180)
    holdout: timedelta = timedelta(days=14)
    seed: int = 0
    pass_timestamp: bool = False
    project: ProjectConfig | None = None
    refit_on_pass: bool = False  # a candidate that passes is fitted again through as_of, holdout included

    @property
    def is_factory(self) -> bool:
        return ":" in self.estimator


@dataclass(frozen=True)
class MonitoringConfig:
    window: timedelta = timedelta(days=1)
    metric: str = "mae"
    max_data_gap: timedelta | None = None
    max_latency_ms: float | None = None
    # Evidently's HTML reports on a cycle's latest window: `on_change` only when a trigger fired (the
    # cycle then trains and compares), `always`, or `never`. The window scores and the triggers are
    # logged every cycle; the drift share when a trigger needs it, under `always`, or when the cycle
    # retrains, so a no-op cycle of the default policy reads no drift reference and imports no
    # Evidently (issue 15)
    reports: str = "on_change"
    # labels arrive this long after the features: a cycle at `as_of` scores, trains and validates on
    # labels up to `as_of - label_delay` only, while drift reads the features up to `as_of`
    label_delay: timedelta = timedelta(0)

    def labelled(self, as_of: pd.Timestamp) -> pd.Timestamp:
        """The newest data time whose labels a cycle at `as_of` has."""
        return as_of - self.label_delay


REPORT_POLICIES = ("on_change", "always", "never")


@dataclass(frozen=True)
class Debounce:
    k: int = 1
    n: int = 1


# keys under `triggers:` that are not triggers but apply to them all
TRIGGER_SETTINGS = ("cooldown", "debounce")


@dataclass(frozen=True)
class TriggersConfig:
    """The configured triggers (`decide.triggers.Trigger` instances, kept in their rank order) and the
    settings that apply to them all. `config.triggers.<name>` is that trigger's options (a mapping
    key's trigger, a span key's span), None when an installed trigger is not configured."""

    configured: tuple[Any, ...] = ()
    cooldown: timedelta | None = None
    debounce: Debounce | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "configured", tuple(sorted(self.configured, key=lambda t: (t.rank, t.name))))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in {f.name for f in dataclasses.fields(TriggersConfig)}:
            raise AttributeError(name)
        for trigger in self.configured:
            if trigger.name == name:
                return trigger.options
        from mlflow_retrain.decide.plugins import TRIGGERS, installed

        if name in installed(TRIGGERS):
            return None
        raise AttributeError(f"no trigger {name!r} is installed")

    def needs(self, what: str) -> bool:
        """Whether a configured trigger needs `what` observed (e.g. "drift")."""
        return any(what in t.needs for t in self.configured)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {t.name: t.to_dict() for t in self.configured}
        out["cooldown"] = None if self.cooldown is None else self.cooldown.total_seconds()
        out["debounce"] = None if self.debounce is None else dataclasses.asdict(self.debounce)
        return out


@dataclass(frozen=True)
class ValidationConfig:
    max_metric: float | None = None
    min_metric: float | None = None
    min_improvement: float = 0.0
    min_relative_improvement: float = 0.0  # a fraction of Production's metric: 0.02 = beat it by 2%
    max_ratio_to_naive: float | None = None  # candidate error <= this x the naive baseline's on the holdout
    significance: Significance | None = None
    compare: str = "better"  # or not_worse | non_inferior: against Production beyond noise (`decide.gate.noise_check`)
    margin: float = 0.02  # ... a fraction of Production's mean per-row loss
    checks: tuple[Any, ...] = ()  # gate checks from plugins (`decide.gate.GateCheck`), by name in the file
    require_approval: bool = False  # a candidate that passes waits in Staging for a person (`decide.approval`)
    approval_ttl: timedelta | None = None  # then archived as expired, counted in data time; None = waits
    challenger: ChallengerRule | None = None  #: an inconclusive candidate waits beside Production


@dataclass(frozen=True)
class RegistryConfig:
    production_alias: str = "production"
    staging_alias: str = "staging"
    use_stages: bool = True
    lease_ttl: timedelta = timedelta(minutes=5)  # renewed every third of it: short costs nothing


NOTIFY_FORMATS = ("slack", "json")
# what a notification can be sent on; a target's `on:` picks some (default: all)
NOTIFY_EVENTS = ("promoted", "rejected", "awaiting_approval", "challenger", "downtime", "failed")
NOTIFY_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class NotifyTarget:
    """One webhook to tell people (`notify.py`). The URL may itself be a secret (Slack puts its token
    in the path), so it is never in the repr; `label` (scheme and host) is what logs show. The
    signing secret is only *named* here (an environment variable or a file), read when sending."""

    url: str = field(repr=False)
    format: str = "json"
    events: tuple[str, ...] = NOTIFY_EVENTS
    secret_env: str | None = None
    secret_file: Path | None = None
    timeout: float = 5.0  # seconds per request; a cycle's whole notification time is bounded too

    @property
    def label(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''} ({self.format})"

    def secret(self) -> str | None:
        """The signing secret, read now (a rotated file or variable is picked up on the next send)."""
        if self.secret_env:
            return os.environ.get(self.secret_env) or None
        if self.secret_file:
            try:
                return self.secret_file.read_text().strip() or None
            except OSError:
                return None
        return None


@dataclass(frozen=True)
class Config:
    model_name: str
    experiment: str
    task: str
    data: DataConfig
    training: TrainingConfig
    monitoring: MonitoringConfig
    triggers: TriggersConfig
    validation: ValidationConfig
    registry: RegistryConfig
    source: Path | None = None
    tracking_uri: str | None = None  # the policy's own store (`store.py`); MLFLOW_TRACKING_URI wins
    notify: tuple[NotifyTarget, ...] = ()  # webhooks told about promotions, rejections, downtime, failures
    ui_url: str | None = None  # the MLflow UI people open (links in messages); default: an http(s) tracking URI

    @property
    def metric(self) -> str:
        return self.monitoring.metric

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.monitoring.metric)

    @property
    def gate_threshold(self) -> float | None:
        """The absolute gate in the metric's own direction (max for errors, min for scores)."""
        return self.validation.min_metric if self.higher_is_better else self.validation.max_metric

    @property
    def threshold_limit(self) -> float | None:
        t = self.triggers.metric_threshold
        if t is None:
            return None
        return t.min if self.higher_is_better else t.max

    def with_label_delay(self, delay: timedelta) -> Config:
        """The same policy with labels that arrive `delay` after the features (0: at once): what
        `backtest --label-delay` replays, and its comparison without the delay."""
        return dataclasses.replace(self, monitoring=dataclasses.replace(self.monitoring, label_delay=delay))

    def data_path(self) -> Path:
        """Relative data paths resolve against the policy file, so CI can run from anywhere."""
        path = Path(self.data.path)
        if not path.is_absolute() and self.source is not None:
            path = self.source.parent / path
        return path

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for logging as a run artifact (spans as seconds)."""

        def plain(value: Any) -> Any:
            if isinstance(value, timedelta):
                return value.total_seconds()
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            if isinstance(value, Mapping):
                return {k: plain(v) for k, v in value.items()}
            return value

        out = plain(dataclasses.asdict(dataclasses.replace(self, triggers=TriggersConfig())))
        out["triggers"] = plain(self.triggers.to_dict())
        return out
