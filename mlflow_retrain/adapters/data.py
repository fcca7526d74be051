"""Labelled data: read it, check it, cut it into time windows.

Why it is built this way: docs/design.md#adapters-data.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from mlflow_retrain.policy.config import Config, DataConfig, TrainingConfig
from mlflow_retrain.adapters.source import ParquetSource
from mlflow_retrain.adapters.tables import RowCounts, data_files, file_kind, prepare_frame, read_table
from mlflow_retrain.base.errors import DataError
from mlflow_retrain.decide.window import Window
from mlflow_retrain.decide.words import DAY, moment, span_in

# the monitor reads this many rows at a time (estimated from the newest window's density)
CHUNK_ROWS = 500_000
# windows kept read within one command (monitoring windows, training window, holdout)
KEPT = 8
log = logging.getLogger(__name__)


# extended (2024-03-01T12:00) or basic (20240301T1200) ISO 8601, never a mix of the two
_ISO_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?"
                       r"|\d{8}(T\d{4}(\d{2})?)?(Z|[+-]\d{4})?)$")


def parse_time(value: str | pd.Timestamp, option: str) -> pd.Timestamp:
    """A user's time as a naive UTC timestamp (the data's convention). ISO 8601 only (a date, or a date
    and time, with or without a zone; extended `2012-06-01` or basic `20120601`): `12/06/2012` is June 12 to some and December 6 to others, and
    pandas would silently pick one."""
    from datetime import datetime

    stamp = pd.NaT
    if isinstance(value, pd.Timestamp):
        stamp = value
    elif _ISO_TIME.match(str(value).strip()):
        try:
            stamp = pd.Timestamp(datetime.fromisoformat(str(value).strip().replace("Z", "+00:00")))
        except ValueError:
            stamp = pd.NaT
    if pd.isna(stamp):  # not ISO 8601, not a real date (2012-02-30), or a word such as "NaT"
        raise DataError(f"{option} {value!r} is not an ISO 8601 time; write e.g. 2012-06-01, 2012-06-01T12:00 "
                        "or 2012-06-01T12:00+02:00")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp


def report_counts(counts: RowCounts, origin: str) -> None:
    """The duplicates check's one line: a warning when rows were dropped, else for `-v`."""
    log.log(logging.WARNING if counts.dropped else logging.INFO, "%s", counts.line(origin))


