"""A generated dataset that is not the bike data: two years of hourly electricity load.

Columns a new user's table might have: a timestamp, numeric columns (`hour`, `day_of_week`,
`temperature_c`), text columns (`day_type`, `weather`) and the target `load_mw`. The load has a
daily shape, weekly seasonality (weekends lower), a temperature response (heating below 15 °C,
cooling above 22 °C) and noise. A year in (`SHIFT`), the level rises by a quarter and the evening
peak moves two hours later (electric cars charging), so a model trained before then degrades.
Seeded: the same frame every time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

START, END = "2022-01-01", "2023-12-31 23:00"
SHIFT = pd.Timestamp("2023-01-01")
TARGET = "load_mw"


def energy_load(start: str = START, end: str = END, *, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, end, freq="h")
    n = len(ts)
    hour, dow, doy = ts.hour.to_numpy(), ts.dayofweek.to_numpy(), ts.dayofyear.to_numpy()
    temperature = (11 - 10 * np.cos(2 * np.pi * (doy - 15) / 365.25) - 4 * np.cos(2 * np.pi * (hour - 3) / 24)
                   + rng.normal(0, 2.5, n))
    holiday = np.isin(ts.strftime("%m-%d"), ["01-01", "05-01", "07-14", "11-11", "12-25", "12-26"])
    day_type = np.where(holiday, "holiday", np.where(dow >= 5, "weekend", "workday"))
    weather = rng.choice(["clear", "cloudy", "rain"], size=n, p=[0.5, 0.35, 0.15])

    after = ts >= SHIFT
    peak = np.where(after, 20, 18)
    daily = 120 * np.exp(-0.5 * ((hour - peak) / 2.5) ** 2) + 60 * np.exp(-0.5 * ((hour - 8) / 2) ** 2)
    weekly = np.select([day_type == "holiday", day_type == "weekend"], [0.75, 0.82], 1.0)
    heating = 9 * np.clip(15 - temperature, 0, None)
    cooling = 12 * np.clip(temperature - 22, 0, None)
    rain = np.where(weather == "rain", 15, 0)
    load = (400 + daily + heating + cooling + rain) * weekly * np.where(after, 1.25, 1.0)
    load = load + rng.normal(0, 12, n)
    return pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), "hour": hour, "day_of_week": dow,
                         "temperature_c": temperature.round(1), "day_type": day_type, "weather": weather,
                         TARGET: load.round(1)})
