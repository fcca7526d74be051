"""The audited-model cache: a skops model loaded once through skops, then from this machine's copy.

Real skops files written by `mlflow.sklearn.save_model`, real fresh processes for what each load
imports; a stale or foreign copy must never be served.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlflow_retrain.adapters import model_cache

TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
ROWS = pd.DataFrame({"x": np.linspace(0, 10, 200), "z": np.sin(np.linspace(0, 10, 200))})

# load in a fresh interpreter: the predictions and whether skops was imported for them
LOAD = """
import json, sys
from mlflow.models import Model
import pandas as pd
from mlflow_retrain.adapters import model_cache
model = model_cache.load_sklearn(sys.argv[1], Model.load(sys.argv[1]).flavors["sklearn"])
rows = pd.read_json(sys.argv[2])
print(json.dumps({"skops": "skops.io" in sys.modules, "pred": model.predict(rows).tolist()}))
"""


def save(folder: Path, depth: int) -> Path:
    import mlflow.sklearn
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = HistGradientBoostingRegressor(max_depth=depth, random_state=0).fit(ROWS, ROWS.x * 2 + ROWS.z)
    # requirements named: MLflow would otherwise infer them by loading the model in a new interpreter
    mlflow.sklearn.save_model(model, folder, skops_trusted_types=TRUSTED, pip_requirements=["scikit-learn"])
    return folder


def flavor(folder: Path) -> dict:
    from mlflow.models import Model

    return Model.load(str(folder)).flavors["sklearn"]


def copies(cache: Path) -> list[Path]:
    return sorted((cache / "models").glob("*.pkl"))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(model_cache.ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_second_process_loads_the_model_without_skops(tmp_path: Path, cache: Path) -> None:
    model = save(tmp_path / "model", depth=3)
    rows = tmp_path / "rows.json"
    ROWS.to_json(rows)
    runs = [json.loads(subprocess.run([sys.executable, "-c", LOAD, str(model), str(rows)], check=True,
                                      capture_output=True, text=True, env=os.environ).stdout) for _ in range(2)]
    assert [r["skops"] for r in runs] == [True, False]
    assert runs[0]["pred"] == runs[1]["pred"]
    [kept] = copies(cache)
    assert kept.stat().st_mode & 0o777 == 0o600 and (cache / "models").stat().st_mode & 0o777 == 0o700


def test_a_changed_model_or_trusted_list_is_never_served_from_an_old_copy(tmp_path: Path, cache: Path) -> None:
    folder = save(tmp_path / "model", depth=2)
    first = model_cache.load_sklearn(str(folder), flavor(folder)).predict(ROWS)
    assert len(copies(cache)) == 1
    # the artifact replaced by another model at the same place: its own copy, its own predictions
    second_folder = save(tmp_path / "other", depth=6)
    (folder / "model.skops").write_bytes((second_folder / "model.skops").read_bytes())
    second = model_cache.load_sklearn(str(folder), flavor(folder)).predict(ROWS)
    assert len(copies(cache)) == 2 and not np.allclose(first, second)
    # the same bytes with another trusted list went through skops again (a third copy)
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    meta["flavors"]["sklearn"]["skops_trusted_types"] = [*TRUSTED, "sklearn.tree._tree.Tree"]
    (folder / "MLmodel").write_text(yaml.safe_dump(meta))
    third = model_cache.load_sklearn(str(folder), flavor(folder)).predict(ROWS)
    assert len(copies(cache)) == 3 and np.array_equal(second, third)


def test_an_unreadable_copy_is_loaded_through_skops_and_written_again(tmp_path: Path, cache: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    folder = save(tmp_path / "model", depth=3)
    expected = model_cache.load_sklearn(str(folder), flavor(folder)).predict(ROWS)
    [kept] = copies(cache)
    kept.write_bytes(kept.read_bytes()[:100])
    assert np.array_equal(model_cache.load_sklearn(str(folder), flavor(folder)).predict(ROWS), expected)
    assert "unreadable" in caplog.text and kept.stat().st_size > 100


def test_no_cache_when_turned_off_or_when_mlflow_forbids_unpickling(tmp_path: Path, cache: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException
    from sklearn.linear_model import LinearRegression

    # a pickled model is MLflow's to load: no cache folder is even made
    pickled = tmp_path / "pickled"
    mlflow.sklearn.save_model(LinearRegression().fit(ROWS, ROWS.x), pickled, serialization_format="cloudpickle",
                              pip_requirements=["scikit-learn"])
    assert model_cache.load_sklearn(str(pickled), flavor(pickled)).predict(ROWS).shape == (len(ROWS),)
    assert not cache.exists()
    folder = save(tmp_path / "model", depth=3)
    monkeypatch.setenv(model_cache.ENV, "")
    model_cache.load_sklearn(str(folder), flavor(folder))
    assert not cache.exists()
    monkeypatch.setenv(model_cache.ENV, str(cache))
    model_cache.load_sklearn(str(folder), flavor(folder))
    assert len(copies(cache)) == 1
    # MLflow's switch against unpickling model files holds for the cached copy too
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    with pytest.raises(MlflowException, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        model_cache.load_sklearn(str(folder), flavor(folder))


def test_only_the_newest_copies_are_kept(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_cache, "KEEP", 2)
    folders = [save(tmp_path / f"m{depth}", depth=depth) for depth in (2, 3, 4)]
    for folder in folders:
        model_cache.load_sklearn(str(folder), flavor(folder))
    assert len(copies(cache)) == 2
    model_cache.load_sklearn(str(folders[-1]), flavor(folders[-1]))  # the newest, served from its copy
    assert len(copies(cache)) == 2
    # a byte budget smaller than one copy: nothing is kept (the model still loads)
    monkeypatch.setattr(model_cache, "BUDGET", 1000)
    assert model_cache.load_sklearn(str(folders[0]), flavor(folders[0])) is not None
    assert copies(cache) == []


def test_a_folder_others_may_write_to_is_not_used(tmp_path: Path, cache: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    folder = save(tmp_path / "model", depth=3)
    flavor_conf = flavor(folder)
    expected = model_cache.load_sklearn(str(folder), flavor_conf).predict(ROWS)
    [kept] = copies(cache)
    # another user plants an object under the right name in a folder left group- and world-writable
    kept.write_bytes(pickle.dumps("planted"))
    (cache / "models").chmod(0o777)
    loaded = model_cache.load_sklearn(str(folder), flavor_conf)
    assert np.array_equal(loaded.predict(ROWS), expected)
    assert "not private to this user" in caplog.text


def planted() -> bytes:
    """Another estimator's pickle: what a user who could write the cache would put under the right name."""
    from sklearn.dummy import DummyRegressor

    return pickle.dumps(DummyRegressor(strategy="constant", constant=-1.0).fit(ROWS, ROWS.x))


