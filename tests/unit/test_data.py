from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from mlflow_retrain.config import DataConfig
from mlflow_retrain.data import LabelledData, Window, check_frame, frame_digest, read_frame, training_windows
from mlflow_retrain.errors import DataError

SPEC = DataConfig(path="x", timestamp="ts", target="y", features=("a", "c"), categorical=("c",))


def frame(n: int = 48) -> pd.DataFrame:
    return pd.DataFrame({
        "ts": pd.date_range("2024-01-01", periods=n, freq="h").astype(str),
        "a": np.arange(n, dtype=float), "c": ["x", "y"] * (n // 2), "y": np.arange(n) * 2.0,
    })


def test_windows_are_left_open_and_do_not_overlap():
    data = LabelledData(check_frame(frame(), SPEC), SPEC)
    end = pd.Timestamp("2024-01-02 23:00")
    train, holdout = training_windows(end, timedelta(hours=24), timedelta(hours=6))
    assert holdout == Window(pd.Timestamp("2024-01-02 17:00"), end)
    assert train.end == holdout.start
    assert len(data.cut(holdout)) == 6 and len(data.cut(train)) == 24
    assert data.cut(train).ts.max() < data.cut(holdout).ts.min()
    assert Window.parse(holdout.iso()) == holdout


def test_folder_of_files_is_concatenated_and_sorted(tmp_path):
    df = frame()
    df.iloc[24:].to_parquet(tmp_path / "b.parquet")
    df.iloc[:24].to_csv(tmp_path / "a.csv", index=False)
    (tmp_path / "notes.txt").write_text("ignored")
    out = read_frame(tmp_path, SPEC)
    assert len(out) == 48 and out.ts.is_monotonic_increasing and out.c.dtype == object


def test_as_of_defaults_to_newest_and_rejects_outside():
    data = LabelledData(check_frame(frame(), SPEC), SPEC)
    assert data.resolve_as_of(None) == pd.Timestamp("2024-01-02 23:00")
    with pytest.raises(DataError, match="outside the data"):
        data.resolve_as_of("2025-01-01")
    with pytest.raises(DataError, match="is not a timestamp"):
        data.resolve_as_of("soon")
    with pytest.raises(DataError, match="^--from 'NaT' is not a timestamp"):  # pandas parses it, as no time
        data.resolve_as_of("NaT", "--from")
    # an aware time is compared in UTC, the data's convention
    assert data.resolve_as_of("2024-01-02T01:00+02:00") == pd.Timestamp("2024-01-01 23:00")


def test_empty_window_is_an_error():
    data = LabelledData(check_frame(frame(), SPEC), SPEC)
    with pytest.raises(DataError, match="holdout window .* holds no rows"):
        data.cut(Window(pd.Timestamp("2023-01-01"), pd.Timestamp("2023-02-01")), "holdout window")


def test_digest_covers_every_row():
    big = pd.DataFrame({"a": np.arange(30_000)})
    changed = big.copy()
    changed.loc[29_999, "a"] = -1  # beyond MLflow's 10,000-row digest
    assert frame_digest(big) != frame_digest(changed) and frame_digest(big) == frame_digest(big.copy())


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="data not found"):
        read_frame(tmp_path / "none.csv", SPEC)
    with pytest.raises(DataError, match="no .csv or .parquet"):
        read_frame(tmp_path, SPEC)
