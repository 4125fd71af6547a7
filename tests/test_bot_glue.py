"""Contract section 8, the glue: run modes, bot_start never raising, reload rebinding one server, ingest
each loop, the strategy view, and the base class surviving hyperopt's pickling. Real freqtrade objects."""
from __future__ import annotations

import logging
import pickle
import socket
import subprocess
import sys
import textwrap
import threading

import cloudpickle
import pandas as pd
import pytest
from freqtrade.enums import RunMode
from freqtrade.strategy import IStrategy

from tests.botkit import (
    PlainTradeCanvasStrategy,
    cache_frame,
    free_port,
    ft_config,
    get_json,
    load_module_from_file,
    make_strategy,
    offline_exchange,
    sample_strategy_class,
    set_cache,
    wait_for,
)
from tests.conftest import subprocess_env
from tests.wsclient import WS
from tradecanvas_ext.bot import TradeCanvasStrategy
from tradecanvas_ext.bot import glue as glue_mod
from tradecanvas_ext.bot.glue import BotGlue
from tradecanvas_ext.domain import SeriesId

NOW = 1_700_006_400 + 30  # the 1m candle at NOW - 30 is forming
T = NOW - 30 - 20 * 60  # 20 closed minutes: T .. NOW - 90
SID = SeriesId.parse("binance:spot:BTC/USDT:1m")


class InformativeStrategy(PlainTradeCanvasStrategy):
    def informative_pairs(self):
        return [("ETH/USDT", "5m"), ("BTC/USDT", "1h", "mark"), ("XRP/USDT", "1w")]


def started(strategy):
    """What freqtrade does at start-up: ft_bot_start() (bot_start inside strategy_safe_wrapper)."""
    strategy.ft_bot_start()
    return strategy


# ---- run modes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [RunMode.BACKTEST, RunMode.HYPEROPT, RunMode.PLOT, RunMode.WEBSERVER,
                                  RunMode.UTIL_NO_EXCHANGE, RunMode.OTHER])
def test_only_live_and_dry_run_start_anything(mode, tmp_path, glue, caplog):
    port = free_port()
    cfg = ft_config(tmp_path, runmode=mode, section={"listen_port": port})
    s = make_strategy(PlainTradeCanvasStrategy, cfg, None)
    with caplog.at_level(logging.INFO, logger="tradecanvas_ext.bot"):
        started(s)
        s.bot_loop_start(current_time=pd.Timestamp.now(tz="UTC"))
        s.ft_bot_cleanup()
    assert glue.runtime is None and glue_mod.current_runtime() is None
    assert not (tmp_path / "tc.sqlite").exists()  # no store opened
    with socket.socket() as probe:  # nothing listens on the port
        probe.bind(("127.0.0.1", port))
    assert f"run mode {mode.value}: the extension stays off" in caplog.text
    assert s.tradecanvas.available is False and s.tradecanvas.health("BTC/USDT") is None
    frame = s.tradecanvas.candles("BTC/USDT")
    assert list(frame.columns) == ["date", "open", "high", "low", "close", "volume"] and frame.empty


def test_dry_run_opens_store_serves_and_binds(tmp_path, glue):
    cfg = ft_config(tmp_path)
    ex = offline_exchange(cfg)
    s = started(make_strategy(PlainTradeCanvasStrategy, cfg, ex))
    rt = glue.runtime
    assert rt is not None and glue.sources.data_provider.get() is s.dp and glue.exchange_source.exchange is ex
    assert rt.series_ids == (SID,)  # the whitelist x the strategy timeframe
    health = get_json(rt.url + "/api/market/health")
    assert [r["series_id"] for r in health["series"]] == [str(SID)]
    assert s.tradecanvas.available and s.tradecanvas.url == rt.url


