"""Tables of labelled data: files and folders read into one frame, checked against the policy's columns.

Every reader goes through here, whole (`data.LabelledData`) or a window at a time
(`data.WindowedData`): the same columns resolved, the same timestamps (naive UTC), the same
duplicates rule, so a decision does not depend on how the rows were read.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_numeric_dtype, is_string_dtype

from mlflow_retrain.policy.config import DataConfig
from mlflow_retrain.base.errors import DataError

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")
PARQUET_SUFFIXES = (".parquet", ".pq")
SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES
NUMERIC, CATEGORICAL = "numeric", "categorical"
_INTEGER = re.compile(r"^-?\d+$")
# the data's one logger: its warnings read `mlflow_retrain.adapters.data` wherever the rows are checked
log = logging.getLogger("mlflow_retrain.adapters.data")
# a time of day followed by a zone: `...12:00:00+02:00`, `...12:00Z`, `...12:00:00.5 -0500`
_ZONED = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?P<zone>Z|UTC|[+-]\d{2}(?::?\d{2})?)$")
_UTC_NAMES = {"Z": "+00:00", "UTC": "+00:00"}
_TIMES = frozenset({"datetime", "datetime64", "date", "time", "timedelta", "timedelta64", "period"})
_WARNED: set[tuple[str, str, tuple[str, ...]]] = set()  # (origin, column, offsets) already warned of


def file_kind(path: Path) -> str | None:
    """`csv` or `parquet` from the name (compressed CSV included), None for anything else."""
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def data_files(path: Path) -> list[Path]:
    """A file, or every data file below a folder: dropping a new file in the folder is new data.

    Hidden and `_`-prefixed entries are skipped as pyarrow does: they are bookkeeping (`_SUCCESS`,
    `_temporary/`, `.ipynb_checkpoints/`), not data.
    """
    if path.is_file():
        if file_kind(path) is None:
            raise DataError(f"{path}: not a supported data file; use one of {', '.join(SUFFIXES)}")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and file_kind(p)
                       and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
        if not files:
            raise DataError(f"{path}: folder holds no data files ({', '.join(SUFFIXES)}); put labelled data there")
        return files
    raise DataError(f"{path}: data not found; fix data.path in the policy file")


def partition_values(relative: Path) -> dict[str, str]:
    """Hive-style `key=value` folders on the way to a file (`region=eu/year=2024/part-0.csv`)."""
    return dict(unquote(part).split("=", 1) for part in relative.parent.parts if "=" in part)


def read_table(path: Path) -> pd.DataFrame:
    """Every row of a file or a folder as one frame, unchecked; partition keys become columns."""
    files = data_files(path)
    if path.is_file():
        return _read_file(path)
    frames = []
    if parquet := [f for f in files if file_kind(f) == "parquet"]:
        frames.append(_read_parquet_folder(path, parquet))
    if csv := [f for f in files if file_kind(f) == "csv"]:
        frames.append(_read_csv_folder(path, csv))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _read_file(path: Path) -> pd.DataFrame:
    kind = file_kind(path)
    try:
        return pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except Exception as exc:  # pandas and pyarrow raise many types for unreadable files
        raise DataError(f"{path}: cannot be read as {kind}: {exc}") from None


def _read_parquet_folder(root: Path, files: list[Path]) -> pd.DataFrame:
    """One pyarrow dataset with hive partitioning; the schema is unified over every file, because
    a month whose integer column has a gap is stored as floats and a later file may add a column."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset([str(f) for f in files], format="parquet", partitioning="hive",
                             partition_base_dir=str(root))
        schema = pa.unify_schemas([dataset.schema, *(f.physical_schema for f in dataset.get_fragments())],
                                  promote_options="permissive")
        return dataset.replace_schema(schema).to_table().to_pandas()
    except Exception as exc:  # pyarrow raises many types for unreadable or incompatible files
        raise DataError(f"{root}: parquet files cannot be read together: {exc}") from None


