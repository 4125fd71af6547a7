"""The hub on its own: a real store, stand-ins for the backfill service and the socket, so a recovery can
be held as long as a test needs (the WebSocket tests go through the real server: test_hub_ws.py)."""
from __future__ import annotations

import json
import threading
import time

import pytest

from tests.wsclient import events
from tradecanvas_ext.domain import SeriesId
from tradecanvas_ext.hub import CandleHub
from tradecanvas_ext.metrics import Metrics
from tradecanvas_ext.registry import SeriesRegistry
from tradecanvas_ext.store import open_store

SID = SeriesId.parse("binance:spot:BTC/USDT:1m")
TF = 60
T = 1_700_000_000 // TF * TF


def row(t: int) -> tuple:
    return (t, 100.0, 101.0, 99.0, 100.5, 3.0)


class HeldBackfill:
    """A recovery that lasts until the test releases it."""

    def __init__(self):
        self.release = threading.Event()
        self.calls: list[tuple[SeriesId, int, int]] = []
        self.finished = threading.Event()

    def backfill_gap(self, series_id, expected_next_time, actual_time):
        self.calls.append((series_id, expected_next_time, actual_time))
        self.release.wait(30)
        self.finished.set()


class Socket:
    """What the hub sends to one client, with a wait on a condition instead of a sleep."""

    def __init__(self):
        self.received: list[dict] = []
        self._cond = threading.Condition()

    def send(self, text: str) -> None:
        with self._cond:
            self.received.append(json.loads(text))
            self._cond.notify_all()

    def until(self, pred, timeout: float = 10.0) -> list[dict]:
        with self._cond:
            if not self._cond.wait_for(lambda: any(pred(m) for m in self.received), timeout):
                raise AssertionError(f"timed out; received {self.received[-5:]}")
            return list(self.received)


def subscribed(hub: CandleHub, since: int) -> Socket:
    """A client of `hub` subscribed to SID from `since`, its `subscribed` reply received."""
    sock = Socket()
    client = hub.connect(sock.send)
    client.handle_text(json.dumps({"type": "subscribe", "series_id": str(SID), "since": since}))
    sock.until(lambda m: m["type"] == "subscribed")
    return sock


@pytest.fixture
def hub_parts(sqlite_url):
    storage = open_store(sqlite_url, origin="test")
    store = storage.candles
    backfill = HeldBackfill()
    hubs = []

    def make(recovery_bound_s: float) -> CandleHub:
        hub = CandleHub(store, backfill, SeriesRegistry([SID]), gap_backfill=True, metrics=Metrics(),
                        recovery_bound_s=recovery_bound_s)
        hubs.append(hub)
        return hub

    yield store, backfill, make
    backfill.release.set()
    for hub in hubs:
        hub.close()
    storage.close()


def test_a_recovery_past_its_time_bound_resumes_the_subscription_and_announces_the_gap(hub_parts):
    store, backfill, make = hub_parts
    hub = make(recovery_bound_s=0.3)
    store.upsert_closed(SID, [row(T)])
    sock = subscribed(hub, since=T)
    t0 = time.monotonic()
    hub.publish_closed(SID, [row(T + 2 * TF)])  # a jump: T + 60 is missing, its recovery never ends
    got = sock.until(lambda m: m["type"] == "candle_closed")
    assert time.monotonic() - t0 >= 0.3  # it waited for the recovery first ...
    assert backfill.calls == [(SID, T + TF, T + 2 * TF)] and not backfill.finished.is_set()  # ... still running
    assert events(got) == [("gap", T + TF, T + 2 * TF, 1, "unrecovered"), ("c", T + 2 * TF)]
    hub.publish_closed(SID, [row(T + 3 * TF)])  # and the subscription is live again
    got = sock.until(lambda m: m["type"] == "candle_closed" and m["candle"]["candle_time"] == T + 3 * TF)
    assert events(got)[-1] == ("c", T + 3 * TF)
    assert hub.recoveries_started == 1


class PartialBackfill:
    """A recovery that finds only some of the missing candles (and writes them, as the real one does)."""

    def __init__(self, store, found: list[int]):
        self.store, self.found = store, found

    def backfill_gap(self, series_id, expected_next_time, actual_time):
        self.store.upsert_closed(series_id, [row(t) for t in self.found])


