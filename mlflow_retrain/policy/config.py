"""The policy file (`retrain.yaml`) as a typed, validated object.

Every other module takes these dataclasses, never raw dicts, so a typo in the file is caught once,
here, with a message that names the key and the file, before anything touches the registry.
"""

from __future__ import annotations

import dataclasses
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping
from urllib.parse import urlsplit

import yaml

from mlflow_retrain.base.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

REGRESSION_METRICS = ("mae", "rmse", "r2")
CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc")
LOWER_IS_BETTER = frozenset({"mae", "rmse"})

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|h|d|w)\s*$")
# MLflow refuses '/' and ':' in a registered model's name; a quote or a backslash breaks the filter
# strings the registry is searched with, '@' the `models:/name@alias` URIs, control characters the logs.
_NAME_UNSAFE = re.compile(r"[/:'\"\\@\x00-\x1f\x7f]")
# MLflow's own rule for aliases (letters, digits, _ and -), less its reserved names
_ALIAS = re.compile(r"^[\w-]+$")
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_span(text: Any, key: str = "span") -> timedelta:
    """Parse a span such as `30d`, `12h`, `2w`, `90m` (the policy file's only duration syntax)."""
    match = _SPAN.match(str(text))
    if not match:
        raise ConfigError(f"{key}: {text!r} is not a span; write a number and a unit m/h/d/w, e.g. 14d")
    span = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    if span <= timedelta(0):
        raise ConfigError(f"{key}: span must be positive, got {text!r}")
    return span


def check_model_name(name: str, key: str = "model_name") -> str:
    """A registered model name MLflow accepts and the registry's filter strings and URIs can carry."""
    if not name.strip() or name != name.strip():
        raise ConfigError(f"{key} {name!r} must be a name without leading or trailing spaces")
    if bad := _NAME_UNSAFE.search(name):
        raise ConfigError(f"{key} {name!r} contains {bad.group()!r}; a registered model name cannot hold "
                          "quotes, backslashes, '/', ':', '@' or control characters")
    return name


# MLflow's version columns are SQL INTEGERs: 32 bits in PostgreSQL and MySQL; a larger number overflows
# the store's query (SQLite's 64 bits too, with a traceback) instead of finding no version
MAX_VERSION = 2**31 - 1


def check_version(text: Any, key: str = "") -> str:
    """A registered model's version as a store can hold it: ASCII digits, 1 to MAX_VERSION."""
    value = str(text).strip()
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_VERSION:
        raise ConfigError(f"{key} {value[:40]!r} is not a version number (a whole number from 1 to {MAX_VERSION})"
                          .lstrip())
    return str(int(value))


def higher_is_better(metric: str) -> bool:
    """Error metrics fall as the model improves; scores rise."""
    return metric not in LOWER_IS_BETTER


# Evidently's stattest names a column may be given (`monitoring.drift.columns.<col>.method`); the
# p-value tests drift when the p-value is below the threshold, the distances when at or above it
P_VALUE_METHODS = ("ks", "chisquare", "z")
DRIFT_METHODS = (*P_VALUE_METHODS, "wasserstein", "jensenshannon")
NUMERIC_METHODS = ("ks", "wasserstein")  # Evidently refuses them on labels
LABEL_METHODS = ("chisquare", "z")  # ... and these on numbers


