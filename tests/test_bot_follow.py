"""Contract section 8, the bot's pairs change while it runs: without an explicit `series` the series follow
the live whitelist and the informative pairs, checked at each bot_loop_start. Real freqtrade objects (a
DataProvider with a pairlist provider), a manual clock, no exchange (the live cache is the source)."""
from __future__ import annotations

import logging
import threading

from freqtrade.data.dataprovider import DataProvider
from freqtrade.enums import CandleType

from tests.botkit import PlainTradeCanvasStrategy, cache_frame, ft_config, offline_exchange, set_cache
from tradecanvas_ext.bot.follow import FirstSyncs
from tradecanvas_ext.domain import SeriesId

NOW = 1_700_006_400 + 30
T = NOW - 30 - 20 * 60  # 20 closed minutes: T .. NOW - 90
BTC, ETH, SOL = (SeriesId.parse(f"binance:spot:{p}/USDT:1m") for p in ("BTC", "ETH", "SOL"))
BTC5 = SeriesId.parse("binance:spot:BTC/USDT:5m")


class Pairlists:
    """What the DataProvider reads of freqtrade's PairListManager: its current whitelist."""

    def __init__(self, pairs):
        self.whitelist = list(pairs)


class InformativeFiveMinutes(PlainTradeCanvasStrategy):
    def informative_pairs(self):
        return [(p, "5m") for p in self.dp.current_whitelist()]


def bot(tmp_path, cls=PlainTradeCanvasStrategy, pairs=("BTC/USDT", "ETH/USDT"), **section):
    cfg = ft_config(tmp_path, whitelist=pairs, section={"enable_startup_kline_sync": True, "startup_sync_target_candles": 20, **section})
    ex = offline_exchange(cfg)
    for p in ("BTC/USDT", "ETH/USDT", "SOL/USDT"):
        set_cache(ex, cache_frame(range(T, T + 20 * 60, 60), base=100.0 + len(p)), pair=p)
    pairlists = Pairlists(pairs)
    s = cls(cfg)
    s.dp = DataProvider(cfg, ex, pairlists=pairlists)
    s.ft_bot_start()
    return s, pairlists


def test_a_pair_that_joins_is_registered_synced_and_served_and_one_that_leaves_is_inactive(tmp_path, glue,
                                                                                             caplog):
    s, pairlists = bot(tmp_path)
    rt = glue.runtime
    assert rt.series_ids == (BTC, ETH)
    rt.wait_startup_sync(30)
    s.bot_loop_start(current_time=None)
    assert rt.health()["status"] == "green"

    pairlists.whitelist = ["BTC/USDT", "SOL/USDT"]  # the pairlist's refresh
    with caplog.at_level(logging.INFO, logger="tradecanvas_ext.bot"):
        s.bot_loop_start(current_time=None)
        assert rt.series_ids == (BTC, SOL) and rt.registry.inactive() == (ETH,)
        assert glue.wait_first_sync(SOL)
        s.bot_loop_start(current_time=None)  # nothing changed: nothing logged again
    assert caplog.text.count(f"{SOL} joined the bot's pairs") == 1
    assert caplog.text.count(f"{ETH} left the bot's pairs") == 1
    assert caplog.text.count(f"{SOL} synced after joining: synced") == 1

    h = rt.health()
    rows = {r["series_id"]: r for r in h["series"]}
    assert [r["series_id"] for r in h["series"]] == [str(BTC), str(SOL), str(ETH)]
    assert rows[str(SOL)]["status"] == "green" and rows[str(SOL)]["active"] is True
    assert (rows[str(ETH)]["status"], rows[str(ETH)]["active"]) == ("inactive", False)
    assert h["status"] == "green"
    assert rt.store.count_between(SOL, T, NOW) == 20  # every closed candle of the live cache
    df = s.dp.ohlcv("SOL/USDT", "1m", candle_type=CandleType.SPOT).copy()
    assert s.tradecanvas.annotate(df, {"pair": "SOL/USDT"})["tc_real"].tolist() == [1] * 20

    # ETH's history stays: readable, not repaired, not counted
    assert rt.store.count_between(ETH, T, NOW) == 20
    assert rt.health(ETH)["status"] == "inactive"
    pairlists.whitelist = ["BTC/USDT", "SOL/USDT", "ETH/USDT"]  # it comes back: active again
    s.bot_loop_start(current_time=None)
    assert rt.series_ids == (BTC, SOL, ETH) and rt.registry.inactive() == ()


def test_informative_pairs_follow_the_whitelist_too(tmp_path, glue):
    s, pairlists = bot(tmp_path, InformativeFiveMinutes, pairs=("BTC/USDT",))
    rt = glue.runtime
    assert set(rt.series_ids) == {BTC, BTC5}
    pairlists.whitelist = ["SOL/USDT"]
    s.bot_loop_start(current_time=None)
    assert set(rt.series_ids) == {SOL, SeriesId.parse("binance:spot:SOL/USDT:5m")}
    assert set(rt.registry.inactive()) == {BTC, BTC5}


def test_an_explicit_series_list_is_fixed(tmp_path, glue):
    s, pairlists = bot(tmp_path, series=[str(BTC)])
    rt = glue.runtime
    pairlists.whitelist = ["SOL/USDT"]
    s.bot_loop_start(current_time=None)
    assert rt.series_ids == (BTC,) and rt.registry.inactive() == ()


def test_a_wait_for_a_first_sync_ends_with_it_or_at_its_deadline():
    syncs = FirstSyncs()
    assert syncs.wait(SOL)  # nothing pending: no wait at all
    syncs.begin(SOL, bound_s=0.2)
    assert syncs.syncing(SOL) and not syncs.wait(SOL)  # the deadline passed
    assert not syncs.wait(SOL)  # later calls do not wait again: the same deadline
    syncs.begin(ETH, bound_s=30)
    threading.Timer(0.1, syncs.end, args=(ETH,)).start()
    assert syncs.wait(ETH) and not syncs.syncing(ETH)


def test_candles_of_a_joining_series_wait_for_its_first_sync(tmp_path, glue):
    s, pairlists = bot(tmp_path)
    rt = glue.runtime
    glue.first_syncs.begin(SOL, bound_s=30)  # as the follower does when SOL joins
    rt.registry.register([SOL])
    got = {}
    reader = threading.Thread(target=lambda: got.update(df=s.tradecanvas.candles("SOL/USDT", limit=50)))
    reader.start()
    reader.join(0.3)
    assert reader.is_alive()  # waiting for the sync
    s.bot_loop_start(current_time=None)  # the loop ingests SOL's live cache
    glue.first_syncs.end(SOL)
    reader.join(10)
    assert not reader.is_alive() and len(got["df"]) == 20
