from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from mlflow_retrain.policy.config import DataConfig, TrainingConfig
from mlflow_retrain.policy.parse import parse_config
from mlflow_retrain.adapters.data import LabelledData, Window, frame_digest, training_windows
from mlflow_retrain.adapters.tables import column_kind, data_files, read_table, resolve_spec
from mlflow_retrain.base.errors import ConfigError, DataError

LISTED = {"path": "x", "timestamp": "ts", "target": "y", "features": ["a", "c"], "categorical": ["c"]}


def config(**data):
    return parse_config({"model_name": "m", "data": {"path": "x", "timestamp": "ts", "target": "y", **data}})


def frame(n: int = 48) -> pd.DataFrame:
    return pd.DataFrame({
        "ts": pd.date_range("2024-01-01", periods=n, freq="h").astype(str),
        "a": np.arange(n, dtype=float), "c": ["x", "y"] * (n // 2), "y": np.arange(n) * 2.0,
    })


def labelled(df: pd.DataFrame | None = None, **data) -> LabelledData:
    return LabelledData.from_frame(frame() if df is None else df, config(**(data or LISTED)))


def test_windows_are_left_open_and_do_not_overlap():
    data = labelled()
    end = pd.Timestamp("2024-01-02 23:00")
    train, holdout = training_windows(end, timedelta(hours=24), timedelta(hours=6))
    assert holdout == Window(pd.Timestamp("2024-01-02 17:00"), end)
    assert train.end == holdout.start
    assert len(data.cut(holdout)) == 6 and len(data.cut(train)) == 24
    assert data.cut(train).ts.max() < data.cut(holdout).ts.min()
    assert Window.parse(holdout.iso()) == holdout


def test_listed_features_resolve_as_declared_and_a_listed_number_becomes_a_label():
    df = frame().assign(n=1, c=[1, 2] * 24)
    data = labelled(df, features=["c", "a"], categorical=["c"])
    assert data.spec.features == ("c", "a") and data.spec.categorical == ("c",)
    assert list(data.features(data.frame).columns) == ["c", "a"] and set(data.frame.c) == {"1", "2"}


def test_features_default_to_every_other_column_with_categorical_inferred_from_dtype():
    df = frame().assign(flag=True, id=range(48), kind=pd.Series(["p", "q"] * 24, dtype="category"))
    data = labelled(df, exclude=["id"])
    assert data.spec.features == ("a", "c", "flag", "kind") and data.spec.categorical == ("c", "kind")
    assert data.spec.exclude == ("id",) and data.frame.kind.dtype == object
    assert "id" in df.columns and df.ts.dtype == object  # the caller's frame is left as it was


def test_a_categorical_list_is_taken_as_written_so_text_in_a_numeric_column_is_an_error():
    data = labelled(frame().assign(wd=[0, 1, 2] * 16), categorical=["c", "wd"])
    assert data.spec.categorical == ("c", "wd") and set(data.frame.wd) == {"0", "1", "2"}
    with pytest.raises(DataError, match="feature 'c' is object, not numeric; list it under data.categorical"):
        labelled(categorical=[])
    assert labelled(features=["a", "c"]).spec.categorical == ("c",)  # not listed: inferred, features or not


def test_a_declared_column_missing_from_the_data_is_one_error_naming_it():
    with pytest.raises(DataError, match=r"^DataFrame: missing column\(s\) b; the file has ts, a, c, y"):
        labelled(features=["a", "b"])
    with pytest.raises(DataError, match=r"missing column\(s\) idd"):
        labelled(exclude=["idd"])


def test_a_column_neither_numbers_nor_labels_is_refused_not_dropped():
    df = frame().assign(created=pd.Timestamp("2020-01-01"))
    with pytest.raises(DataError, match="column 'created' is datetime64.*add it to data.exclude"):
        labelled(df, exclude=[])
    assert "created" not in labelled(df, exclude=["created"]).spec.features
    assert labelled(df, categorical=["c", "created"]).frame.created.iloc[0] == "2020-01-01 00:00:00"
    with pytest.raises(DataError, match="drop it from data.features"):
        labelled(df, features=["a", "created"])


@pytest.mark.parametrize("values, kind", [
    (pd.Series([1, 2]), "numeric"), (pd.Series([True, False]), "numeric"), (pd.Series([1.5, None]), "numeric"),
    (pd.Series(["a", None]), "categorical"), (pd.Series(["a", 1]), "categorical"),
    (pd.Series(["a", None], dtype="string"), "categorical"), (pd.Series([1, 2], dtype="category"), "categorical"),
    (pd.Series(pd.to_datetime(["2024-01-01"])), None), (pd.Series([date(2024, 1, 1), None]), None),
    (pd.Series(pd.to_timedelta(["1d"])), None),
])
def test_column_kind_from_dtype(values, kind):
    assert column_kind(values) == kind


def test_a_header_alone_holds_no_rows_unless_it_lacks_a_column():
    with pytest.raises(DataError, match="DataFrame: holds no rows"):
        labelled(frame().iloc[:0].astype(object), exclude=[])
    with pytest.raises(DataError, match=r"missing column\(s\) b"):
        labelled(frame().iloc[:0], features=["b"])


def test_resolving_needs_no_rows_beyond_the_dtypes():
    spec = resolve_spec(frame().iloc[:0], DataConfig(path="x", timestamp="ts", target="y"))
    assert spec.features == ("a", "c") and spec.categorical == ("c",)
    with pytest.raises(DataError, match="no feature columns"):
        resolve_spec(frame()[["ts", "y"]], DataConfig(path="x", timestamp="ts", target="y"))


@pytest.mark.parametrize("data, message", [
    ({"exclude": ["y"]}, "data.exclude must not name the target or timestamp column ['y']"),
    ({"categorical": ["ts"]}, "data.categorical names ['ts'] which are not features"),
    ({"exclude": ["a"], "categorical": ["a"]}, "data.categorical names ['a'] which are not features"),
    ({"features": ["a"], "exclude": ["a"]}, "data.exclude names ['a'] which data.features lists"),
    ({"features": ["a"], "categorical": ["c"]}, "data.categorical names ['c'] which are not in data.features"),
    ({"features": []}, "data.features must list at least one column, or be left out"),
    ({"target": "ts"}, "data.target must differ from data.timestamp"),
])
def test_data_section_errors_name_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        config(**data)
    assert message in str(err.value)


def test_the_declared_spec_keeps_what_is_left_out_open_until_the_data_is_read():
    assert config().data.features is None and config(features=["a"]).data.features == ("a",)
    assert config().data.categorical is None and config(categorical=[]).data.categorical == ()


def test_folder_of_files_is_concatenated_and_sorted(tmp_path):
    df = frame()
    df.iloc[24:].to_parquet(tmp_path / "b.parquet")
    df.iloc[:24].to_csv(tmp_path / "a.csv", index=False)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "_SUCCESS").write_text("")
    out = LabelledData.from_frame(read_table(tmp_path), config(**LISTED)).frame
    assert len(out) == 48 and out.ts.is_monotonic_increasing and out.c.dtype == object


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".pq"])
def test_compressed_csv_and_parquet_files_read_like_plain_csv(tmp_path, suffix):
    path = tmp_path / f"rows{suffix}"
    df = frame()
    df.to_parquet(path) if suffix == ".pq" else df.to_csv(path, index=False)
    pd.testing.assert_frame_equal(read_table(path), df)