def test_default_series_whitelist_timeframe_and_informative_pairs(tmp_path, glue, caplog):
    cfg = ft_config(tmp_path, whitelist=("BTC/USDT", "ETH/USDT"))
    with caplog.at_level(logging.WARNING, logger="tradecanvas_ext.bot"):
        started(make_strategy(InformativeStrategy, cfg, offline_exchange(cfg)))
    # issue 13: 1w is a timeframe (Monday grid), so the weekly informative pair is kept too
    got = tuple(map(str, glue.runtime.series_ids))
    assert got[:2] == ("binance:spot:BTC/USDT:1m", "binance:spot:ETH/USDT:1m")  # the whitelist first
    assert sorted(got[2:]) == ["binance:spot:ETH/USDT:5m", "binance:spot:XRP/USDT:1w"]
    assert "XRP/USDT 1w is not kept" not in caplog.text
    assert "BTC/USDT 1h (mark) is not kept" in caplog.text  # a mark pair on a spot bot: logged, the bot goes on


def test_explicit_series_win_over_the_default(tmp_path, glue):
    cfg = ft_config(tmp_path, section={"series": ["binance:spot:ETH/USDT:5m"]})
    started(make_strategy(PlainTradeCanvasStrategy, cfg, offline_exchange(cfg)))
    assert tuple(map(str, glue.runtime.series_ids)) == ("binance:spot:ETH/USDT:5m",)


# ---- bot_start never raises ---------------------------------------------------------------------------
@pytest.mark.parametrize("section, says", [
    ({"listen_port": "x"}, "tradecanvas.listen_port: expected an integer from 0 to 65535, got \"x\""),
    ({"backfill_cooldown_s": float("nan")}, "tradecanvas.backfill_cooldown_s: expected a finite number from 0 "
                                            "to 3600, got NaN"),
    ({"listen_ip_address": "0.0.0.0"}, "tradecanvas.listen_ip_address is 0.0.0.0, which other machines can "
                                       "reach, and tradecanvas.api_token is not set: the chart server would be "
                                       "open to all of them, so it is not started."),
    ({"no_such_key": 1}, "unknown key(s) no_such_key"),
    ({"series": ["binance:spot:BTC/USDT:1M"]}, "tradecanvas.series"),
])
def test_bad_section_is_logged_and_the_bot_goes_on(section, says, tmp_path, glue, caplog):
    cfg = ft_config(tmp_path, section=section)
    s = make_strategy(PlainTradeCanvasStrategy, cfg, offline_exchange(cfg))
    with caplog.at_level(logging.ERROR, logger="tradecanvas_ext.bot"):
        started(s)  # would raise StrategyError if anything escaped
        s.bot_loop_start(current_time=None)
        s.ft_bot_cleanup()
    assert glue.runtime is None
    assert "bad \"tradecanvas\" config section" in caplog.text and says in caplog.text
    assert "The extension and its chart server are off; the bot goes on." in caplog.text


def test_busy_port_keeps_store_and_ingest_without_server(tmp_path, glue, caplog):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cfg = ft_config(tmp_path, section={"listen_port": port})
        ex = offline_exchange(cfg)
        set_cache(ex, cache_frame(range(T, T + 5 * 60, 60)))
        s = make_strategy(PlainTradeCanvasStrategy, cfg, ex)
        with caplog.at_level(logging.ERROR, logger="tradecanvas_ext.bot"):
            started(s)
        assert f"127.0.0.1:{port} is already in use, so the chart server is off" in caplog.text
        rt = glue.runtime
        assert rt is not None and rt.url is None
        s.bot_loop_start(current_time=None)
        assert rt.store.count_between(SID, T, T + 4 * 60) == 5  # candles are still kept


