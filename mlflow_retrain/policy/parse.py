"""Validating a parsed policy file, section by section, into `config.Config`.

Each section's keys are read through `section.Section`; a trigger or a gate check an installed
package names parses its own key (`decide.triggers`, `decide.gate`). The decision core is imported
where it is used, not with this module: the command line reads policies, and starts, without it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_retrain.base.errors import ConfigError
from mlflow_retrain.measure.columns import ALL_EXCLUDED, DRIFT_METHODS, ColumnDriftRule, DriftConfig, unfit_method
from mlflow_retrain.measure.names import CLASSIFICATION_METRICS, REGRESSION_METRICS
from mlflow_retrain.policy import backends
from mlflow_retrain.policy.config import (CONTRACT, DUPLICATES, ENV_MANAGERS, REPORT_POLICIES, TRIGGER_SETTINGS, Config,
                                          DataConfig, Debounce, MonitoringConfig, ProjectConfig, RegistryConfig,
                                          TrainingConfig, TriggersConfig, ValidationConfig)
from mlflow_retrain.policy.notify import notify_targets, ui_url
from mlflow_retrain.policy.section import Section, check_model_name

if TYPE_CHECKING:
    from mlflow_retrain.decide.challenge import ChallengerRule

# MLflow's own rule for aliases (letters, digits, _ and -), less its reserved names
_ALIAS = re.compile(r"^[\w-]+$")
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)


def _data(s: Section) -> DataConfig:
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


def _project(s: Section, source: Path | None) -> ProjectConfig:
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


def _backend(s: Section, cfg: ProjectConfig, source: Path | None) -> None:
    """`training.project.backend` and its backend config, as far as the files tell (`backends.py`)."""
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


def _training(s: Section, task: str, source: Path | None = None) -> TrainingConfig:
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
        refit_on_pass=s.get("refit_on_pass", bool, d.refit_on_pass),
    )
    if project is not None and s.has("estimator"):
        raise s.fail("estimator", "and training.project are exclusive: the project's entry point makes the model")
    s.done()
    return cfg


def _drift_rule(s: Section, column: str) -> ColumnDriftRule:
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


def _drift(s: Section, data: DataConfig) -> DriftConfig:
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


def _monitoring(s: Section, task: str, data: DataConfig) -> tuple[MonitoringConfig, DriftConfig]:
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


def _triggers(s: Section, task: str, metric: str) -> TriggersConfig:
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


def _checks(s: Section, task: str, metric: str) -> tuple[Any, ...]:
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
NAIVE_METRICS = ("mae", "rmse")  # errors a naive baseline has on the same rows (`measure.naive`)


def _validation(s: Section, task: str, metric: str) -> ValidationConfig:
    from mlflow_retrain.decide.gate import Significance

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
        max_ratio_to_naive=s.get("max_ratio_to_naive", float),
        significance=significance,
        compare=s.get("compare", str, ValidationConfig.compare),
        margin=s.get("margin", float, ValidationConfig.margin),
        checks=_checks(c, task, metric) if (c := s.sub("checks")) is not None else (),
        require_approval=s.get("require_approval", bool, ValidationConfig.require_approval),
        approval_ttl=s.span("approval_ttl"),
        challenger=_challenger(c, metric) if (c := s.sub("challenger")) is not None else None,
    )
    s.done()
    if cfg.approval_ttl is not None and not cfg.require_approval:
        raise s.fail("approval_ttl", "needs require_approval: true (nothing waits for a person without it)")
    if cfg.max_ratio_to_naive is not None and metric not in NAIVE_METRICS:
        raise s.fail("max_ratio_to_naive", f"compares errors ({', '.join(NAIVE_METRICS)}); monitoring.metric is "
                                           f"{metric}: use min_metric instead")
    s.positive("max_ratio_to_naive", cfg.max_ratio_to_naive)
    if cfg.min_improvement < 0:
        raise s.fail("min_improvement", f"must be >= 0, got {cfg.min_improvement}")
    if not 0 <= cfg.min_relative_improvement < 1:
        raise s.fail("min_relative_improvement",
                     f"must be a fraction in [0, 1), e.g. 0.02 for 2%, got {cfg.min_relative_improvement}")
    _comparison(s, cfg, metric)
    if cfg.challenger is not None and cfg.require_approval:
        raise s.fail("challenger", "and require_approval both hold a candidate in Staging: use one")
    if cfg.challenger is not None and cfg.compare == "not_worse":
        raise s.fail("challenger", "never applies with compare: not_worse (it rejects only a candidate worse beyond "
                                   "noise, which is conclusive): use compare: better or non_inferior")
    return cfg


def _challenger(s: Section, metric: str) -> "ChallengerRule":
    """`validation.challenger: {windows, wins}`: an inconclusive candidate waits beside Production."""
    from mlflow_retrain.decide.challenge import ChallengerRule

    rule = ChallengerRule(windows=s.get("windows", int, ChallengerRule.windows),
                          wins=s.get("wins", int, ChallengerRule.wins))
    s.done()
    if metric not in PAIRED_METRICS:
        raise s.fail("windows", f"a challenger is placed on a paired comparison ({', '.join(PAIRED_METRICS)}); "
                                f"monitoring.metric is {metric}")
    if not 1 <= rule.wins <= rule.windows:
        raise s.fail("wins", f"must be between 1 and windows ({rule.windows}), got {rule.wins}")
    return rule


def _comparison(s: Section, cfg: ValidationConfig, metric: str) -> None:
    """`validation.compare` and `margin`: a comparison beyond noise reads per-row losses and replaces
    the relative gate."""
    from mlflow_retrain.decide.gate import BETTER, COMPARISONS

    if cfg.compare not in COMPARISONS:
        raise s.fail("compare", f"must be one of {', '.join(COMPARISONS)}, got {cfg.compare!r}")
    if not 0 <= cfg.margin < 1:
        raise s.fail("margin", f"must be a fraction in [0, 1), e.g. 0.02 for 2%, got {cfg.margin}")
    if cfg.compare == BETTER:
        if "margin" in s.raw:
            raise s.fail("margin", "applies to compare: not_worse or non_inferior only; set one or remove margin")
        return
    if metric not in PAIRED_METRICS:
        raise s.fail("compare", f"{cfg.compare} needs a metric with a per-row loss ({', '.join(PAIRED_METRICS)}); "
                                f"monitoring.metric is {metric}: use compare: better or change the metric")
    for key in ("min_improvement", "min_relative_improvement"):
        if getattr(cfg, key):  # 0, the bundled policy's value, asks for nothing: switching needs no edit
            raise s.fail(key, f"applies to compare: better only; {cfg.compare} uses margin")


def _registry(s: Section) -> RegistryConfig:
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


def parse_config(raw: Any, origin: str = "<config>", source: Path | None = None) -> Config:
    """Validate a parsed policy file. `origin` names the file in every error message."""
    top = Section(raw, "", origin)
    model_name = top.get("model_name", str, required=True)
    try:
        check_model_name(model_name)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    task = top.get("task", str, "regression")
    if task not in ("regression", "classification"):
        raise top.fail("task", f"must be regression or classification, got {task!r}")
    data = _data(top.sub("data") or Section({}, "data", origin))
    monitoring, drift = _monitoring(top.sub("monitoring") or Section({}, "monitoring", origin), task, data)
    data = dataclasses.replace(data, drift=drift)
    cfg = Config(
        model_name=model_name,
        experiment=top.get("experiment", str, model_name),
        task=task,
        data=data,
        training=_training(top.sub("training") or Section({}, "training", origin), task, source),
        monitoring=monitoring,
        triggers=_triggers(top.sub("triggers") or Section({}, "triggers", origin), task, monitoring.metric),
        validation=_validation(top.sub("validation") or Section({}, "validation", origin), task,
                               monitoring.metric),
        registry=_registry(top.sub("registry") or Section({}, "registry", origin)),
        source=source,
        tracking_uri=top.get("tracking_uri", str),
        ui_url=ui_url(top),
        notify=notify_targets(top.get("notify", list, []), origin, source),
    )
    top.done()
    return cfg