@dataclass(frozen=True)
class ColumnDriftRule:
    """`monitoring.drift.columns.<column>`: the test and/or threshold replacing Evidently's default choice."""

    column: str
    method: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class DriftConfig:
    """`monitoring.drift`: which features drift is measured on, and how.

    `exclude` leaves features out of every drift number (trigger, monitor, dashboard, backtest, the
    cycle's report): a calendar column (hour, weekday, a working-day flag) differs between a short
    window and a long training window by construction, so it would "drift" in every window.
    """

    exclude: tuple[str, ...] = ()
    columns: tuple[ColumnDriftRule, ...] = ()

    def rule(self, column: str) -> ColumnDriftRule | None:
        return next((r for r in self.columns if r.column == column), None)

    def measured(self, features: tuple[str, ...] | list[str]) -> list[str]:
        """The features drift is measured on, in their order."""
        return [c for c in features if c not in self.exclude]

    def check(self, features: tuple[str, ...] | list[str], categorical: tuple[str, ...] | list[str]) -> None:
        """Refuse what the policy file alone could not show: a column that is not a feature (the data
        resolves the features when `data.features` is left out) and a method that does not fit its
        column's kind (true/false columns are labels, `reports.for_evidently`)."""
        named = [*self.exclude, *(r.column for r in self.columns)]
        if unknown := [c for c in dict.fromkeys(named) if c not in features]:
            raise ConfigError(f"monitoring.drift names {unknown}, which are not features "
                              f"(features: {', '.join(map(str, features))})")
        if not self.measured(features):
            raise ConfigError(ALL_EXCLUDED)
        for rule in self.columns:
            if wrong := unfit_method(rule, rule.column in categorical):
                raise ConfigError(f"monitoring.drift.columns.{rule.column}.method {wrong}")


ALL_EXCLUDED = ("monitoring.drift.exclude leaves out every feature, so drift would measure nothing; "
                "remove the data_drift trigger instead")


def unfit_method(rule: ColumnDriftRule, labels: bool) -> str | None:
    """Why `rule.method` cannot test this kind of column (Evidently refuses it), or None if it can."""
    if rule.method not in (NUMERIC_METHODS if labels else LABEL_METHODS):
        return None
    kind, fits = ("labels", LABEL_METHODS) if labels else ("numbers", NUMERIC_METHODS)
    return (f"{rule.method} does not test {kind} ({rule.column} holds {kind}); use one of "
            f"{', '.join((*fits, 'jensenshannon'))}")


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
class Significance:
    confidence: float = 0.95
    n_boot: int = 2000


@dataclass(frozen=True)
class ValidationConfig:
    max_metric: float | None = None
    min_metric: float | None = None
    min_improvement: float = 0.0
    min_relative_improvement: float = 0.0  # a fraction of Production's metric: 0.02 = beat it by 2%
    significance: Significance | None = None
    checks: tuple[Any, ...] = ()  # gate checks from plugins (`decide.gate.GateCheck`), by name in the file
    require_approval: bool = False  # a candidate that passes waits in Staging for a person (`decide.approval`)
    approval_ttl: timedelta | None = None  # then archived as expired, counted in data time; None = waits


@dataclass(frozen=True)
class RegistryConfig:
    production_alias: str = "production"
    staging_alias: str = "staging"
    use_stages: bool = True
    lease_ttl: timedelta = timedelta(minutes=5)  # renewed every third of it: short costs nothing


NOTIFY_FORMATS = ("slack", "json")
# what a notification can be sent on; a target's `on:` picks some (default: all)
NOTIFY_EVENTS = ("promoted", "rejected", "awaiting_approval", "downtime", "failed")
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


# Keys whose values may hold a credential (a Slack webhook's path is its token; a URI may carry a
# password): an error about one names the key and the value's type, never the value.
SECRET_KEYS = frozenset({"notify", "url", "tracking_uri", "uri", "secret", "ui_url"})
_WORD = re.compile(r"[a-z_]{1,24}")
MIN_SECRET = 16  # characters: a short signing secret is guessable offline from one signed request


def _type(value: Any) -> str:
    """A value's kind in words ("a mapping"), for messages that must not show the value."""
    if isinstance(value, bool) or value is None:  # `_NAMES` words bool as what is expected, not what was given
        return "a boolean" if value is not None else "nothing"
    return _NAMES.get(type(value), "a mapping" if isinstance(value, Mapping) else f"a {type(value).__name__}")


# (section, key, kind, default) of every key a parse reads, while `recording_reads` is open: the
# documentation's policy reference is derived from the parser itself, so the two cannot drift apart
_READS: list[tuple[str, str, str, Any]] | None = None


@contextmanager
def recording_reads() -> Iterator[list[tuple[str, str, str, Any]]]:
    """Record every key the parses inside the block read (docs/gen_policy.py); parsing is unchanged."""
    global _READS
    _READS = reads = []
    try:
        yield reads
    finally:
        _READS = None