def fresh_load(folder: Path, caplog: pytest.LogCaptureFixture) -> Callable[[], np.ndarray]:
    """Load the model again (its predictions), the log cleared first: what the load warned is its own."""

    def load() -> np.ndarray:
        caplog.clear()
        return model_cache.load_sklearn(str(folder), flavor(folder)).predict(ROWS)

    return load


def test_a_cache_path_another_user_could_change_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    cache = shared / "cache"
    monkeypatch.setenv(model_cache.ENV, str(cache))
    folder = save(tmp_path / "model", depth=3)
    expected = model_cache.load_sklearn(str(folder), flavor(folder)).predict(ROWS)
    [kept] = copies(cache)

    load = fresh_load(folder, caplog)
    # a sticky folder every user may write (like /tmp) holding this user's folder: used, no warning
    shared.chmod(0o1777)
    assert np.array_equal(load(), expected) and "model cache" not in caplog.text
    # the same folder owned by another user: that user could swap what is inside
    os.chown(cache, 12345, -1)
    kept.write_bytes(planted())
    assert np.array_equal(load(), expected) and "is another user's" in caplog.text
    os.chown(cache, os.getuid(), -1)
    # a parent folder the group may write, without the sticky bit
    shared.chmod(0o775)
    assert np.array_equal(load(), expected) and "may be written by others" in caplog.text
    # the parent folder swapped for a link to a folder of the same user's names, writable by all
    shared.chmod(0o755)
    evil = tmp_path / "evil"
    (evil / "models").mkdir(parents=True, mode=0o700)
    evil.chmod(0o777)
    (evil / "models" / kept.name).write_bytes(planted())
    (evil / "models" / kept.name).chmod(0o600)
    cache.rename(shared / "cache.old")
    cache.symlink_to(evil)
    assert np.array_equal(load(), expected) and "may be written by others" in caplog.text


def test_a_copy_that_is_a_link_or_another_object_is_not_used(tmp_path: Path, cache: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    folder = save(tmp_path / "model", depth=3)
    expected = model_cache.load_sklearn(str(folder), flavor(folder)).predict(ROWS)
    [kept] = copies(cache)

    load = fresh_load(folder, caplog)
    # another estimator under the right name: not the class the model file names; written again
    kept.write_bytes(planted())
    assert np.array_equal(load(), expected)
    assert "holds a sklearn.dummy.DummyRegressor, not the sklearn.ensemble" in caplog.text
    assert type(pickle.loads(kept.read_bytes())).__name__ == "HistGradientBoostingRegressor"
    # the copy replaced by a link to a file elsewhere: not followed; a regular copy written again
    elsewhere = tmp_path / "elsewhere.pkl"
    elsewhere.write_bytes(planted())
    kept.unlink()
    kept.symlink_to(elsewhere)
    assert np.array_equal(load(), expected) and "not used" in caplog.text
    assert not kept.is_symlink() and kept.stat().st_mode & 0o777 == 0o600
    # a copy others may write: not used
    kept.write_bytes(planted())
    kept.chmod(0o666)
    assert np.array_equal(load(), expected) and "not a regular file private to this user" in caplog.text
