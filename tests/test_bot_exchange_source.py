"""Level 3 inside the bot: range fetches through the bot's own freqtrade Exchange (markets loaded, its rate
limiter) against the emulator on 127.0.0.1 — chunks of ohlcv_candle_limit, the bot's cache
untouched, `_loop_lock` held one request at a time, voids only where the exchange confirmed nothing."""
from __future__ import annotations

import math
import threading
import time

import pytest
from freqtrade.enums import CandleType, RunMode
from freqtrade.resolvers import ExchangeResolver

from tests.botkit import PlainTradeCanvasStrategy, ft_config, make_strategy, wait_for
from tradecanvas_ext.bot.exchange_source import BotExchangeSource, exchange_serves
from tradecanvas_ext.bot.glue import BotGlue, replace_process_glue
from tradecanvas_ext.domain import Hole, SeriesId
from tradecanvas_ext.sources.base import SourceResult

NOW = 1_700_006_400 + 30  # conftest's clock: the emulator and the source share it
LAST = NOW - 90  # the newest closed 1m candle
SID = SeriesId.parse("binance:spot:BTC/USDT:1m")


def hole(start: int, end: int, tf: int = 60) -> Hole:
    return Hole(start, end, (end - start) // tf + 1)


class RecordingFallback:
    name = "ccxt"

    def __init__(self):
        self.calls = []

    def fetch(self, series, holes, now, deadline=None):
        self.calls.append(str(series))
        return SourceResult(errors=["fallback used"])


@pytest.fixture
def bot_exchange(tmp_path, exchange):
    """freqtrade's own Exchange object as the bot builds it, pointed at the emulator (markets loaded)."""
    cfg = ft_config(tmp_path, exchange_extra={"ccxt_config": exchange.ccxt_config(),
                                              "ccxt_async_config": exchange.ccxt_config(),
                                              "only_from_ccxt": True})
    ex = ExchangeResolver.load_exchange(cfg, load_leverage_tiers=False)
    yield ex
    ex.close()


@pytest.fixture
def source(bot_exchange, clock):
    fallback = RecordingFallback()
    src = BotExchangeSource(fallback, clock)
    src.bind(bot_exchange)
    src.fallback_calls = fallback.calls
    return src


def klines_starts(exchange) -> list[int]:
    return [int(p["startTime"]) // 1000 for path, p in exchange.requests if path.endswith("/klines")]


def test_chunks_of_the_limit_through_the_bots_exchange(source, bot_exchange, exchange, clock):
    # issue 13: every row of an answer inside the hole is kept, so a page steps by the whole limit
    assert bot_exchange.ohlcv_candle_limit("1m", CandleType.SPOT) == 1000
    start = LAST - 2499 * 60
    exchange.reset_counts()
    res = source.fetch(SID, [hole(start, LAST)], clock())
    assert res.errors == [] and source.fallback_calls == []
    assert res.candles.rows() == exchange.candles("BTC/USDT", "1m", start, LAST)
    starts = klines_starts(exchange)
    assert res.requests == len(starts) == math.ceil(2500 / 1000) == 3
    assert [b - a for a, b in zip(starts, starts[1:], strict=False)] == [1000 * 60, 1000 * 60]
    assert starts[0] == start - 60  # the first page starts at the hole's neighbour (fits in the 3 pages)
    assert all(p["limit"] == "1000" for path, p in exchange.requests if path.endswith("/klines"))
    # the bot's own candle cache and refresh bookkeeping are untouched
    assert bot_exchange._klines == {} and bot_exchange._pairs_last_refresh_time == {}


def test_outage_inside_a_fetched_range_is_a_void_and_young_missing_is_not(source, exchange, clock):
    old_a, old_b = LAST - 300 * 60, LAST - 290 * 60  # candles [old_a, old_b) never existed
    exchange.faults.outage(old_a, old_b)
    young = LAST - 60  # the two newest closed candles are missing too, but they may still come
    exchange.faults.outage(young, NOW + 3600)
    res = source.fetch(SID, [hole(LAST - 400 * 60, LAST)], clock())
    assert res.errors == []
    assert res.voids == [(old_a, old_b - 60)]
    times = set(res.candles.times.tolist())
    assert not times & set(range(old_a, old_b, 60)) and young not in times and LAST not in times
    assert len(res.candles) == 401 - 10 - 2


def test_just_closed_candle_waits_for_the_grace_when_no_newer_row_came(source, exchange, clock):
    aligned = NOW - 30
    exchange.faults.outage(aligned, aligned + 60)  # the exchange sends no forming candle
    clock.set(aligned + 5)  # 5 s after the close of aligned - 60
    res = source.fetch(SID, [hole(aligned - 5 * 60, aligned - 60)], clock())
    assert res.candles.times.tolist() == list(range(aligned - 5 * 60, aligned - 60, 60))
    clock.set(aligned + 20)  # past freqtrade's 15 s grace: final
    res = source.fetch(SID, [hole(aligned - 60, aligned - 60)], clock())
    assert res.candles.times.tolist() == [aligned - 60]


def test_transient_errors_are_retried_outside_the_lock(bot_exchange, exchange, clock):
    seen_locked = []

    def sleep(s):
        seen_locked.append(bot_exchange._loop_lock.locked())

    src = BotExchangeSource(RecordingFallback(), clock, sleep=sleep)
    src.bind(bot_exchange)
    exchange.faults.http_error(503, n=2)
    res = src.fetch(SID, [hole(LAST - 9 * 60, LAST)], clock())
    assert res.errors == [] and len(res.candles) == 10 and res.requests == 3
    assert seen_locked == [False, False]


class RecordingLock:
    """Stands in for the bot's `_loop_lock`: records the emulator's klines count at each acquire and release,
    so a hold can be matched to the requests made during it."""

    def __init__(self, exchange):
        self._lock = threading.Lock()
        self._exchange = exchange
        self.holds: list[tuple[int, int]] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got:
            self._at = self._exchange.request_count("klines")
        return got

    def release(self) -> None:
        self.holds.append((self._at, self._exchange.request_count("klines")))
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        self.release()


def test_lock_is_held_one_request_at_a_time(source, bot_exchange, exchange, clock):
    lock = bot_exchange._loop_lock = RecordingLock(exchange)
    exchange.reset_counts()
    res = source.fetch(SID, [hole(LAST - 2499 * 60, LAST)], clock())
    assert res.errors == [] and len(res.candles) == 2500
    # each hold spans exactly one klines request: the bot's own loop gets the lock between pages
    assert lock.holds == [(0, 1), (1, 2), (2, 3)]


def test_other_series_and_a_detached_exchange_use_the_fallback(source, bot_exchange, clock):
    for sid in ("binance:futures:BTC/USDT:USDT:1m", "kraken:spot:BTC/USDT:1m", "binance:spot:DOGE/USDT:1m"):
        assert not exchange_serves(bot_exchange, SeriesId.parse(sid))
        assert source.fetch(SeriesId.parse(sid), [hole(LAST, LAST)], clock()).errors == ["fallback used"]
    assert source.detach() is True
    assert source.fetch(SID, [hole(LAST, LAST)], clock()).errors == ["fallback used"]
    assert source.fallback_calls == ["binance:futures:BTC/USDT:USDT:1m", "kraken:spot:BTC/USDT:1m",
                                     "binance:spot:DOGE/USDT:1m", str(SID)]


def test_detach_waits_for_the_request_in_flight_and_stops_the_next_pages(source, bot_exchange, exchange, clock):
    exchange.faults.slow(0.5, n=None)
    exchange.reset_counts()
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("res", source.fetch(SID, [hole(LAST - 2499 * 60, LAST)],
                                                                           clock())))
    t.start()
    wait_for(lambda: exchange.request_count("klines") == 1, 10, interval=0.01, what="the first page in flight")
    assert source.detach() is True
    assert not bot_exchange._loop_lock.locked()  # the page in flight has finished, nothing new started
    t.join(timeout=10)
    assert not t.is_alive()
    res = box["res"]
    # one whole page, from the hole's neighbour candle (issue 13)
    assert len(res.candles) == 999 and any("detached" in e for e in res.errors)
    assert exchange.request_count("klines") == 1


def test_exchange_down_is_an_error_not_an_exception(source, exchange, clock):
    exchange.stop()
    res = source.fetch(SID, [hole(LAST - 9 * 60, LAST)], clock(), deadline=time.monotonic() + 10)
    assert len(res.candles) == 0 and res.voids == []
    assert len(res.errors) == 1 and "TemporaryError" in res.errors[0]


def test_startup_sync_inside_the_bot_goes_through_the_bots_exchange(tmp_path, bot_exchange, exchange, clock):
    cfg = ft_config(tmp_path, section={"enable_startup_kline_sync": True, "enable_ccxt_backfill": True,
                                       "startup_sync_target_candles": 1500,
                                       "ccxt_config": exchange.ccxt_config()})
    cfg["runmode"] = RunMode.DRY_RUN
    g = BotGlue(clock=clock)
    old = replace_process_glue(g)
    try:
        make_strategy(PlainTradeCanvasStrategy, cfg, bot_exchange).ft_bot_start()
        rt = g.runtime
        result = wait_for(lambda: rt.startup_sync_result, 30, what="the startup sync")
        assert result["series_synced"] == result["series_total"] == 1
        assert g.exchange_source.requests == 2  # 1500 candles: two pages of at most 999
        assert g.sources.pool.open_count == 0  # our own ccxt objects were never needed
        got = rt.store.read_between(SID, LAST - 1499 * 60, LAST)
        assert got.rows() == exchange.candles("BTC/USDT", "1m", LAST - 1499 * 60, LAST)
        assert bot_exchange._klines == {}
    finally:
        g.shutdown()
        replace_process_glue(old)
