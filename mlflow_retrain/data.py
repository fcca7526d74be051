"""Labelled data: read it, check it, cut it into time windows.

Time is explicit everywhere (`as_of`), which is what makes replays, the demo and backtests possible:
"now" is just the newest timestamp in the data unless the caller says otherwise. Windows are
half-open on the left, `(start, end]`, so consecutive windows never share a row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from mlflow_retrain.config import Config, DataConfig
from mlflow_retrain.errors import DataError

SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class Window:
    """A span of time `(start, end]`."""

    start: pd.Timestamp
    end: pd.Timestamp

    def iso(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"

    @classmethod
    def ending(cls, end: pd.Timestamp, span: timedelta) -> "Window":
        return cls(end - pd.Timedelta(span), end)

    @classmethod
    def parse(cls, text: str) -> "Window":
        start, _, end = text.partition("..")
        return cls(pd.Timestamp(start), pd.Timestamp(end))


def data_files(path: Path) -> list[Path]:
    """A file, or every CSV/Parquet file in a folder: dropping a new file in the folder is new data."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"{path}: folder holds no .csv or .parquet files; put labelled data there")
        return files
    raise DataError(f"{path}: data not found; fix data.path in the policy file")


def _read_one(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as exc:  # pandas raises many types for unreadable files
        raise DataError(f"{path}: cannot be read as {path.suffix.lstrip('.')}: {exc}") from None


def read_frame(path: Path, spec: DataConfig) -> pd.DataFrame:
    """Read and check the labelled data; the result is sorted by time with a datetime timestamp."""
    files = data_files(path)
    frames = [_read_one(f) for f in files]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return check_frame(frame, spec, origin=str(path))


def check_frame(frame: pd.DataFrame, spec: DataConfig, origin: str = "data") -> pd.DataFrame:
    """Refuse data the model cannot learn from, naming the column and what to do about it."""
    needed = [spec.timestamp, spec.target, *spec.features]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(
            f"{origin}: missing column(s) {', '.join(missing)}; the file has {', '.join(map(str, frame.columns))}"
            " (fix data.* in the policy file)"
        )
    if frame.empty:
        raise DataError(f"{origin}: holds no rows; add labelled data before training or monitoring")
    frame = frame.copy()
    stamps = pd.to_datetime(frame[spec.timestamp], errors="coerce")
    bad = stamps.isna()
    if bad.any():
        first = frame.loc[bad, spec.timestamp].iloc[0]
        raise DataError(
            f"{origin}: {int(bad.sum())} row(s) of {spec.timestamp!r} are not timestamps (first: {first!r})"
        )
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    frame[spec.timestamp] = stamps
    target = frame[spec.target]
    if target.isna().any():
        raise DataError(
            f"{origin}: target {spec.target!r} is empty (NaN) in {int(target.isna().sum())} row(s); "
            "drop or label those rows"
        )
    for column in spec.features:
        if column in spec.categorical:
            # values become labels; a missing value stays missing (its own one-hot category), so the
            # model sees at serving time exactly what it saw in training, not the string "nan"
            values = frame[column]
            frame[column] = values.where(values.isna(), values.astype(str))
        elif not (is_numeric_dtype(frame[column]) or is_bool_dtype(frame[column])):
            raise DataError(
                f"{origin}: feature {column!r} is {frame[column].dtype}, not numeric; "
                "list it under data.categorical"
            )
    return frame.sort_values(spec.timestamp, kind="stable").reset_index(drop=True)


def parse_time(value: str | pd.Timestamp, option: str) -> pd.Timestamp:
    """A user's time as a naive UTC timestamp (the data's convention); unparseable is a user error."""
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        stamp = pd.NaT
    if pd.isna(stamp):  # unparseable, or a word pandas reads as "no time" ("NaT", "")
        raise DataError(f"{option} {value!r} is not a timestamp; use e.g. 2012-06-01 or 2012-06-01T12:00")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp


@dataclass
class LabelledData:
    """The checked frame plus the policy's column names; read once, cut many times."""

    frame: pd.DataFrame
    spec: DataConfig
    origin: str = "data"

    @classmethod
    def load(cls, config: Config) -> "LabelledData":
        path = config.data_path()
        return cls(read_frame(path, config.data), config.data, str(path))

    @property
    def first(self) -> pd.Timestamp:
        return self.frame[self.spec.timestamp].iloc[0]

    @property
    def last(self) -> pd.Timestamp:
        return self.frame[self.spec.timestamp].iloc[-1]

    def resolve_as_of(self, as_of: str | pd.Timestamp | None, option: str = "--as-of") -> pd.Timestamp:
        """`None` means the newest labelled row; a time outside the data is a user error.

        `option` is what the user typed (`--from`, `--to`), so the message points at it.
        """
        if self.frame.empty:
            raise DataError(f"{self.origin}: holds no rows")
        if as_of is None:
            return self.last
        stamp = parse_time(as_of, option)
        if stamp < self.first or stamp > self.last:
            raise DataError(
                f"{option} {stamp.isoformat()} is outside the data ({self.first.isoformat()} .. {self.last.isoformat()})"
            )
        return stamp

    def cut(self, window: Window, what: str = "window") -> pd.DataFrame:
        """Rows in `(start, end]`; an empty window is an error because nothing can be learnt or scored."""
        ts = self.frame[self.spec.timestamp]
        lo = ts.searchsorted(window.start, side="right")
        hi = ts.searchsorted(window.end, side="right")
        rows = self.frame.iloc[lo:hi]
        if rows.empty:
            raise DataError(f"{what} {window.iso()} holds no rows of {self.origin}; pick another --as-of or span")
        return rows

    def count_after(self, start: pd.Timestamp, end: pd.Timestamp) -> int:
        ts = self.frame[self.spec.timestamp]
        return int(ts.searchsorted(end, side="right") - ts.searchsorted(start, side="right"))

    def features(self, rows: pd.DataFrame) -> pd.DataFrame:
        return rows[list(self.spec.features)]

    def target(self, rows: pd.DataFrame) -> np.ndarray:
        return rows[self.spec.target].to_numpy()


def training_windows(as_of: pd.Timestamp, window: timedelta, holdout: timedelta) -> tuple[Window, Window]:
    """The most recent `holdout` is kept out of training so validation scores on unseen, recent data."""
    holdout_window = Window.ending(as_of, holdout)
    return Window.ending(holdout_window.start, window), holdout_window


def frame_digest(frame: pd.DataFrame) -> str:
    """A content hash of the whole frame (MLflow's own digest only looks at the first 10,000 rows)."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes() + ",".join(map(str, frame.columns)).encode()).hexdigest()[:16]
