"""A wheel of this checkout installed (non-editable) into a fresh venv.

Built once per session by `wheel_venv`; `benchmarks/bench_noop_cycle.py` uses the same functions.
The sources are copied to a temporary folder first, so building writes nothing (no `build/`, no
egg-info) into the checkout. The venv is created from the same base Python as the running one and
gets the wheel from `pip install`. The tests' venv (`link_venv`) holds, beside it, links to the dev
venv's copies of exactly the distributions the wheel declares (transitively, versions checked) and
their console scripts: a dependency missing from setup.cfg fails here, not for the user, in 4-12 s
where pip copying them (1 GB, 40,000 files) took 50-75 s (load 2-19). The benchmark's venv (`install_venv`) gets
them from pip, resolving as a user's `pip install` does. `--no-compile` skips byte-compiling every
installed module up front (a third of pip's install time); Python compiles what is imported on first
use, as it does for any module. The venv goes to /dev/shm when it has room.
"""

from __future__ import annotations

import email
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.cfg", "README.md", "mlflow_retrain")
# what would make a subprocess use another store, run or interpreter than a new user's
FOREIGN_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
               "MLFLOW_EXPERIMENT_NAME", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")


@dataclass(frozen=True)
class WheelVenv:
    root: Path
    wheel: Path
    install_seconds: float
    package_dir: Path  # where `import mlflow_retrain` resolves in the venv

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def script(self, name: str) -> Path:
        return self.bin / name

    def env(self, **extra: str) -> dict[str, str]:
        """A new user's shell: the venv's bin first on PATH, the dev venv nowhere, no MLflow settings."""
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
        dev_bin = str(Path(sys.executable).parent)
        path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != dev_bin]
        return {**env, "PATH": os.pathsep.join([str(self.bin), *path]), **extra}


def build_wheel(folder: Path) -> Path:
    """`pip wheel --no-deps` of a copy of the checkout's sources (as they are now, committed or not)."""
    src = folder / "src"
    src.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(folder / "dist"),
                          str(src)], capture_output=True, text=True, cwd=folder)
    if out.returncode:
        raise RuntimeError(f"pip wheel failed:\n{out.stderr[-3000:]}")
    (wheel,) = (folder / "dist").glob("mlflow_retrain-*.whl")
    return wheel


def base_python() -> str:
    """The interpreter the running venv was made from (the dev venv's base Python)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def venv_home(fallback: Path) -> Path:
    """A new folder in memory (/dev/shm) when it has room for the venv, else under `fallback`."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 4 << 30:
        return Path(tempfile.mkdtemp(prefix="mlflow-retrain-wheel-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="venv-", dir=fallback))


def install_venv(folder: Path, wheel: Path) -> WheelVenv:
    """A fresh venv in `folder` with `wheel` installed non-editable, checked to resolve to its own copy."""
    root = folder / "venv"
    began = time.perf_counter()
    subprocess.run([base_python(), "-m", "venv", str(root)], check=True, capture_output=True)
    out = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "--no-compile", "--quiet",
                          str(wheel)], capture_output=True, text=True, cwd=folder)
    seconds = time.perf_counter() - began
    if out.returncode:
        raise RuntimeError(f"pip install of {wheel.name} failed:\n{out.stderr[-3000:]}")
    return WheelVenv(root, wheel, seconds, _installed_package(root, folder))


