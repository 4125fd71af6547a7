"""Contract section 5 through real ccxt against the emulator: each branch of the decision tree, request
economy, faults, voids, single-flight, tracker notes and `result.value`."""
from __future__ import annotations

import math
import sys
import threading

import numpy as np
import pandas as pd
import pytest
from freqtrade.data.dataprovider import DataProvider
from freqtrade.enums import CandleType, RunMode
from freqtrade.exchange import Exchange

from tests.botkit import wait_for
from tests.conftest import NOW
from tradecanvas_ext.core import default_sources
from tradecanvas_ext.domain import CandleBatch, SeriesId, expected_latest_closed_time

SID = SeriesId.parse("binance:spot:BTC/USDT:1m")
SID5 = SeriesId.parse("binance:spot:BTC/USDT:5m")
LAST = expected_latest_closed_time(NOW, 60)


def oracle(exchange, start, end, tf="1m", symbol="BTC/USDT"):
    return exchange.candles(symbol, tf, start, end)


def same(a, b) -> bool:
    """Same candle times, and OHLCV equal up to float summation order (rollup sums volumes)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool((a[:, 0] == b[:, 0]).all()) and np.allclose(a, b, rtol=1e-12)


def stored(rt, sid, start=0, end=10**10):
    return rt.store.read_between(sid, start, end).rows()


def assert_store_clean(rt, sid, exchange, tf="1m"):
    """No invalid, duplicated, forming or fabricated candle: every stored row is the exchange's own."""
    rows = stored(rt, sid)
    times = [r[0] for r in rows]
    assert times == sorted(set(times))
    tf_s = 60 if tf == "1m" else 300
    assert all(t + tf_s <= NOW for t in times)
    if rows:
        truth = {r[0]: r for r in oracle(exchange, times[0], times[-1], tf)}
        assert all(truth.get(r[0]) == r for r in rows)


@pytest.fixture
def provider_with(tmp_path):
    """A real freqtrade DataProvider over a real (offline-built) Exchange whose live cache holds `rows`."""
    made = []

    def make(rows, pair="BTC/USDT", tf="1m"):
        cfg = {"exchange": {"name": "binance", "enable_ws": False, "key": "", "secret": ""},
               "dry_run": True, "runmode": RunMode.DRY_RUN, "stake_currency": "USDT", "timeframe": tf,
               "datadir": tmp_path}
        ex = Exchange(cfg, validate=False)
        made.append(ex)
        df = pd.DataFrame(rows, columns=["t", "open", "high", "low", "close", "volume"])
        df["date"] = pd.to_datetime(df.pop("t"), unit="s", utc=True)
        ex._klines[(pair, tf, CandleType.SPOT)] = df[["date", "open", "high", "low", "close", "volume"]]
        return DataProvider(cfg, ex)

    yield make
    for ex in made:
        ex.close()


# ---- the branches --------------------------------------------------------------------------------------

def test_freqtrade_level_fills_and_ccxt_is_not_asked(make_runtime, exchange, provider_with):
    rows = oracle(exchange, LAST - 99 * 60, LAST)
    dp = provider_with(rows)
    rt = make_runtime(sources=lambda ctx: default_sources(ctx, data_provider=lambda: dp))
    exchange.reset_counts()
    res = rt.backfill.ensure_tail_coverage(SID, 100, to_time=LAST)
    assert res.sources == {"freqtrade": 100} and res.filled == 100 and res.covered == 100
    assert res.complete and res.note == "tail_coverage_done"
    assert exchange.request_count("klines") == 0
    assert stored(rt, SID) == rows


def test_rollup_fills_5m_from_stored_1m(make_runtime, exchange):
    rt = make_runtime(enable_ccxt_backfill=False, series=[SID, SID5])
    end5 = expected_latest_closed_time(NOW, 300)
    rt.store.upsert_closed(SID, oracle(exchange, end5 - 9 * 300, end5 + 240))
    exchange.reset_counts()
    res = rt.backfill.ensure_tail_coverage(SID5, 10, to_time=end5)
    assert res.sources == {"rollup": 10} and res.complete  # freqtrade has nothing to offer: skipped (issue 13)
    assert same(stored(rt, SID5), oracle(exchange, end5 - 9 * 300, end5, "5m"))
    assert exchange.request_count() == 0