class _Section:
    """Reads one mapping of the file, remembering where it is for error messages. A `secret` section
    (a notify target) never repeats a value or an unknown key in them: either may be the token."""

    def __init__(self, raw: Any, where: str, origin: str, secret: bool = False):
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{origin}: {where or 'the file'} must be a mapping, got {type(raw).__name__}")
        self.raw = dict(raw)
        self.where = where
        self.origin = origin
        self.secret = secret
        self.used: set[str] = set()

    def shown(self, name: str, value: Any) -> str:
        """The value as an error message may show it: its type only where it may be a secret (in a
        notify target, any value but a short lowercase word such as a mistyped format or event)."""
        if name in SECRET_KEYS or (self.secret and not (isinstance(value, str) and _WORD.fullmatch(value))):
            return _type(value)
        return repr(value)

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.origin}: {self.key(name)} {message}")

    def has(self, name: str) -> bool:
        return name in self.raw and self.raw[name] is not None

    def read(self, name: str, kind: str, default: Any = None) -> None:
        """Mark `name` as known here (and record it while `recording_reads` is open)."""
        self.used.add(name)
        if _READS is not None:
            _READS.append((self.where, name, kind, default))

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self.read(name, _names(kind if isinstance(kind, tuple) else (kind,)), "required" if required else default)
        if not self.has(name):
            if required:
                raise self.fail(name, "is required")
            return default
        value = self.raw[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise self.fail(name, f"must be {_names(kinds)}, got {self.shown(name, value)}")
        return value

    def span(self, name: str, default: timedelta | None = None) -> timedelta | None:
        self.read(name, "a span", default)
        if not self.has(name):
            return default
        try:
            return parse_span(self.raw[name], self.key(name))
        except ConfigError as exc:
            raise ConfigError(f"{self.origin}: {exc}") from None

    def strings(self, name: str, required: bool = False) -> tuple[str, ...]:
        self.read(name, "a list of column names", "required" if required else [])
        value = self.get(name, list, default=[], required=required)
        if not all(isinstance(v, str) for v in value):
            raise self.fail(name, f"must be a list of column names, got {value!r}")
        return tuple(value)

    def sub(self, name: str) -> "_Section | None":
        self.read(name, "a section")
        if name not in self.raw:
            return None
        return _Section(self.raw[name], self.key(name), self.origin)

    def positive(self, name: str, value: float | None) -> None:
        if value is not None and value <= 0:
            raise self.fail(name, f"must be positive, got {value}")

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.used, key=str)
        if unknown:
            known = ", ".join(sorted(self.used))
            if self.secret:
                raise ConfigError(f"{self.origin}: {self.where} has {len(unknown)} key(s) that are not known here "
                                  f"(known: {known}); not repeated, as a misplaced key may hold the URL")
            raise self.fail(unknown[0], f"is not a known key (known here: {known})")


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
          dict: "a mapping"}


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(_NAMES.get(k, k.__name__) for k in kinds)


def _data(s: _Section) -> DataConfig:
    features, categorical = s.strings("features"), s.strings("categorical")
    cfg = DataConfig(
        path=s.get("path", str, required=True),
        timestamp=s.get("timestamp", str, required=True),
        target=s.get("target", str, required=True),
        features=features if s.has("features") else None,
        categorical=categorical if s.has("categorical") else None,
        exclude=s.strings("exclude"),
        duplicates=s.get("duplicates", str, "keep"),
    )
    s.done()
    if cfg.duplicates not in DUPLICATES:
        raise s.fail("duplicates", f"must be one of {', '.join(DUPLICATES)}, got {cfg.duplicates!r}")
    if cfg.target == cfg.timestamp:
        raise s.fail("target", f"must differ from data.timestamp, both are {cfg.target!r}")
    special = {cfg.target, cfg.timestamp}
    if clash := special & set(cfg.exclude):
        raise s.fail("exclude", f"must not name the target or timestamp column {sorted(clash)} (never features)")
    if cfg.features is None:
        if wrong := [c for c in categorical if c in special or c in cfg.exclude]:
            raise s.fail("categorical", f"names {wrong} which are not features (the target, the timestamp or "
                                        "in data.exclude)")
        return cfg
    if not cfg.features:
        raise s.fail("features", "must list at least one column, or be left out to use every other column")
    if extra := [c for c in categorical if c not in cfg.features]:
        raise s.fail("categorical", f"names {extra} which are not in data.features")
    if clash := special & set(cfg.features):
        raise s.fail("features", f"must not contain the target or timestamp column {sorted(clash)}")
    if both := [c for c in cfg.exclude if c in cfg.features]:
        raise s.fail("exclude", f"names {both} which data.features lists; drop them from one of the two")
    return cfg


