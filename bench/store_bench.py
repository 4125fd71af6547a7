"""Store benchmark on 1,000,000 candles with 1,000 holes: bulk upsert vs raw sqlite3 executemany
("store"), holes() from the coverage index vs the plain scans of the same store ("holes"), and the
index's rebuild / verify and the one-candle write path ("coverage").

One JSON line per part. Run: .venv/bin/python bench/store_bench.py [--rows 1000000 --holes 1000]
[--db-url postgresql+psycopg://...  (the holes / coverage parts on PostgreSQL; tables are dropped)]
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
from sqlalchemy import create_engine, func, select, text

from tradecanvas_ext.domain import CandleBatch, SeriesId, list_holes
from tradecanvas_ext.store import open_store
from tradecanvas_ext.store.schema import candles as C

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


def timings(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def best_of(fn, repeat: int) -> float:
    return min(timings(fn, repeat))


def lag_scan(store, key: int, tf: int, s: int, e: int) -> list[tuple[int, int]]:
    """The store's previous hole query (before the coverage index): LAG() over every candle time."""
    inner = select(C.c.candle_time.label("t"), func.lag(C.c.candle_time).over(order_by=C.c.candle_time)
                   .label("prev")).where(C.c.series_key == key, C.c.candle_time >= s, C.c.candle_time <= e
                                         ).subquery()
    q = select(inner.c.prev, inner.c.t).where(inner.c.t - inner.c.prev > tf).order_by(inner.c.t)
    with store.engine.connect() as conn:
        return [(int(p) + tf, int(t) - tf) for p, t in conn.execute(q)]


def holes_part(url: str, batch: CandleBatch, upsert_s: float | None) -> tuple[dict, dict]:
    """holes() from the index vs the two plain scans, each the median of the same number of runs, in the
    same process on the same store; then the index's own costs."""
    storage = open_store(url, origin="bench", window_candles=0)  # the index itself, not the recent window
    store = storage.candles
    if upsert_s is None:  # PostgreSQL: load it here (the SQLite store was loaded by the store part)
        t0 = time.perf_counter()
        store.upsert_closed(SID, batch)
        upsert_s = time.perf_counter() - t0
    tf, key = SID.tf_seconds, store.series_key(SID)
    start, end = int(batch.times[0]), int(batch.times[-1])
    indexed = store.raw_holes(SID, start, end)
    numpy_scan = list_holes(store.times_between(SID, start, end), start, end, tf)
    sql_scan = lag_scan(store, key, tf, start, end)
    assert indexed == numpy_scan and [(h.start, h.end) for h in indexed] == sql_scan, "scans disagree"
    reps = {"index": 21, "index_with_voids": 21, "numpy_scan": 5, "sql_lag_scan": 5}
    med = {name: float(np.median(timings(fn, reps[name]))) * 1000 for name, fn in (
        ("index", lambda: store.raw_holes(SID, start, end)),
        ("index_with_voids", lambda: store.holes(SID, start, end)),
        ("numpy_scan", lambda: list_holes(store.times_between(SID, start, end), start, end, tf)),
        ("sql_lag_scan", lambda: lag_scan(store, key, tf, start, end)),
    )}
    recent = (end - 2000 * tf, end)  # a client's window at the head: the hub's recovery check
    recent_ms = float(np.median(timings(lambda: store.raw_holes(SID, *recent), 50))) * 1000
    holes = {
        "bench": "holes", "db": storage.dialect.name, "rows": len(batch), "holes_found": len(indexed),
        "index_ms_median": round(med["index"], 2), "index_with_voids_ms_median": round(med["index_with_voids"], 2),
        "numpy_scan_ms_median": round(med["numpy_scan"], 1), "sql_lag_scan_ms_median": round(med["sql_lag_scan"], 1),
        "ratio_numpy_scan_vs_index": round(med["numpy_scan"] / med["index"], 1),
        "ratio_sql_lag_scan_vs_index": round(med["sql_lag_scan"] / med["index"], 1),
        "recent_2000_window_ms_median": round(recent_ms, 3), "repeats": reps,
        "goal_index_ms": 20, "goal_ratio_vs_scan": 10,
    }
    t0 = time.perf_counter()
    bad = storage.coverage.verify()
    verify_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    storage.coverage.rebuild()
    rebuild_s = time.perf_counter() - t0
    assert bad == [] and store.raw_holes(SID, start, end) == indexed
    head = end + tf
    one = batch.take(slice(-1, None))

    def append_one():
        nonlocal head
        store.upsert_closed(SID, CandleBatch([head], one.open, one.high, one.low, one.close, one.volume))
        head += tf

    append_ms = float(np.median(timings(append_one, 200))) * 1000
    storage.close()
    return holes, {"bench": "coverage", "db": holes["db"], "rows": len(batch), "upsert_with_index_s": round(upsert_s, 3),
                   "verify_s": round(verify_s, 3), "rebuild_s": round(rebuild_s, 3),
                   "append_one_candle_ms_median": round(append_ms, 3)}


