"""Bad input, through the real command line: one line on stderr, exit 2 (or the documented code), nothing written.

Each case runs `mlflow-retrain` in the test process as in a process of its own (`inprocess_cli.py`;
the cases that drop root's permission override start a new interpreter) against its own copy of a
real sqlite store whose Production version (v1) was trained by the session's bootstrap, and compares a dump of every table
of the store, and the files (names and sizes) of the case's folder and of the artifact folder,
before and after. What is checked is the rule of issue 12: everything checkable is checked before
the lease and before any MLflow run opens, and refused in one clear line.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import forked_cli
import inprocess_cli
import pandas as pd
import pytest
import yaml
from stores import rebase

FOREIGN_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
               "MLFLOW_EXPERIMENT_NAME")


@dataclass
class Folder:
    """One case's world: its folder (the working folder), store, policy and data."""

    root: Path
    write: Callable[..., Path]  # conftest's write_policy: the small bike policy over `data`
    frame: pd.DataFrame
    uri: str = ""
    artifacts: Path | None = None

    @property
    def db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def data(self) -> Path:
        return self.root / "data" / "bikes.csv"

    def policy(self, **overrides: Any) -> Path:
        return self.write(**overrides)

    def data_policy(self, **changes: Any) -> Path:
        """The policy with keys of its `data` section changed."""
        return self.policy(data={**yaml.safe_load(self.policy().read_text())["data"], **changes})

    def text(self, text: str) -> Path:
        path = self.root / "retrain.yaml"
        path.write_text(text)
        return path

    def rows(self, frame: pd.DataFrame) -> None:
        frame.to_csv(self.data, index=False)


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    message: str
    setup: Callable[[Folder], None] | None = None
    # prod | deleted (Production's model files gone) | unreferenced (its training rows, drift's reference, gone) |
    # none (the URI is the setup's)
    store: str = "prod"
    code: int = 2
    read_only: bool = False  # run without root's permission override, so file modes hold
    env: tuple[tuple[str, str], ...] = ()  # set for the command


def case(id: str, args: str | list[str], message: str, setup: Callable[[Folder], None] | None = None,
         **kw: Any) -> Any:
    return pytest.param(Case(id, tuple(args.split() if isinstance(args, str) else args), message, setup, **kw), id=id)


# ---- setups -----------------------------------------------------------------------------------------
def with_policy(**overrides: Any) -> Callable[[Folder], None]:
    return lambda f: f.policy(**overrides)


def with_text(text: str) -> Callable[[Folder], None]:
    return lambda f: f.text(text)


def with_rows(change: Callable[[pd.DataFrame], pd.DataFrame], **overrides: Any) -> Callable[[Folder], None]:
    def setup(f: Folder) -> None:
        f.rows(change(f.frame.copy()))
        f.policy(**overrides)

    return setup


def with_duplicates(change: Callable[[pd.DataFrame], pd.DataFrame], policy: str) -> Callable[[Folder], None]:
    """Rows changed, and the policy's `data.duplicates` set."""
    def setup(f: Folder) -> None:
        f.rows(change(f.frame.copy()))
        f.data_policy(duplicates=policy)

    return setup


def varying_offsets(d: pd.DataFrame) -> pd.DataFrame:
    stamps = pd.to_datetime(d.timestamp)
    east = (stamps + pd.Timedelta(hours=2)).dt.strftime("%Y-%m-%d %H:%M:%S+02:00")
    return d.assign(timestamp=east.where(d.index % 2 == 0, stamps.dt.strftime("%Y-%m-%d %H:%M:%S+00:00")))


def column(name: str, value: Any) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda d: d.assign(**{name: value})


def mixed_zones(d: pd.DataFrame) -> pd.DataFrame:
    stamps = d.timestamp.astype(str)
    return d.assign(timestamp=stamps.where(d.index % 2 == 0, stamps + "+02:00"))


