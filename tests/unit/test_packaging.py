"""conda.yaml describes the same environment as setup.cfg, so `mlflow run .` with conda matches pip."""

from __future__ import annotations

import configparser
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_conda_env_pins_what_setup_cfg_pins():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    required = {line.strip() for line in cfg["options"]["install_requires"].splitlines()
                if line.strip() and not line.strip().startswith("#")}
    env = yaml.safe_load((REPO / "conda.yaml").read_text())
    assert "python=3.11" in env["dependencies"]
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert set(pip) - {"-e ."} == required and "-e ." in pip
    assert "pandas>=2.1,<3" in required  # evidently 0.7 does not import with pandas 3


def test_the_packaged_mlproject_has_the_repositorys_entry_points():
    """`mlflow run .` (the repository) and a pip-installed tool (the package's copy) run the same commands."""
    root = yaml.safe_load((REPO / "MLproject").read_text())
    packaged = yaml.safe_load((REPO / "mlflow_retrain" / "project" / "MLproject").read_text())
    assert packaged["entry_points"] == root["entry_points"]
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert "project/MLproject" in cfg["options.package_data"]["mlflow_retrain"]
