"""`--cluster`: the backtest's fits and a fleet's cycles on a real Dask cluster (a `distributed.LocalCluster`
of two worker processes on 127.0.0.1, reached over TCP like any remote scheduler), giving what a local
run gives; a worker killed mid-cycle is its model's row; a scheduler that does not answer is one line,
exit 2, before anything runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dask
import pytest
from click.testing import CliRunner
from distributed import LocalCluster
from test_backtest_schedules import daily_sales, write
from test_fleet import (
    BOOTSTRAP,
    LATER,
    by_model,
    crash_policy,
    fleet,
    fleet_dir,  # noqa: F401 - the fixture, used by name
)

from mlflow_retrain.cli import cli


@pytest.fixture(scope="module")
def cluster():
    # a task whose worker died is not retried on another: one crash is one row, not three
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None) as local:
        yield local


def fitted_on_the_cluster(cluster: LocalCluster) -> int:
    """How many of joblib's fit batches the scheduler has seen finish (its task prefixes)."""
    prefixes = cluster.scheduler.task_prefixes
    return sum(sum(p.state_counts.values()) for name, p in prefixes.items() if "fit" in name)


def untimed(rows: list[dict]) -> list[dict]:
    """Rows without their timings, the one thing a run elsewhere may change."""
    return [{k: v for k, v in row.items() if k not in ("seconds", "train_seconds")} for row in rows]


def backtest(policy_file: Path, *args: str) -> tuple[int, dict, str]:
    run = CliRunner().invoke(cli, ["backtest", "--config", str(policy_file), "--from", "2021-02-15", "--to", "2021-04-15",
                                   "--every", "1d", "--folds", "2", "--out", str(policy_file.parent / "out"), "--json",
                                   *args])
    return run.exit_code, json.loads(run.stdout[run.stdout.index("{"):]) if run.exit_code == 0 else {}, run.output


def test_a_backtest_on_the_cluster_prints_the_local_table(store, tmp_path, cluster):
    policy_file = write(tmp_path, daily_sales(days=160))
    code, local, output = backtest(policy_file, "--jobs", "2")
    assert code == 0, output
    before = fitted_on_the_cluster(cluster)
    code, remote, output = backtest(policy_file, "--cluster", cluster.scheduler_address)
    assert code == 0, output
    assert fitted_on_the_cluster(cluster) > before  # the every-step fits went to the workers
    assert untimed(remote["policies"]) == untimed(local["policies"]) and remote["recommended"] == local["recommended"]
    assert remote["walk_forward"] == local["walk_forward"] and remote["fits"] == local["fits"]


def test_a_fleet_runs_on_the_cluster_and_a_killed_worker_is_its_models_row(store, fleet_dir, tmp_path,  # noqa: F811
                                                                            cluster):
    first, _ = fleet("cycle", "--policies", str(fleet_dir), "--policies", str(crash_policy(tmp_path)),
                     "--as-of", BOOTSTRAP, "--retrain-via", "inprocess", "--cluster", cluster.scheduler_address, code=1)
    rows = by_model(first)
    assert rows["load-crash"]["outcome"] == "crashed" and rows["load-crash"]["exit_code"] == 1
    assert "failed on the cluster" in rows["load-crash"]["reason"], rows["load-crash"]
    for name in ("load-north", "load-south", "load-east"):
        assert (rows[name]["outcome"], rows[name]["production"]) == ("promoted", "1"), rows[name]
    assert first["jobs"] == 2  # the cluster's worker processes

    # what the cluster says a week later is what local workers say, model for model
    cluster.wait_for_workers(2)  # the nanny restarted the killed worker
    on_cluster, _ = fleet("check", "--policies", str(fleet_dir), "--as-of", LATER, "--cluster", cluster.scheduler_address)
    local, _ = fleet("check", "--policies", str(fleet_dir), "--as-of", LATER, "--jobs", "2")
    assert untimed(on_cluster["models"]) == untimed(local["models"])
    assert [row["outcome"] for row in on_cluster["models"]] == ["no_retrain"] * 3


@pytest.mark.parametrize("address, message", [
    ("nonsense", "is not a Dask scheduler address; expected tcp://HOST:PORT"),
    ("tcp://127.0.0.1:1", "no Dask scheduler answered at tcp://127.0.0.1:1 within 10 s"),
])
@pytest.mark.parametrize("command", ["backtest", "fleet"])
def test_a_cluster_that_cannot_be_used_is_one_line_and_nothing_runs(store, fleet_dir, tmp_path, address,  # noqa: F811
                                                                     message,
                                                                     command):
    db = Path(store.removeprefix("sqlite:///"))
    before = hashlib.sha256(db.read_bytes()).hexdigest() if db.exists() else None
    if command == "backtest":
        args = ["backtest", "--config", str(write(tmp_path, daily_sales(days=60))), "--from", "2021-02-15",
                "--out", str(tmp_path / "out")]
    else:
        args = ["fleet", "cycle", "--policies", str(fleet_dir), "--retrain-via", "inprocess"]
    out = CliRunner().invoke(cli, [*args, "--cluster", address])
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert out.stdout == "" and not (tmp_path / "out").exists()
    assert (hashlib.sha256(db.read_bytes()).hexdigest() if db.exists() else None) == before


def test_a_scheduler_without_workers_is_refused_not_waited_on():
    from mlflow_retrain.adapters.cluster import connect
    from mlflow_retrain.base.errors import ClusterError

    with LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None) as empty, \
            pytest.raises(ClusterError, match="has no workers after 0.5 s; start some"), \
            connect(empty.scheduler_address, timeout=0.5):
        pass
