"""How spans and times read in a sentence a person reads: one unit per sentence, chosen from the
policy's monitoring window (days for daily or coarser, hours below), and dates for daily windows.

`3911h before 2024-03-01T00:00:00 > max age 120d` makes the reader convert; `163d before 2024-03-01
> max age 120d` does not. Pure: the reasons in `decide/`, the data checks and the reports use it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

DAY, HOUR = "d", "h"
_SECONDS = {DAY: 86400, HOUR: 3600}


def unit_for(window: timedelta | None) -> str:
    """The unit of a policy's sentences: days when it monitors daily or coarser windows, else hours."""
    return DAY if window is None or window >= timedelta(days=1) else HOUR


def span_in(span: timedelta, unit: str) -> str:
    """`163d`, `36h`, `0.5d`: a span in `unit`, whole when it is, else to one decimal (a day's 0.5)."""
    value = span.total_seconds() / _SECONDS[unit]
    text = f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{text}{unit}"


def moment(stamp: datetime, unit: str) -> str:
    """A data time: `2024-03-01` at midnight in a daily policy, else to the minute (`2024-03-01T23:00`);
    seconds only when there are some, nothing lost either way."""
    if unit == DAY and (stamp.hour, stamp.minute, stamp.second, stamp.microsecond) == (0, 0, 0, 0):
        return stamp.date().isoformat()
    return stamp.isoformat(timespec="seconds" if stamp.second or stamp.microsecond else "minutes")


def stamped(text: str | None, unit: str) -> str | None:
    """`moment` of an ISO time kept as text (a JSON field), for the sentence beside it; text that is
    not one is left as it is."""
    try:
        return moment(datetime.fromisoformat(text), unit) if text else text
    except ValueError:
        return text


def period(window: str, unit: str) -> str:
    """A window `start..end` (`Window.iso`) in the same words: `2024-03-01..2024-03-08` in a daily policy."""
    start, _, end = window.partition("..")
    if not end:
        return window
    return f"{moment(datetime.fromisoformat(start), unit)}..{moment(datetime.fromisoformat(end), unit)}"
