"""The hub-wide catch-up budget (hub/budget.py): its arithmetic on a hand-moved clock, and a catch-up
paused by it between pages that still arrives whole, in order, through a real server."""
from __future__ import annotations

import pytest

from tests.test_hub_flow_control import BTC_ID, LAST_CLOSED, SID, TF, synthetic
from tests.wsclient import WS, check_guarantee
from tradecanvas_ext.hub.budget import CatchUpBudget


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_the_budget_gives_a_burst_then_its_share():
    clock = Clock()
    b = CatchUpBudget(0.1, 1.0, clock)
    assert b.wait_s() == 0.0
    b.charge(0.6)
    assert b.wait_s() == 0.0  # 0.4 s left of the burst
    b.charge(0.6)  # 0.2 s in debt: 2 s at 0.1 s per second
    assert b.wait_s() == pytest.approx(2.0, abs=0.01)
    clock.t += 1.0
    assert b.wait_s() == pytest.approx(1.0, abs=0.01)
    clock.t += 1.01
    assert b.wait_s() == 0.0
    clock.t += 1000
    b.charge(1.05)  # the credit never grows past the burst
    assert b.wait_s() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("share, burst", [(0.0, 1.0), (1.5, 1.0), (0.1, 0.0), (float("nan"), 1.0)])
def test_a_budget_needs_a_share_and_a_burst(share, burst):
    with pytest.raises(ValueError):
        CatchUpBudget(share, burst)


def test_a_catch_up_paused_by_the_budget_arrives_whole(make_runtime, monkeypatch):
    from tradecanvas_ext.hub import candle_hub

    monkeypatch.setattr(candle_hub, "CATCHUP_BURST_S", 1e-6)  # read at the hub's construction
    # every page after the first waits: its debt (twice its CPU, some ms) takes 50 times as long to pay off,
    # longer than sending a page takes even on a loaded machine (the next page is read once it is sent)
    monkeypatch.setattr(candle_hub, "CATCHUP_CPU_SHARE", 0.02)
    rt = make_runtime(serve=True, enable_market_gap_backfill=False)
    stored = synthetic(LAST_CLOSED - 4999 * TF, 5000)
    rt.store.upsert_closed(BTC_ID, stored)
    ws = WS(rt.url)
    try:
        since = int(stored.times[0]) - TF
        assert ws.subscribe(SID, since=since, supports_batch=True)["type"] == "subscribed"
        ws.until(lambda m: m.get("candles", [{}])[-1].get("candle_time") == LAST_CLOSED, timeout=60)
        assert check_guarantee(ws.received, SID, TF, since) == stored.times.tolist()
        assert rt.hub.catchups_paused >= 4  # five pages: each after the first waited for the budget
    finally:
        ws.close()