def link_venv(folder: Path, wheel: Path) -> WheelVenv:
    """A fresh venv in `folder` with `wheel` installed non-editable and without its dependencies, which
    are links to the running venv's copies of exactly the distributions the wheel requires (and they
    require), each checked against the version range asked for: a dependency missing from setup.cfg
    is missing here too, as in `install_venv`, without copying 1 GB (a minute of the suite's CPU)."""
    root = folder / "venv"
    began = time.perf_counter()
    subprocess.run([base_python(), "-m", "venv", "--without-pip", str(root)], check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install",
                          "--no-deps", "--no-compile", "--quiet", str(wheel)], capture_output=True, text=True,
                         cwd=folder)
    if out.returncode:
        raise RuntimeError(f"pip install of {wheel.name} failed:\n{out.stderr[-3000:]}")
    site = next((root / "lib").glob("python*/site-packages"))
    for dist in _required(wheel):
        where = Path(dist.locate_file(""))
        for top in {Path(str(f)).parts[0] for f in dist.files or []} - {"..", "__pycache__"}:
            if not (site / top).exists() and (where / top).exists():
                (site / top).symlink_to(where / top)
        for script in dist.entry_points.select(group="console_scripts"):  # `mlflow run` starts `mlflow`
            path = root / "bin" / script.name
            path.write_text(f"#!{root / 'bin' / 'python'}\nimport sys\nfrom {script.module} import "
                            f"{script.attr.split('.')[0]}\nsys.exit({script.attr}())\n")
            path.chmod(0o755)
    return WheelVenv(root, wheel, time.perf_counter() - began, _installed_package(root, folder))


def _required(wheel: Path) -> list[importlib.metadata.Distribution]:
    """The running venv's distributions that `wheel` requires, transitively, extras and markers
    evaluated as pip does; one outside the range asked for fails."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        todo = [(r, "") for r in email.message_from_bytes(archive.read(name)).get_all("Requires-Dist") or []]
    found: dict[str, importlib.metadata.Distribution] = {}
    extras: dict[str, set[str]] = {}  # of each distribution, those whose requirements are queued
    while todo:
        text, extra = todo.pop()
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        dist = found.setdefault(canonicalize_name(req.name), importlib.metadata.distribution(req.name))
        if not req.specifier.contains(dist.version, prereleases=True):
            raise RuntimeError(f"{req} is asked for; the dev venv has {dist.version}")
        new = ({""} | req.extras) - extras.setdefault(canonicalize_name(req.name), set())
        extras[canonicalize_name(req.name)] |= new
        todo.extend((r, wanted) for wanted in new for r in dist.requires or [])
    return list(found.values())


def _installed_package(root: Path, folder: Path) -> Path:
    """Where `import mlflow_retrain` resolves in the venv at `root`: its own site-packages, installed
    non-editable, with the built-in trainer's MLproject; anything else fails."""
    probe = ("import importlib.metadata as m, importlib.resources as r, importlib.util as u, json, mlflow_retrain; "
             "d = m.distribution('mlflow-retrain'); "
             "print(json.dumps({'file': mlflow_retrain.__file__, 'pytest': bool(u.find_spec('pytest')), "
             "'mlproject': str(r.files('mlflow_retrain') / 'project' / 'MLproject'), "
             "'direct_url': d.read_text('direct_url.json')}))")
    # cwd is the venv's folder: `python -c` puts the working folder first on sys.path
    found = subprocess.run([str(root / "bin" / "python"), "-c", probe], capture_output=True, text=True, cwd=folder,
                           env={k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}, check=True)
    info = json.loads(found.stdout)
    package_dir = Path(info["file"]).resolve().parent
    if REPO in package_dir.parents or not package_dir.is_relative_to(root.resolve()):
        raise RuntimeError(f"the venv imports mlflow_retrain from {package_dir}, not its own site-packages")
    if json.loads(info["direct_url"] or "{}").get("dir_info", {}).get("editable"):
        raise RuntimeError("mlflow-retrain was installed editable")
    if info["pytest"]:
        raise RuntimeError("the venv sees the dev venv's packages (pytest): an undeclared dependency would pass")
    if not Path(info["mlproject"]).is_file():
        raise RuntimeError(f"the wheel does not ship the built-in trainer: no {info['mlproject']}")
    return package_dir


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> WheelVenv:
    """This checkout as a user gets it from `pip install <wheel>`, in a venv made for the session."""
    folder = tmp_path_factory.mktemp("wheel")
    home = venv_home(folder)
    try:
        venv = link_venv(home, build_wheel(folder))
        print(f"\nwheel venv: {venv.wheel.name} installed with its dependencies in {venv.install_seconds:.0f} s")
        yield venv
    finally:
        shutil.rmtree(home, ignore_errors=True)
