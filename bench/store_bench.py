"""Store benchmark: bulk upsert vs raw sqlite3 executemany, holes() and read_tail() on 1,000,000 candles.

Prints one JSON line. Run: .venv/bin/python bench/store_bench.py [--rows 1000000 --holes 1000]
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tradecanvas_ext.domain import CandleBatch, SeriesId
from tradecanvas_ext.store import open_store

SID = SeriesId.parse("binance:spot:BTC/USDT:1m")


def make_batch(n: int, holes: int, seed: int = 7) -> CandleBatch:
    """n 1m candles with exactly `holes` holes of 1-5 missing candles each."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, size=holes)
    total = n + int(sizes.sum())
    starts = np.sort(rng.choice(np.arange(1, total - 10, 10), size=holes, replace=False))
    keep = np.ones(total, dtype=bool)
    for s, k in zip(starts, sizes, strict=True):  # building the fixture, not the measured path
        keep[s:s + k] = False
    times = (np.arange(total, dtype=np.int64) * 60 + 1_600_000_020 // 60 * 60)[keep][:n]
    o = 100 + rng.random(n)
    c = 100 + rng.random(n)
    return CandleBatch(times, o, np.maximum(o, c) + 0.1, np.minimum(o, c) - 0.1, c, rng.random(n) * 10)


def raw_sqlite_insert(path: Path, batch: CandleBatch, chunk: int) -> float:
    """The floor: sqlite3 executemany of the same rows into the same schema, same pragmas."""
    storage = open_store(f"sqlite:///{path}", origin="bench")  # creates the identical schema
    key = storage.candles.series_key(SID)
    storage.close()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    t0 = time.perf_counter()
    rows = list(zip([key] * len(batch), batch.times.tolist(), batch.open.tolist(), batch.high.tolist(),
                    batch.low.tolist(), batch.close.tolist(), batch.volume.tolist(), strict=True))
    con.execute("BEGIN IMMEDIATE")
    for lo in range(0, len(rows), chunk):
        con.executemany("INSERT INTO tc_candles (series_key, candle_time, open, high, low, close, volume) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", rows[lo:lo + chunk])
    con.execute("COMMIT")
    dt = time.perf_counter() - t0
    con.close()
    return dt


def best_of(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--holes", type=int, default=1000)
    args = ap.parse_args(argv)
    batch = make_batch(args.rows, args.holes)
    with tempfile.TemporaryDirectory() as d:
        raw_one_s = raw_sqlite_insert(Path(d) / "raw1.sqlite", batch, chunk=len(batch))
        raw_s = raw_sqlite_insert(Path(d) / "raw2.sqlite", batch, chunk=50_000)
        storage = open_store(f"sqlite:///{Path(d) / 'store.sqlite'}", origin="bench")
        store = storage.candles
        store.series_key(SID)
        t0 = time.perf_counter()
        res = store.upsert_closed(SID, batch)
        store_s = time.perf_counter() - t0
        assert res.accepted == args.rows, res.accepted
        start, end = int(batch.times[0]), int(batch.times[-1])
        holes = store.raw_holes(SID, start, end)
        holes_ms = best_of(lambda: store.raw_holes(SID, start, end), 3) * 1000
        tail_ms = best_of(lambda: store.read_tail(SID, 500), 20) * 1000
        storage.close()
    print(json.dumps({
        "bench": "store", "rows": args.rows,
        "upsert_store_s": round(store_s, 3), "insert_raw_sqlite3_s": round(raw_s, 3),
        "insert_raw_sqlite3_one_executemany_s": round(raw_one_s, 3),
        "upsert_rows_per_s": round(args.rows / store_s),
        "ratio_store_vs_raw_speed": round(raw_s / store_s, 3),
        "ratio_store_vs_raw_one_executemany": round(raw_one_s / store_s, 3), "goal_ratio": 0.7,
        "holes_found": len(holes), "holes_ms": round(holes_ms, 1), "read_tail_500_ms": round(tail_ms, 2),
        "python": sys.version.split()[0],
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