def test_rollup_is_not_used_above_rollup_max(make_runtime, exchange):
    rt = make_runtime(enable_ccxt_backfill=False, rollup_max_timeframe_s=240, series=[SID, SID5])
    end5 = expected_latest_closed_time(NOW, 300)
    rt.store.upsert_closed(SID, oracle(exchange, end5 - 9 * 300, end5 + 240))
    res = rt.backfill.ensure_tail_coverage(SID5, 10, to_time=end5)
    assert "rollup" not in res.sources and res.covered == 0 and res.note == "tail_coverage_partial"


def test_ccxt_only_with_to_time_or_on_read_switch(make_runtime, exchange):
    rt = make_runtime()
    exchange.reset_counts()
    res = rt.backfill.ensure_tail_coverage(SID, 50)  # read path: no to_time, switch off
    assert "ccxt" not in res.sources and res.covered == 0
    assert exchange.request_count() == 0
    assert res.note == "tail_coverage_partial" and res.value == 0
    res = rt.backfill.ensure_tail_coverage(SID, 50, to_time=LAST)
    assert res.sources["ccxt"] == 50 and res.complete and res.value == 50
    assert exchange.request_count("klines") == 1
    assert_store_clean(rt, SID, exchange)


def test_ccxt_on_read_switch_lets_a_read_reach_ccxt(make_runtime, exchange):
    rt = make_runtime(enable_ccxt_backfill_on_read=True)
    res = rt.backfill.ensure_tail_coverage(SID, 30)
    assert res.sources["ccxt"] == 30 and res.end == LAST and res.start == LAST - 29 * 60
    assert res.value == max(res.filled, res.covered) == 30


@pytest.mark.parametrize("env", [{}, {"TRADE_CANVAS_ENABLE_CCXT_BACKFILL": "0"}])
def test_ccxt_switch_off_means_zero_requests(make_runtime, exchange, env):
    rt = make_runtime(enable_ccxt_backfill=not env, env=env) if env else make_runtime(
        enable_ccxt_backfill=False)
    exchange.reset_counts()
    res = rt.backfill.ensure_tail_coverage(SID, 50, to_time=LAST)
    assert exchange.request_count() == 0 and "ccxt" not in res.sources
    assert not rt.settings.enable_ccxt_backfill


def test_errors_are_recorded_and_tracker_says_best_effort_failed(make_runtime, exchange):
    bad = SeriesId.parse("binance:spot:DOGE/USDT:1m")  # not listed by the exchange
    rt = make_runtime(series=[bad])
    res = rt.backfill.ensure_tail_coverage(bad, 10, to_time=LAST)
    assert res.errors and "DOGE/USDT" in " ".join(res.errors)
    assert res.note == "tail_coverage_best_effort_failed" and not res.complete
    tr = rt.tracker.get(bad)
    assert tr["state"] == "failed" and tr["note"] == "tail_coverage_best_effort_failed" and tr["error"]


def test_tracker_states_and_progress(make_runtime, exchange):
    rt = make_runtime()
    assert rt.tracker.get(SID)["state"] == "idle"
    rt.store.upsert_closed(SID, oracle(exchange, LAST - 99 * 60, LAST - 50 * 60))
    res = rt.backfill.ensure_tail_coverage(SID, 100, to_time=LAST)
    tr = rt.tracker.get(SID)
    assert res.filled == 50 and tr["state"] == "succeeded" and tr["note"] == "tail_coverage_done"
    assert tr["start_missing_candles"] == 50 and tr["current_missing_candles"] == 0
    assert tr["progress_pct"] == 100.0 and tr["finished_at"] == NOW


def test_window_never_passes_the_latest_closed_candle(make_runtime, exchange):
    rt = make_runtime()
    res = rt.backfill.ensure_tail_coverage(SID, 10, to_time=NOW + 3600)
    assert res.end == LAST and max(t for t, *_ in stored(rt, SID)) == LAST