_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_CLASS = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+$")


def _project(s: _Section, source: Path | None) -> ProjectConfig:
    d = ProjectConfig(uri="")
    contract = dict(d.contract)
    if (names := s.sub("contract")) is not None:
        for name in CONTRACT:
            contract[name] = names.get(name, str, contract[name])
        names.done()
    cfg = ProjectConfig(
        uri=s.get("uri", str, required=True),
        entry_point=s.get("entry_point", str, d.entry_point),
        parameters=s.get("parameters", dict, {}),
        env_manager=s.get("env_manager", str, d.env_manager),
        backend=s.get("backend", str, d.backend),
        backend_config=s.get("backend_config", str),
        version=s.get("version", str),
        contract=contract,
    )
    s.done()
    if cfg.env_manager not in ENV_MANAGERS:
        raise s.fail("env_manager", f"must be one of {', '.join(ENV_MANAGERS)}, got {cfg.env_manager!r}")
    _backend(s, cfg, source)
    clash = sorted(set(cfg.parameters) & {v for v in contract.values() if v})
    if clash:
        raise s.fail("parameters", f"set {clash}, which the controller passes itself (training.project.contract)")
    return cfg


def _backend(s: _Section, cfg: ProjectConfig, source: Path | None) -> None:
    """`training.project.backend` and its backend config, as far as the files tell (`backends.py`)."""
    from mlflow_retrain.adapters import backends

    if why := backends.unknown(cfg.backend, () if cfg.backend in backends.BUILTIN else backends.plugins()):
        raise s.fail("backend", why)
    if cfg.backend in backends.REMOTE and not cfg.backend_config:
        raise s.fail("backend_config", f"is required for backend {cfg.backend} (a .json file, as for mlflow run)")
    if not cfg.backend_config:
        return
    base = source.parent if source is not None else None
    try:
        spec = backends.read(backends.resolve(cfg.backend_config, base))
    except ValueError as exc:
        raise s.fail("backend_config", str(exc)) from None
    if why := backends.problem(cfg.backend, spec, base):
        raise s.fail("backend_config", f"{cfg.backend_config} {why}")


def _training(s: _Section, task: str, source: Path | None = None) -> TrainingConfig:
    d = TrainingConfig()
    default = "sklearn.ensemble.HistGradientBoostingClassifier" if task == "classification" else d.estimator
    estimator = s.get("estimator", str, default)
    if not (_FACTORY.match(estimator) or _CLASS.match(estimator)):
        raise s.fail("estimator", f"must be a dotted class such as {d.estimator} or a factory "
                                  f"package.module:function, got {estimator!r}")
    project = None
    if (p := s.sub("project")) is not None:
        project = _project(p, source)
    cfg = TrainingConfig(
        estimator=estimator,
        params=s.get("params", dict, {}),
        window=s.span("window", d.window),
        holdout=s.span("holdout", d.holdout),
        seed=s.get("seed", int, d.seed),
        pass_timestamp=s.get("pass_timestamp", bool, d.pass_timestamp),
        project=project,
    )
    if project is not None and s.has("estimator"):
        raise s.fail("estimator", "and training.project are exclusive: the project's entry point makes the model")
    s.done()
    return cfg