def test_hive_partitioned_parquet_folder_turns_keys_into_columns(tmp_path):
    df = frame()
    for (region, year), part in df.assign(region=["eu", "us"] * 24, year=[2023] * 24 + [2024] * 24).groupby(
            ["region", "year"]):
        folder = tmp_path / f"region={region}" / f"year={year}"
        folder.mkdir(parents=True)
        part.drop(columns=["region", "year"]).to_parquet(folder / "part-0.parquet")
    data = LabelledData.from_frame(read_table(tmp_path), config())
    assert len(data.frame) == 48 and data.spec.features == ("a", "c", "region", "year")
    assert data.spec.categorical == ("c", "region") and data.frame.year.dtype.kind == "i"


def test_hive_partitioned_csv_folder_types_keys_as_pyarrow_does(tmp_path):
    df = frame()
    for year, part in df.groupby(df.index // 24):
        folder = tmp_path / "src=web%20shop" / f"year={2023 + year}"
        folder.mkdir(parents=True)
        part.to_csv(folder / "rows.csv.gz", index=False)
    out = read_table(tmp_path)
    assert set(out.src) == {"web shop"} and out.year.dtype == "int64" and sorted(set(out.year)) == [2023, 2024]


def test_parquet_files_with_drifting_schemas_are_read_together(tmp_path):
    df = frame()
    df.iloc[:24].assign(n=1).to_parquet(tmp_path / "jan.parquet")
    df.iloc[24:].assign(n=np.nan, extra="z").to_parquet(tmp_path / "feb.parquet")
    out = read_table(tmp_path)
    assert len(out) == 48 and out.n.dtype == float and out.extra.isna().sum() == 24


def test_unsupported_or_missing_files(tmp_path):
    (tmp_path / "rows.json").write_text("{}")
    with pytest.raises(DataError, match=r"rows.json: not a supported data file; use one of .csv, .csv.gz.*\.pq$"):
        read_table(tmp_path / "rows.json")
    with pytest.raises(DataError, match="data not found"):
        read_table(tmp_path / "none.csv")
    with pytest.raises(DataError, match=r"folder holds no data files \(.csv"):
        data_files(tmp_path)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "old.csv").write_text("ts,y\n")
    with pytest.raises(DataError, match="folder holds no data files"):
        data_files(tmp_path)