def covered_read(store) -> CandleBatch:
    """The market endpoint's store calls: the latest 500, their holes, the head time."""
    b = store.read_tail(SID, 500)
    store.holes(SID, int(b.times[0]), int(b.times[-1]))
    store.head_time(SID)
    return b


def window_part(url: str, db: str) -> dict:
    """Recent reads served by the in-memory window vs the same reads from SQL (a window-less store on
    the same database), medians of 200 calls each, in the same run."""
    windowed = open_store(url, origin="bench-w")
    plain = open_store(url, origin="bench-p", window_candles=0)
    head = windowed.candles.head_time(SID)
    reads = {
        "read_tail_500": lambda c: c.read_tail(SID, 500),
        "read_after_1000": lambda c: c.read_after(SID, head - 2000 * SID.tf_seconds, 1000),
        "read_between_60": lambda c: c.read_between(SID, head - 59 * SID.tf_seconds, head),
        "head_time": lambda c: c.head_time(SID),
        "covered_read_500": lambda c: covered_read(c),  # what GET /api/market/candles asks the store
    }
    out: dict = {"bench": "window", "db": db, "window_candles": windowed.windows.size}
    for name, fn in reads.items():
        assert str(fn(windowed.candles)) == str(fn(plain.candles)) if name == "head_time" else \
            fn(windowed.candles).rows() == fn(plain.candles).rows()
        w = float(np.median(timings(lambda f=fn: f(windowed.candles), 200))) * 1000
        p = float(np.median(timings(lambda f=fn: f(plain.candles), 200))) * 1000
        out[f"{name}_window_ms"], out[f"{name}_sql_ms"] = round(w, 3), round(p, 3)
        out[f"ratio_{name}_sql_vs_window"] = round(p / w, 1)
    windowed.close()
    plain.close()
    return out


def drop_pg(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS tc_candles, tc_voids, tc_tracker, tc_series, tc_coverage, "
                          "tc_store_state, tc_write_seq CASCADE"))
    engine.dispose()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--holes", type=int, default=1000)
    ap.add_argument("--db-url", default=None, help="PostgreSQL: the holes / coverage parts there instead")
    args = ap.parse_args(argv)
    batch = make_batch(args.rows, args.holes)
    if args.db_url:
        drop_pg(args.db_url)
        for line in holes_part(args.db_url, batch, None):
            print(json.dumps(line), flush=True)
        print(json.dumps(window_part(args.db_url, "postgresql")), flush=True)
        drop_pg(args.db_url)
        return 0
    with tempfile.TemporaryDirectory() as d:
        raw_one_s = raw_sqlite_insert(Path(d) / "raw1.sqlite", batch, chunk=len(batch))
        raw_s = raw_sqlite_insert(Path(d) / "raw2.sqlite", batch, chunk=50_000)
        url = f"sqlite:///{Path(d) / 'store.sqlite'}"
        storage = open_store(url, origin="bench", window_candles=0)  # read_tail: the SQL read, as before
        store = storage.candles
        store.series_key(SID)
        t0 = time.perf_counter()
        res = store.upsert_closed(SID, batch)
        store_s = time.perf_counter() - t0
        assert res.accepted == args.rows, res.accepted
        tail_ms = best_of(lambda: store.read_tail(SID, 500), 20) * 1000
        storage.close()
        print(json.dumps({
            "bench": "store", "rows": args.rows,
            "upsert_store_s": round(store_s, 3), "insert_raw_sqlite3_s": round(raw_s, 3),
            "insert_raw_sqlite3_one_executemany_s": round(raw_one_s, 3),
            "upsert_rows_per_s": round(args.rows / store_s),
            "ratio_store_vs_raw_speed": round(raw_s / store_s, 3),
            "ratio_store_vs_raw_one_executemany": round(raw_one_s / store_s, 3), "goal_ratio": 0.7,
            "read_tail_500_ms": round(tail_ms, 2), "python": sys.version.split()[0],
        }), flush=True)
        for line in holes_part(url, batch, store_s):
            print(json.dumps(line), flush=True)
        print(json.dumps(window_part(url, "sqlite")), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