def _read_csv_folder(root: Path, files: list[Path]) -> pd.DataFrame:
    """Each CSV file with its partition keys as columns; integer keys become integers, as pyarrow reads them."""
    frames = [_read_file(f).assign(**partition_values(f.relative_to(root))) for f in files]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    for key in {k for f in files for k in partition_values(f.relative_to(root))}:
        values = frame[key]
        if values.notna().all() and values.astype(str).str.match(_INTEGER).all():
            frame[key] = values.astype("int64")
    return frame


def column_kind(values: pd.Series) -> str | None:
    """What a column's dtype makes it as a feature: numbers (bools included), labels, or neither.

    Text (object, string, category) is labels, missing values and all, unless the objects are
    times, dates or durations: those are values a model cannot use as they are.
    """
    if is_numeric_dtype(values) or is_bool_dtype(values):
        return NUMERIC
    if isinstance(values.dtype, pd.CategoricalDtype):
        return CATEGORICAL
    if is_string_dtype(values.dtype) and pd.api.types.infer_dtype(values, skipna=True) not in _TIMES:
        return CATEGORICAL
    return None


def require_columns(frame: pd.DataFrame, spec: DataConfig, origin: str = "data") -> None:
    """Every column the policy names is in the data."""
    declared = [spec.timestamp, spec.target, *(spec.features or ()), *(spec.categorical or ()), *spec.exclude]
    missing = [c for c in dict.fromkeys(declared) if c not in frame.columns]
    if missing:
        raise DataError(
            f"{origin}: missing column(s) {', '.join(missing)}; the file has {', '.join(map(str, frame.columns))}"
            " (fix data.* in the policy file)"
        )


def resolve_spec(frame: pd.DataFrame, spec: DataConfig, origin: str = "data") -> DataConfig:
    """The declared columns made concrete for this data: which features, which of them categorical.

    Declared lists are taken as written; what is left out is inferred from the columns and dtypes.

    A feature whose dtype is neither numbers nor labels (a second date, a duration) is refused
    rather than dropped: silently training without a column is the surprise this avoids.
    """
    require_columns(frame, spec, origin)
    if spec.features is None:
        skip = {spec.timestamp, spec.target, *spec.exclude}
        features = tuple(c for c in frame.columns if c not in skip)
    else:
        features = spec.features
    if not features:
        raise DataError(f"{origin}: no feature columns: the data has only {', '.join(map(str, frame.columns))}")
    categorical = []
    for column in features:
        kind, dtype = column_kind(frame[column]), frame[column].dtype
        if spec.categorical is not None:  # declared: exactly these are labels, so text elsewhere is a data error
            if column in spec.categorical:
                kind = CATEGORICAL
            elif kind == CATEGORICAL:
                raise DataError(f"{origin}: feature {column!r} is {dtype}, not numeric; list it under data.categorical")
        if kind is None:
            fix = "drop it from data.features" if spec.features is not None else "add it to data.exclude"
            raise DataError(f"{origin}: column {column!r} is {dtype}, neither numbers nor labels; "
                            f"{fix} (or list it under data.categorical to use its values as labels)")
        if kind == CATEGORICAL:
            categorical.append(column)
    return replace(spec, features=features, categorical=tuple(categorical))


