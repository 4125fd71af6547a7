"""Two versions of one 1m history frame for the rewrite tests: `b` is `a` plus every row `a` lacks."""
from __future__ import annotations

import numpy as np
import pandas as pd

T0 = 1_700_000_040 // 60 * 60


def frames(rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    t = T0 + 60 * np.arange(rows, dtype=np.int64)
    price = 100 + np.sin(np.arange(rows) / 50.0)
    full = pd.DataFrame({"date": pd.to_datetime(t, unit="s", utc=True).as_unit("ms"), "open": price,
                         "high": price + 1, "low": price - 1, "close": price + 0.5,
                         "volume": np.arange(rows, dtype=np.float64)})
    holes = (np.arange(rows) % 97) < 3  # a has holes, b is whole
    return full[~holes].reset_index(drop=True), full