def _drift_rule(s: _Section, column: str) -> ColumnDriftRule:
    rule = ColumnDriftRule(column, s.get("method", str), s.get("threshold", float))
    s.done()
    if rule.method is None and rule.threshold is None:
        raise s.fail("method", "and/or threshold must be set")
    if rule.method is not None and rule.method not in DRIFT_METHODS:
        raise s.fail("method", f"must be one of {', '.join(DRIFT_METHODS)} (Evidently's stattest names), "
                               f"got {rule.method!r}")
    if rule.threshold is not None and (why := _threshold_range(rule)):
        raise s.fail("threshold", f"must be {why}, got {rule.threshold}")
    return rule


def _threshold_range(rule: ColumnDriftRule) -> str | None:
    """Why the threshold is out of range for its method (None: in range). Without a method the test
    is Evidently's choice per window, a p-value or a distance, so only (0, 1) suits both."""
    value = rule.threshold
    if rule.method == "wasserstein":
        return None if value > 0 else "positive (a distance in standard deviations of the reference)"
    if rule.method == "jensenshannon":
        return None if 0 < value <= 1 else "in (0, 1] (a distance)"
    if 0 < value < 1:
        return None
    if rule.method is None:
        return "in (0, 1) without a method (Evidently picks a p-value test or a distance per column); set method"
    return "in (0, 1) (a p-value)"


def _drift(s: _Section, data: DataConfig) -> DriftConfig:
    """`monitoring.drift`, checked against the declared columns (the data checks the rest)."""
    exclude = s.strings("exclude")
    rules = ()
    if (columns := s.sub("columns")) is not None:
        rules = tuple(_drift_rule(columns.sub(name), str(name)) for name in columns.raw)
    s.done()
    cfg = DriftConfig(exclude, rules)
    not_features = {data.timestamp, data.target, *data.exclude}
    for key, names in (("exclude", exclude), ("columns", [r.column for r in rules])):
        wrong = [c for c in names if c in not_features or (data.features is not None and c not in data.features)]
        if wrong:
            raise s.fail(key, f"names {wrong}, which are not features (see data.features)")
    if clash := [r.column for r in rules if r.column in exclude]:
        raise s.fail("columns", f"sets {clash}, which monitoring.drift.exclude leaves out; drop one of the two")
    if data.features is not None and not cfg.measured(data.features):
        raise s.fail("exclude", ALL_EXCLUDED.removeprefix("monitoring.drift.exclude "))
    for rule in rules:
        if rule.column in (data.categorical or ()) and (wrong := unfit_method(rule, True)):
            raise ConfigError(f"{s.origin}: {s.key('columns')}.{rule.column}.method {wrong}")
    return cfg


def _monitoring(s: _Section, task: str, data: DataConfig) -> tuple[MonitoringConfig, DriftConfig]:
    d = MonitoringConfig()
    allowed = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
    metric = s.get("metric", str, allowed[0] if task == "classification" else d.metric)
    if metric not in allowed:
        raise s.fail("metric", f"must be one of {', '.join(allowed)} for task {task}, got {metric!r}")
    latency = s.get("max_latency_ms", float)
    s.positive("max_latency_ms", latency)
    reports = s.get("reports", str, d.reports)
    if reports not in REPORT_POLICIES:
        raise s.fail("reports", f"must be one of {', '.join(REPORT_POLICIES)}, got {reports!r}")
    cfg = MonitoringConfig(
        reports=reports,
        window=s.span("window", d.window),
        metric=metric,
        max_data_gap=s.span("max_data_gap"),
        max_latency_ms=latency,
        label_delay=s.span("label_delay", d.label_delay),
    )
    drift = _drift(d, data) if (d := s.sub("drift")) is not None else DriftConfig()
    s.done()
    return cfg, drift


