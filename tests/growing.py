"""Generated tables a new user might bring to `init` (issue 25): hourly demand whose level grows, and
an imbalanced classification target (~24% positive). Each carries a row counter (`rownames`, as R's
`write.csv` adds) that `init` must leave out. Seeded: the same frame every time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def growing_demand(days: int = 200, *, growth: float = 0.004, seed: int = 5) -> pd.DataFrame:
    """Hourly demand: a daily shape, a temperature response, noise, and a level growing `growth` a day
    (compounding: x2.2 over 200 days); `lag_24h` is the demand a day earlier, as forecasting tables hold."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=days * 24, freq="h")
    hour = ts.hour.to_numpy()
    temperature = 12 + 8 * np.sin(2 * np.pi * (hour - 9) / 24) + rng.normal(0, 3, len(ts))
    level = 100 * (1 + growth) ** (np.arange(len(ts)) / 24)
    shape = 1 + 0.5 * np.exp(-0.5 * ((hour - 18) / 3) ** 2) + 0.25 * np.exp(-0.5 * ((hour - 8) / 2) ** 2)
    demand = level * shape * (1 + 0.01 * np.clip(temperature - 15, 0, None)) * rng.normal(1, 0.05, len(ts))
    lag = np.concatenate([np.full(24, np.nan), demand[:-24]])
    frame = pd.DataFrame({"rownames": np.arange(1, len(ts) + 1), "ts": ts.strftime("%Y-%m-%d %H:%M"),
                          "hour": hour, "temperature": temperature.round(1), "lag_24h": lag.round(2),
                          "demand": demand.round(2)})
    return frame.iloc[24:].reset_index(drop=True)


def imbalanced_events(days: int = 120, per_hour: int = 4, *, seed: int = 3) -> pd.DataFrame:
    """Rows every 15 minutes, ~24% positive: the positive rate follows two numbers and a channel."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=days * 24 * per_hour, freq=f"{60 // per_hour}min")
    n = len(ts)
    amount, tenure = rng.lognormal(3, 0.8, n), rng.integers(0, 60, n)
    channel = rng.choice(["web", "app", "store"], n, p=[0.5, 0.3, 0.2])
    logit = -1.6 + 0.9 * (np.log(amount) - 3) - 0.03 * (tenure - 30) + np.where(channel == "app", 0.6, 0.0)
    flagged = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"rownames": np.arange(1, n + 1), "ts": ts.strftime("%Y-%m-%d %H:%M"),
                         "amount": amount.round(2), "tenure": tenure, "channel": channel, "flagged": flagged})
