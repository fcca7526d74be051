"""Scikit-learn models in skops format, loaded through skops once per machine.

Why it is built this way: docs/design.md#adapters-model-cache.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import pickle
import platform
import secrets
import stat
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

ENV = "MLFLOW_RETRAIN_CACHE_DIR"
KEEP = 32  # models kept; a fleet of more Production models than this reloads some through skops
BUDGET = 2 << 30  # bytes kept at most: the newest copies that fit (a model larger than this is not kept)


DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Untrusted(Exception):
    """A folder of the cache's path that another user could change."""


def path() -> Path | None:
    """The configured cache folder (`models` below it holds the copies); None when the cache is off."""
    configured = os.environ.get(ENV)
    if configured == "":
        return None
    if configured is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        configured = os.path.join(base, "mlflow-retrain")
    return Path(configured) / "models"


def _trusted(info: os.stat_result, where: str) -> bool:
    """Whether a folder is sticky and shared (then each entry in it must be this user's or root's);
    raises Untrusted when it is another user's, or writable by others without the sticky bit."""
    if info.st_uid not in (os.getuid(), 0):
        raise Untrusted(f"{where} is owned by another user (uid {info.st_uid})")
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise Untrusted(f"{where} may be written by others (mode {stat.filemode(info.st_mode)})")
    return bool(info.st_mode & 0o022)


def _open_checked(models: Path) -> int | None:
    """A descriptor of the cache folder, made (0700) where missing, every folder from `/` to it opened
    without following links and checked (`_trusted`); None, with a warning, when one fails."""
    real = Path(os.path.realpath(models))  # links resolved once: what is opened below must be that path
    fd = os.open("/", DIRECTORY)
    try:
        shared = _trusted(os.fstat(fd), "/")
        for n, name in enumerate(real.parts[1:], start=2):
            try:
                child = os.open(name, DIRECTORY, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(name, 0o700, dir_fd=fd)
                child = os.open(name, DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, where = child, str(Path(*real.parts[:n]))
            info = os.fstat(fd)
            if shared and info.st_uid not in (os.getuid(), 0):
                raise Untrusted(f"{where}, in a folder every user may write, is another user's")
            shared = _trusted(info, where)
        if info.st_uid != os.getuid() or info.st_mode & 0o022:  # another user could plant a pickle there
            raise Untrusted(f"{real} is not this user's with mode 0700")
        return fd
    except Untrusted as exc:
        log.warning("model cache off: %s is not private to this user: %s", models, exc)
    except OSError as exc:
        # a link put where a checked folder was (ELOOP, ENOTDIR) is news; a folder that cannot be made is no cache
        swapped = exc.errno in (errno.ELOOP, errno.ENOTDIR)
        log.log(logging.WARNING if swapped else logging.DEBUG, "model cache off: %s cannot be opened safely (%s)",
                models, exc.strerror or exc)
    os.close(fd)
    return None


@contextlib.contextmanager
def opened(models: Path) -> Iterator[int | None]:
    """The checked cache folder's descriptor (`_open_checked`) for the time of one load."""
    fd = _open_checked(models)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


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


def named_class(model_file: Path) -> str | None:
    """The class of the object a skops file holds (`module.Class`, from its schema), read without
    skops; None when the file does not say."""
    try:
        with zipfile.ZipFile(model_file) as archive:
            schema = json.loads(archive.read("schema.json"))
        return f"{schema['__module__']}.{schema['__class__']}"
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return None


def load_sklearn(local: str, flavor: dict[str, Any]) -> Any:
    """`mlflow.sklearn.load_model(local)`, served from the cache for a skops model seen before.

    `flavor` is the MLmodel's `sklearn` section. Models that carry code (`code_paths`) always go
    through MLflow, which puts that code on `sys.path` before unpickling.
    """
    import mlflow.sklearn
    from mlflow.environment_variables import MLFLOW_ALLOW_PICKLE_DESERIALIZATION

    if (flavor.get("serialization_format") != mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS or flavor.get("code")
            or not MLFLOW_ALLOW_PICKLE_DESERIALIZATION.get() or (models := path()) is None):
        return mlflow.sklearn.load_model(local)
    model_file = Path(local, flavor["pickled_model"])
    kept = f"{key(model_file, flavor.get('skops_trusted_types') or [])}.pkl"
    with opened(models) as fd:
        if fd is None:
            return mlflow.sklearn.load_model(local)
        model = _read(fd, kept, named_class(model_file))
        if model is not None:
            return model
        model = mlflow.sklearn.load_model(local)
        _keep(fd, kept, model)
        return model


def _read(fd: int, kept: str, expected: str | None) -> Any:
    """The copy named `kept` in the checked folder `fd`, if it is one this user wrote and holds an
    estimator of the `expected` class; else None (a warning unless there is no copy)."""
    try:
        copy = os.open(kept, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a link put in the copy's place
        log.warning("model cache: %s not used (%s); loading from the artifact", kept, exc.strerror or exc)
        return None
    with os.fdopen(copy, "rb") as f:
        info = os.fstat(copy)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
            log.warning("model cache: %s not used (not a regular file private to this user); loading from the "
                        "artifact", kept)
            return None
        try:
            model = pickle.load(f)
        # a truncated or foreign file (what pickle raises then, by its documentation)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError) as exc:
            log.warning("model cache: %s unreadable (%s); loading from the artifact", kept, exc)
            return None
        found = f"{type(model).__module__}.{type(model).__qualname__}"
        if not callable(getattr(model, "predict", None)) or (expected is not None and found != expected):
            log.warning("model cache: %s holds a %s, not the %s its model file holds; loading from the artifact",
                        kept, found, expected or "estimator")
            return None
        with contextlib.suppress(OSError):
            os.utime(copy)  # recently used: kept by the pruning
        return model


def _keep(fd: int, kept: str, model: Any) -> None:
    """Write the copy atomically in the checked folder (a reader sees the whole file or none; a new
    name created exclusively, never through a link), then drop the oldest."""
    tmp = f".{secrets.token_hex(8)}.tmp"
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
        try:
            with os.fdopen(out, "wb") as f:
                pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, kept, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            os.unlink(tmp, dir_fd=fd)
            raise
        with os.scandir(fd) as entries:
            stats = {e.name: e.stat(follow_symlinks=False) for e in entries if e.name.endswith(".pkl")}
        kept_bytes = 0
        for n, copy in enumerate(sorted(stats, key=lambda name: stats[name].st_mtime, reverse=True)):
            kept_bytes += stats[copy].st_size
            if n >= KEEP or kept_bytes > BUDGET:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(copy, dir_fd=fd)
    except (OSError, pickle.PicklingError) as exc:
        log.debug("model cache: not kept: %s", exc)
