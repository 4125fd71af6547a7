"""A real `freqtrade trade` dry-run on RemotePairList reading a local file with a short refresh, and a
strategy with `@informative('5m')` (contract section 8, issue 14): the series follow the bot's pairs as they
change. The file goes from [BTC, ETH] to [BTC, SOL]: SOL's series appear, sync, turn green, serve the
exchange's candles over HTTP and live over the WebSocket, and carry tc_real 1 through freqtrade's own
`/api/v1/pair_candles`; ETH's become inactive and the overall status stays green. Real clock, emulator.
"""
from __future__ import annotations

import json
import time

import pytest

from tests.botkit import get_json, log_problems, wait_for, write_strategy
from tests.test_e2e_bot import (  # noqa: F401 (pytest fixture)
    SIGINT_EXITS,
    Bot,
    as_rows,
    bots,
    latest_closed,
    same_candles,
)
from tests.wsclient import WS, check_guarantee, events
from tradecanvas_ext.testing import ExchangeEmulator

pytestmark = pytest.mark.slow

STRATEGY = '''
from freqtrade.strategy import informative

from tradecanvas_ext.bot import TradeCanvasStrategy


class FollowStrategy(TradeCanvasStrategy):
    """No signals: a dry-run trade would keep its pair in the whitelist."""

    INTERFACE_VERSION = 3
    timeframe = "1m"
    startup_candle_count = 30
    minimal_roi = {"0": 0.01}
    stoploss = -0.05

    @informative("5m")
    def populate_indicators_5m(self, dataframe, metadata):
        return self.tradecanvas.annotate(dataframe, metadata)  # metadata["timeframe"] == "5m"

    def populate_indicators(self, dataframe, metadata):
        return self.tradecanvas.annotate(dataframe, metadata)

    def populate_entry_trend(self, dataframe, metadata):
        return dataframe

    def populate_exit_trend(self, dataframe, metadata):
        return dataframe
'''

SOL1, SOL5 = "binance:spot:SOL/USDT:1m", "binance:spot:SOL/USDT:5m"
ETH1, ETH5 = "binance:spot:ETH/USDT:1m", "binance:spot:ETH/USDT:5m"
BTC1, BTC5 = "binance:spot:BTC/USDT:1m", "binance:spot:BTC/USDT:5m"


@pytest.fixture
def emu3():
    e = ExchangeEmulator(seed=11, symbols=("BTC/USDT", "ETH/USDT", "SOL/USDT")).start()
    yield e
    e.stop()


def test_series_follow_a_remote_pairlist_and_informative_pairs(tmp_path, emu3, bots):  # noqa: F811
    t_start = time.monotonic()
    pairs_file = tmp_path / "pairs.json"
    pairs_file.write_text(json.dumps({"pairs": ["BTC/USDT", "ETH/USDT"], "refresh_period": 3}))
    bot = Bot(tmp_path, emu3, api=True, strategy=write_strategy(tmp_path, "FollowStrategy", STRATEGY),
              startup_sync_target_candles=300)

    def remote_pairlist(config: dict) -> None:
        del config["tradecanvas"]["series"]  # follow the bot's pairs
        config["exchange"]["pair_whitelist"] = []
        config["pairlists"] = [{"method": "RemotePairList", "pairlist_url": f"file:///{pairs_file}",
                                "number_assets": 10, "refresh_period": 3, "keep_pairlist_on_failure": True}]

    bot.edit_config(remote_pairlist)
    bots.append(bot)
    bot.start()

    sync = bot.wait_synced()
    assert sorted(r["series_id"] for r in sync["series_results"]) == sorted([BTC1, ETH1, BTC5, ETH5]), sync
    assert sync["series_synced"] == 4, sync

    # the pairlist file changes: SOL joins, ETH leaves
    pairs_file.write_text(json.dumps({"pairs": ["BTC/USDT", "SOL/USDT"], "refresh_period": 3}))

    def sol_green():
        assert bot.proc.poll() is None, bot.log()[-3000:]
        rows = {r["series_id"]: r for r in bot.health()["series"]}
        return rows if all(rows.get(s, {}).get("status") == "green" for s in (SOL1, SOL5)) else None

    rows = wait_for(sol_green, 90, interval=0.5, what="SOL's series green in health")
    t_green = time.monotonic() - t_start
    assert (rows[ETH1]["status"], rows[ETH1]["active"]) == ("inactive", False)
    assert (rows[ETH5]["status"], rows[ETH5]["active"]) == ("inactive", False)
    listed = {r["series_id"]: r for r in get_json(bot.url + "/api/market/series")["series"]}
    assert {SOL1, SOL5, ETH1, ETH5, BTC1, BTC5} == set(listed)
    assert listed[SOL1]["active"] and not listed[ETH1]["active"] and listed[ETH1]["candle_count"] >= 300
    wait_for(lambda: bot.health()["status"] == "green", 30, interval=0.5, what="the overall status green")
    log = bot.log()
    assert log.count(f"{SOL1} joined the bot's pairs") == 1 and log.count(f"{ETH1} left the bot's pairs") == 1

    # SOL's candles over HTTP equal the exchange's, on both timeframes
    for sid, symbol, tf in ((SOL1, "SOL/USDT", "1m"), (SOL5, "SOL/USDT", "5m")):
        got = bot.candles(sid, limit=300)
        got_rows = as_rows(got["candles"])
        assert len(got_rows) >= 299 and got["holes"] == [], sid
        assert same_candles(got_rows, emu3.candles(symbol, tf, got_rows[0][0], got_rows[-1][0])), sid

    # a WebSocket subscriber gets SOL's live candles
    head = bot.health(SOL1)["head_time"]
    ws = WS(bot.url)
    assert ws.subscribe(SOL1, since=head - 3 * 60)["type"] == "subscribed"
    ws.until(lambda m: m.get("type") == "candle_closed" and m["candle"]["candle_time"] > head, timeout=80)
    ws.close()
    times = check_guarantee(ws.received, SOL1, 60, head - 3 * 60)
    assert times[-1] > head and not [e for e in events(ws.received, SOL1) if e[0] == "gap"]
    truth = {r[0]: r for r in emu3.candles("SOL/USDT", "1m", times[0], times[-1])}
    sent = [c for m in ws.received if m.get("type") == "candle_closed" for c in [m["candle"]]]
    assert as_rows(sent) == [truth[c["candle_time"]] for c in sent]

    # freqtrade's own API: SOL's rows carry tc_real 1 on every real candle, 1m and the informative 5m
    def analysed():
        body = bot.pair_candles("SOL/USDT")
        cols = body.get("columns", [])
        if body.get("length", 0) == 0 or "tc_real" not in cols or "tc_real_5m" not in cols:
            return None
        return [dict(zip(cols, r, strict=True)) for r in body["data"]]

    rows_ = wait_for(analysed, 60, interval=1.0, what="SOL analysed by freqtrade with tc_real")
    assert all(r["tc_real"] == 1 for r in rows_), [(r["date"], r["tc_real"]) for r in rows_ if r["tc_real"] != 1]
    # the 5m informative columns (merged onto the 1m rows) were marked against the 5m series
    assert all(r["tc_real_5m"] == 1 for r in rows_ if r["tc_real_5m"] == r["tc_real_5m"])  # NaN before the first
    assert bot.stop() in SIGINT_EXITS, bot.log()[-8000:]
    assert log_problems(bot.log()) == [], log_problems(bot.log())
    print(f"\n[follow timings] SOL green {t_green:.1f}s after start, total {time.monotonic() - t_start:.0f}s")