def prepare_frame(frame: pd.DataFrame, spec: DataConfig, origin: str = "data",
                  label_delay: timedelta = timedelta(0), *,
                  newest: pd.Timestamp | None = None) -> tuple[pd.DataFrame, DataConfig, RowCounts]:
    """Refuse data the model cannot learn from, naming the column and what to do about it.

    Returns a copy sorted by time with a naive UTC datetime timestamp and categorical values as
    labels, the resolved spec, and what `data.duplicates` found and did (`check_duplicates`). With
    `label_delay`, rows of the newest `label_delay` may have no label yet (their features feed
    drift); an empty label older than that is refused as before.

    `newest` says these rows are a window of a larger dataset whose newest row is then
    (`data.WindowedData`): the label delay counts from it, and a feature empty in every row of the
    window is no error, since it may have values in the rows not read.
    """
    if frame.empty:  # a header alone has no dtypes to resolve, but can still name the wrong columns
        require_columns(frame, spec, origin)
        raise DataError(f"{origin}: holds no rows; add labelled data before training or monitoring")
    spec = resolve_spec(frame, spec, origin)
    frame = frame.copy()
    frame[spec.timestamp] = parse_timestamps(frame[spec.timestamp], origin)
    target = frame[spec.target]
    window = newest is not None
    newest = frame[spec.timestamp].max() if newest is None else newest
    pending = frame[spec.timestamp] > newest - pd.Timedelta(label_delay)
    if (missing := target.isna() & ~pending).any():
        within = " older than monitoring.label_delay" if label_delay else ""
        raise DataError(
            f"{origin}: target {spec.target!r} is empty (NaN) in {int(missing.sum())} row(s){within}; "
            "drop or label those rows" + ("" if label_delay else
                                          ", or set monitoring.label_delay if labels arrive late")
        )
    if not window and (empty := [c for c in spec.features if frame[c].isna().all()]):
        raise DataError(f"{origin}: feature {empty[0]!r} is empty (NaN) in every row, nothing to learn from; "
                        "fill it, or leave it out (data.features / data.exclude)")
    frame, counts = check_duplicates(frame, spec, origin)
    for column in spec.categorical:
        # values become labels; a missing value stays missing (its own one-hot category), so the
        # model sees at serving time exactly what it saw in training, not the string "nan"
        values = frame[column].astype(object)
        frame[column] = values.where(values.isna(), values.astype(str))
    return frame.sort_values(spec.timestamp, kind="stable").reset_index(drop=True), spec, counts