def test_as_of_defaults_to_newest_and_rejects_outside():
    data = labelled()
    assert data.resolve_as_of(None) == pd.Timestamp("2024-01-02 23:00")
    with pytest.raises(DataError, match="outside the data"):
        data.resolve_as_of("2025-01-01")
    with pytest.raises(DataError, match="is not an ISO 8601 time"):
        data.resolve_as_of("soon")
    with pytest.raises(DataError, match="^--from 'NaT' is not an ISO 8601 time"):  # pandas parses it, as no time
        data.resolve_as_of("NaT", "--from")
    # an aware time is compared in UTC, the data's convention
    assert data.resolve_as_of("2024-01-02T01:00+02:00") == pd.Timestamp("2024-01-01 23:00")


def test_empty_window_is_an_error():
    data = labelled()
    with pytest.raises(DataError, match="holdout window .* holds no rows"):
        data.cut(Window(pd.Timestamp("2023-01-01"), pd.Timestamp("2023-02-01")), "holdout window")


def test_digest_covers_every_row():
    big = pd.DataFrame({"a": np.arange(30_000)})
    changed = big.copy()
    changed.loc[29_999, "a"] = -1  # beyond MLflow's 10,000-row digest
    assert frame_digest(big) != frame_digest(changed) and frame_digest(big) == frame_digest(big.copy())


def test_offsets_become_utc_with_one_warning_when_they_vary_and_a_mix_of_zoned_and_plain_times_is_refused(caplog):
    df = frame(4).assign(ts=["2024-01-01 00:00:00+01:00", "2024-07-01 00:00:00+02:00", "2024-07-02 00:00:00Z",
                             "2024-07-03 12:00:00-05:00"])
    assert labelled(df).frame.ts.astype(str).tolist() == ["2023-12-31 23:00:00", "2024-06-30 22:00:00",
                                                          "2024-07-02 00:00:00", "2024-07-03 17:00:00"]
    assert caplog.text.count("converted to UTC") == 1
    assert ("'ts' holds times at 4 UTC offsets (+01:00: 1 row(s), +02:00: 1 row(s), +00:00: 1 row(s), "
            "-05:00: 1 row(s)); each is converted to UTC") in caplog.text
    caplog.clear()
    one = df.assign(ts=["2024-01-01 00:00:00Z", "2024-01-02 00:00:00+00:00", "2024-01-03 00:00:00 UTC",
                        "2024-01-04 00:00Z"])  # one offset however written: no warning
    assert labelled(one).frame.ts.tolist() == list(pd.date_range("2024-01-01", periods=4))  # "Z" is "+00:00"
    assert "UTC offsets" not in caplog.text
    mixed = df.assign(ts=["2024-01-01 00:00:00", "2024-01-01 01:00:00+02:00", "2024-01-01 02:00:00", "2024-01-02"])
    with pytest.raises(DataError, match=r"1 row\(s\) of 'ts' carry a time zone and 3 do not \(first with: "
                                        r"'2024-01-01 01:00:00\+02:00', first without: '2024-01-01 00:00:00'\)"):
        labelled(mixed)


@pytest.mark.parametrize("column, value", [("a", np.nan), ("c", None)])
def test_a_feature_empty_in_every_row_is_refused(column, value):
    with pytest.raises(DataError, match=f"feature '{column}' is empty \\(NaN\\) in every row"):
        labelled(frame().assign(**{column: value}))