def test_a_hole_left_inside_a_recovered_range_gets_its_own_gap(sqlite_url):
    storage = open_store(sqlite_url, origin="test")
    store = storage.candles
    store.upsert_closed(SID, [row(T)])
    hub = CandleHub(store, PartialBackfill(store, [T + TF, T + 3 * TF]), SeriesRegistry([SID]),
                    gap_backfill=True, metrics=Metrics(), recovery_bound_s=30.0)
    try:
        sock = subscribed(hub, since=T)
        hub.publish_closed(SID, [row(T + 4 * TF)])  # jump: T+60 .. T+180 missing, T+120 stays missing
        got = sock.until(lambda m: m.get("candle", {}).get("candle_time") == T + 4 * TF)
        assert events(got) == [("c", T + TF), ("gap", T + 2 * TF, T + 3 * TF, 1, "unrecovered"),
                               ("c", T + 3 * TF), ("c", T + 4 * TF)]
        assert hub.recoveries_started == 1
    finally:
        hub.close()
        storage.close()


def test_client_triggered_recoveries_share_a_time_budget(hub_parts, monkeypatch):
    """Past the recovery budget a recovery waits its turn: its subscription announces the gap at its time
    bound and goes on, and the recovery, when its turn comes with nobody waiting for it any more, fetches
    nothing (inside the bot every recovery takes the bot's own exchange: clients must not keep it busy)."""
    from tests.conftest import wait_for
    from tradecanvas_ext.hub import candle_hub

    monkeypatch.setattr(candle_hub, "RECOVERY_BURST_S", 1e-6)  # read at the hub's construction
    monkeypatch.setattr(candle_hub, "RECOVERY_TIME_SHARE", 0.5)  # a recovery of d seconds: 2d to pay off
    store, backfill, make = hub_parts
    hub = make(recovery_bound_s=0.3)
    store.upsert_closed(SID, [row(T)])
    sock = subscribed(hub, since=T)
    hub.publish_closed(SID, [row(T + 2 * TF)])  # the first recovery runs at once and is held ...
    sock.until(lambda m: m.get("candle", {}).get("candle_time") == T + 2 * TF)  # ... past the bound
    backfill.release.set()  # it took over 0.3 s of the budget: the next waits over 0.6 s
    wait_for(lambda: backfill.finished.is_set() and hub.recovery_queue(SID) == [], 10, interval=0.02,
             what="the first recovery to end")
    hub.publish_closed(SID, [row(T + 4 * TF)])  # the second waits for the budget, past the bound
    got = sock.until(lambda m: m.get("candle", {}).get("candle_time") == T + 4 * TF)
    assert events(got) == [("gap", T + TF, T + 2 * TF, 1, "unrecovered"), ("c", T + 2 * TF),
                           ("gap", T + 3 * TF, T + 4 * TF, 1, "unrecovered"), ("c", T + 4 * TF)]
    wait_for(lambda: hub.recovery_queue(SID) == [], 10, interval=0.02, what="the second recovery's turn")
    assert backfill.calls == [(SID, T + TF, T + 2 * TF)]  # its subscription had moved on: nothing fetched
    assert hub.recoveries_started == 2 and hub.recoveries_run == 1


class RecordedReads:
    """The real store, recording how many candles each read of a range returned."""

    def __init__(self, store):
        self.store, self.sizes = store, []

    def read_between(self, series_id, start, end, limit=None):
        b = self.store.read_between(series_id, start, end, limit)
        self.sizes.append(len(b))
        return b

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_long_recovered_range_goes_out_a_page_at_a_time_under_the_budget(sqlite_url, monkeypatch):
    """A recovery that writes some 4,500 candles: what fills the jump is read a page at a time, each page after
    the first waits for the catch-up budget (a client that subscribes from 0 again and again must not read
    and serialise a whole history unbudgeted), and the subscription gets it whole, in order, then goes on."""
    from tradecanvas_ext.hub import candle_hub

    monkeypatch.setattr(candle_hub, "CATCHUP_BURST_S", 1e-6)  # read at the hub's construction
    monkeypatch.setattr(candle_hub, "CATCHUP_CPU_SHARE", 0.05)
    storage = open_store(sqlite_url, origin="test")
    store = storage.candles
    store.upsert_closed(SID, [row(T)])
    found = [T + k * TF for k in range(1, 4501) if k % 700]  # with holes the recovery did not find
    reads = RecordedReads(store)
    hub = CandleHub(reads, PartialBackfill(store, found), SeriesRegistry([SID]), gap_backfill=True,
                    metrics=Metrics(), recovery_bound_s=30.0)
    try:
        sock = subscribed(hub, since=T)
        hub.publish_closed(SID, [row(T + 4501 * TF)])  # the jump: T+60 .. T+270000 missing
        got = sock.until(lambda m: m.get("candle", {}).get("candle_time") == T + 4501 * TF, timeout=60)
        want = []
        for k in range(1, 4502):
            if k % 700:
                want.append(("c", T + k * TF))
            else:
                want.append(("gap", T + k * TF, T + (k + 1) * TF, 1, "unrecovered"))
        assert events(got) == want
        assert hub.recoveries_started == 1  # one recovery for the jump: its later pages are part of it
        assert reads.sizes and max(reads.sizes) <= candle_hub.CATCHUP_PAGE
        # five pages: the second to the fourth waited for the budget (the last 500 are a short jump of
        # their own, which goes at once, as a live one does)
        assert hub.catchups_paused >= 3
    finally:
        hub.close()
        storage.close()


