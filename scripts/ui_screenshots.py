"""Screenshots of what a reviewer sees in the MLflow UI, from a real `mlflow server` and headless Chromium.

    .venv/bin/python scripts/ui_screenshots.py            # writes docs/screenshots/*.png
    .venv/bin/python scripts/ui_screenshots.py --keep DIR # keeps the demo store in DIR (reused if there)

It builds a small demo store with the CLI, as a user would (a first model trained on the bundled bike
data, then cycles: one that keeps Production, one that retrains and promotes, one forced retrain the
gate rejects, and a rollback), serves it with `mlflow server`, and photographs the controller's
experiment, a cycle's run, the promoted version's page, the registered models list and the model's
page with its versions list. Chromium is Debian's `chromium` package
(`apt-get install -y chromium`; `.ci/run` installs it). `tests/integration/test_ui.py` uses the same
functions to check the pages' text.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mlflow_retrain.base import links

REPO = Path(__file__).resolve().parents[1]
BIKE = REPO / "data" / "bike_sharing_hourly.csv"
BIN = Path(sys.executable).parent

def policy(data: Path) -> dict:
    """A small, fast policy over the bike data (as in tests/conftest.py): weekly monitoring, 60-day training."""
    return {
        "model_name": "bikes", "experiment": "bikes",
        "data": {"path": str(data), "timestamp": "timestamp", "target": "cnt",
                 "features": ["hour", "season", "holiday", "weekday", "workingday", "weathersit", "temp", "atemp",
                              "hum", "windspeed"],
                 "categorical": ["season", "holiday", "weekday", "workingday", "weathersit"]},
        "training": {"params": {"max_iter": 30}, "window": "60d", "holdout": "7d"},
        "monitoring": {"window": "7d", "metric": "mae"},
        "triggers": {"metric_threshold": {"max": 60}},
        "validation": {"max_metric": 120, "min_improvement": 0.0, "min_relative_improvement": 0.05},
    }


def chromium() -> str | None:
    """Debian's Chromium (or Chrome) on PATH, else None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _browser(*args: str, height: int = 900, timeout: float = 90) -> subprocess.CompletedProcess:
    browser = chromium()
    if browser is None:
        raise RuntimeError("Chromium is not installed: apt-get install -y chromium (.ci/run does)")
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: no mode remembered from another page
        # --no-sandbox: Chromium's sandbox refuses to run as root, which CI containers are
        command = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size=1400,{height}",
                   "--virtual-time-budget=15000", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)


def dump_dom(url: str) -> str:
    """The page's DOM once the UI has rendered it (after its requests, within the time budget)."""
    return _browser("--dump-dom", url).stdout


def screenshot(url: str, path: Path, height: int = 900) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _browser(f"--screenshot={path}", url, height=height)
    return path


HOST = "127.0.0.2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextmanager
def serve(db: Path) -> Iterator[str]:
    """`mlflow server` over an sqlite store (its artifacts where the store keeps them); yields its URL."""
    port = _free_port()
    log = (db.parent / "server.log").open("w")
    url = f"http://{HOST}:{port}"
    # 127.0.0.2, still this machine's loopback: on `localhost`/127.0.0.1 the UI opens its AI Assistant
    # panel over a third of every page; MLflow's host and origin checks have to be told about the address
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--host", HOST, "--port", str(port),
                             "--allowed-hosts", f"{HOST},{HOST}:{port}", "--cors-allowed-origins", url,
                             "--backend-store-uri", f"sqlite:///{db}", "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=db.parent)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start: {(db.parent / 'server.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _cli(folder: Path, *args: str) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "OMP_NUM_THREADS": "1"}
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_REGISTRY_URI"):
        env.pop(name, None)
    command = [str(BIN / "mlflow-retrain"), *args, "--config", str(folder / "retrain.yaml")]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    print(f"  mlflow-retrain {' '.join(args)}", file=sys.stderr)


def build_demo(folder: Path) -> Path:
    """A demo store through the CLI: v1 trained, then a quiet cycle, a promotion, a rejection, a rollback."""
    import pandas as pd
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(BIKE)
    frame[frame.timestamp < "2011-10-01"].to_csv(folder / "bikes.csv", index=False)
    (folder / "retrain.yaml").write_text(yaml.safe_dump(policy(folder / "bikes.csv")))
    _cli(folder, "train", "--as-of", "2011-04-30")
    _cli(folder, "cycle", "--as-of", "2011-05-08", "--retrain-via", "inprocess")  # mae below 60: no retrain
    _cli(folder, "cycle", "--as-of", "2011-05-31", "--retrain-via", "inprocess")  # mae above 60: v2 promoted
    _cli(folder, "cycle", "--as-of", "2011-06-07", "--retrain-via", "inprocess", "--force",
         "--reason", "a week of new rentals")  # not 5% better than v2: rejected
    _cli(folder, "rollback", "--as-of", "2011-06-07", "--reason", "v2 under-predicts the June heat")
    return folder / "mlflow.db"


class Pages:
    """The URLs a reviewer opens, found in the demo store."""

    def __init__(self, url: str, db: Path, model: str = "bikes", experiment: str = "bikes"):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{db}")
        controller = client.get_experiment_by_name(f"{experiment}-controller")
        runs = client.search_runs([controller.experiment_id], order_by=["attributes.start_time ASC"])
        promoted = next(r for r in runs if r.data.tags.get("outcome") == "promoted")
        self.url, self.model = url, model
        self.controller_id, self.cycle_run_id = controller.experiment_id, promoted.info.run_id
        self.version = promoted.data.tags["candidate_version"]
        self.training_id = client.get_experiment_by_name(experiment).experiment_id

    def experiment(self, experiment_id: str | None = None) -> str:
        return links.absolute(self.url, links.experiment(experiment_id or self.controller_id))

    def run(self, run_id: str | None = None) -> str:
        return links.absolute(self.url, links.run(run_id or self.cycle_run_id, self.controller_id))

    def model_version(self, version: str | None = None) -> str:
        return links.absolute(self.url, links.model(self.model, version or self.version))

    def model_page(self) -> str:
        """The registered model's page: its description (Production's history) and the versions list."""
        return links.absolute(self.url, links.model(self.model))

    def models(self) -> str:
        """The registered models list."""
        return f"{self.url}/#/models?{links.MODE}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--keep", type=Path, help="build the demo store in this folder and keep it (or reuse it)")
    args = parser.parse_args()
    if chromium() is None:
        sys.exit("Chromium is not installed: apt-get install -y chromium (.ci/run does)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "demo"
        db = folder / "mlflow.db" if (folder / "mlflow.db").exists() else build_demo(folder)
        with serve(db) as url:
            pages = Pages(url, db)
            shots = {"controller-experiment.png": (pages.experiment(), 520),
                     "cycle-run.png": (pages.run(), 2000),  # tall enough for the description
                     "model-version.png": (pages.model_version(), 620),
                     "training-experiment.png": (pages.experiment(pages.training_id), 520),
                     "registered-models.png": (pages.models(), 360),
                     "registered-model.png": (pages.model_page(), 900)}
            for name, (page, height) in shots.items():
                print(f"{screenshot(page, args.out / name, height)}  <- {page}")


if __name__ == "__main__":
    main()
