"""Labelled data larger than one window: a folder of Parquet files read window by window
(`data.WindowedData` checks and keeps the rows read here).

A cycle needs a few monitoring windows, a retrain its training window and holdout; reading years of
history to use a month of it makes a cycle's time and memory grow with the history. A pyarrow
dataset over the folder answers "rows in `(start, end]`" by opening only the files whose hive
partition (`date=2012-01-01/`, `year=2012/month=1/`) can hold such rows, and within them only the
row groups whose timestamp statistics can (a filter pushed to the Parquet reader). The newest
timestamp (`--as-of`'s default) comes from the newest partition's timestamp column alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from mlflow_retrain.adapters.tables import parse_timestamps, partition_values
from mlflow_retrain.base.errors import DataError
from mlflow_retrain.decide.window import Window

# partition dates may be local days while timestamps are UTC: a day's margin keeps pruning safe
MARGIN = pd.Timedelta(days=1)
_DAY, _MONTH = re.compile(r"^\d{4}-\d{2}-\d{2}$"), re.compile(r"^\d{4}-\d{2}$")
_STEPS = {"hour": pd.DateOffset(hours=1), "day": pd.DateOffset(days=1), "month": pd.DateOffset(months=1)}


def key_span(keys: dict[str, Any]) -> Window | None:
    """The time a partition's keys can hold, `[start, end)` widened by `MARGIN`, or None when no key
    is a time: a value that is an ISO day or month (`date=2012-01-01`, `ym=2012-01`), or integer
    `year` (with `month`, `day`, `hour` below it). Keys that say nothing of time narrow nothing."""
    spans = []
    for value in keys.values():
        text = str(value)
        if _DAY.match(text) or _MONTH.match(text):
            start = pd.Timestamp(text)
            spans.append((start, start + _STEPS["day" if _DAY.match(text) else "month"]))
    try:
        parts = {k: int(keys[k]) for k in ("year", "month", "day", "hour") if k in keys}
    except (TypeError, ValueError):  # `year=unknown` is not a time
        parts = {}
    if "year" in parts:
        start = pd.Timestamp(year=parts["year"], month=parts.get("month", 1), day=parts.get("day", 1),
                             hour=parts.get("hour", 0))
        finest = next((k for k in ("hour", "day", "month") if k in parts), None)
        spans.append((start, start + (_STEPS[finest] if finest else pd.DateOffset(years=1))))
    if not spans:
        return None
    return Window(max(s for s, _ in spans) - MARGIN, min(e for _, e in spans) + MARGIN)


class ParquetSource:
    """A folder of Parquet files as one pyarrow dataset that reads time windows, not the whole."""

    def __init__(self, root: Path, files: list[Path], timestamp: str, target: str):
        import pyarrow as pa
        import pyarrow.dataset as ds

        self.root, self.timestamp, self.target = root, timestamp, target
        keys = [partition_values(f.relative_to(root)) for f in files]
        names = list(dict.fromkeys(k for found in keys for k in found))
        # typed as pyarrow's hive discovery types them (integers or text), from the paths alone: its
        # own discovery opens a file for the schema, and the oldest one may be unreadable or stale
        integer = {n: all(re.fullmatch(r"-?\d+", found.get(n, "0")) for found in keys) for n in names}
        self.partition_schema = pa.schema([(n, pa.int32() if integer[n] else pa.string()) for n in names])
        self.dataset = ds.dataset([str(f) for f in files], format="parquet", schema=self.partition_schema,
                                  partitioning=ds.partitioning(self.partition_schema, flavor="hive"),
                                  partition_base_dir=str(root))
        self.parts = [(fragment, key_span(ds.get_partition_keys(fragment.partition_expression)))
                      for fragment in self.dataset.get_fragments()]
        self.fragments_read = 0  # files opened for rows so far: what a bounded read is measured by
        newest = max(self.parts, key=lambda p: (p[1] is not None, p[1].end if p[1] else 0, p[0].path))[0]
        self.schema = self._unify([newest], base=[])
        if timestamp not in self.schema.names:
            raise DataError(f"{newest.path}: no timestamp column {timestamp!r} (it has "
                            f"{', '.join(self.schema.names)}); fix data.timestamp in the policy file")
        kind = self.schema.field(timestamp).type
        self.pushdown = pa.types.is_timestamp(kind)

    @property
    def prunes(self) -> bool:
        """Whether reading a window can skip files: time-keyed partitions, or a timestamp column whose
        row-group statistics the reader can filter on. Otherwise every read is a whole read."""
        return self.pushdown or any(span is not None for _, span in self.parts)

    def _unify(self, fragments: list[Any], base: list[Any] | None = None) -> Any:
        """One schema over these files and the newest file's (`base`): a later file may add a column,
        a month with gaps stores an integer column as floats, and every read has the newest's columns.
        Files that cannot be read together are one DataError."""
        import pyarrow as pa

        try:
            physical = [f.physical_schema for f in fragments]
            known = [self.schema] if base is None else base
            return pa.unify_schemas([*known, *physical, self.partition_schema], promote_options="permissive")
        except Exception as exc:  # pyarrow raises many types for unreadable or incompatible files
            raise DataError(f"{self.root}: parquet files cannot be read together: {str(exc).splitlines()[0]}") from None

    def _select(self, window: Window | None) -> list[Any]:
        """Files whose partition can hold rows of `window` (every file when it is None)."""
        return [fragment for fragment, span in self.parts
                if window is None or span is None or (span.start <= window.end and span.end > window.start)]

    def _filter(self, start: pd.Timestamp | None, end: pd.Timestamp | None) -> Any:
        """`start < timestamp <= end` (either bound optional) for the Parquet reader, which skips row
        groups by their statistics, when the column is an Arrow timestamp; None reads every row."""
        import pyarrow as pa
        import pyarrow.dataset as ds

        if not self.pushdown or (start is None and end is None):
            return None
        kind = self.schema.field(self.timestamp).type

        def bound(t: pd.Timestamp) -> Any:
            # truncated to the column's unit, which keeps every row in the window (the exact cut follows)
            return pa.scalar(t.tz_localize("UTC") if kind.tz else t).cast(kind, safe=False)

        field = ds.field(self.timestamp)
        after = None if start is None else field > bound(start)
        upto = None if end is None else field <= bound(end)
        return upto if after is None else after if upto is None else after & upto

    def read(self, window: Window | None, columns: list[str] | None = None) -> pd.DataFrame:
        """Raw rows of the files that can hold `window`, filtered by the reader when it can; the exact
        `(start, end]` cut is made on the parsed timestamps (`LabelledData.rows`)."""
        import pyarrow.dataset as ds

        fragments = self._select(window)
        if not fragments:
            return pd.DataFrame({name: pd.Series(dtype=object) for name in columns or self.schema.names})
        schema = self._unify(fragments)
        try:
            table = ds.FileSystemDataset(fragments, schema, self.dataset.format, self.dataset.filesystem).to_table(
                columns=columns, filter=None if window is None else self._filter(window.start, window.end))
        except Exception as exc:  # a corrupt or truncated file among those this window needs
            raise DataError(f"{self.root}: parquet files cannot be read: {str(exc).splitlines()[0]}") from None
        self.fragments_read += len(fragments)
        return table.to_pandas().reset_index(drop=True)

    def scan(self, window: Window, columns: list[str]) -> Iterator[pd.DataFrame]:
        """`columns` of the rows in `window`, one file at a time: memory of one file, not of the window."""
        for fragment in self._select(window):
            yield self._one(fragment, self._filter(window.start, window.end), columns)

    def _one(self, fragment: Any, where: Any, columns: list[str]) -> pd.DataFrame:
        import pyarrow.dataset as ds

        try:
            table = ds.FileSystemDataset([fragment], self._unify([fragment]), self.dataset.format,
                                         self.dataset.filesystem).to_table(columns=columns, filter=where)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{fragment.path}: cannot be read as parquet: {str(exc).splitlines()[0]}") from None
        self.fragments_read += 1
        return table.to_pandas().reset_index(drop=True)

    def extreme(self, *, newest: bool, at: pd.Timestamp | None = None, labelled: bool = False) -> pd.Timestamp | None:
        """The newest (or oldest) timestamp at or before `at`, of a labelled row if asked, reading the
        timestamp column (and the target) of as few partitions as can hold it: newest first, stopping
        once no partition left can hold a later time. None when no row qualifies."""
        # files without a time key first (they may hold anything), then partitions from the extreme end
        order = (sorted(self.parts, key=lambda p: (p[1] is None, p[1].end if p[1] else 0), reverse=True) if newest
                 else sorted(self.parts, key=lambda p: (p[1] is not None, p[1].start if p[1] else 0)))
        columns = [self.timestamp, self.target] if labelled else [self.timestamp]
        best: pd.Timestamp | None = None
        for fragment, span in order:
            if span is not None and at is not None and span.start > at:
                continue
            if span is not None and best is not None and (span.end <= best if newest else span.start >= best):
                break  # ordered by span: no partition left can beat `best`
            rows = self._one(fragment, self._filter(None, at), columns)
            stamps = parse_timestamps(rows[self.timestamp], str(self.root)) if len(rows) else rows[self.timestamp]
            if span is not None and len(stamps) and (stamps.min() < span.start or stamps.max() >= span.end):
                raise DataError(f"{fragment.path}: its partition keys say {span.start + MARGIN:%Y-%m-%d %H:%M}.."
                                f"{span.end - MARGIN:%Y-%m-%d %H:%M} but it holds {self.timestamp} "
                                f"{stamps.min()}..{stamps.max()}; name time partitions after the timestamp column "
                                "(date=YYYY-MM-DD or year=/month=/day=) or rename the key")
            keep = stamps <= at if at is not None else pd.Series(True, index=stamps.index)
            stamps = stamps[keep & rows[self.target].notna()] if labelled else stamps[keep]
            if len(stamps):
                found = stamps.max() if newest else stamps.min()
                best = found if best is None or (found > best if newest else found < best) else best
        return best

    def count(self, window: Window) -> int:
        """Rows in `(start, end]`, reading the timestamp column alone, one file at a time (exact
        repeats of a row count twice here, as `data.duplicates: keep` counts them)."""
        total = 0
        for rows in self.scan(window, [self.timestamp]):
            stamps = parse_timestamps(rows[self.timestamp], str(self.root)) if len(rows) else rows[self.timestamp]
            total += int(((stamps > window.start) & (stamps <= window.end)).sum())
        return total

