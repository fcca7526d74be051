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


def test_model_requirements_reads_the_installed_distributions_once_until_one_is_installed(tmp_path, monkeypatch):
    """The owners of the model's modules are read once per process (0.3 s of CPU a training), and read
    again once a distribution is installed where Python looks: a model of a new package pins it."""
    import importlib.metadata
    import types

    from mlflow_retrain.adapters import train

    reads = []
    real = importlib.metadata.packages_distributions
    monkeypatch.setattr(importlib.metadata, "packages_distributions", lambda: reads.append(1) or real())
    monkeypatch.syspath_prepend(str(tmp_path))
    model = types.SimpleNamespace()  # of the standard library: owned by no distribution
    first = train.model_requirements(model)
    read = len(reads)  # 0 when an earlier test of this process read them already
    (tmp_path / "written.txt").write_text("a file written into a folder on sys.path (a cycle's working folder)")
    assert train.model_requirements(model) == first and len(reads) == read <= 1
    assert any(r.startswith("scikit-learn==") for r in first) and not any(r.startswith("suite-probe") for r in first)
    info = tmp_path / "suite_probe-1.2.dist-info"  # what pip writes for a distribution installed into tmp_path
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: suite-probe\nVersion: 1.2\n")
    (info / "top_level.txt").write_text("suite_probe\n")
    probe = type("Probe", (), {"__module__": "suite_probe.model"})()
    assert "suite-probe==1.2" in train.model_requirements(probe) and len(reads) == read + 1