def _triggers(s: _Section, task: str, metric: str) -> TriggersConfig:
    """Each key names an installed trigger whose class parses its own options; plus the settings."""
    from mlflow_retrain.decide import plugins
    from mlflow_retrain.decide.triggers import PolicyContext

    debounce = None
    if (t := s.sub("debounce")) is not None:
        debounce = Debounce(k=t.get("k", int, Debounce.k), n=t.get("n", int, Debounce.n))
        t.done()
        if not 1 <= debounce.k <= debounce.n:
            raise t.fail("k", f"must satisfy 1 <= k <= n, got k={debounce.k} n={debounce.n}")
    context = PolicyContext(task, metric)
    parsed = [plugins.lookup(plugins.TRIGGERS, name, s).parse(s, context)
              for name in s.raw if name not in TRIGGER_SETTINGS]
    cfg = TriggersConfig(configured=tuple(t for t in parsed if t is not None), cooldown=s.span("cooldown"),
                         debounce=debounce)
    s.done()
    return cfg


def _checks(s: _Section, task: str, metric: str) -> tuple[Any, ...]:
    """`validation.checks`: each key names an installed gate check whose class parses its options."""
    from mlflow_retrain.decide import plugins
    from mlflow_retrain.decide.triggers import PolicyContext

    context = PolicyContext(task, metric)
    parsed = [plugins.lookup(plugins.GATES, name, s).parse(s, context) for name in s.raw]
    s.done()
    return tuple(c for c in parsed if c is not None)


# The paired bootstrap resamples per-row losses; only these metrics are a monotone function of
# their mean on a fixed set of rows (f1 and roc_auc are not: they would need the metric recomputed).
PAIRED_METRICS = ("mae", "rmse", "r2", "accuracy")


def _validation(s: _Section, task: str, metric: str) -> ValidationConfig:
    significance = None
    if (t := s.sub("significance")) is not None:
        if metric not in PAIRED_METRICS:
            raise s.fail("significance", f"needs a metric with a per-row loss ({', '.join(PAIRED_METRICS)}); "
                                         f"monitoring.metric is {metric}: remove significance or change the metric")
        significance = Significance(confidence=t.get("confidence", float, Significance.confidence),
                                    n_boot=t.get("n_boot", int, Significance.n_boot))
        t.done()
        if not 0.5 <= significance.confidence < 1:
            raise t.fail("confidence", f"must be in [0.5, 1), got {significance.confidence}")
    cfg = ValidationConfig(
        max_metric=s.get("max_metric", float),
        min_metric=s.get("min_metric", float),
        min_improvement=s.get("min_improvement", float, ValidationConfig.min_improvement),
        min_relative_improvement=s.get("min_relative_improvement", float, ValidationConfig.min_relative_improvement),
        significance=significance,
        checks=_checks(c, task, metric) if (c := s.sub("checks")) is not None else (),
        require_approval=s.get("require_approval", bool, ValidationConfig.require_approval),
        approval_ttl=s.span("approval_ttl"),
    )
    s.done()
    if cfg.approval_ttl is not None and not cfg.require_approval:
        raise s.fail("approval_ttl", "needs require_approval: true (nothing waits for a person without it)")
    if cfg.min_improvement < 0:
        raise s.fail("min_improvement", f"must be >= 0, got {cfg.min_improvement}")
    if not 0 <= cfg.min_relative_improvement < 1:
        raise s.fail("min_relative_improvement",
                     f"must be a fraction in [0, 1), e.g. 0.02 for 2%, got {cfg.min_relative_improvement}")
    return cfg


def _registry(s: _Section) -> RegistryConfig:
    d = RegistryConfig()
    aliases = s.sub("aliases")
    production, staging = d.production_alias, d.staging_alias
    if aliases is not None:
        production = aliases.get("production", str, production)
        staging = aliases.get("staging", str, staging)
        aliases.done()
        if production == staging:
            raise aliases.fail("staging", "must differ from the production alias")
        for key, alias in (("production", production), ("staging", staging)):
            if not _ALIAS.match(alias) or _RESERVED_ALIAS.match(alias):
                raise aliases.fail(key, f"{alias!r} is not an alias MLflow accepts: letters, digits, _ and - only, "
                                        "and not 'latest' or v<number>")
    cfg = RegistryConfig(
        production_alias=production,
        staging_alias=staging,
        use_stages=s.get("use_stages", bool, d.use_stages),
        lease_ttl=s.span("lease_ttl", d.lease_ttl),
    )
    s.done()
    return cfg


