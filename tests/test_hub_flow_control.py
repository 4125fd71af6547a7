"""Contract section 4, item 6 (publishing never waits for a client; flow control), through a real server,
real sockets, and raw sockets where a client library would read for the test."""
from __future__ import annotations

import time

import numpy as np
import pytest

from tests.conftest import NOW, wait_for
from tests.wsclient import WS, check_guarantee, events, stalled_client, unread_bytes
from tradecanvas_ext.domain import CandleBatch, SeriesId

SID = "binance:spot:BTC/USDT:1m"
BTC_ID = SeriesId.parse(SID)
TF = 60
LAST_CLOSED = NOW // TF * TF - TF  # the newest candle closed at NOW


def synthetic(first: int, n: int) -> CandleBatch:
    """`n` valid consecutive candles from `first`, with prices of as many digits as real ones."""
    times = first + TF * np.arange(n, dtype=np.int64)
    k = np.arange(n, dtype=np.float64)
    open_ = 37_000.0 + (k % 997) * 0.123457
    return CandleBatch(times, open_, open_ + 1.5, open_ - 1.5, open_ + 0.25, 1.234567 + k % 101)


@pytest.fixture
def runtime(make_runtime):
    """A served runtime with no exchange repairs: what a client gets depends on the store and the hub only."""
    return make_runtime(serve=True, enable_market_gap_backfill=False)


@pytest.fixture
def sockets():
    made: list = []
    yield made
    for s in made:
        s.close()


def test_two_stalled_clients_never_hold_ingest_back(runtime, sockets, monkeypatch):
    """And a stalled client's send times out: its writer drops it (the others go on)."""
    from tradecanvas_ext.web import server

    monkeypatch.setattr(server, "WS_SEND_TIMEOUT_S", 1.0)  # read at each upgrade
    rt = runtime
    live = [LAST_CLOSED - TF * k for k in range(19, -1, -1)]
    stored = synthetic(live[0] - 60_000 * TF, 60_000)
    rt.store.upsert_closed(BTC_ID, stored)
    subscribe = {"type": "subscribe", "series_id": SID, "since": 0}
    stalled = [stalled_client(rt.url, subscribe) for _ in range(2)]
    sockets.extend(stalled)
    wait_for(lambda: all(unread_bytes(s) > 0 for s in stalled), 30, interval=0.02,
             what="the stalled clients' catch-ups to reach their sockets")
    good = WS(rt.url)
    sockets.append(good)
    assert good.subscribe(SID, since=int(stored.times[-1]))["head_time"] == int(stored.times[-1])
    assert rt.hub.client_count == 3
    for t in live:
        started = time.monotonic()
        assert rt.ingest_closed(SID, synthetic(t, 1)) == 1
        took = time.monotonic() - started
        assert took < 1.0, f"ingest_closed took {took:.2f}s with two stalled clients"  # contract: bounded
        got = good.until(lambda m: m["type"] == "candle_closed")
        assert got["candle"]["candle_time"] == t
    assert events(good.received) == [("c", t) for t in live]
    wait_for(lambda: rt.hub.client_count == 1, 15, interval=0.05,  # before the first ping (25 s) finds them
             what="the stalled clients' sends to time out")
    good.send({"type": "ping"})
    assert good.until(lambda m: m["type"] in ("pong", "error"))["type"] == "pong"  # the normal one goes on


def test_a_client_without_batches_that_keeps_reading_gets_a_100k_catch_up(runtime, sockets, monkeypatch):
    """And each catch-up page is read only once the writer has sent every candle read before it."""
    rt = runtime
    n = 100_000
    stored = synthetic(LAST_CLOSED - (n - 1) * TF, n)
    rt.store.upsert_closed(BTC_ID, stored)
    since = int(stored.times[0]) - TF
    sent, read, early = [0], [0], []
    real_connect, real_read = rt.hub.connect, rt.store.read_after

    def counting_connect(send, close=None, bell=None):
        def counted(text):
            send(text)
            sent[0] += text.startswith('{"type":"candle_closed"')  # once the socket took it

        return real_connect(counted, close, bell)

    def paced_read(series, after, limit):
        if sent[0] < read[0]:
            early.append((read[0], sent[0]))
        page = real_read(series, after, limit)
        read[0] += len(page)
        return page

    monkeypatch.setattr(rt.hub, "connect", counting_connect)
    monkeypatch.setattr(rt.store, "read_after", paced_read)
    ws = WS(rt.url)
    sockets.append(ws)
    assert ws.subscribe(SID, since=since)["type"] == "subscribed"
    ws.until(lambda m: m.get("candle", {}).get("candle_time") == LAST_CLOSED, timeout=240)
    assert {m["type"] for m in ws.received} == {"subscribed", "candle_closed"}
    assert check_guarantee(ws.received, SID, TF, since) == stored.times.tolist()  # complete, in order, once
    assert rt.hub.client_count == 1  # never dropped
    assert read[0] == n and early == [], f"pages read before the previous one was sent: {early[:5]}"


def test_a_client_past_the_byte_bound_is_dropped_and_the_others_go_on(runtime, sockets, monkeypatch):
    from tradecanvas_ext.hub import candle_hub
    from tradecanvas_ext.web import server

    monkeypatch.setattr(candle_hub, "MAX_PENDING_BYTES", 1 << 20)
    monkeypatch.setattr(server, "WS_SEND_TIMEOUT_S", 600.0)  # the byte bound drops it, not the send timeout
    rt = runtime
    base = LAST_CLOSED - 500_000 * TF
    rt.store.upsert_closed(BTC_ID, synthetic(base, 1))
    stalled = stalled_client(rt.url, {"type": "subscribe", "series_id": SID, "since": base,
                                      "supports_batch": True})
    sockets.append(stalled)
    good = WS(rt.url)
    sockets.append(good)
    good.subscribe(SID, since=base, supports_batch=True)
    wait_for(lambda: rt.hub.subscription_count(BTC_ID) == 2, 10, interval=0.02, what="both subscriptions")
    first = base + TF
    sent = 0
    while rt.hub.client_count == 2 and sent < 400_000:  # 400 batches of ~110 KB: far past any socket buffer
        last = first + (sent + 999) * TF
        rt.hub.publish_closed(BTC_ID, synthetic(first + sent * TF, 1000))  # a repair's 1000 candles, live
        good.until(lambda m, last=last: m.get("candles", [{}])[-1].get("candle_time") == last)
        sent += 1000
    assert rt.hub.client_count == 1, "the stalled client was never dropped"
    assert sent < 400_000
    assert check_guarantee(good.received, SID, TF, base) == list(range(first, first + sent * TF, TF))
    stalled.settimeout(10)  # its socket is closed: what reached it before the drop, then the end
    while stalled.recv(1 << 20):
        pass