def test_value_semantics(make_runtime, exchange):
    rt = make_runtime()
    rt.store.upsert_closed(SID, oracle(exchange, LAST - 9 * 60, LAST))
    res = rt.backfill.ensure_tail_coverage(SID, 20, to_time=LAST)
    assert (res.covered, res.filled, res.value) == (20, 10, 20)
    rt2 = make_runtime(enable_ccxt_backfill_on_read=True, db_url=f"sqlite:///{rt.settings.user_data_dir}/b.db")
    res2 = rt2.backfill.ensure_tail_coverage(SID, 5)
    assert res2.to_time is None and res2.value == max(res2.filled, res2.covered) == 5


# ---- request economy (counted by the emulator) --------------------------------------------------------

@pytest.mark.parametrize("n", [1, 999, 1000, 1001, 2500])
def test_repairing_n_candles_costs_ceil_n_over_1000_requests(make_runtime, exchange, n):
    rt = make_runtime()
    exchange.reset_counts()
    res = rt.backfill.ensure_tail_coverage(SID, n, to_time=LAST)
    assert res.filled == n and res.complete
    assert exchange.request_count("klines") == math.ceil(n / 1000)
    exchange.reset_counts()
    again = rt.backfill.ensure_tail_coverage(SID, n, to_time=LAST)
    assert again.filled == 0 and exchange.request_count() == 0  # a covered window costs nothing


def test_k_separate_holes_cost_at_most_one_per_1000_plus_one_per_hole(make_runtime, exchange):
    rt = make_runtime()
    start = LAST - 2999 * 60
    rows = oracle(exchange, start, LAST)
    keep = [r for i, r in enumerate(rows) if not (100 <= i < 160 or 900 <= i < 2100 or 2500 <= i < 2501)]
    rt.store.upsert_closed(SID, keep)
    exchange.reset_counts()
    res = rt.backfill.ensure_tail_coverage(SID, 3000, to_time=LAST)
    missing = 60 + 1200 + 1
    assert res.filled == missing and res.complete
    assert exchange.request_count("klines") <= math.ceil(missing / 1000) + 3
    assert stored(rt, SID) == rows


# ---- faults -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["429", "418", "503", "500", "malformed", "duplicate", "out_of_order",
                                   "slow"])
def test_faults_leave_a_clean_store_and_a_later_call_completes(make_runtime, exchange, fault):
    rt = make_runtime(ccxt_timeout_ms=500, time_bound_s=3.0)
    f = exchange.faults
    {"429": lambda: f.http_error(429, n=None, retry_after=1),
     "418": lambda: f.http_error(418, n=None, retry_after=1),
     "503": lambda: f.http_error(503, n=None), "500": lambda: f.http_error(500, n=None),
     "malformed": lambda: f.malformed(n=None), "duplicate": lambda: f.duplicate_rows(n=None),
     "out_of_order": lambda: f.out_of_order(n=None), "slow": lambda: f.slow(1.0, n=None)}[fault]()
    res = rt.backfill.ensure_tail_coverage(SID, 1500, to_time=LAST)
    assert_store_clean(rt, SID, exchange)
    if fault in ("duplicate", "out_of_order"):
        assert res.complete, (res.errors, res.holes)  # repaired rows are fine to use once cleaned
    else:
        assert not res.complete and res.errors and res.note == "tail_coverage_best_effort_failed"
    f.clear()
    later = rt.backfill.ensure_tail_coverage(SID, 1500, to_time=LAST)
    assert later.complete and later.covered == 1500
    assert stored(rt, SID) == oracle(exchange, LAST - 1499 * 60, LAST)


def test_transient_fault_once_is_retried_within_the_call(make_runtime, exchange):
    rt = make_runtime()
    exchange.faults.http_error(503, n=1)
    res = rt.backfill.ensure_tail_coverage(SID, 100, to_time=LAST)
    assert res.complete and not res.errors


