"""Contract section 5, level 2: local rollup of stored closed 1m candles into derived timeframes."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradecanvas_ext.domain import CandleBatch, Hole, SeriesId
from tradecanvas_ext.sources.rollup import RollupSource, rollup_batch, times_in_holes

T0 = 1_699_999_200  # aligned to 1h (and so to 1m, 5m, 15m)
S1 = SeriesId.parse("binance:spot:BTC/USDT:1m")
S5 = SeriesId.parse("binance:spot:BTC/USDT:5m")
S15 = SeriesId.parse("binance:spot:BTC/USDT:15m")


def minute_candles(times, seed: int = 1) -> CandleBatch:
    """Valid 1m candles with distinct random prices at the given times."""
    t = np.asarray(sorted(set(int(x) for x in times)), dtype=np.int64)
    rng = np.random.default_rng(seed)
    o = rng.uniform(10, 20, len(t))
    c = rng.uniform(10, 20, len(t))
    h = np.maximum(o, c) + rng.uniform(0, 2, len(t))
    lo = np.minimum(o, c) - rng.uniform(0, 2, len(t))
    v = rng.uniform(0, 100, len(t))
    return CandleBatch(t, o, h, lo, c, v)


def manual_rollup(b: CandleBatch, tf: int) -> dict[int, tuple]:
    """The obvious per-bucket Python reference."""
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(b.times.tolist()):
        groups.setdefault(t // tf * tf, []).append(i)
    out = {}
    for bucket, idx in groups.items():
        if len(idx) != tf // 60:
            continue
        out[bucket] = (b.open[idx[0]], max(b.high[idx]), min(b.low[idx]), b.close[idx[-1]],
                       sum(b.volume[i] for i in idx))
    return out


def as_dict(b: CandleBatch) -> dict[int, tuple]:
    return {t: (o, h, lo, c, v) for t, o, h, lo, c, v in b.rows()}


def assert_same(got: CandleBatch, want: dict[int, tuple]) -> None:
    g = as_dict(got)
    assert sorted(g) == sorted(want)
    assert list(got.times) == sorted(got.times.tolist())
    for t, row in want.items():
        assert g[t] == pytest.approx(row, rel=1e-12, abs=1e-9)


def hole(start: int, end: int, tf: int) -> Hole:
    return Hole(start, end, (end - start) // tf + 1)


# ---- the pure function ---------------------------------------------------------------------------------
def test_rollup_batch_matches_manual_aggregation():
    b = minute_candles(range(T0, T0 + 60 * 60, 60))
    out = rollup_batch(b, 300)
    assert len(out) == 12
    assert_same(out, manual_rollup(b, 300))
    first = out.take(np.array([0]))
    assert first.open[0] == b.open[0] and first.close[0] == b.close[4]
    assert first.high[0] == b.high[:5].max() and first.low[0] == b.low[:5].min()
    assert first.volume[0] == pytest.approx(b.volume[:5].sum())


def test_rollup_batch_skips_incomplete_bucket_and_unaligned_rows():
    times = [t for t in range(T0, T0 + 15 * 60, 60) if t != T0 + 7 * 60]  # bucket T0+300 lacks one minute
    b = minute_candles(times)
    out = rollup_batch(b, 300)
    assert out.times.tolist() == [T0, T0 + 600]
    unaligned = CandleBatch([T0 + 30], [1.0], [1.0], [1.0], [1.0], [1.0])
    assert len(rollup_batch(unaligned, 300)) == 0
    assert len(rollup_batch(CandleBatch.empty(), 300)) == 0
    with pytest.raises(ValueError):
        rollup_batch(b, 90)


def test_rollup_batch_accepts_unsorted_input_with_duplicates():
    b = minute_candles(range(T0, T0 + 300, 60))
    rev = b.take(np.arange(len(b))[::-1])
    assert as_dict(rollup_batch(rev, 300)) == as_dict(rollup_batch(b, 300))


@settings(max_examples=200, deadline=None)
@given(
    minutes=st.sets(st.integers(min_value=0, max_value=180), max_size=181),
    tf_minutes=st.sampled_from([2, 3, 5, 15, 60]),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_rollup_batch_builds_exactly_the_complete_buckets(minutes, tf_minutes, seed):
    tf = tf_minutes * 60
    b = minute_candles([T0 + 60 * m for m in minutes], seed=seed)
    out = rollup_batch(b, tf)
    present = set(b.times.tolist())
    complete = {bucket for bucket in {t // tf * tf for t in present}
                if all(bucket + 60 * k in present for k in range(tf_minutes))}
    assert set(out.times.tolist()) == complete
    assert_same(out, manual_rollup(b, tf))
    # every built candle is valid by contract section 1
    assert (out.problems(tf) == "").all()


def test_times_in_holes():
    holes = [hole(100, 200, 10), hole(400, 400, 10), hole(190, 250, 10)]
    t = np.array([0, 99, 100, 150, 250, 260, 399, 400, 401])
    assert times_in_holes(t, holes).tolist() == [False, False, True, True, True, False, False, True, False]
    assert times_in_holes(t, []).tolist() == [False] * len(t)


# ---- the source against a real store (SQLite and PostgreSQL) ---------------------------------------------
def test_fetch_rebuilds_5m_from_stored_1m(store):
    b = minute_candles(range(T0, T0 + 60 * 60, 60))
    store.upsert_closed(S1, b)
    src = RollupSource(store, max_timeframe_s=900)
    now = T0 + 3600
    res = src.fetch(S5, [hole(T0, T0 + 3600 - 300, 300)], now)
    assert res.errors == [] and res.voids == [] and res.requests == 0
    assert_same(res.candles, manual_rollup(b, 300))
    # and the result is what the store takes
    assert store.upsert_closed(S5, res.candles, now=now).accepted == 12
    assert store.raw_holes(S5, T0, T0 + 3300) == []


def test_fetch_skips_incomplete_bucket(store):
    times = [t for t in range(T0, T0 + 30 * 60, 60) if t != T0 + 11 * 60]
    store.upsert_closed(S1, minute_candles(times))
    res = RollupSource(store, 900).fetch(S5, [hole(T0, T0 + 25 * 60, 300)], T0 + 3600)
    assert res.candles.times.tolist() == [T0 + 300 * k for k in (0, 1, 3, 4, 5)]


def test_fetch_only_builds_buckets_inside_holes_and_closed(store):
    b = minute_candles(range(T0, T0 + 60 * 60, 60))
    store.upsert_closed(S1, b)
    now = T0 + 40 * 60 + 10  # bucket T0+40m is forming, T0+35m is the last closed one
    holes = [hole(T0 + 300, T0 + 600, 300), hole(T0 + 1800, T0 + 2700, 300)]
    res = RollupSource(store, 900).fetch(S5, holes, now)
    assert res.candles.times.tolist() == [T0 + 300, T0 + 600, T0 + 1800, T0 + 2100]
    want = manual_rollup(b, 300)
    assert_same(res.candles, {t: want[t] for t in res.candles.times.tolist()})
    # the last closed bucket exactly at its close
    res = RollupSource(store, 900).fetch(S5, holes, T0 + 2400)
    assert res.candles.times.tolist()[-1] == T0 + 2100


class CountingStore:
    """The real store, with read_between calls recorded."""

    def __init__(self, store):
        self._store = store
        self.reads: list[tuple] = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def read_between(self, *a, **kw):
        self.reads.append(a)
        return self._store.read_between(*a, **kw)


def test_fetch_far_apart_holes_use_few_reads(store):
    days = [T0 + d * 2 * 86400 for d in range(40)]  # 40 holes two days apart
    b = minute_candles([d + 60 * k for d in days for k in range(15)])
    store.upsert_closed(S1, b)
    counting = CountingStore(store)
    res = RollupSource(counting, 900).fetch(S15, [hole(d, d, 900) for d in days], days[-1] + 86400)
    assert res.candles.times.tolist() == days
    assert_same(res.candles, manual_rollup(b, 900))
    assert len(counting.reads) == 16
    # holes a day apart are read in one query, holes three days apart in two
    counting.reads.clear()
    res = RollupSource(counting, 900).fetch(S15, [hole(days[0], days[0], 900), hole(T0 + 86400, T0 + 86400, 900)],
                                            T0 + 3 * 86400)
    assert res.candles.times.tolist() == [days[0]] and len(counting.reads) == 1
    counting.reads.clear()
    res = RollupSource(counting, 900).fetch(S15, [hole(days[0], days[0], 900), hole(days[2], days[2], 900)],
                                            days[3])
    assert res.candles.times.tolist() == [days[0], days[2]] and len(counting.reads) == 2


def test_not_applicable_series_get_nothing_and_no_error(store):
    store.upsert_closed(S1, minute_candles(range(T0, T0 + 2 * 3600, 60)))
    src = RollupSource(store, max_timeframe_s=900)
    now = T0 + 2 * 3600
    for sid, tf in ((S1, 60), (SeriesId.parse("binance:spot:BTC/USDT:1h"), 3600)):
        res = src.fetch(sid, [hole(T0, T0 + 3600, tf)], now)
        assert len(res.candles) == 0 and res.errors == [] and res.requests == 0
    # the same 1h series is built once the limit allows it
    res = RollupSource(store, max_timeframe_s=3600).fetch(
        SeriesId.parse("binance:spot:BTC/USDT:1h"), [hole(T0, T0 + 3600, 3600)], now)
    assert res.candles.times.tolist() == [T0, T0 + 3600]


def test_missing_sibling_is_not_created_and_other_markets_do_not_mix(store):
    store.upsert_closed(S1, minute_candles(range(T0, T0 + 3600, 60)))
    src = RollupSource(store, 900)
    fut = SeriesId.parse("binance:futures:BTC/USDT:USDT:5m")
    res = src.fetch(fut, [hole(T0, T0 + 600, 300)], T0 + 3600)
    assert len(res.candles) == 0 and res.errors == []
    assert "binance:futures:BTC/USDT:USDT:1m" not in store.known_series()
    other = SeriesId.parse("binance:spot:ETH/USDT:5m")
    assert len(src.fetch(other, [hole(T0, T0 + 600, 300)], T0 + 3600).candles) == 0


def test_store_failure_is_an_error_not_an_exception():
    class Broken:
        def known_series(self):
            return [str(S1)]

        def read_between(self, *a, **kw):
            raise RuntimeError("database is gone")

    res = RollupSource(Broken(), 900).fetch(S5, [hole(T0, T0 + 600, 300)], T0 + 3600)
    assert len(res.candles) == 0 and len(res.errors) == 1 and "database is gone" in res.errors[0]


def test_no_holes_or_nothing_closed_reads_nothing(store):
    counting = CountingStore(store)
    src = RollupSource(counting, 900)
    assert len(src.fetch(S5, [], T0 + 3600).candles) == 0
    assert len(src.fetch(S5, [hole(T0, T0 + 600, 300)], T0 + 299).candles) == 0
    assert counting.reads == []
