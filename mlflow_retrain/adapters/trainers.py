"""Making a candidate: three ways, one contract.

Why it is built this way: docs/design.md#adapters-trainers.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from mlflow_retrain.adapters import backends
from mlflow_retrain.policy import backends as policy_backends
from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.config import Config, DataConfig, ProjectConfig
from mlflow_retrain.adapters.data import LabelledData, training_windows
from mlflow_retrain.base.errors import ConfigError, RetrainError, TrainingError
from mlflow_retrain.adapters.streams import tail_of_output
from mlflow_retrain.adapters.train import Candidate, FitResult, refit_window
from mlflow_retrain.decide.window import Window
from mlflow_retrain.decide.words import unit_for
from mlflow_retrain.measure.metrics import score

log = logging.getLogger(__name__)

IN_PROCESS, PROJECT = "inprocess", "project"
BUILTIN_PROJECT = Path(__file__).resolve().parents[1] / "project"


@dataclass(frozen=True)
class Trainer:
    """Where the candidate comes from, resolved from the policy and `--retrain-via`."""

    via: str  # inprocess | project
    uri: str  # the project's folder or git URI ("" in process)
    entry_point: str = "train"
    builtin: bool = True


def trainer(config: Config, via: str = PROJECT) -> Trainer:
    """The policy's project wins; else the built-in trainer, as a project or in process."""
    project = config.training.project
    if project is not None:
        return Trainer(PROJECT, project_uri(config, project), project.entry_point, builtin=False)
    if via == IN_PROCESS:
        return Trainer(IN_PROCESS, "")
    return Trainer(PROJECT, str(BUILTIN_PROJECT))


def project_uri(config: Config, project: ProjectConfig) -> str:
    """A relative local path resolves against the policy file, like data.path: CI runs from anywhere."""
    if project.is_git or config.source is None or Path(project.uri).is_absolute():
        return project.uri
    return str((config.source.parent / project.uri).resolve())