def test_outage_becomes_a_void_and_is_not_fetched_again(make_runtime, exchange):
    rt = make_runtime()
    o_start, o_end = LAST - 40 * 60, LAST - 30 * 60  # [start, end): 10 candles the exchange never had
    exchange.faults.outage(o_start, o_end)
    res = rt.backfill.ensure_tail_coverage(SID, 100, to_time=LAST)
    assert res.complete and res.covered == 90 and res.voids_recorded >= 1
    assert [(h.start, h.end, h.void) for h in res.holes] == [(o_start, o_end - 60, True)]
    [v] = rt.store.voids(SID)
    assert (v.start, v.end, v.source) == (o_start, o_end - 60, "ccxt")
    exchange.reset_counts()
    again = rt.backfill.ensure_tail_coverage(SID, 100, to_time=LAST)
    assert exchange.request_count() == 0 and again.complete


def test_old_void_is_rechecked_after_its_age(make_runtime, exchange, clock):
    rt = make_runtime(void_recheck_age_s=60)
    o_start, o_end = LAST - 40 * 60, LAST - 30 * 60
    exchange.faults.outage(o_start, o_end)
    rt.backfill.ensure_tail_coverage(SID, 100, to_time=LAST)
    exchange.faults.clear_outages()  # the exchange later publishes the candles
    clock.advance(61)
    exchange.reset_counts()
    res = rt.backfill.ensure_tail_coverage(SID, 100, to_time=LAST)
    assert exchange.request_count("klines") == 1 and res.filled == 10


def test_recent_missing_data_is_not_a_void(make_runtime, exchange):
    rt = make_runtime()
    exchange.faults.outage(LAST - 60, LAST + 60)  # the last closed candle, 90 s old: may still appear
    res = rt.backfill.ensure_tail_coverage(SID, 10, to_time=LAST)
    assert rt.store.voids(SID) == [] and not res.complete


# ---- single flight and cooldown -----------------------------------------------------------------------

