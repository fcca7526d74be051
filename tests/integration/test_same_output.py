"""What a person reads from check, monitor and backtest on the bundled data is byte for byte what it
was before they were made faster (issue 28): each command's output on the bootstrapped store (v1
in Production, the small policy) against a copy recorded from `main` before the changes, with run
ids, folders and measured times masked. `RECORD_SAME_OUTPUT=1` writes the copies instead (on the
code whose output is the reference)."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import inprocess_cli

FIXTURES = Path(__file__).parent / "same_output"
MASKS = (
    (re.compile(r"\b[0-9a-f]{32}\b"), "<run id>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00"), "<wall time>"),  # when a run ended, not data time
)


# numbers to 12 significant digits: the drift tests sum a set of labels (ordered by the process's hash
# seed), so their last bits differ from one process to the next, before these changes as after
LONG_NUMBER = re.compile(r"-?\d+\.\d{6,}(e-?\d+)?")


def rounded(text: str) -> str:
    return LONG_NUMBER.sub(lambda m: f"{float(m.group()):.12g}", text)


def masked(text: str, folder: Path) -> str:
    text = text.replace(str(folder), "<tmp>")
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return rounded(text)


def columns(text: str, names: list[str]) -> str:
    """The CSV's columns `names`, in that order, without the walk-forward row (the choice's, changed
    elsewhere, not the replay's)."""
    rows = list(csv.reader(io.StringIO(text)))
    at = [rows[0].index(name) for name in names]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([row[i] for i in at] for row in rows if row[0] != "walk-forward")
    return rounded(out.getvalue())


def same(name: str, text: str) -> None:
    path = FIXTURES / name
    if os.environ.get("RECORD_SAME_OUTPUT"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed"


def same_table(name: str, table: str, timed: str) -> None:
    """A CSV the command wrote, without its column of measured time. Compared on the recorded
    columns: a column added since (another change's) is not this test's."""
    path = FIXTURES / name
    names = [n for n in next(csv.reader(io.StringIO(table))) if n != timed]
    if os.environ.get("RECORD_SAME_OUTPUT"):
        path.write_text(columns(table, names))
    recorded = path.read_text()
    assert columns(table, next(csv.reader(io.StringIO(recorded)))) == recorded, f"{name} changed"


def test_check_monitor_and_backtest_print_what_they_printed_before(prod_store, write_policy, tmp_path):
    write_policy(triggers={"metric_threshold": {"max": 60}, "metric_trend": {"windows": 3,
                                                                             "max_relative_increase": 0.5},
                           "data_drift": {"max_drift_share": 0.7}, "max_age": "90d"})
    commands = {
        "check.txt": ["check", "--as-of", "2011-06-30"],
        "check.json": ["check", "--as-of", "2011-07-31", "--json"],
        "monitor": ["monitor", "--from", "2011-05-01", "--every", "1d", "--no-log", "--out", "mon"],
        "backtest": ["backtest", "--from", "2011-05-01", "--every", "7d", "--thresholds", "60,80", "--policy",
                     "never,configured,every-49d,threshold-60,trend,drift", "--out", "bt"],
    }
    for name, args in commands.items():
        done = inprocess_cli.run(args, cwd=tmp_path)
        assert done.returncode in (0, 4), done.stderr[-2000:]
        if name.startswith("check"):
            same(name, masked(done.stdout, tmp_path))
    same_table("monitor.csv", (tmp_path / "mon" / "monitor.csv").read_text(), "latency_ms")
    # the replay's numbers per policy (the recommendation among them is the choice's, changed elsewhere)
    table = (tmp_path / "bt" / "backtest.csv").read_text()
    same("backtest.csv", columns(table, ["policy", "retrains", "promoted", "rejected", "mean_metric", "p90_metric",
                                         "windows_worse_than_threshold"]))