def preflight(config: Config, via: str = PROJECT, *, data: LabelledData | None = None,
              as_of: pd.Timestamp | None = None) -> Trainer:
    """Everything about the trainer that can be checked without training, checked before the lease
    and the audit run: the factory or class imports and takes training.params, the project and its
    entry point exist, a git repository answers, a remote backend can be reached and can run the
    project (`backends.py`); given the data, the training and holdout windows
    ending at `as_of` (default: the newest row) hold rows. A misplaced CI job fails on day one, not on
    the day a retrain is due."""
    chosen = trainer(config, via)
    if data is not None:
        data.check_training(data.last if as_of is None else as_of, config.training)
    if config.training.project is None:
        check_estimator(config, data.spec if data is not None else None)
        return chosen
    backend = config.training.project.backend
    if backend in policy_backends.REMOTE:
        import mlflow

        if why := backends.missing_package(backend) or backends.tracking_problem(backend, mlflow.get_tracking_uri(),
                                                                                 os.environ):
            raise TrainingError(why)
    if config.training.project.is_git:
        repo = chosen.uri.split("#", 1)[0].removeprefix("git+")
        try:
            done = subprocess.run(["git", "ls-remote", "--heads", repo], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TrainingError(f"training.project.uri {repo}: git cannot reach it ({type(exc).__name__})") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise TrainingError(f"training.project.uri {repo} is not a git repository git can read: {last}")
        return chosen
    folder = Path(chosen.uri)
    mlproject = folder / "MLproject"
    if not mlproject.is_file():
        raise TrainingError(f"training.project.uri {folder}: no MLproject file there")
    import yaml

    try:
        declared = yaml.safe_load(mlproject.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TrainingError(f"{mlproject} is not valid YAML: {str(exc).splitlines()[0]}") from None
    entry_points = (declared.get("entry_points") if isinstance(declared, dict) else None) or {}
    if chosen.entry_point not in entry_points and not chosen.entry_point.endswith((".py", ".sh")):
        raise TrainingError(f"{mlproject} has no entry point {chosen.entry_point!r} "
                            f"(it has {', '.join(entry_points) or 'none'}); fix training.project.entry_point")
    if why := backends.project_problem(backend, declared if isinstance(declared, dict) else {}):
        raise TrainingError(f"{mlproject} {why}")
    return chosen


def check_estimator(config: Config, spec: DataConfig | None = None) -> None:
    """The estimator made as a fit makes it, and its parameters checked by the estimator itself
    (scikit-learn validates them only when fitting, i.e. after the lease and the runs)."""
    from mlflow_retrain.adapters.train import build_estimator

    name = config.training.estimator
    spec = spec or replace(config.data, categorical=config.data.categorical or ())
    try:
        estimator = build_estimator(config, spec)
    except RetrainError:
        raise
    except (ValueError, TypeError) as exc:  # a class's or a factory's own refusal of its arguments
        raise ConfigError(f"training.params do not fit {name}: {_first_line(exc)}") from None
    except Exception as exc:  # the user's factory failed: one line, it is their code
        raise TrainingError(f"training.estimator {name} failed to make the estimator ({type(exc).__name__}: "
                            f"{_first_line(exc)})") from None
    parts = [estimator, *(estimator.get_params(deep=True).values() if hasattr(estimator, "get_params") else ())]
    for part in parts:
        if hasattr(part, "_parameter_constraints") and hasattr(part, "_validate_params"):
            try:
                part._validate_params()
            except (ValueError, TypeError) as exc:  # sklearn's InvalidParameterError is both
                raise ConfigError(f"training.params do not fit {name}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def make_candidate(config: Config, data: LabelledData, as_of: pd.Timestamp, *, trigger: str, reason: str,
                   cycle_run_id: str, registry: Any, via: str = PROJECT, refit_of: str = "") -> Candidate:
    """Train a candidate the configured way; return its registered version (tagged, not placed yet).

    `registry` is the cycle's (fenced by its lease): every write goes through it, so a cycle that
    lost its lease while training registers nothing. With `refit_of` (a validated fit's run id) the
    same trainer fits through `as_of`, holdout included (`training.refit_on_pass`)."""
    chosen = trainer(config, via)
    if chosen.via == IN_PROCESS:
        from mlflow_retrain.adapters.train import train

        return train(config, registry, as_of=as_of, data=data, trigger=trigger, reason=reason,
                     cycle_run_id=cycle_run_id, bootstrap=not refit_of, refit_of=refit_of)[1]
    if chosen.builtin:
        params = {"config": str(config.source), "as_of": as_of.isoformat(), "trigger": trigger, "reason": reason,
                  "cycle_run_id": cycle_run_id, "refit_of": refit_of}
        run_id = run_project(config, chosen, params, env_manager="local", registry=registry)
    else:
        run_id = run_project(config, chosen, contract_parameters(config, as_of, cycle_run_id, refit=bool(refit_of)),
                             env_manager=config.training.project.env_manager, registry=registry)
    return adopt(config, data, as_of, run_id, chosen, trigger=trigger, reason=reason, cycle_run_id=cycle_run_id,
                 registry=registry, refit_of=refit_of)


def contract_parameters(config: Config, as_of: pd.Timestamp, cycle_run_id: str, *,
                        refit: bool = False) -> dict[str, str]:
    """The user's fixed parameters plus the data-time contract under the names the policy maps; a
    refit's training window runs through `as_of` (the holdout's rows included)."""
    project = config.training.project
    train_window, holdout_window = _windows(config, as_of, refit)
    values = {"as_of": as_of.isoformat(), "train_start": train_window.start.isoformat(),
              "train_end": train_window.end.isoformat(), "holdout_start": holdout_window.start.isoformat(),
              "holdout_end": holdout_window.end.isoformat(), "cycle_run_id": cycle_run_id,
              "data_path": str(config.data_path().resolve())}
    return {**{k: str(v) for k, v in project.parameters.items()},
            **{project.contract[k]: v for k, v in values.items() if project.contract[k]}}


def _windows(config: Config, as_of: pd.Timestamp, refit: bool) -> tuple[Window, Window]:
    """(training, holdout) windows of a fit as of `as_of`; a refit's training runs through `as_of`."""
    train_window, holdout_window = training_windows(as_of, config.training.window, config.training.holdout)
    if refit:
        return refit_window(as_of, config.training.window, config.training.holdout), holdout_window
    return train_window, holdout_window


def fit_project(config: Config, data: LabelledData, as_of: pd.Timestamp, *, refit: bool = False) -> FitResult:
    """What `train.fit` is for the built-in trainer, for the user's project: the backtest replays it.

    Each fit is a real run of the entry point (in the `<experiment>-backtest` experiment), whose
    logged model is loaded and scored here; nothing is registered by us.
    """
    import time

    from mlflow.tracking import MlflowClient

    from mlflow_retrain.adapters import models

    chosen = trainer(config)
    started = time.perf_counter()
    run_id = run_project(config, chosen, contract_parameters(config, as_of, "", refit=refit),
                         env_manager=config.training.project.env_manager, experiment=f"{config.experiment}-backtest")
    seconds = time.perf_counter() - started
    scorer = models.load(logged_model(MlflowClient(), run_id, chosen)[0], config, data.spec)
    train_window, holdout_window = _windows(config, as_of, refit)
    holdout = data.cut(holdout_window, "holdout window")
    metrics = {}
    if not refit:  # a refit saw the holdout: nothing unseen to score (`train.fit`)
        pred, proba = scorer.predict_with_proba(holdout)
        metrics = score(config.task, data.target(holdout), pred, proba)
    return FitResult(scorer.model, scorer.columns, train_window, holdout_window, data.cut(train_window, "training window"),
                     holdout, metrics, seconds, scorer.flavor)


def run_project(config: Config, chosen: Trainer, params: dict[str, str], *, env_manager: str,
                experiment: str | None = None, registry: Any = None) -> str:
    """Run the entry point to completion; its output streams to stderr. Returns its run id.

    Under a cycle's lease (`registry` holds it) the child gets the lease's generation (`LEASE_ENV`:
    the built-in trainer checks it before writing), and is stopped as soon as the lease is lost:
    the cycle then raises `LeaseLostError`, and neither it nor its child writes anything more."""
    import mlflow.projects
    from mlflow.exceptions import ExecutionException, MlflowException

    from mlflow_retrain.adapters.registry.lease import LEASE_ENV

    # `--env-manager local` runs `python` from PATH: make it ours, so the project sees this environment.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    held = getattr(registry, "held", None)
    if held is not None:  # read by the local backend when it starts the child
        os.environ[LEASE_ENV] = str(held.generation)
    project = config.training.project
    where = f"the {chosen.entry_point!r} entry point of {chosen.uri}"
    from mlflow_retrain.adapters.store import ensure_experiment

    ensure_experiment(experiment or config.experiment)  # its artifacts beside a local store
    with tail_of_output() as tail:
        try:
            submitted = mlflow.projects.run(
                uri=chosen.uri, entry_point=chosen.entry_point, parameters=params, env_manager=env_manager,
                experiment_name=experiment or config.experiment, synchronous=False, version=project.version if project else None,
                backend=project.backend if project else "local", backend_config=backend_config(config))
            with stopped_on_loss(submitted, registry.lost if held is not None else None) as stopped:
                succeeded = submitted.wait()
        except (ExecutionException, MlflowException) as exc:
            raise TrainingError(f"{where} could not start: {str(exc).splitlines()[0][:400]}") from None
        except Exception as exc:
            from mlflow_retrain.adapters.tracking import unanswered

            if project is None or project.backend in policy_backends.BUILTIN or isinstance(exc, RetrainError) or unanswered(exc):
                raise
            # a plugin backend is another package's code: what it raised is one line naming it
            raise TrainingError(f"{where} could not run on backend {project.backend} ({type(exc).__name__}: "
                                f"{_first_line(exc)})") from None
        finally:
            os.environ.pop(LEASE_ENV, None)
    if submitted.run_id is not None:
        end_run(submitted.run_id, "FINISHED" if succeeded else "KILLED" if stopped.is_set() else "FAILED")
    if not succeeded and held is not None:
        registry.fence("adopting the candidate")  # a child stopped (or refused) for a lost lease: say that
    if not succeeded:
        said = " | ".join(line for line in tail if line.strip())[-800:]
        remote = project is not None and project.backend != "local"
        on = f" on backend {project.backend}" if remote else ""
        quiet = f"(no output here; the job's own log is on {project.backend})" if remote else "(no output)"
        raise TrainingError(f"{where} failed{on} (run {submitted.run_id}); its last lines: {said or quiet}")
    return submitted.run_id


@contextmanager
def stopped_on_loss(submitted: Any, lost: threading.Event | None) -> Iterator[threading.Event]:
    """While the block waits for a submitted run: cancel it (SIGTERM to a local child, a deleted
    Kubernetes Job ...) once `lost` is set. Yields an event set when it did."""
    stopped, done = threading.Event(), threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            if lost.is_set():
                log.warning("the lease was lost while training: stopping the training run %s", submitted.run_id)
                stopped.set()
                try:
                    submitted.cancel()
                except Exception as exc:  # the backend's own cleanup failed: the fence still holds
                    log.warning("could not stop the training run %s (%s)", submitted.run_id, type(exc).__name__)
                return

    watcher = threading.Thread(target=watch, name="training-watch", daemon=True)
    if lost is not None:
        watcher.start()
    try:
        yield stopped
    finally:
        done.set()
        if lost is not None:
            watcher.join(timeout=30)


def backend_config(config: Config) -> dict[str, Any] | None:
    """The project's backend config for MLflow, its relative paths resolved against the policy's
    folder (checked when the policy was read)."""
    project = config.training.project
    if project is None or not project.backend_config:
        return None
    base = config.source.parent if config.source is not None else None
    return backends.for_mlflow(policy_backends.read(policy_backends.resolve(project.backend_config, base)), base)


def end_run(run_id: str, status: str) -> None:
    """End the project's run if its job did not: a remote job that died before its entry point ended
    the run (a pod evicted, an image that does not pull) leaves it RUNNING forever otherwise. MLflow
    does this only when it waits itself (`synchronous=True`)."""
    from mlflow.entities import RunStatus
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    if not RunStatus.is_terminated(RunStatus.from_string(client.get_run(run_id).info.status)):
        client.set_terminated(run_id, status)


def adopt(config: Config, data: LabelledData, as_of: pd.Timestamp, run_id: str, chosen: Trainer, *, trigger: str,
          reason: str, cycle_run_id: str, registry: Any, refit_of: str = "") -> Candidate:
    """The version a project run made: the one it registered itself, else its logged model registered
    here. Checked against the data's columns before anything is registered; tagged here, in the
    cycle's process (the built-in trainer only registers when a cycle runs it), for the cycle to place."""
    from mlflow.tracking import MlflowClient

    from mlflow_retrain.adapters import models
    from mlflow_retrain.adapters.train import bootstrap_trigger, candidate_tags, log_frame, refit_tags

    client = MlflowClient()
    own = client.search_model_versions(f"name = '{config.model_name}' and run_id = '{run_id}'")
    if own:
        model_uri, model_id = f"models:/{config.model_name}/{own[0].version}", None
    else:
        model_uri, model_id = logged_model(client, run_id, chosen)
    scorer = models.load(model_uri, config, data.spec)  # a schema mismatch stops here, before any write
    train_window, holdout_window = _windows(config, as_of, bool(refit_of))
    holdout = data.cut(holdout_window, "holdout window")
    pred, proba = scorer.predict_with_proba(holdout)
    metric = score(config.task, data.target(holdout), pred, proba).get(config.metric, float("nan"))
    if not refit_of:  # a refit keeps its validated fit's trigger
        trigger, reason = bootstrap_trigger(registry, trigger, reason)
    if not client.list_artifacts(run_id, T.REFERENCE_ARTIFACT.rsplit("/", 1)[0]):
        # drift is measured against the rows the model was trained on, as the contract defines them
        spec = data.spec
        log_frame(data.cut(train_window, "training window")[[spec.timestamp, *spec.features, spec.target]],
                  T.REFERENCE_ARTIFACT, run_id=run_id)
    tags = candidate_tags(trigger=trigger, reason=reason, cycle_run_id=cycle_run_id, as_of=as_of,
                          train_window=train_window, holdout_window=holdout_window,
                          unit=unit_for(config.monitoring.window))
    if refit_of:
        tags.update(refit_tags(refit_of, train_window, data.count_after(train_window.start, train_window.end)))
    if own:
        version = str(own[0].version)
        registry.tag(version, tags)
    else:
        version = registry.register(model_uri, model_id, run_id, tags).version
    return Candidate(version, metric, as_of, trigger == T.BOOTSTRAP)


def logged_model(client: object, run_id: str, chosen: Trainer) -> tuple[str, str]:
    """(model URI, model id) of the model a run logged: MLflow 3 LoggedModels whose source is the run."""
    import mlflow

    run = client.get_run(run_id)
    found = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                        filter_string=f"source_run_id = '{run_id}'", output_format="list")
    if not found:
        raise TrainingError(f"the {chosen.entry_point!r} entry point of {chosen.uri} (run {run_id}) succeeded but "
                            "logged no model; log one with mlflow.<flavor>.log_model(..., name=\"model\")")
    if len(found) > 1:
        named = [m for m in found if m.name == "model"]
        if len(named) != 1:
            raise TrainingError(f"run {run_id} logged {len(found)} models "
                                f"({', '.join(sorted(m.name for m in found))}); name the candidate \"model\"")
        found = named
    return f"models:/{found[0].model_id}", found[0].model_id