@dataclass
class LabelledData:
    """The checked frame plus its resolved columns (`spec`); read once, cut many times."""

    frame: pd.DataFrame
    spec: DataConfig
    origin: str = "data"
    counts: RowCounts | None = None  # what the duplicates check found in the rows read (None: not checked here)

    @classmethod
    def load(cls, config: Config) -> "LabelledData":
        """The policy's data. A folder of Parquet files is read a window at a time (`WindowedData`), so
        a cycle's memory follows its windows, not the history; anything else is read once, whole."""
        path = config.data_path()
        files = data_files(path)
        if path.is_dir() and all(file_kind(f) == "parquet" for f in files):
            return WindowedData.open(config, path, files)
        return cls.from_frame(read_table(path), config, str(path))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, config: Config, origin: str = "DataFrame") -> "LabelledData":
        """The same checks and column resolution as `load`, on rows already in memory (left unchanged)."""
        checked, spec, counts = prepare_frame(frame, config.data, origin, config.monitoring.label_delay)
        report_counts(counts, origin)
        return cls(checked, spec, origin, counts)

    @property
    def first(self) -> pd.Timestamp:
        return self.frame[self.spec.timestamp].iloc[0]

    @property
    def last(self) -> pd.Timestamp:
        return self.frame[self.spec.timestamp].iloc[-1]

    @property
    def empty(self) -> bool:
        return self.frame.empty

    @property
    def last_labelled(self) -> pd.Timestamp:
        """The newest row with a label: where a replay or a monitor can still score (`label_delay`)."""
        newest = self.newest(labelled=True)
        return self.first if newest is None else newest

    def newest(self, at: pd.Timestamp | None = None, *, labelled: bool = False) -> pd.Timestamp | None:
        """The newest timestamp at or before `at` (of all rows when None), of a labelled row if
        asked; None when there is none."""
        stamps = self.frame[self.spec.timestamp]
        if labelled:
            stamps = stamps[self.frame[self.spec.target].notna()]
        if at is not None:
            stamps = stamps[stamps <= at]
        return stamps.iloc[-1] if len(stamps) else None

    def resolve_as_of(self, as_of: str | pd.Timestamp | None, option: str = "--as-of") -> pd.Timestamp:
        """`None` means the newest labelled row; a time outside the data is a user error.

        `option` is what the user typed (`--from`, `--to`), so the message points at it.
        """
        if self.empty:
            raise DataError(f"{self.origin}: holds no rows")
        if as_of is None:
            return self.last
        stamp = parse_time(as_of, option)
        if stamp < self.first or stamp > self.last:
            raise DataError(
                f"{option} {stamp.isoformat()} is outside the data ({self.first.isoformat()} .. {self.last.isoformat()})"
            )
        return stamp

    def labels_gap(self, as_of: pd.Timestamp, max_gap: timedelta | None, *, live: bool,
                   now: pd.Timestamp | None = None, unit: str = DAY) -> str | None:
        """Whether labels stopped arriving: the newest labelled row is older than `max_gap` at the
        clock (a live cycle) or at `as_of` (a replay). Windows end at the newest label, so without this
        a cycle would judge a model on old rows and never say that nothing new came in."""
        if max_gap is None:
            return None
        at = (now if now is not None else pd.Timestamp.now("UTC").tz_convert(None)) if live else as_of
        newest = self.newest(None if live else as_of, labelled=True)
        if newest is None:
            return f"no labelled rows up to {moment(as_of, unit)}: labels never arrived"
        if newest.tzinfo is not None and at.tzinfo is None:
            at = at.tz_localize("UTC")
        if at - newest <= max_gap:
            return None
        return (f"no labelled rows since {moment(newest, unit)}, {span_in(at - newest, unit)} before "
                f"{'now' if live else 'the as-of'}, more than max_data_gap {span_in(max_gap, unit)}: labels stopped arriving")

    def cut(self, window: Window, what: str = "window") -> pd.DataFrame:
        """Rows in `(start, end]`; an empty window is an error because nothing can be learnt or scored."""
        rows = self.rows(window)
        if rows.empty:
            raise self._no_rows(window, what)
        return rows

    def _no_rows(self, window: Window, what: str) -> DataError:
        return DataError(f"{what} {window.iso()} holds no rows of {self.origin}; pick another --as-of or span")

    def training_rows(self, as_of: pd.Timestamp, training: TrainingConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The rows a candidate as of `as_of` is trained on and scored on; either window empty is an error."""
        train_window, holdout_window = training_windows(as_of, training.window, training.holdout)
        return self.cut(train_window, "training window"), self.cut(holdout_window, "holdout window")

    def check_training(self, as_of: pd.Timestamp, training: TrainingConfig) -> None:
        """Both windows of a candidate as of `as_of` hold rows: counted, not read, so checking that a
        retrain could run costs a no-op cycle no training window's worth of memory."""
        for window, what in zip(training_windows(as_of, training.window, training.holdout),
                                ("training window", "holdout window")):
            if not self.count_after(window.start, window.end):
                raise self._no_rows(window, what)

    def positions(self, window: Window) -> tuple[int, int]:
        """`(lo, hi)`: the window's rows are `frame.iloc[lo:hi]`."""
        return window.positions(self.frame[self.spec.timestamp])

    def rows(self, window: Window) -> pd.DataFrame:
        """Rows in `(start, end]`, possibly none."""
        lo, hi = self.positions(window)
        return self.frame.iloc[lo:hi]

    def count_after(self, start: pd.Timestamp, end: pd.Timestamp) -> int:
        lo, hi = self.positions(Window(start, end))
        return hi - lo

    def slabs(self, windows: list[Window]) -> Iterator[tuple[range, LabelledData]]:
        """Consecutive time-sorted windows in chunks, each with data holding their rows: here one chunk
        of all of them; a dataset read by windows gives chunks of bounded size (`WindowedData`)."""
        yield range(len(windows)), self

    def whole(self) -> LabelledData:
        """Every row in memory, for replays over all history (the backtest)."""
        return self

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


class WindowedData(LabelledData):
    """`LabelledData` over a Parquet dataset, reading the rows of the windows asked for.

    The windows a command asks for are kept (the `KEPT` most recent), so a cycle that cuts its
    holdout three times reads it once; `frame` (the backtest, `init`) reads every row, once.
    """

    def __init__(self, source: ParquetSource, config: Config):
        self.source, self.origin = source, str(source.root)
        self.label_delay = config.monitoring.label_delay
        self.kept: OrderedDict[Window, pd.DataFrame] = OrderedDict()
        probe = Window.ending(self.last, config.monitoring.window)
        raw = self.source.read(probe)
        # the columns are resolved on the newest window: Arrow types, not values, give their kinds
        rows, self.spec, counts = prepare_frame(raw, config.data, self.origin, self.label_delay, newest=self.last)
        self.counts = replace(counts, window=probe.iso())
        report_counts(self.counts, self.origin)
        self.density = len(rows) / max(pd.Timedelta(config.monitoring.window).total_seconds(), 1.0)

    @classmethod
    def open(cls, config: Config, path: Path, files: list[Path]) -> LabelledData:
        """Windowed when reading a window can skip files; otherwise the whole folder, once, as before."""
        source = ParquetSource(path, files, config.data.timestamp, config.data.target)
        if not source.prunes:
            return LabelledData.from_frame(source.read(None), config, str(path))
        return cls(source, config)

    @cached_property
    def frame(self) -> pd.DataFrame:  # type: ignore[override]  # every row: what a replay of all history needs
        frame, _, self.counts = prepare_frame(self.source.read(None), self.spec, self.origin, self.label_delay)
        report_counts(self.counts, self.origin)
        return frame

    @property
    def empty(self) -> bool:
        return False  # a dataset with no rows has no newest timestamp and is refused on opening

    @cached_property
    def first(self) -> pd.Timestamp:  # type: ignore[override]
        return self.source.extreme(newest=False)

    @cached_property
    def last(self) -> pd.Timestamp:  # type: ignore[override]
        last = self.source.extreme(newest=True)
        if last is None:
            raise DataError(f"{self.source.root}: holds no rows; add labelled data before training or monitoring")
        return last

    def newest(self, at: pd.Timestamp | None = None, *, labelled: bool = False) -> pd.Timestamp | None:
        if not labelled or not self.label_delay:  # without a label delay every row is labelled
            return self.last if at is None else self.source.extreme(newest=True, at=at)
        return self.source.extreme(newest=True, at=at, labelled=True)

    def rows(self, window: Window) -> pd.DataFrame:
        for kept, frame in reversed(self.kept.items()):
            if kept.start <= window.start and window.end <= kept.end:
                self.kept.move_to_end(kept)
                return frame.iloc[slice(*window.positions(frame[self.spec.timestamp]))]
        frame = self._prepared(window)
        self.kept[window] = frame
        while len(self.kept) > KEPT:
            self.kept.popitem(last=False)
        return frame

    def _prepared(self, window: Window) -> pd.DataFrame:
        raw = self.source.read(window)
        if raw.empty:
            return raw
        frame = prepare_frame(raw, self.spec, self.origin, self.label_delay, newest=self.last)[0]
        return frame.iloc[slice(*window.positions(frame[self.spec.timestamp]))].reset_index(drop=True)

    def count_after(self, start: pd.Timestamp, end: pd.Timestamp) -> int:
        return self.source.count(Window(start, end))

    def slabs(self, windows: list[Window]) -> Iterator[tuple[range, LabelledData]]:
        """Consecutive windows in chunks of about `CHUNK_ROWS` rows, each chunk read once and let go."""
        span = pd.Timedelta(seconds=CHUNK_ROWS / self.density) if self.density else pd.Timedelta.max
        lo = 0
        while lo < len(windows):
            hi = lo + 1
            while hi < len(windows) and windows[hi].end - windows[lo].start <= span:
                hi += 1
            rows = self._prepared(Window(windows[lo].start, windows[hi - 1].end))
            yield range(lo, hi), LabelledData(rows, self.spec, self.origin, self.counts)
            lo = hi

    def whole(self) -> LabelledData:
        frame = self.frame  # read first: reading every row counts every row
        return LabelledData(frame, self.spec, self.origin, self.counts)
