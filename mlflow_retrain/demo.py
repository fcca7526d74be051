"""`make demo`: the whole loop on the bundled bike-sharing data, replayed through time.

It drives the same public commands a CI job would (`cycle` with `--as-of`), against MLflow's
embedded default store in the working folder (`sqlite:///mlflow.db`, artifacts beside it), so what
it shows is what a user gets.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from mlflow_retrain.base import tags as T
from mlflow_retrain.policy.load import load_config
from mlflow_retrain.adapters.data import LabelledData
from mlflow_retrain.adapters.streams import output_into
from mlflow_retrain.adapters.trainers import IN_PROCESS, PROJECT
from mlflow_retrain.usecases.history import replay_cycles, step_line

log = logging.getLogger("mlflow_retrain.demo")

STORE_FILES = ("mlflow.db", "mlartifacts", "mlruns")
FIRST_VIA_PROJECT = ("the first candidate trains as a CI job would, through `mlflow run` of the packaged MLproject's "
                     "train entry point;\nthe later ones in this process, the same fit (--retrain-via project: all "
                     "through `mlflow run`)\n\n")


def replay_points(data: LabelledData, start: str, every: str) -> list[pd.Timestamp]:
    """The --as-of times of the replay: one cycle per step from `start` to the end of the data."""
    return list(pd.date_range(pd.Timestamp(start), data.last, freq=every))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="retrain.yaml")
    parser.add_argument("--start", default="2011-05-01", help="first --as-of (the bootstrap)")
    parser.add_argument("--every", default="4W", help="replay step (pandas frequency)")
    parser.add_argument("--out", default="demo-out", help="folder for the dashboard and reports")
    parser.add_argument("--keep-store", action="store_true", help="do not reset mlflow.db before the replay")
    parser.add_argument("--retrain-via", choices=[PROJECT, IN_PROCESS], default=None,
                        help="how every candidate is trained (default: the first through `mlflow run` of the packaged "
                             "MLproject, as a CI job runs it, the rest in this process: the same fit, without "
                             "starting Python and MLflow again for each)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    import mlflow

    from mlflow_retrain.usecases.audit import history, status, ui_pages
    from mlflow_retrain.cli.group import table
    from mlflow_retrain.loop.cycle import run_cycle

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # the story, not MLflow's progress chatter

    if not args.keep_store:
        removed = [name for name in STORE_FILES if Path(name).exists()]
        for name in removed:
            shutil.rmtree(name) if Path(name).is_dir() else Path(name).unlink()
        if removed:
            print(f"reset the demo store ({', '.join(removed)}); pass --keep-store to keep it")
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    config = load_config(args.config)
    data = LabelledData.load(config)
    print(f"tracking store: {mlflow.get_tracking_uri()}")
    print(f"data: {data.origin} ({len(data.frame)} rows, {data.first.date()} .. {data.last.date()})\n")

    started = time.perf_counter()
    points = replay_points(data, args.start, args.every)
    via, first_via = args.retrain_via or IN_PROCESS, None if args.retrain_via else PROJECT
    if first_via:
        print(FIRST_VIA_PROJECT, end="")
    # The train entry point's own output (a table per version, MLflow's progress on stderr) would bury
    # the story: it goes to a log.
    train_log = out / "train.log"
    with train_log.open("w") as log:
        last = replay_cycles(config, data, points, via=via, first_via=first_via, log=log,
                             each=lambda step, report: print(step_line(f"{step + 1:2d}/{len(points)}", "cycle", report)))[-1]
        # An urgent manual retrain on the very window the current Production was trained on cannot
        # beat it: the gate rejects it and the candidate is archived, tagged with why.
        print("a user forces a retrain on the data Production was trained on (it cannot beat Production):")
        with output_into(log):
            report = run_cycle(config, as_of=_version_as_of(config) or last.as_of, force=True,
                               reason="demo: on-demand retrain requested by a user", via=via, data=data)
        print(step_line("then", "forced", report))
    print(f"(the train entry point's output: {train_log})")

    final = status(config)
    print("\nregistry after the replay")
    print(table(final.versions, ["version", "stage", "aliases", "trigger", "decision", "baseline_version",
                                 "train_window"]))
    print("\nwhy each version exists")
    for row in final.versions:
        print(f"  v{row['version']} [{row['stage']}] trigger={row['trigger']}: {row['reason']}")
        print(f"      decision={row['decision']}: {row['decision_reason']}")
    print(f"\n{len(history(config, limit=1000))} controller runs recorded in experiment "
          f"'{config.experiment}-controller' ({time.perf_counter() - started:.0f} s)")
    print("\nEvidently reports of the last cycle (model quality and data drift):")
    _report_paths(report)
    _dashboard(config, data, out)
    pages = ui_pages(config)
    tools = _bin()
    print("\nLook at it:")
    print(f"  {tools}mlflow ui --backend-store-uri {mlflow.get_tracking_uri()}")
    print(f"    then open the cycles: {pages['cycles']}")
    print(f"    and the model:        {pages['model']}")
    print(f"  {tools}mlflow-retrain status --config {args.config}")
    print(f"  {tools}mlflow-retrain history --config {args.config}")
    return 0


def _bin() -> str:
    """Where this Python's commands are, as a prefix to type: `.venv/bin/` under the working folder."""
    folder = Path(sys.executable).parent
    try:
        return f"{folder.relative_to(Path.cwd())}/"
    except ValueError:
        return f"{folder}/"


def _version_as_of(config) -> str | None:
    from mlflow_retrain.adapters.registry import Registry

    production = Registry(config).production()
    return production.tags.get(T.AS_OF) if production else None


def _dashboard(config, data, out: Path) -> None:
    """The monitoring dashboard over the whole replayed history: who served when, and how well."""
    from mlflow_retrain.usecases.monitor import run_monitor

    # a replay: the span ends at the data's last row, not at today's clock (which would be a data gap)
    result = run_monitor(config, data=data, out_dir=out, every=None, end=str(data.last))
    scored = [p.metric for p in result.points if p.metric is not None]
    print(f"\nmonitoring: {len(result.points)} windows, mean {config.metric} {sum(scored) / len(scored):.1f}, "
          f"health: {'ok' if result.healthy else result.health[0]}")
    print(f"dashboard: {result.dashboard.resolve()}")


def _report_paths(report) -> None:
    """Where the last cycle's Evidently reports are, as files a browser opens."""
    import mlflow
    from mlflow.artifacts import download_artifacts

    if not report.cycle_run_id:
        return
    uri = mlflow.get_run(report.cycle_run_id).info.artifact_uri
    for name in report.reports:
        print(f"  {download_artifacts(f'{uri}/{name}')}")


if __name__ == "__main__":
    sys.exit(main())