def conflicting(d: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([d, d.iloc[100:103].assign(cnt=lambda x: x.cnt + 7)]).sort_index(kind="stable")


def stray_future_row(d: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([d, d.tail(1).assign(timestamp="2099-01-01 00:00:00")])


def gap_before(end: str, days: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    stop = pd.Timestamp(end)
    start = stop - pd.Timedelta(days=days)
    return lambda d: d[(pd.to_datetime(d.timestamp) <= start) | (pd.to_datetime(d.timestamp) > stop)]


def epoch_seconds(d: pd.DataFrame) -> pd.DataFrame:
    return d.assign(timestamp=(pd.to_datetime(d.timestamp).astype("int64") // 10**9))


def parquet_with_dates(f: Folder) -> None:
    path = f.data.with_suffix(".parquet")
    f.frame.assign(temp=pd.to_datetime(f.frame.timestamp)).to_parquet(path, index=False)
    f.data_policy(path=str(path))


def with_uri(make: Callable[[Folder], str]) -> Callable[[Folder], None]:
    def setup(f: Folder) -> None:
        f.policy()
        f.uri = make(f)

    return setup


def not_a_database(f: Folder) -> str:
    f.db.write_bytes(b"this is not an sqlite database, it is a note" * 100)
    return f"sqlite:///{f.db}"


def read_only_file(f: Folder) -> str:
    f.db.chmod(0o444)
    return f"sqlite:///{f.db}"


def read_only_folder(f: Folder) -> str:
    folder = f.root / "store"
    folder.mkdir()
    shutil.move(f.db, folder / "mlflow.db")
    folder.chmod(0o555)
    return f"sqlite:///{folder / 'mlflow.db'}"


def with_lease(f: Folder) -> None:
    f.policy()
    _in_store(f, lambda registry: registry.acquire_lease(pd.Timedelta(hours=2).to_pytimedelta(), holder="ci-job-1"))


def _in_store(f: Folder, act: Callable[[Any], Any]) -> None:
    import mlflow

    from mlflow_retrain.policy.load import load_config
    from mlflow_retrain.adapters.registry import Registry

    previous, cwd = mlflow.get_tracking_uri(), os.getcwd()
    mlflow.set_tracking_uri(f.uri)
    os.chdir(f.root)
    try:
        act(Registry(load_config(f.root / "retrain.yaml")))
    finally:
        os.chdir(cwd)
        mlflow.set_tracking_uri(previous)


DUPLICATE_TOP = """model_name: bikes
data: {path: data/bikes.csv, timestamp: timestamp, target: cnt}
model_name: other
"""
DUPLICATE_NESTED = """model_name: bikes
data: {path: data/bikes.csv, timestamp: timestamp, target: cnt}
training:
  window: 60d
  holdout: 7d
  window: 30d
"""
CYCLE = "cycle --as-of 2011-05-31 --retrain-via inprocess"
HUGE = "999999999999999999999"
RUN_CASES = [
    # ---- the policy file ------------------------------------------------------------------------
    case("no-policy-file", "cycle --config missing.yaml", "policy file not found"),
    case("yaml-syntax", "cycle", "not valid YAML at line", with_text("model_name: [bikes\n")),
    case("yaml-not-a-mapping", "check", "the file must be a mapping", with_text("- bikes\n")),
    case("duplicate-key-top", "check", "model_name is given twice", with_text(DUPLICATE_TOP)),
    case("duplicate-key-nested", "cycle", "training.window is given twice", with_text(DUPLICATE_NESTED)),
    case("unknown-top-key", "check", "modelname is not a known key", with_policy(modelname="x")),
    case("no-model-name", "check", "model_name is required", with_policy(model_name=None)),
    case("model-name-quote", CYCLE, "model_name", with_policy(model_name="bike's")),
    case("model-name-slash", "check", "model_name", with_policy(model_name="team/bikes")),
    case("model-name-blank", "check", "model_name", with_policy(model_name="  ")),
    case("unknown-task", "check", "task must be regression or classification", with_policy(task="forecast")),
    case("span-words", "check", "training.window: '60 days' is not a span", with_policy(training={"window": "60 days"})),
    case("span-zero", "check", "must be positive", with_policy(training={"holdout": "0d"})),
    case("metric-for-other-task", "check", "monitoring.metric must be one of",
         with_policy(monitoring={"metric": "accuracy"})),
    case("target-is-timestamp", "check", "must differ from data.timestamp",
         lambda f: f.data_policy(target="timestamp")),
    case("feature-is-target", "check", "must not contain the target",
         lambda f: f.data_policy(features=["hour", "cnt"], categorical=[])),
    case("estimator-not-dotted", "check", "training.estimator must be a dotted class",
         with_policy(training={"estimator": "forest"})),
    case("estimator-missing-class", CYCLE, "cannot be imported",
         with_policy(training={"estimator": "sklearn.ensemble.NoSuchRegressor"})),
    case("estimator-missing-module", "cycle --as-of 2011-05-31", "cannot be imported",
         with_policy(training={"estimator": "nosuch.module.Model"})),
    case("estimator-missing-factory", CYCLE, "cannot be imported",
         with_policy(training={"estimator": "sklearn.ensemble:make_forest"})),
    case("estimator-not-an-estimator", CYCLE, "has no fit/predict",
         with_policy(training={"estimator": "json.JSONDecoder", "params": {}})),
    case("params-unknown-name", CYCLE, "training.params do not fit",
         with_policy(training={"params": {"max_iterations": 30}})),
    case("params-bad-value", CYCLE, "training.params do not fit", with_policy(training={"params": {"max_iter": -1}})),
    case("params-bad-type", "cycle --as-of 2011-05-31", "training.params do not fit",
         with_policy(training={"params": {"learning_rate": "fast"}})),
    case("params-not-a-mapping", "check", "training.params must be a mapping", with_policy(training={"params": [1]})),
    case("seed-not-integer", "check", "training.seed must be an integer", with_policy(training={"seed": "abc"})),
    case("debounce-k-over-n", "check", "must satisfy 1 <= k <= n",
         with_policy(triggers={"metric_threshold": {"max": 80}, "debounce": {"k": 3, "n": 2}})),
    case("unknown-trigger", "check", "is not a known key", with_policy(triggers={"metric_treshold": {"max": 80}})),
    case("relative-improvement-not-fraction", "check", "must be a fraction in [0, 1)",
         with_policy(validation={"min_relative_improvement": 2})),
    case("same-aliases", "check", "must differ from the production alias",
         with_policy(registry={"aliases": {"production": "live", "staging": "live"}})),
    case("project-and-estimator", "check", "are exclusive",
         with_policy(training={"estimator": "sklearn.linear_model.Ridge", "project": {"uri": "."}})),
    case("project-without-mlproject", CYCLE, "no MLproject file there",
         with_policy(training={"project": {"uri": "nowhere"}})),
    # ---- the data -------------------------------------------------------------------------------------
    case("data-missing", "check", "data not found", lambda f: f.data_policy(path="nope.csv")),
    case("data-unsupported-suffix", "check", "not a supported data file",
         lambda f: f.data_policy(path=str(f.root / "retrain.yaml"))),
    case("data-not-a-table", "check", "missing column(s) timestamp, cnt",
         lambda f: (f.data.write_bytes(b"\x00\x01\x02PK\x03" * 50), f.policy())),
    case("data-header-only", "cycle", "holds no rows", with_rows(lambda d: d.head(0))),
    case("data-missing-column", "check", "missing column(s) temp", with_rows(lambda d: d.drop(columns="temp"))),
    case("target-nan", "cycle", "target 'cnt' is empty (NaN)", with_rows(column("cnt", float("nan")))),
    case("timestamp-garbage", "check", "are not timestamps", with_rows(lambda d: d.assign(
        timestamp=d.timestamp.where(d.index != 5, "yesterday")))),
    case("timestamps-mixed-zones", "check", "time zone", with_rows(mixed_zones)),
    case("feature-all-nan-numeric", "check", "'temp' is empty (NaN) in every row", with_rows(column("temp", float("nan")))),
    case("feature-all-nan-categorical", "check", "'season' is empty (NaN) in every row",
         with_rows(column("season", float("nan")))),
    case("feature-text-undeclared", "check", "list it under data.categorical", with_rows(column("temp", "warm"))),
    case("feature-dates", "check", "neither numbers nor labels", parquet_with_dates),
    case("labels-conflict", "check", "data.duplicates is refuse", with_duplicates(conflicting, "refuse")),
    case("every-row-twice", "check", "6,442 exact repeat(s) dropped",
         with_duplicates(lambda d: pd.concat([d, d]), "drop"), code=0),
    # ---- time ----------------------------------------------------------------------------------------
    case("as-of-garbage", "check --as-of yesterday", "is not an ISO 8601 time"),
    case("as-of-day-first", "check --as-of 31/05/2011", "is not an ISO 8601 time"),
    case("as-of-outside", "cycle --as-of 2030-01-01", "is outside the data"),
    case("as-of-training-window-empty", "cycle --as-of 2011-01-05", "training window"),
    case("as-of-training-window-empty-project", "cycle --as-of 2011-01-05 --retrain-via project", "training window"),
    case("holdout-empty", "cycle --as-of 2011-05-31", "holdout window", with_rows(gap_before("2011-05-31", 10))),
    case("stray-future-row", "cycle", "training window", with_rows(stray_future_row)),
    case("epoch-seconds", "cycle", "training window", with_rows(epoch_seconds)),
    case("train-as-of-window-empty", "train --as-of 2011-01-05", "training window"),
    case("monitor-every-words", "monitor --every daily", "--every: 'daily' is not a span"),
    case("backtest-jobs-zero", "backtest --from 2011-05-01 --jobs 0", "--jobs must be at least 1"),
    case("backtest-thresholds", "backtest --from 2011-05-01 --thresholds a,b", "must be comma-separated numbers"),
    # ---- requests -------------------------------------------------------------------------------------
    case("force-without-reason", "cycle --force", "--force and --event need --reason"),
    case("event-blank", ["cycle", "--event", " ", "--reason", "x"], "--event needs the name"),
    case("history-limit-negative", "history --limit -1", "-1 is not in the range"),
    case("history-limit-zero", "history --limit 0", "0 is not in the range"),
    case("retrain-via-unknown", "cycle --retrain-via cloud", "'cloud' is not one of"),
    # ---- the registry ---------------------------------------------------------------------------------
    case("status-unknown-model", "status", "registered model 'ghost' does not exist",
         with_policy(model_name="ghost")),
    case("promote-unknown-version", "promote 9 --reason x", "has no version 9"),
    case("promote-production", "promote 1 --reason x", "already in Production"),
    case("rollback-nothing-earlier", "rollback --reason x", "no earlier Production version"),
    case("compare-no-staging", "compare --as-of 2011-05-31", "has no Staging version"),
    case("evaluate-unknown-run", "evaluate --as-of 2011-05-31 --no-reports --model-uri runs:/0123456789abcdef/model",
         "cannot be loaded"),
    case("evaluate-unknown-version", "evaluate --as-of 2011-05-31 --no-reports --model-uri models:/bikes/9",
         "has no version 9"),
    case("evaluate-unknown-stage", "evaluate --as-of 2011-05-31 --no-reports --model-uri models:/bikes/Live",
         "unknown stage"),
    case("lease-held", CYCLE, "another cycle holds the lease", with_lease, code=3),
    case("deleted-artifact-check", "check --as-of 2011-05-31", "cannot be loaded", store="deleted"),
    case("deleted-reference-check", "check --as-of 2011-05-31", "cannot be read",
         with_policy(triggers={"data_drift": {"max_drift_share": 0.5}}), store="unreferenced"),
    case("deleted-artifact-cycle", CYCLE, "cannot be loaded", store="deleted"),
    case("deleted-artifact-evaluate", "evaluate --as-of 2011-05-31 --no-reports", "cannot be loaded",
         store="deleted"),
    # ---- the store -------------------------------------------------------------------------------------
    case("uri-unknown-scheme", "check", "foo://x", with_uri(lambda f: "foo://x"), store="none"),
    case("uri-sqlite-missing-folder", "check", "does not exist",
         with_uri(lambda f: f"sqlite:///{f.root / 'nowhere' / 'mlflow.db'}"), store="none"),
    case("uri-sqlite-not-a-database", "check", "not an sqlite database", with_uri(not_a_database), store="none"),
    case("store-read-only-file", CYCLE, "not writable", with_uri(read_only_file), read_only=True),
    case("store-read-only-folder", CYCLE, "not writable", with_uri(read_only_folder), read_only=True),
    # ---- init ------------------------------------------------------------------------------------------
    case("init-data-missing", "init --data nope.csv --target cnt --out new.yaml", "data not found"),
    case("init-out-exists", "init --data data/bikes.csv --target cnt --out retrain.yaml", "exists; pass --force"),
    case("init-target-missing", "init --data data/bikes.csv --target count --out new.yaml", "--target 'count' is not a column"),
    case("init-model-name-quote", "init --data data/bikes.csv --target cnt --out new.yaml --model-name bike's",
         "--model-name \"bike's\" contains"),
    case("init-mixed-zones", "init --data data/bikes.csv --target cnt --out new.yaml", "time zone", with_rows(mixed_zones)),
    case("duplicates-unknown", "check", "data.duplicates must be one of keep, drop, refuse, got 'dedupe'",
         lambda f: f.data_policy(duplicates="dedupe")),
    case("duplicates-refuse-repeats", CYCLE, "6,442 row(s) repeat an earlier row exactly and 0 share every column",
         with_duplicates(lambda d: pd.concat([d, d]), "refuse")),
    case("timestamps-varying-offsets", "check", "holds times at 2 UTC offsets (+02:00: 3,221 row(s), +00:00: 3,221 "
         "row(s)); each is converted to UTC", with_rows(varying_offsets), code=0),
    # ---- versions beyond what a store holds (an SQLite integer overflows), MLflow's switch against unpickling
    case("promote-version-huge", f"promote {HUGE} --reason x", "is not a version number"),
    case("approve-version-huge", f"approve {HUGE} --reason x", "is not a version number"),
    case("reject-version-huge", f"reject {HUGE} --reason x", "is not a version number"),
    case("promote-version-words", "promote v1 --reason x", "is not a version number"),
    case("evaluate-version-huge", f"evaluate --as-of 2011-05-31 --no-reports --model-uri models:/bikes/{HUGE}",
         "is not a version number"),
    case("pickle-switch-off", "check --as-of 2011-05-31", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false",
         env=(("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false"),)),
    case("pickle-switch-off-cycle", CYCLE, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false",
         env=(("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false"),)),
    case("approve-version-unicode-digit", "approve \u00b2 --reason x", "is not a version number"),
    case("evaluate-version-unicode-digit", "evaluate --as-of 2011-05-31 --no-reports --model-uri models:/bikes/\u00b2",
         "is not a version number"),
    case("init-budget-negative", "init --data data/bikes.csv --target cnt --out new.yaml --budget -1",
         "-1.0 is not in the range x>=0"),
    case("ratio-to-naive-not-positive", "check", "validation.max_ratio_to_naive must be positive, got 0",
         with_policy(validation={"max_ratio_to_naive": 0})),
    # ---- replaying history into the store: in order, after what it holds
    case("replay-behind-the-history", "replay --from 2011-04-01 --every 7d",
         "the store's history of 'bikes' reaches 2011-04-30, after --from 2011-04-01: replay in order from "
         "2011-04-30 on (--from 2011-04-30), or into a fresh store"),
    case("replay-every-words", "replay --from 2011-05-01 --every weekly", "--every: 'weekly' is not a span"),
    case("replay-data-too-short", "replay", "too short for a first model's training rows (a training window of 3650d, "
         "at most half the data) and a holdout (400d) after them: shorten training.holdout, or pass --from",
         with_policy(training={"window": "3650d", "holdout": "400d"})),
    case("compare-unknown", CYCLE, "validation.compare must be one of better, not_worse, non_inferior, got 'worse'",
         with_policy(validation={"compare": "worse"})),
    case("challenger-wins-beyond-windows", CYCLE, "validation.challenger.wins must be between 1 and windows (2), got 3",
         with_policy(validation={"challenger": {"windows": 2, "wins": 3}})),
]


# ---- the machinery --------------------------------------------------------------------------------
def clone_store(source: Path, target: Path) -> None:
    """A copy of a store folder (db and artifacts) whose paths in the db point at the copy."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.yaml", "*.csv"))
    rebase(target / "mlflow.db", source, target)


@pytest.fixture(scope="module")
def stores(bootstrapped_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The session's bootstrapped store, and clones of it without Production's model files, or without
    the training rows its run stored (drift's reference)."""
    folder = bootstrapped_template.parent
    stores = {"prod": folder, "none": folder}
    for name, pattern in (("deleted", "mlruns/*/models"), ("unreferenced", "mlruns/*/*/artifacts/reference")):
        stores[name] = tmp_path_factory.mktemp(name) / "store"
        clone_store(folder, stores[name])
        gone = list(stores[name].glob(pattern))
        assert gone, f"the bootstrap stored no {pattern}"
        for path in gone:
            shutil.rmtree(path)
    return stores


@pytest.fixture(scope="module")
def small_frame(bike_frame: pd.DataFrame) -> pd.DataFrame:
    return bike_frame[bike_frame.timestamp < "2011-10-01"].reset_index(drop=True)


def dump(db: Path) -> list[str]:
    if not db.is_file():
        return ["(no file)"]
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return list(conn.iterdump())
    except sqlite3.DatabaseError:
        return [db.read_bytes().hex()]


def files(folder: Path | None) -> list[tuple[str, int]]:
    if folder is None or not folder.exists():
        return []
    # MLflow itself writes `registered_model_meta` beside a local model the first time it loads it by a
    # models:/ URI (a read); the session's other tests load the same template's model
    return sorted((str(p.relative_to(folder)), p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*")
                  if p.name != "registered_model_meta")


def snapshot(f: Folder) -> tuple[Any, ...]:
    db = Path(f.uri.removeprefix("sqlite:///")) if f.uri.startswith("sqlite:///") else None
    return dump(db) if db else None, files(f.root), files(f.artifacts)


@pytest.mark.parametrize("c", RUN_CASES)
def test_bad_input_one_line_documented_code_nothing_written(c: Case, stores: dict[str, Path], write_policy,
                                                            small_frame: pd.DataFrame, tmp_path: Path) -> None:
    source = stores[c.store]
    f = Folder(tmp_path, write_policy, small_frame)
    shutil.copy(source / "mlflow.db", f.db)
    f.uri, f.artifacts = f"sqlite:///{f.db}", source / "mlruns"
    f.policy()
    if c.setup is not None:
        c.setup(f)
    before = snapshot(f)
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env["MLFLOW_TRACKING_URI"] = f.uri
    env.update(c.env)
    if c.read_only and os.geteuid() == 0:
        preexec = forked_cli.drop_permission_override
    else:
        preexec = None
    args = list(c.args)
    if args[0] != "init" and "--config" not in args:
        args += ["--config", str(f.root / "retrain.yaml")]
    if preexec is None:
        done = inprocess_cli.run(args, cwd=f.root, env=env, timeout=240)
    else:  # the capabilities dropped hold from an exec on: a new interpreter
        try:
            done = subprocess.run([sys.executable, "-m", "mlflow_retrain.cli", *args], cwd=f.root, env=env,
                                  capture_output=True, text=True, timeout=240, preexec_fn=preexec)
        except subprocess.SubprocessError as exc:  # root that may not drop its capabilities: modes cannot hold
            pytest.skip(f"cannot run without root's permission override: {exc}")
    # a command that succeeds (code 0) also says which store it used: information, not a second problem
    lines = [line for line in done.stderr.strip().splitlines() if not (c.code == 0 and line.startswith("store: "))]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == c.code, done.stderr[-3000:]
    assert len(lines) == 1 and c.message in lines[0], done.stderr[-3000:]
    after = snapshot(f)
    changed = [[line for line in new or () if line not in (old or ())][:5] for old, new in zip(before, after)]
    assert after == before, f"the store or the folder changed: {changed}"
