"""Cost of `annotate` on a 1,000-row strategy dataframe: one store read of the span plus a join on time,
vs a plain `read_tail(1000)` of the same store. Prints one JSON line.

Run: .venv/bin/python bench/annotate_bench.py [--rows 1000 --repeat 200]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import pandas as pd

from tradecanvas_ext.bot.annotate import annotate_frame, from_store
from tradecanvas_ext.domain import CandleBatch, SeriesId
from tradecanvas_ext.sources.freqtrade_source import batch_to_frame
from tradecanvas_ext.store import open_store

SID = SeriesId.parse("binance:spot:BTC/USDT:1m")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args(argv)
    n = args.rows
    t0 = 1_700_000_000 // 60 * 60
    times = t0 + np.arange(n, dtype=np.int64) * 60
    rng = np.random.default_rng(1)
    o = 100 + rng.random(n)
    full = CandleBatch(times, o, o + 1, o - 1, o + 0.5, rng.random(n) + 0.1)
    missing = rng.choice(n, size=n // 50, replace=False)  # 2 % of the rows are freqtrade's fill-ups
    with tempfile.TemporaryDirectory() as d:
        storage = open_store(f"sqlite:///{d}/a.sqlite", origin="bench")
        store = storage.candles
        store.upsert_closed(SID, full.take(np.setdiff1d(np.arange(n), missing)))
        store.record_void(SID, int(times[missing[0]]), int(times[missing[0]]), "ccxt", 0.0)
        frame = batch_to_frame(full)

        def annotate():
            df = frame.copy()
            real, voids = from_store(store, SID, df)
            annotate_frame(df, real, voids)
            return df

        def plain():
            return store.read_tail(SID, n)

        df = annotate()
        assert int((df["tc_real"] == 0).sum()) == len(missing) and int(df["tc_void"].sum()) == 1
        for fn in (annotate, plain):  # warm-up
            fn()
        res = {}
        for name, fn in (("annotate", annotate), ("read_tail", plain)):
            samples = []
            for _ in range(args.repeat):
                s = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - s) * 1000)
            res[name] = sorted(samples)
        storage.close()
    med = {k: round(v[len(v) // 2], 3) for k, v in res.items()}
    p95 = {k: round(v[int(len(v) * 0.95)], 3) for k, v in res.items()}
    print(json.dumps({"bench": "annotate", "rows": n, "annotate_ms_median": med["annotate"],
                      "annotate_ms_p95": p95["annotate"], "read_tail_ms_median": med["read_tail"],
                      "ratio_annotate_vs_read_tail": round(med["annotate"] / med["read_tail"], 2),
                      "pandas": pd.__version__}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