def test_repeats_and_conflicting_labels_are_kept_counted_dropped_or_refused_as_data_duplicates_says(caplog):
    df = frame()
    noisy = pd.concat([df, df.iloc[:10], df.iloc[[5, 7]].assign(y=-1.0)])  # 10 exact repeats, 2 other labels
    caplog.set_level("INFO", logger="mlflow_retrain.adapters.data")
    kept = labelled(noisy)  # the default: every row, counted (label noise is what a classifier learns)
    assert len(kept.frame) == 60 and kept.counts.to_dict() == {"rows": 60, "repeats": 10, "conflicts": 4,
                                                               "policy": "keep", "dropped": 0, "window": None}
    assert ("DataFrame: 60 row(s) read, 10 exact repeat(s) kept, 4 row(s) with conflicting labels kept "
            "(data.duplicates: keep)") in caplog.text
    dropped = labelled(noisy, **LISTED, duplicates="drop")
    assert len(dropped.frame) == 50 and dropped.counts.dropped == 10
    assert (dropped.frame.ts.value_counts() > 1).sum() == 2  # the two conflicting labels stay
    assert "10 exact repeat(s) dropped" in caplog.text
    with pytest.raises(DataError, match=r"^DataFrame: 10 row\(s\) repeat an earlier row exactly and 4 share every "
                                        r"column but 'y' with a row of another 'y' \(first: ts 2024-01-01 05:00:00\); "
                                        r"data.duplicates is refuse: remove them, or set data.duplicates to keep or "
                                        r"drop$"):
        labelled(noisy, **LISTED, duplicates="refuse")
    assert len(labelled(df, **LISTED, duplicates="refuse").frame) == 48  # clean data passes
    many = df.assign(ts=df.ts.iloc[0])  # one time, other features: several entities at once are no repeat
    assert labelled(many, **LISTED, duplicates="refuse").counts.conflicts == 0


def test_training_rows_need_both_windows():
    data = labelled()
    train, holdout = data.training_rows(data.last, TrainingConfig(window=timedelta(hours=24), holdout=timedelta(hours=6)))
    assert (len(train), len(holdout)) == (24, 6)
    with pytest.raises(DataError, match="training window .* holds no rows"):
        data.training_rows(data.first + pd.Timedelta(hours=3), config(**LISTED).training)


def test_labels_that_stopped_arriving_are_a_gap_at_the_clock_live_and_at_as_of_in_a_replay():
    data = labelled()  # hourly rows 2024-01-01 00:00 .. 2024-01-02 23:00
    last = pd.Timestamp("2024-01-02 23:00")
    assert data.labels_gap(last, None, live=True) is None  # no max_data_gap: nothing to say
    assert data.labels_gap(last, timedelta(hours=2), live=True, now=last + timedelta(hours=1)) is None
    gap = data.labels_gap(last, timedelta(hours=2), live=True, now=last + timedelta(days=3))
    assert gap.startswith("no labelled rows since 2024-01-02T23:00, 3d before now, more than max_data_gap 0.1d")
    hourly = data.labels_gap(last, timedelta(hours=2), live=True, now=last + timedelta(days=3), unit="h")
    assert hourly.startswith("no labelled rows since 2024-01-02T23:00, 72h before now, more than max_data_gap 2h")
    # a replay measures at --as-of, from the newest row up to it
    assert data.labels_gap(pd.Timestamp("2024-01-01 12:00"), timedelta(hours=2), live=False) is None
    assert data.labels_gap(last + timedelta(days=1), timedelta(hours=2), live=False).startswith(
        "no labelled rows since 2024-01-02T23:00, 1d before the as-of")


@pytest.mark.parametrize("value", ["12/06/2012", "31/12/2012", "06-12-2012", "2012-02-30", "June 1 2012",
                                   "2012-0601", "201206", "20120230"])
def test_as_of_is_iso_8601_only_so_a_day_and_a_month_are_never_swapped(value):
    with pytest.raises(DataError, match=f"--as-of '{value}' is not an ISO 8601 time; write e.g. 2012-06-01"):
        labelled().resolve_as_of(value)


@pytest.mark.parametrize("value, expected", [("2024-01-02", "2024-01-02 00:00"), ("2024-01-02T05:30", "2024-01-02 05:30"),
                                             ("2024-01-02 05:30:00", "2024-01-02 05:30"),
                                             ("2024-01-02T05:30Z", "2024-01-02 05:30"),
                                             ("2024-01-02T05:30-01:00", "2024-01-02 06:30"),
                                             ("20240102", "2024-01-02 00:00"), ("20240102T0530", "2024-01-02 05:30"),
                                             ("20240102T053000Z", "2024-01-02 05:30")])
def test_as_of_accepts_iso_dates_and_datetimes_with_or_without_a_zone(value, expected):
    assert labelled().resolve_as_of(value) == pd.Timestamp(expected)
