"""A running dry-run bot: freqtrade's own API (`/api/v1/pair_candles`, what FreqUI charts) returns the
sample strategy's `tc_real` / `tc_void` columns, 0 / 1 exactly on the rows freqtrade filled over an
exchange outage."""
from __future__ import annotations

import pytest

from tests.botkit import wait_for
from tests.test_e2e_bot import BTC1, Bot, bots, emu, latest_closed  # noqa: F401 (pytest fixtures)

pytestmark = pytest.mark.slow


def test_pair_candles_carries_tc_real_and_tc_void(tmp_path, emu, bots):  # noqa: F811 (pytest fixtures)
    end = latest_closed()
    outage = (end - 40 * 60, end - 37 * 60)  # 3 old candles the exchange never had
    emu.faults.outage(*outage)
    bot = Bot(tmp_path, emu, api=True)
    bots.append(bot)
    bot.start()
    sync = bot.wait_synced()
    assert sync["series_errors"] == 0
    # freqtrade analyses once per new candle: an analysis that ran while the sync was still recording the
    # voids carries tc_void 0 until the next candle. Take the first analysis of a candle that closed after
    # the sync had finished (up to a minute away).
    synced_at = latest_closed()

    def analysed():
        body = bot.pair_candles("BTC/USDT", limit=200)
        if body.get("length", 0) == 0 or "tc_real" not in body.get("columns", []):
            return None
        newest = max(int(r[body["columns"].index("__date_ts")]) // 1000 for r in body["data"])
        return body if newest > synced_at else None

    body = wait_for(analysed, 150, interval=1.0, what="an analysis of a candle closed after the sync")
    cols = body["columns"]
    rows = [dict(zip(cols, r, strict=True)) for r in body["data"]]
    when = {int(r["__date_ts"] // 1000): r for r in rows}
    fake = sorted(t for t, r in when.items() if r["tc_real"] == 0)
    hole = list(range(outage[0], outage[1], 60))
    assert [t for t in fake if t <= end] == hole, fake  # freqtrade's fill-ups over the outage, nothing else
    assert all(when[t]["volume"] == 0 for t in hole)
    assert sorted(t for t, r in when.items() if r["tc_void"] == 1) == hole  # the sync confirmed them