def test_port_taken_between_check_and_bind_is_handled(tmp_path, glue, caplog, monkeypatch):
    """The race the pre-check cannot see: the server start itself fails; a store-only runtime remains."""
    monkeypatch.setattr(glue_mod, "port_in_use", lambda host, port: False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cfg = ft_config(tmp_path, section={"listen_port": port})
        with caplog.at_level(logging.ERROR, logger="tradecanvas_ext.bot"):
            started(make_strategy(PlainTradeCanvasStrategy, cfg, offline_exchange(cfg)))
    assert f"the chart server could not start on 127.0.0.1:{port}" in caplog.text
    assert glue.runtime is not None and glue.runtime.url is None and glue.runtime.store is not None


@pytest.mark.parametrize("db_url", ["postgresql+psycopg://nobody@127.0.0.1:1/nothing",
                                    "sqlite:////proc/no/such/dir/tc.sqlite"])
def test_unreachable_store_is_logged_and_the_bot_goes_on(db_url, tmp_path, glue, caplog):
    if db_url.startswith("postgresql"):
        pytest.importorskip("psycopg")
    cfg = ft_config(tmp_path, section={"db_url": db_url})
    s = make_strategy(PlainTradeCanvasStrategy, cfg, offline_exchange(cfg))
    with caplog.at_level(logging.ERROR, logger="tradecanvas_ext.bot"):
        started(s)
        s.bot_loop_start(current_time=None)
    assert glue.runtime is None
    assert "tradecanvas: cannot start: store" in caplog.text and "The extension is off" in caplog.text
    assert "nobody@" not in caplog.text  # credentials in a URL are not logged


def test_bot_start_survives_a_broken_glue(tmp_path, glue, monkeypatch, caplog):
    def boom(self, strategy):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(BotGlue, "_bot_start", boom)
    cfg = ft_config(tmp_path)
    with caplog.at_level(logging.ERROR, logger="tradecanvas_ext.bot"):
        started(make_strategy(PlainTradeCanvasStrategy, cfg, offline_exchange(cfg)))
    assert "start-up failed (RuntimeError: unexpected); the bot goes on" in caplog.text


def test_cleanup_before_any_bot_start_is_harmless(tmp_path, glue):
    """freqtrade runs cleanup when its start-up fails, possibly before bot_start ran."""
    cfg = ft_config(tmp_path)
    make_strategy(PlainTradeCanvasStrategy, cfg, offline_exchange(cfg)).ft_bot_cleanup()
    assert glue.runtime is None


# ---- reload -------------------------------------------------------------------------------------------
def test_reload_keeps_one_server_and_rebinds_the_new_provider(tmp_path, glue, clock):
    cfg1 = ft_config(tmp_path)
    ex1 = offline_exchange(cfg1)
    set_cache(ex1, cache_frame(range(T, T + 10 * 60, 60)))
    s1 = started(make_strategy(PlainTradeCanvasStrategy, cfg1, ex1))
    rt, url = glue.runtime, glue.runtime.url
    server = rt.server
    s1.bot_loop_start(current_time=None)
    assert rt.store.count_between(SID, T, T + 9 * 60) == 10

    s1.ft_bot_cleanup()  # /reload_config: FreqtradeBot.cleanup() -> strategy.ft_bot_cleanup()
    assert glue.sources.data_provider.get() is None and glue.exchange_source.exchange is None
    assert get_json(url + "/api/market/health")["series"][0]["head_time"] == T + 9 * 60  # still serving
    s1.bot_loop_start(current_time=None)  # a late loop of the old bot ingests nothing

    cfg2 = ft_config(tmp_path)  # a new bot: new config dict, exchange, DataProvider and strategy
    ex2 = offline_exchange(cfg2)
    set_cache(ex2, cache_frame(range(T, T + 15 * 60, 60)))
    s2 = started(make_strategy(PlainTradeCanvasStrategy, cfg2, ex2))
    assert glue.runtime is rt and rt.server is server and rt.url == url  # one server for the process
    assert glue.sources.data_provider.get() is s2.dp and glue.exchange_source.exchange is ex2
    s2.bot_loop_start(current_time=None)
    assert rt.store.count_between(SID, T, T + 14 * 60) == 15
    s1.ft_bot_cleanup()  # the old strategy's cleanup does not detach the new bot
    assert glue.sources.data_provider.get() is s2.dp


def test_reload_with_a_bad_section_keeps_the_running_server(tmp_path, glue, caplog):
    cfg = ft_config(tmp_path)
    s1 = started(make_strategy(PlainTradeCanvasStrategy, cfg, offline_exchange(cfg)))
    rt = glue.runtime
    s1.ft_bot_cleanup()
    bad = ft_config(tmp_path, section={"listen_port": "x"})
    with caplog.at_level(logging.ERROR, logger="tradecanvas_ext.bot"):
        s2 = started(make_strategy(PlainTradeCanvasStrategy, bad, offline_exchange(bad)))
    assert "The running server keeps its previous settings." in caplog.text
    assert glue.runtime is rt and glue.sources.data_provider.get() is s2.dp


def test_reload_applies_new_series_and_warns_about_the_rest(tmp_path, glue, caplog):
    cfg = ft_config(tmp_path)
    s1 = started(make_strategy(PlainTradeCanvasStrategy, cfg, offline_exchange(cfg)))
    rt = glue.runtime
    s1.ft_bot_cleanup()
    new = ft_config(tmp_path, whitelist=("BTC/USDT", "ETH/USDT"), section={"backfill_cooldown_s": 9})
    with caplog.at_level(logging.INFO, logger="tradecanvas_ext.bot"):
        started(make_strategy(PlainTradeCanvasStrategy, new, offline_exchange(new)))
    assert glue.runtime is rt and len(rt.series_ids) == 2 and rt.is_configured("binance:spot:ETH/USDT:1m")
    assert "tradecanvas.backfill_cooldown_s changed; the server and store live for the process" in caplog.text


# ---- ingest each loop ---------------------------------------------------------------------------------
def test_each_loop_stores_and_publishes_what_closed_since_the_last(tmp_path, glue, clock):
    cfg = ft_config(tmp_path)
    ex = offline_exchange(cfg)
    set_cache(ex, cache_frame(range(T, T + 10 * 60, 60)))
    s = started(make_strategy(PlainTradeCanvasStrategy, cfg, ex))
    rt = glue.runtime
    s.bot_loop_start(current_time=None)
    assert rt.store.count_between(SID, T, T + 9 * 60) == 10
    ws = WS(rt.url)
    try:
        assert ws.subscribe(str(SID), since=T + 9 * 60)["type"] == "subscribed"
        set_cache(ex, cache_frame(range(T, T + 12 * 60, 60)))  # the next refresh brought 2 candles
        s.bot_loop_start(current_time=None)
        got = ws.until(lambda m: m["type"] == "candle_closed" and m["candle"]["candle_time"] == T + 11 * 60)
        assert got["candle"]["close"] == 100.0 + 11 + 1
        times = [m["candle"]["candle_time"] for m in ws.received if m["type"] == "candle_closed"]
        assert times == [T + 10 * 60, T + 11 * 60]
    finally:
        ws.close()
    assert rt.store.head_time(SID) == T + 11 * 60


class HoldWatchingStrategy(PlainTradeCanvasStrategy):
    """Records, for each pair it analyses, whether the chart clients' work was held back meanwhile."""

    held: list = []

    def populate_indicators(self, dataframe, metadata):
        from tradecanvas_ext.bot.glue import process_glue

        self.held.append(process_glue().runtime.hub.priority.held)
        return dataframe


def test_the_loops_refresh_and_analysis_hold_client_work_back(tmp_path, glue, monkeypatch):
    """hub/priority.py: from gather_informative_pairs (right before freqtrade's refresh) to the end of
    analyze, client work waits; after it, and after an analysis that raised, it does not."""
    cfg = ft_config(tmp_path)
    ex = offline_exchange(cfg)
    set_cache(ex, cache_frame(range(T, T + 10 * 60, 60)))
    HoldWatchingStrategy.held = []
    s = started(make_strategy(HoldWatchingStrategy, cfg, ex))
    priority = glue.runtime.hub.priority
    priority.max_hold_s, priority.linger_s = 60.0, 0.0  # no linger: "held" is the loop's own part only
    assert not priority.held
    s.gather_informative_pairs()  # freqtrade's process(): the informative pairs, then the refresh
    assert priority.held
    s.bot_loop_start(current_time=None)
    s.analyze(["BTC/USDT"])
    assert HoldWatchingStrategy.held == [True]  # the pair was analysed inside the hold
    assert not priority.held and priority.holds == 1

    def broken(self, pairs):
        raise RuntimeError("an analysis that fails")

    monkeypatch.setattr(IStrategy, "analyze", broken)
    with pytest.raises(RuntimeError):
        s.analyze(["BTC/USDT"])
    assert not priority.held and priority.holds == 2


def test_forming_candle_in_the_cache_is_not_stored(tmp_path, glue, clock):
    cfg = ft_config(tmp_path)
    ex = offline_exchange(cfg)
    set_cache(ex, cache_frame(range(NOW - 30 - 3 * 60, NOW - 30 + 60, 60)))  # includes the forming minute
    s = started(make_strategy(PlainTradeCanvasStrategy, cfg, ex))
    s.bot_loop_start(current_time=None)
    assert glue.runtime.store.head_time(SID) == NOW - 90


def test_lagging_series_is_repaired_in_the_background(tmp_path, glue, clock, exchange):
    """The bot's cache stops short (its refresh failed): the glue asks the backfill for the rest."""
    cfg = ft_config(tmp_path, section={"enable_ccxt_backfill": True, "ccxt_config": exchange.ccxt_config(),
                                       "ccxt_timeout_ms": 2000})
    ex = offline_exchange(cfg)  # no markets loaded: level 3 falls back to our own ccxt source
    set_cache(ex, cache_frame(range(T, T + 5 * 60, 60)))
    s = started(make_strategy(PlainTradeCanvasStrategy, cfg, ex))
    rt = glue.runtime
    s.bot_loop_start(current_time=None)
    wait_for(lambda: rt.store.head_time(SID) == NOW - 90, 15, what="the lag repair")
    want = exchange.candles("BTC/USDT", "1m", T + 5 * 60, NOW - 90)
    assert rt.store.read_between(SID, T + 5 * 60, NOW - 90).rows() == want


# ---- the strategy view --------------------------------------------------------------------------------
def test_view_candles_are_freqtrades_layout_with_holes_left_as_holes(tmp_path, glue):
    cfg = ft_config(tmp_path)
    ex = offline_exchange(cfg)
    times = [t for t in range(T, T + 10 * 60, 60) if t not in (T + 3 * 60, T + 4 * 60)]
    set_cache(ex, cache_frame(times))  # freqtrade fills minutes 3 and 4 in its cache
    s = started(make_strategy(PlainTradeCanvasStrategy, cfg, ex))
    s.bot_loop_start(current_time=None)
    df = s.tradecanvas.candles("BTC/USDT", limit=500)
    assert list(df.columns) == ["date", "open", "high", "low", "close", "volume"]
    assert str(df["date"].dtype) == "datetime64[us, UTC]"
    assert [int(d.timestamp()) for d in df["date"]] == times
    assert len(s.tradecanvas.candles("BTC/USDT", "1m", limit=3)) == 3
    health = s.tradecanvas.health("BTC/USDT")
    assert health["series_id"] == str(SID) and health["head_time"] == T + 9 * 60
    with pytest.raises(ValueError):
        s.tradecanvas.candles("BTC/USDT", limit=0)


def test_sample_strategy_marks_freqtrades_fillup_rows_as_not_real(tmp_path, glue):
    cfg = ft_config(tmp_path)
    ex = offline_exchange(cfg)
    times = [t for t in range(T, T + 20 * 60, 60) if t != T + 7 * 60]
    set_cache(ex, cache_frame(times))
    s = started(make_strategy(sample_strategy_class(), cfg, ex))
    s.bot_loop_start(current_time=None)
    df = s.populate_indicators(s.dp.ohlcv("BTC/USDT", "1m"), {"pair": "BTC/USDT"})
    fake = df.loc[df["tc_real"] == 0, "date"]
    assert [int(d.timestamp()) for d in fake] == [T + 7 * 60]
    assert {"ema_fast", "ema_slow", "rsi"} <= set(df.columns)


# ---- the base class and hyperopt's pickling -----------------------------------------------------------
def test_strategy_module_is_thin():
    import tradecanvas_ext.bot.strategy as mod

    state = [k for k, v in vars(mod).items()
             if isinstance(v, (type(threading.Lock()), threading.Thread, threading.Event, threading.Condition))]
    assert state == []
    assert issubclass(TradeCanvasStrategy, IStrategy)
    code = ("import sys; import tradecanvas_ext.bot.strategy; "
            "print(sorted(m for m in sys.modules if m.startswith('tradecanvas_ext')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "runtime" not in out and "glue" not in out and "store" not in out  # imported lazily


def test_started_backtest_strategy_pickles(tmp_path, glue):
    """bot_start in backtesting leaves nothing on the instance that cloudpickle (hyperopt) cannot ship.
    (Plain pickle fails on freqtrade's own local `DummyClass` from load_freqAI_model, not on ours.)"""
    cfg = ft_config(tmp_path, runmode=RunMode.BACKTEST)
    s = started(make_strategy(PlainTradeCanvasStrategy, cfg, None))
    s.dp = None
    assert isinstance(pickle.loads(cloudpickle.dumps(s)), PlainTradeCanvasStrategy)


def test_subclass_pickled_by_value_loads_in_a_fresh_process(tmp_path):
    """hyperopt -j N: joblib/cloudpickle ship strategy classes by value to worker processes."""
    path = tmp_path / "user_strategy_mod.py"
    path.write_text(textwrap.dedent("""
        from tradecanvas_ext.bot import TradeCanvasStrategy

        class UserStrategy(TradeCanvasStrategy):
            INTERFACE_VERSION = 3
            timeframe = "1m"
            minimal_roi = {"0": 0.01}
            stoploss = -0.05

            def populate_indicators(self, dataframe, metadata):
                return dataframe

            def populate_entry_trend(self, dataframe, metadata):
                return dataframe

            def populate_exit_trend(self, dataframe, metadata):
                return dataframe
    """))
    module = load_module_from_file(path, "user_strategy_mod")
    sample = sample_strategy_class()
    sample_module = sys.modules[sample.__module__]
    import tradecanvas_ext.bot.strategy as base_module

    by_value = (module, sample_module, base_module)  # the base class by value too: no state to drag along
    for m in by_value:
        cloudpickle.register_pickle_by_value(m)
    try:
        cfg = ft_config(tmp_path, runmode=RunMode.HYPEROPT)
        blob = cloudpickle.dumps((module.UserStrategy, module.UserStrategy(cfg)))
        sample_blob = cloudpickle.dumps(sample)
    finally:
        for m in by_value:
            cloudpickle.unregister_pickle_by_value(m)
    (tmp_path / "blob.pkl").write_bytes(blob)
    (tmp_path / "sample.pkl").write_bytes(sample_blob)
    code = textwrap.dedent(f"""
        import pickle, sys
        cls, inst = pickle.loads(open({str(tmp_path / 'blob.pkl')!r}, 'rb').read())
        sample = pickle.loads(open({str(tmp_path / 'sample.pkl')!r}, 'rb').read())
        inst.bot_start()
        inst.bot_loop_start(current_time=None)
        assert inst.tradecanvas.available is False
        print(cls.__mro__[1].__name__, sample.__name__, "ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=subprocess_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "TradeCanvasStrategy SampleTradeCanvasStrategy ok"
