"""The bot's loop goes first (hub/priority.py): while freqtrade refreshes and analyses, catch-ups, fills,
recoveries, handshakes and frames for chart clients wait, at most max_hold_s; live candles do not. The
arithmetic on a hand-moved clock; the hub, a real server and real sockets; the strategy's hooks with
real freqtrade objects."""
from __future__ import annotations

import json
import threading

import pytest

from tests.conftest import wait_for
from tests.test_hub_flow_control import BTC_ID, LAST_CLOSED, SID, TF, synthetic
from tests.wsclient import WS, check_guarantee
from tradecanvas_ext.hub.budget import CatchUpBudget
from tradecanvas_ext.hub.priority import POLL_S, LoopPriority


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_a_hold_lasts_until_leave_or_max_hold():
    clock = Clock()
    p = LoopPriority(max_hold_s=2.0, linger_s=0.0, clock=clock)
    assert not p.held and p.hold_s() == 0.0
    p.enter()
    assert p.held and p.hold_s() == POLL_S
    clock.t += 1.0
    p.enter()  # a second enter in the same loop keeps the first start
    clock.t += 0.99
    assert p.held and p.hold_s() == pytest.approx(0.01)
    clock.t += 0.02
    assert not p.held and p.hold_s() == 0.0  # the loop never said: the hold ran out
    p.leave()
    p.enter()
    assert p.held
    p.leave()
    assert not p.held and p.hold_s() == 0.0
    assert p.holds == 2


def test_a_hold_lingers_after_leave_within_its_bound():
    clock = Clock()
    p = LoopPriority(max_hold_s=2.0, linger_s=0.2, clock=clock)
    p.enter()
    clock.t += 1.0
    p.leave()  # the rest of freqtrade's iteration: 0.2 s more
    assert p.held and p.hold_s() == pytest.approx(POLL_S)
    clock.t += 0.19
    assert p.held and p.hold_s() == pytest.approx(0.01)
    clock.t += 0.02
    assert not p.held
    p.enter()
    clock.t += 1.9
    p.leave()  # the linger never goes past max_hold_s from the start
    p.leave()  # a second leave changes nothing
    clock.t += 0.09
    assert p.held
    clock.t += 0.02
    assert not p.held


@pytest.mark.parametrize("bad, linger", [(0, 0.0), (-1, 0.0), (float("nan"), 0.0), (1.0, -0.1), (1.0, 1.5),
                                         (1.0, float("nan"))])
def test_a_hold_needs_a_positive_bound(bad, linger):
    with pytest.raises(ValueError):
        LoopPriority(max_hold_s=bad, linger_s=linger)


def test_wait_returns_at_leave():
    p = LoopPriority(max_hold_s=60.0)
    p.enter()
    done = threading.Event()
    t = threading.Thread(target=lambda: (p.wait(), done.set()), daemon=True)
    t.start()
    wait_for(lambda: p.waited == 1, 10)
    assert not done.is_set()  # held for up to 60 s: it cannot have returned yet
    p.leave()
    assert done.wait(10)
    p.wait()  # no hold: returns at once
    assert p.waited == 1


def test_a_budget_waits_while_the_loop_holds_even_with_credit():
    clock = Clock()
    p = LoopPriority(max_hold_s=2.0, linger_s=0.0, clock=clock)
    b = CatchUpBudget(0.1, 1.0, clock, priority=p)
    assert b.wait_s() == 0.0
    p.enter()
    assert b.wait_s() == POLL_S
    b.charge(1.2)  # in debt: the longer of the two waits
    assert b.wait_s() == pytest.approx(2.0, abs=0.01)
    p.leave()
    assert b.wait_s() == pytest.approx(2.0, abs=0.01)
    clock.t += 2.1
    assert b.wait_s() == 0.0


def test_a_catch_up_waits_for_the_loop_then_arrives_whole(make_runtime):
    rt = make_runtime(serve=False, enable_market_gap_backfill=False)
    stored = synthetic(LAST_CLOSED - 2999 * TF, 3000)
    rt.store.upsert_closed(BTC_ID, stored)
    priority = rt.hub.priority
    priority.max_hold_s = 60.0
    sent: list[dict] = []
    client = rt.hub.connect(send=lambda text: sent.append(json.loads(text)))
    try:
        priority.enter()
        since = int(stored.times[0]) - TF
        client.handle_text(json.dumps({"type": "subscribe", "series_id": SID, "since": since,
                                       "supports_batch": True}))
        wait_for(lambda: rt.hub.catchups_paused >= 1, 10)
        assert not [m for m in sent if m["type"] in ("candles_batch", "candle_closed")]  # held: nothing read
        priority.leave()
        wait_for(lambda: any(m.get("candles", [{}])[-1].get("candle_time") == LAST_CLOSED for m in sent), 30)
        assert check_guarantee(sent, SID, TF, since) == stored.times.tolist()
    finally:
        priority.leave()
        rt.hub.disconnect(client)


def test_live_candles_go_out_during_a_hold_handshakes_wait(make_runtime):
    rt = make_runtime(serve=True, enable_market_gap_backfill=False)
    stored = synthetic(LAST_CLOSED - 999 * TF, 1000)
    rt.store.upsert_closed(BTC_ID, stored.take(slice(0, 999)))
    priority = rt.hub.priority
    priority.max_hold_s = 60.0
    a = WS(rt.url)
    late: dict = {}
    try:
        since = int(stored.times[997])
        assert a.subscribe(SID, since=since)["type"] == "subscribed"
        a.until(lambda m: m.get("type") == "candle_closed" and m["candle"]["candle_time"] == stored.times[998])
        priority.enter()
        connecting = threading.Thread(target=lambda: late.setdefault("ws", WS(rt.url)), daemon=True)
        connecting.start()
        wait_for(lambda: priority.waited >= 1, 10)  # its handshake waits for the loop
        assert rt.ingest_closed(BTC_ID, stored.take(slice(999, 1000))) == 1  # the bot's loop stores a candle
        a.until(lambda m: m.get("type") == "candle_closed" and m["candle"]["candle_time"] == LAST_CLOSED)
        assert connecting.is_alive() and "ws" not in late  # still held: up to 60 s
        priority.leave()
        connecting.join(10)
        b = late["ws"]
        assert b.subscribe(SID, since=int(stored.times[0]) - TF, supports_batch=True)["type"] == "subscribed"
        b.until(lambda m: m.get("candles", [{}])[-1].get("candle_time") == LAST_CLOSED, timeout=30)
        assert check_guarantee(b.received, SID, TF, int(stored.times[0]) - TF) == stored.times.tolist()
        assert check_guarantee(a.received, SID, TF, since) == stored.times[998:].tolist()
    finally:
        priority.leave()
        a.close()
        if "ws" in late:
            late["ws"].close()