def parse_timestamps(values: pd.Series, origin: str = "data") -> pd.Series:
    """A timestamp column as naive UTC datetimes (the data's convention), by one rule for every reader.

    Times with an offset are converted to UTC; when the offsets differ (summer and winter time, rows
    from several places) the conversion is warned of once, with the count per offset. Times without
    a zone are taken as UTC only when the whole column has none: a column where some times carry a
    zone and others do not is refused, since which zone the others are in is a guess. A column typed
    with a time zone (Parquet, a tz-aware pandas column) is converted to UTC.
    """
    name = values.name
    zoned = None
    if not is_datetime64_any_dtype(values) and is_string_dtype(values.dtype):
        present = values.dropna().astype(str).str.strip()
        zones = present.str.extract(_ZONED)["zone"]
        zoned = zones.notna()
        if zoned.any() and not zoned.all():
            raise DataError(
                f"{origin}: {int(zoned.sum())} row(s) of {name!r} carry a time zone and {int((~zoned).sum())} do not "
                f"(first with: {present[zoned].iloc[0]!r}, first without: {present[~zoned].iloc[0]!r}); "
                "write every time in one convention: all in UTC without a zone, or all with their offset")
        if zoned.any():
            _warn_offsets(zones, origin, str(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format": then each value is parsed alone
        utc = bool(zoned is not None and zoned.any())
        try:
            stamps = pd.to_datetime(values, errors="coerce", utc=utc)
            if not is_datetime64_any_dtype(stamps):  # datetime objects with different offsets
                stamps = pd.to_datetime(values, errors="coerce", utc=True)
            elif stamps.isna().any() and is_string_dtype(values.dtype):  # the first value's format is not
                stamps = pd.to_datetime(values, errors="coerce", utc=utc, format="mixed")  # all's ("Z", "+00:00")
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. a mix of datetimes pandas refuses to compare
            raise DataError(f"{origin}: {name!r} cannot be read as timestamps: {exc}") from None
    bad = stamps.isna()
    if bad.any():
        first = values[bad].iloc[0]
        raise DataError(f"{origin}: {int(bad.sum())} row(s) of {name!r} are not timestamps (first: {first!r})")
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps


def _warn_offsets(zones: pd.Series, origin: str, name: str) -> None:
    """One warning per column and set of offsets in this process (a dataset read window by window
    repeats them): times at several UTC offsets are right once converted, but a reader of the file
    should know its hours are not one clock's."""
    def normal(zone: str) -> str:
        zone = _UTC_NAMES.get(zone, zone).replace(":", "")
        return f"{zone[:3]}:{zone[3:] or '00'}"

    counts = zones.map(normal).value_counts()
    key = (origin, name, tuple(sorted(counts.index)))
    if len(counts) > 1 and key not in _WARNED:
        _WARNED.add(key)
        log.warning("%s: %r holds times at %d UTC offsets (%s); each is converted to UTC", origin, name, len(counts),
                    ", ".join(f"{zone}: {n:,} row(s)" for zone, n in counts.items()))


@dataclass(frozen=True)
class RowCounts:
    """What the duplicates check found in the rows read and what `data.duplicates` did with them:
    printed by `cycle` and `check` and kept in the cycle's `decision.json`."""

    rows: int  # rows read
    repeats: int  # rows equal in every column to an earlier row
    conflicts: int  # rows (repeats aside) equal to another in every column but the target, whose target differs
    policy: str  # data.duplicates
    dropped: int = 0
    window: str | None = None  # the rows of one window of a dataset read by windows (`data.WindowedData`)

    def line(self, origin: str) -> str:
        repeats = "dropped" if self.dropped else "kept"
        where = f"{origin} (window {self.window})" if self.window else origin
        return (f"{where}: {self.rows:,} row(s) read, {self.repeats:,} exact repeat(s) {repeats}, {self.conflicts:,} "
                f"row(s) with conflicting labels kept (data.duplicates: {self.policy})")

    def to_dict(self) -> dict[str, int | str | None]:
        return {"rows": self.rows, "repeats": self.repeats, "conflicts": self.conflicts, "policy": self.policy,
                "dropped": self.dropped, "window": self.window}


def check_duplicates(frame: pd.DataFrame, spec: DataConfig, origin: str = "data") -> tuple[pd.DataFrame, RowCounts]:
    """Count rows given twice (every value equal) and rows equal in everything but the target, and
    apply `data.duplicates`: `keep` every row (distinct events may look alike, and two alike with
    different labels are the noise a classifier learns as a probability), `drop` the exact repeats
    (keeping the first), or `refuse` data holding either, naming the first."""
    copies = frame.duplicated()
    keys = pd.util.hash_pandas_object(frame[[c for c in frame.columns if c != spec.target]], index=False)
    labels = pd.util.hash_pandas_object(frame[spec.target], index=False)
    pairs = pd.DataFrame({"key": keys.to_numpy(), "label": labels.to_numpy()}).drop_duplicates()
    several = pairs.key.value_counts()
    clash = (keys.isin(several.index[several > 1]) & ~copies.to_numpy()).to_numpy()  # repeats counted once
    counts = RowCounts(len(frame), int(copies.sum()), int(clash.sum()), spec.duplicates)
    if spec.duplicates == "refuse" and (copies.any() or clash.any()):
        first = frame[copies.to_numpy() | clash].iloc[0]
        raise DataError(f"{origin}: {counts.repeats:,} row(s) repeat an earlier row exactly and {counts.conflicts:,} "
                        f"share every column but {spec.target!r} with a row of another {spec.target!r} (first: "
                        f"{spec.timestamp} {first[spec.timestamp]}); data.duplicates is refuse: remove them, or "
                        "set data.duplicates to keep or drop")
    if spec.duplicates == "drop" and copies.any():
        frame, counts = frame[~copies], replace(counts, dropped=counts.repeats)
    return frame, counts
