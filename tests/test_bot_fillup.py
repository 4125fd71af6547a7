"""Contract section 8: freqtrade fabricates candles over holes in its live cache; the bot's ingest (and the
freqtrade source behind it) never stores one, and a WebSocket client is told about the hole instead.

The cache is filled by freqtrade's own code path (`Exchange._process_ohlcv_df`, what
`refresh_latest_ohlcv` calls) on a real `Exchange(config, validate=False)`, read through a real DataProvider.
"""
from __future__ import annotations

import inspect

import numpy as np
from freqtrade.enums import CandleType

from tests.botkit import ccxt_rows, ft_config, make_strategy, offline_exchange, sample_strategy_class
from tests.wsclient import WS, check_guarantee, events
from tradecanvas_ext.domain import SeriesId

NOW = 1_700_006_400 + 30
T = NOW - 30 - 30 * 60  # 30 closed minutes before the forming one
SID = SeriesId.parse("binance:spot:BTC/USDT:1m")
HOLE = [T + 10 * 60, T + 11 * 60, T + 12 * 60]  # the exchange had no candle here (an outage)


def refresh(exchange, times) -> None:
    """One `refresh_latest_ohlcv` answer going into the bot's cache, exactly as freqtrade merges it."""
    rows = ccxt_rows(times)
    for i, r in enumerate(rows):  # prices keyed by time, so two refreshes agree on a candle
        k = (r[0] // 1000 - T) // 60
        r[1:6] = [100.0 + k, 102.0 + k, 99.0 + k, 101.0 + k, 5.0 + k]
        rows[i] = r
    if not hasattr(exchange, "_startup_candle_count"):  # set by validate_config, which validate=False skips
        exchange._startup_candle_count = 0
    since = {"fetch_start_ms": NOW * 1000}  # a parameter of later freqtrade releases (not 2026.1)
    if "fetch_start_ms" not in inspect.signature(exchange._process_ohlcv_df).parameters:
        since = {}
    exchange._process_ohlcv_df("BTC/USDT", "1m", CandleType.SPOT, rows, cache=True, drop_incomplete=False,
                               **since)


def test_live_cache_fillup_rows_are_never_stored(tmp_path, glue):
    cfg = ft_config(tmp_path, section={"enable_ccxt_backfill": False})
    ex = offline_exchange(cfg)
    first = [t for t in range(T, T + 20 * 60, 60) if t not in HOLE]
    refresh(ex, first)
    cached = ex.klines(("BTC/USDT", "1m", CandleType.SPOT))
    fill = cached.loc[cached["volume"] == 0]
    assert len(cached) == 20 and len(fill) == 3  # freqtrade made 3 candles up, flat at the previous close
    assert (fill["open"] == 100.0 + 9 + 1).all()

    s = make_strategy(sample_strategy_class(), cfg, ex)
    s.ft_bot_start()
    s.bot_loop_start(current_time=None)
    rt = glue.runtime
    stored = rt.store.read_between(SID, T, NOW)
    assert sorted(stored.times.tolist()) == first
    assert (stored.volume > 0).all()
    holes = rt.store.holes(SID, T, T + 19 * 60)
    assert [(h.start, h.end, h.missing_candles) for h in holes] == [(HOLE[0], HOLE[-1], 3)]

    ws = WS(rt.url)
    try:
        ws.subscribe(str(SID), since=T + 15 * 60 - 60, supports_batch=True)
        # a later refresh: the cache is concatenated and filled again (clean_ohlcv_dataframe)
        later = list(range(T + 18 * 60, T + 29 * 60, 60))
        refresh(ex, later)
        assert len(ex.klines(("BTC/USDT", "1m", CandleType.SPOT))) == 29
        s.bot_loop_start(current_time=None)
        ws.until(lambda m: any(e[0] == "c" and e[1] == T + 28 * 60 for e in events([m], str(SID))))
    finally:
        ws.close()
    stored = rt.store.read_between(SID, T, NOW)
    assert sorted(stored.times.tolist()) == first + list(range(T + 20 * 60, T + 29 * 60, 60))
    assert [(h.start, h.end) for h in rt.store.holes(SID, T, T + 28 * 60)] == [(HOLE[0], HOLE[-1])]
    check_guarantee(ws.received, str(SID), 60, T + 15 * 60 - 60)


def test_hole_inside_a_websocket_catchup_is_a_gap_not_a_candle(tmp_path, glue):
    cfg = ft_config(tmp_path, section={"enable_ccxt_backfill": False})
    ex = offline_exchange(cfg)
    refresh(ex, [t for t in range(T, T + 20 * 60, 60) if t not in HOLE])
    s = make_strategy(sample_strategy_class(), cfg, ex)
    s.ft_bot_start()
    s.bot_loop_start(current_time=None)
    ws = WS(glue.runtime.url)
    try:
        ws.subscribe(str(SID), since=T + 5 * 60)
        ws.until(lambda m: m.get("type") == "candle_closed" and m["candle"]["candle_time"] == T + 19 * 60)
    finally:
        ws.close()
    times = check_guarantee(ws.received, str(SID), 60, T + 5 * 60)
    assert not np.isin(HOLE, times).any()
    gaps = [e for e in events(ws.received, str(SID)) if e[0] == "gap"]
    assert gaps == [("gap", HOLE[0], HOLE[-1] + 60, 3, "unrecovered")]
