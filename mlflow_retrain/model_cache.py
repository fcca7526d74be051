"""Scikit-learn models in skops format, loaded through skops once per machine.

MLflow saves scikit-learn models with skops by default, and so does the built-in trainer. Importing
`skops.io` imports all of scikit-learn to build skops' list of trusted types: 0.3 to 1.4 s of CPU by
what else is installed, up to a third of a cycle that decides not to retrain, paid again by every
cycle for the same Production model. So once skops (through `mlflow.sklearn.load_model`) has loaded
a model, the object is pickled into a cache folder of this machine's user, named by the SHA-256 of
what decided that load: the model file's bytes, the trusted types its MLmodel lists, and the
versions of Python, scikit-learn, NumPy and skops. A later load hashes the downloaded files again
and unpickles its own copy when one of that name exists.

What that trusts: the cache folder, as much as the user's site-packages (both are this user's
files; a folder another user owns or may write to is not used). Not the artifact store: its bytes
are hashed on every load, so a changed file or trusted list is a new name and goes through skops.
The cache serves only objects skops loaded from the same inputs, and skops' own check is no
stronger than the MLmodel file beside the model (MLflow's `MLFLOW_ALLOW_PICKLE_DESERIALIZATION`
says as much; when it is false, the cache is not used and MLflow refuses as before).

`MLFLOW_RETRAIN_CACHE_DIR` moves the folder (default `$XDG_CACHE_HOME/mlflow-retrain`, else
`~/.cache/mlflow-retrain`); an empty value turns the cache off. A folder that cannot be written is
the same as none. The newest `KEEP` models are kept, as long as they fit in `BUDGET` bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV = "MLFLOW_RETRAIN_CACHE_DIR"
KEEP = 32  # models kept; a fleet of more Production models than this reloads some through skops
BUDGET = 2 << 30  # bytes kept at most: the newest copies that fit (a model larger than this is not kept)


def folder() -> Path | None:
    """Where audited models are kept, created private to the user; None when the cache is off or
    the folder cannot be made."""
    configured = os.environ.get(ENV)
    if configured == "":
        return None
    if configured is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        configured = os.path.join(base, "mlflow-retrain")
    models = Path(configured) / "models"
    try:
        models.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = models.stat()
    except OSError as exc:
        log.debug("model cache off: %s", exc)
        return None
    if info.st_uid != os.getuid() or info.st_mode & 0o022:  # another user could plant a pickle there
        log.warning("model cache off: %s is not private to this user (owner and mode 0700)", models)
        return None
    return models


def key(model_file: Path, trusted: list[str]) -> str:
    """The name of a model's cached copy: everything the skops load depended on (the file hashed as
    it is read, not held in memory: a forest can be hundreds of MB)."""
    import numpy
    import sklearn

    with model_file.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256")
    versions = [platform.python_version(), sklearn.__version__, numpy.__version__, metadata.version("skops")]
    digest.update(json.dumps([sorted(trusted), versions]).encode())
    return digest.hexdigest()


def load_sklearn(local: str, flavor: dict[str, Any]) -> Any:
    """`mlflow.sklearn.load_model(local)`, served from the cache for a skops model seen before.

    `flavor` is the MLmodel's `sklearn` section. Models that carry code (`code_paths`) always go
    through MLflow, which puts that code on `sys.path` before unpickling.
    """
    import mlflow.sklearn
    from mlflow.environment_variables import MLFLOW_ALLOW_PICKLE_DESERIALIZATION

    if (flavor.get("serialization_format") != mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS or flavor.get("code")
            or not MLFLOW_ALLOW_PICKLE_DESERIALIZATION.get() or (models := folder()) is None):
        return mlflow.sklearn.load_model(local)
    kept = models / f"{key(Path(local, flavor['pickled_model']), flavor.get('skops_trusted_types') or [])}.pkl"
    try:
        with kept.open("rb") as f:
            model = pickle.load(f)
        with contextlib.suppress(OSError):
            os.utime(kept)  # recently used: kept by the pruning
        return model
    except FileNotFoundError:
        pass
    # a truncated or foreign file (what pickle raises then, by its documentation): load through skops
    # and write it again
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError) as exc:
        log.warning("model cache: %s unreadable (%s); loading through skops", kept.name, exc)
    model = mlflow.sklearn.load_model(local)
    _keep(models, kept, model)
    return model


def _keep(models: Path, kept: Path, model: Any) -> None:
    """Write the copy atomically (a reader sees the whole file or none), then drop the oldest."""
    try:
        fd, tmp = tempfile.mkstemp(dir=models, suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, kept)
        except BaseException:
            os.unlink(tmp)
            raise
        stats = {p: p.stat() for p in models.glob("*.pkl")}
        kept_bytes = 0
        for n, copy in enumerate(sorted(stats, key=lambda p: stats[p].st_mtime, reverse=True)):
            kept_bytes += stats[copy].st_size
            if n >= KEEP or kept_bytes > BUDGET:
                copy.unlink(missing_ok=True)
    except (OSError, pickle.PicklingError) as exc:
        log.debug("model cache: not kept: %s", exc)