# -- messages written once -------------------------------------------------------------------------------------

def test_candle_texts_are_the_messages_the_dict_builders_describe():
    """The shared JSON (one orjson call cut into objects) says what messages.closed / messages.batch say,
    for awkward floats and a series id that needs escaping; every text is ASCII (the byte bound counts it)."""
    import numpy as np

    from tradecanvas_ext.domain import CandleBatch
    from tradecanvas_ext.hub import messages as m

    t = T + np.arange(5, dtype=np.int64) * TF
    b = CandleBatch(t, np.array([1e-7, 1e16, 0.1, 123456.789, 5.0]), np.array([2e-7, 2e16, 0.2, 123457.0, 6.0]),
                    np.array([1e-8, 1.0, 0.05, 1.0, 4.0]), np.array([1.5e-7, 3.0, 0.15, 2.0, 5.5]),
                    np.array([0.0, 1e-300, 7.0, 8.0, 9.0]))
    series = "binance:spot:币安/USDT:1m"
    texts = m.CandleTexts(series, b)
    dicts = b.to_dicts()
    for i in range(5):
        msg = texts.closed(i)
        assert msg.text.isascii() and msg.type == "candle_closed"
        assert json.loads(msg.text) == m.closed(series, dicts[i])
        assert texts.closed(i) is msg  # written once, then shared
    out = m.Outbox(series, TF, supports_batch=True)
    out.candles(texts, 0, 3)
    out.add(m.gap(series, T + 3 * TF, T + 4 * TF, TF, "void"))
    out.candles(texts, 4)
    sent = out.take()
    assert [json.loads(x.text) for x in sent] == [m.batch(series, dicts[:3]),
                                                  m.gap(series, T + 3 * TF, T + 4 * TF, TF, "void"),
                                                  m.closed(series, dicts[4])]
    assert sent[1].gap == (series, "void") and all(x.text.isascii() for x in sent)
    assert m.CandleTexts(series, CandleBatch.empty()).objects() == []


class HeldReads:
    """The real store, but a catch-up read of `held`, and any read of a range, wait until the test
    releases them."""

    def __init__(self, store, held: SeriesId):
        self.store, self.held = store, held
        self.release, self.reading = threading.Event(), threading.Event()

    def read_tail(self, series_id, limit):
        if series_id == self.held:
            self.reading.set()
            self.release.wait(30)
        return self.store.read_tail(series_id, limit)

    def read_between(self, series_id, start, end, limit=None):
        self.release.wait(30)
        return self.store.read_between(series_id, start, end, limit)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_live_candle_reaches_an_idle_subscription_without_a_worker(hub_parts):
    """The only pool worker is held by another socket's catch-up: a live candle that goes on from an idle
    subscription's cursor is still delivered (by the publisher's thread), and a jump still waits for it."""
    store, backfill, _ = hub_parts
    eth = SeriesId.parse("binance:spot:ETH/USDT:1m")
    reads = HeldReads(store, eth)
    hub = CandleHub(reads, backfill, SeriesRegistry([SID, eth]), gap_backfill=False, metrics=Metrics(),
                    recovery_bound_s=30.0, workers=1)
    try:
        store.upsert_closed(SID, [row(T)])
        sock = subscribed(hub, since=T)
        other = hub.connect(Socket().send)
        other.handle_text(json.dumps({"type": "subscribe", "series_id": str(eth)}))
        assert reads.reading.wait(10)  # the one worker, done with the first catch-up, is now held
        hub.publish_closed(SID, [row(T + TF)])
        got = sock.until(lambda m: m.get("candle", {}).get("candle_time") == T + TF, timeout=5)
        assert events(got) == [("c", T + TF)]
        jump = threading.Thread(target=hub.publish_closed, args=(SID, [row(T + 3 * TF)]), daemon=True)
        jump.start()  # a jump reads the store: the publisher leaves it to the (held) worker and returns
        jump.join(10)
        assert not jump.is_alive(), "the publisher waited on a store read"
        reads.release.set()
        got = sock.until(lambda m: m.get("candle", {}).get("candle_time") == T + 3 * TF)
        assert events(got) == [("c", T + TF), ("gap", T + 2 * TF, T + 3 * TF, 1, "backfill_disabled"),
                               ("c", T + 3 * TF)]
    finally:
        reads.release.set()
        hub.close()