class GatedSource:
    """Wraps the range source: every fetch counts itself and waits at a gate the test opens."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.gate, self.fetches, self._lock = threading.Event(), 0, threading.Lock()

    def offers(self, series):
        return self.inner.offers(series)

    def fetch(self, series, holes, now=None, deadline=None):
        with self._lock:
            self.fetches += 1
        assert self.gate.wait(60), "the test never opened the gate"
        return self.inner.fetch(series, holes, now, deadline=deadline)


def parked(thread: threading.Thread) -> bool:
    """The thread is blocked waiting on a threading Event / Condition (not running, not about to)."""
    frame = sys._current_frames().get(thread.ident)
    return frame is not None and frame.f_code is threading.Condition.wait.__code__


def test_twenty_threads_one_fetch_sequence(make_runtime, exchange):
    gated = []

    def gated_sources(ctx):  # the default levels, the range level wrapped in the gate
        levels = default_sources(ctx)
        gated.append(GatedSource(levels[-1]))
        return [*levels[:-1], gated[0]]

    rt = make_runtime(sources=gated_sources)
    source = gated[0]
    exchange.reset_counts()
    barrier, results, errors = threading.Barrier(20), [], []

    def call():
        barrier.wait(30)
        try:
            results.append(rt.backfill.ensure_tail_coverage(SID, 1500, to_time=LAST))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    # the first caller is held at the gate; open it only once all twenty callers are waiting
    wait_for(lambda: all(parked(t) for t in threads), 30, interval=0.02,
             what="every caller to wait (one at the gate, the others for its flight)")
    fetches_before_open = source.fetches
    source.gate.set()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 20
    assert fetches_before_open == source.fetches == 1  # one repair ran the range source, not twenty
    assert exchange.request_count("klines") == 2  # ceil(1500 / 1000): one fetch sequence
    assert all(r is results[0] for r in results)  # every caller got the one flight's result
    assert results[0].covered == 1500 and results[0].filled == 1500


def test_read_path_cooldown(make_runtime, exchange, clock):
    rt = make_runtime(enable_ccxt_backfill_on_read=True, backfill_cooldown_s=2.0)
    rt.backfill.ensure_tail_coverage(SID, 10, read_path=True)
    clock.advance(60)  # one more candle closed
    exchange.reset_counts()
    res = rt.backfill.ensure_tail_coverage(SID, 10, read_path=False)
    assert exchange.request_count("klines") == 1 and res.filled == 1
    clock.advance(1)
    res = rt.backfill.ensure_tail_coverage(SID, 11, read_path=True)
    assert res.skipped == "cooldown" and exchange.request_count("klines") == 1


def test_backfill_gap_returns_the_stored_range(make_runtime, exchange):
    rt = make_runtime()
    got = rt.backfill.backfill_gap(SID, LAST - 10 * 60, LAST)
    assert isinstance(got, CandleBatch)
    assert got.rows() == oracle(exchange, LAST - 10 * 60, LAST - 60)


def test_backfill_gap_fetches_only_the_newest_part(make_runtime, exchange):
    rt = make_runtime(gap_backfill_max_candles=5)
    got = rt.backfill.backfill_gap(SID, LAST - 20 * 60, LAST)
    assert got.times.tolist() == [LAST - k * 60 for k in range(5, 0, -1)]


def test_backfill_range(make_runtime, exchange):
    rt = make_runtime()
    res = rt.backfill.backfill_range(SID, LAST - 300 * 60, LAST - 200 * 60)
    assert res.covered == 101 and res.complete
    with pytest.raises(ValueError, match="before start"):
        rt.backfill.backfill_range(SID, 100, 50)


def test_a_gap_repair_does_not_fetch_again_what_one_tried_within_the_cooldown(make_runtime, exchange, clock):
    rt = make_runtime(backfill_cooldown_s=10.0)
    exchange.faults.http_error(400, n=None)  # refused: the holes stay, and no void is learned
    a, b = LAST - 20 * 60, LAST - 10 * 60

    def asked():  # (first, last) candle time of each klines request
        return [(int(p["startTime"]) // 1000, int(p["endTime"]) // 1000 // 60 * 60)
                for path, p in exchange.requests if path.endswith("klines")]

    def starts():
        return [first for first, _ in asked()]

    # each page asks its hole's neighbour candles too (issue 13: one answer sees an outage from both sides)
    rt.backfill.backfill_gap(SID, b, LAST)  # tries [b, LAST - 60] (retries included)
    tried = starts()
    assert tried and set(tried) == {b - 60}
    clock.advance(9)
    rt.backfill.backfill_gap(SID, b + 60, LAST)  # inside the one tried: nothing to fetch
    assert starts() == tried
    rt.backfill.backfill_gap(SID, a, LAST)  # overlaps it: only [a, b - 60] is fetched
    assert set(asked()[len(tried):]) == {(a - 60, b)}
    exchange.reset_counts()
    clock.advance(10)  # counted from the end of each repair that ran: over for both
    rt.backfill.backfill_gap(SID, a, LAST)
    assert set(starts()) == {a - 60} and max(last for _, last in asked()) >= b  # all of it again


class SlowOnTheClock:
    """Wraps the range source: each fetch takes `seconds` of the runtime (manual) clock."""

    def __init__(self, inner, clock, seconds):
        self.inner, self.name, self.clock, self.seconds = inner, inner.name, clock, seconds

    def offers(self, series):
        return self.inner.offers(series)

    def fetch(self, series, holes, now=None, deadline=None):
        out = self.inner.fetch(series, holes, now, deadline=deadline)
        self.clock.advance(self.seconds)
        return out


def test_the_cooldown_counts_from_the_end_of_the_repair(make_runtime, exchange, clock):
    def slow_sources(ctx):
        levels = default_sources(ctx)
        return [*levels[:-1], SlowOnTheClock(levels[-1], clock, 5)]

    rt = make_runtime(sources=slow_sources, backfill_cooldown_s=10.0)
    exchange.faults.http_error(400, n=None)  # refused: the hole stays
    rt.backfill.backfill_gap(SID, LAST - 10 * 60, LAST)  # from NOW to NOW + 5 on the runtime clock
    tried = exchange.request_count("klines")
    assert tried >= 1
    clock.advance(9)  # 14 s after it started, 9 s after it ended
    rt.backfill.backfill_gap(SID, LAST - 10 * 60, LAST)
    assert exchange.request_count("klines") == tried
    clock.advance(1)  # 10 s after it ended
    rt.backfill.backfill_gap(SID, LAST - 10 * 60, LAST)
    assert exchange.request_count("klines") == 2 * tried