def _notify(raw: Any, origin: str, source: Path | None) -> tuple[NotifyTarget, ...]:
    """`notify:` a list of webhooks. Every problem is found here, before a cycle runs: a URL that is
    not http(s), an unknown format or event, a secret written inline (it would sit in the repository),
    one whose variable or file is missing or too short to resist guessing. The URL may be the token,
    so it may come from a variable or a file too, and no message here ever repeats it."""
    targets = []
    for i, item in enumerate(raw):
        if isinstance(item, Mapping) and True in item:  # YAML 1.1 reads a bare `on:` key as true
            item = {("on" if k is True else k): v for k, v in item.items()}
        s = _Section(item, f"notify[{i}]", origin, secret=True)
        url = _notify_url(s, source)
        fmt = s.get("format", str, "json")
        if fmt not in NOTIFY_FORMATS:
            raise s.fail("format", f"must be one of {', '.join(NOTIFY_FORMATS)}, got {s.shown('format', fmt)}")
        events = tuple(s.get("on", list, list(NOTIFY_EVENTS)))
        unknown = [e for e in events if e not in NOTIFY_EVENTS]
        if unknown:
            raise s.fail("on", f"names unknown event {s.shown('on', unknown[0])}; events: {', '.join(NOTIFY_EVENTS)}")
        if not events:
            raise s.fail("on", f"is empty: leave it out for every event ({', '.join(NOTIFY_EVENTS)})")
        s.read("secret", "refused")
        if s.has("secret"):
            raise s.fail("secret", "must not be written in the policy: name an environment variable "
                                   "(secret_env: NAME) or a file (secret_file: PATH) that holds it")
        secret_env, secret_file = s.get("secret_env", str), s.get("secret_file", str)
        if secret_env and secret_file:
            raise s.fail("secret_env", "and secret_file are alternatives: give one")
        secret = _from_env(s, "secret_env") if secret_env else ""
        path = None
        if secret_file:
            path = _beside(secret_file, source)
            secret = _read_text(path)
            if not secret:
                raise s.fail("secret_file", "names a file that does not exist or is empty (a relative path is "
                                            "beside the policy; not repeated, as it may be the secret itself)")
        if secret and len(secret) < MIN_SECRET:
            name = "secret_env" if secret_env else "secret_file"
            raise s.fail(name, f"holds a secret shorter than {MIN_SECRET} characters: use a random one, e.g. "
                               "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        timeout = s.get("timeout", float, NotifyTarget.timeout)
        s.positive("timeout", timeout)
        s.done()
        targets.append(NotifyTarget(url=url, format=fmt, events=tuple(dict.fromkeys(events)),
                                    secret_env=secret_env, secret_file=path, timeout=timeout))
    return tuple(targets)


def _ui_url(s: _Section) -> str | None:
    """`ui_url:` the MLflow UI's address, without credentials (it is written into messages)."""
    url = s.get("ui_url", str)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in NOTIFY_SCHEMES or not parts.hostname or "@" in parts.netloc or parts.query:
        raise s.fail("ui_url", "must be an http:// or https:// URL with a host and no credentials or query, "
                               "e.g. https://mlflow.example.com")
    return url.rstrip("/")


def _beside(name: str, source: Path | None) -> Path:
    """A path from the policy: relative ones are beside the policy file."""
    path = Path(name).expanduser()
    return source.parent / path if not path.is_absolute() and source is not None else path


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _from_env(s: _Section, key: str) -> str:
    """The value of the variable `key` names. A value that is no variable name is likely the secret
    itself, written where its name belongs: refused without repeating it."""
    name = s.get(key, str)
    if not _ENV_NAME.fullmatch(name):
        raise s.fail(key, "must name an environment variable (letters, digits, _); what is written is not a name "
                          "and is not repeated, as it may be the secret itself")
    value = os.environ.get(name, "").strip()
    if not value:
        raise s.fail(key, f"names {name}, which is not set (or empty) in the environment")
    return value


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return ""


def _notify_url(s: _Section, source: Path | None) -> str:
    """A target's URL: written in the policy (`url`), or named (`url_env`, `url_file`) so the token
    stays out of the repository. Checked without ever being shown."""
    given = [key for key in ("url", "url_env", "url_file") if s.has(key)]
    for key in ("url", "url_env", "url_file"):
        s.read(key, "a string")
    if len(given) != 1:
        raise s.fail("url", "is required: give one of url, url_env (a variable holding it) or url_file (a file "
                            "holding it)" if not given else f"has alternatives: give one of {', '.join(given)}")
    key = given[0]
    name = s.get(key, str)
    if key == "url":
        url, origin = name, "url"
    elif key == "url_env":
        url, origin = _from_env(s, "url_env"), f"url_env ({name})"
    else:
        url, origin = _read_text(_beside(name, source)), "url_file"
        if not url:
            raise s.fail("url_file", "names a file that does not exist or is empty (a relative path is beside the "
                                     "policy; not repeated, as it may be the URL itself)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError(f"{s.origin}: {s.where}.{origin} is not a URL (not repeated: it may hold a token)") from None
    if parts.scheme not in NOTIFY_SCHEMES or not parts.hostname:
        raise ConfigError(f"{s.origin}: {s.where}.{origin} must be an http:// or https:// URL with a host")
    return url


def parse_config(raw: Any, origin: str = "<config>", source: Path | None = None) -> Config:
    """Validate a parsed policy file. `origin` names the file in every error message."""
    top = _Section(raw, "", origin)
    model_name = top.get("model_name", str, required=True)
    try:
        check_model_name(model_name)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    task = top.get("task", str, "regression")
    if task not in ("regression", "classification"):
        raise top.fail("task", f"must be regression or classification, got {task!r}")
    data = _data(top.sub("data") or _Section({}, "data", origin))
    monitoring, drift = _monitoring(top.sub("monitoring") or _Section({}, "monitoring", origin), task, data)
    data = dataclasses.replace(data, drift=drift)
    cfg = Config(
        model_name=model_name,
        experiment=top.get("experiment", str, model_name),
        task=task,
        data=data,
        training=_training(top.sub("training") or _Section({}, "training", origin), task, source),
        monitoring=monitoring,
        triggers=_triggers(top.sub("triggers") or _Section({}, "triggers", origin), task, monitoring.metric),
        validation=_validation(top.sub("validation") or _Section({}, "validation", origin), task,
                               monitoring.metric),
        registry=_registry(top.sub("registry") or _Section({}, "registry", origin)),
        source=source,
        tracking_uri=top.get("tracking_uri", str),
        ui_url=_ui_url(top),
        notify=_notify(top.get("notify", list, []), origin, source),
    )
    top.done()
    return cfg


class DuplicateKeyError(yaml.YAMLError):
    """A mapping of the policy file names one key twice (YAML itself keeps the last silently)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping: which one counts is a guess."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # keys merged in (`<<: *base`) may be overridden, as YAML intends
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                where = ".".join(map(str, [*self._path(node), key]))
                raise DuplicateKeyError(f"{where} is given twice (lines {seen[key]} and {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def _path(self, node: yaml.Node) -> list[Any]:
        """The keys leading to `node` from the document's root (for the error message)."""
        return self._parents.get(id(node), [])

    def construct_document(self, node: yaml.Node) -> Any:
        self._parents: dict[int, list[Any]] = {}
        self._walk(node, [])
        return super().construct_document(node)

    def _walk(self, node: yaml.Node, path: list[Any]) -> None:
        if id(node) in self._parents:  # an alias of a node already seen
            return
        self._parents[id(node)] = path
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    self._walk(value_node, [*path, key_node.value])
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, [*path, index])


def load_config(path: str | Path) -> Config:
    """Read and validate `retrain.yaml`; every problem is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: policy file not found; pass --config PATH (see docs/policy.md)")
    return parse_config(read_yaml(path), origin=str(path), source=path.resolve())


def read_yaml(path: Path) -> Any:
    """A policy file's YAML as plain data (a key given twice refused); the fleet reads its files with
    this too, so a policy means the same in a fleet as alone."""
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
