"""Contract section 4 through a real server on 127.0.0.1 and a real WebSocket client library."""
from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from tests.conftest import NOW, wait_for
from tests.wsclient import WS, check_guarantee, events
from tradecanvas_ext.domain import SeriesId

SID = "binance:spot:BTC/USDT:1m"  # as clients send it
ETH = "binance:spot:ETH/USDT:1m"
BTC_ID, ETH_ID = SeriesId.parse(SID), SeriesId.parse(ETH)  # as the store takes them
TF = 60
T = (NOW // TF) * TF - 20 * TF  # 20 candles back: every candle below is closed at NOW


def candles(exchange, *times, symbol="BTC/USDT"):
    rows = {r[0]: r for r in exchange.candles(symbol, "1m", min(times), max(times))}
    return [rows[t] for t in times]


@pytest.fixture
def served(make_runtime):
    clients = []

    def make(**section):
        rt = make_runtime(serve=True, **{"series": [SID, ETH], **section})
        return rt

    def client(rt, **kw):
        ws = WS(rt.url, **kw)
        clients.append(ws)
        return ws

    make.client = client
    yield make
    for c in clients:
        c.close()


def test_catch_up_then_live(served, exchange):
    rt = served()
    rt.store.upsert_closed(BTC_ID, candles(exchange, T, T + 60, T + 120))
    ws = served.client(rt)
    sub = ws.subscribe(SID, since=T)
    assert sub == {"type": "subscribed", "series_id": SID, "since": T, "head_time": T + 120}
    ws.until(lambda m: m.get("candle", {}).get("candle_time") == T + 120)
    assert rt.ingest_closed(SID, candles(exchange, T + 180)) == 1
    ws.until(lambda m: m.get("candle", {}).get("candle_time") == T + 180)
    assert [m["type"] for m in ws.received] == ["subscribed"] + ["candle_closed"] * 3
    assert events(ws.received) == [("c", T + 60), ("c", T + 120), ("c", T + 180)]


def test_a_websocket_costs_two_threads_its_request_thread_writes(served, exchange):
    """Per socket: werkzeug's request thread (frames in, messages out) and simple_websocket's reader; no
    writer thread of its own."""
    rt = served()
    rt.store.upsert_closed(BTC_ID, candles(exchange, T, T + 60))
    before = set(threading.enumerate())
    socks = [served.client(rt) for _ in range(3)]
    for ws in socks:
        ws.subscribe(SID, since=T)
        ws.until(lambda m: m.get("candle", {}).get("candle_time") == T + 60)
    rt.ingest_closed(SID, candles(exchange, T + 120))
    for ws in socks:
        ws.until(lambda m: m.get("candle", {}).get("candle_time") == T + 120)
    mine = [t.name for t in set(threading.enumerate()) - before
            if t.name.startswith(("tc-web-conn", "tc-ws")) or "simple_websocket" in t.name]
    assert sorted(n.split("-")[2] if n.startswith("tc-") else "reader" for n in mine) == ["conn"] * 3 + ["reader"] * 3


def test_a_burst_of_frames_is_answered_whole_in_turns(served, monkeypatch):
    """150 pings in one TCP write are all answered, in order: the socket's thread handles them 64 at a
    time, writing between turns, and does not sleep on its bell while frames wait (when the reader had
    them all queued before a turn, a wrong sleep would outlast the timeout)."""
    import websocket

    from tradecanvas_ext.web import ws as ws_route

    monkeypatch.setattr(ws_route, "_IDLE_WAKE_S", 60.0)  # a wrong wait would outlast the test's timeout
    rt = served()
    ws = served.client(rt)
    frames = [websocket.ABNF.create_frame('{"type":"ping"}', websocket.ABNF.OPCODE_TEXT).format()
              for _ in range(150)]
    assert sum(map(len, frames)) < 4096  # simple_websocket can read them in one recv
    ws.ws.sock.sendall(b"".join(frames))
    for _ in range(150):
        assert ws.until(lambda m: True, timeout=10) == {"type": "pong"}


def test_a_socket_past_its_frame_allowance_is_told_and_closed_and_others_go_on(served, exchange, monkeypatch):
    """A flood of frames gets one error `rate_limited` and a close (1008) once past the burst; a normal
    client on the same server keeps its subscription and the delivery guarantee."""

    from tests.test_hub_hostile_stateful import frames_until_closed
    from tests.wsclient import frame, stalled_client
    from tradecanvas_ext.web import ws as ws_route

    monkeypatch.setattr(ws_route, "FRAME_BURST", 40)  # read at each connection
    monkeypatch.setattr(ws_route, "FRAME_RATE_PER_S", 0.5)
    rt = served()
    rt.store.upsert_closed(BTC_ID, candles(exchange, T, T + 60))
    normal = served.client(rt)
    normal.subscribe(SID, since=T)
    flood = stalled_client(rt.url, rcvbuf=1 << 20)
    try:
        flood.sendall(b"".join(frame({"type": "ping"}) for _ in range(40)))  # the burst: all answered
        flood.sendall(b"".join(frame({"type": "subscribe", "series_id": SID, "since": 0}) for _ in range(20)))
        frames = frames_until_closed(flood, timeout=30)
    finally:
        flood.close()
    texts = [json.loads(p) for op, p in frames if op == 0x1]
    assert texts[:40] == [{"type": "pong"}] * 40
    errors = [m for m in texts if m["type"] == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "rate_limited", errors
    closes = [p for op, p in frames if op == 0x8]
    assert closes and int.from_bytes(closes[0][:2], "big") == 1008
    rt.ingest_closed(SID, candles(exchange, T + 120))
    normal.until(lambda m: m.get("candle", {}).get("candle_time") == T + 120)
    assert check_guarantee(normal.received, SID, TF, T) == [T + 60, T + 120]


def test_catch_up_with_batch(served, exchange):
    rt = served()
    rt.store.upsert_closed(BTC_ID, candles(exchange, T, T + 60, T + 120))
    ws = served.client(rt)
    ws.subscribe(SID, since=T, supports_batch=True)
    batch = ws.until(lambda m: m["type"] == "candles_batch")
    assert [c["candle_time"] for c in batch["candles"]] == [T + 60, T + 120]
    assert batch["candles"][0] == dict(zip(("candle_time", "open", "high", "low", "close", "volume"),
                                           candles(exchange, T + 60)[0], strict=True))
    rt.ingest_closed(SID, candles(exchange, T + 180))
    live = ws.until(lambda m: m["type"] == "candle_closed")
    assert live["candle"]["candle_time"] == T + 180


def test_catch_up_without_since_is_the_last_500(served, exchange):
    rt = served()
    rows = exchange.candles("BTC/USDT", "1m", T - 599 * 60, T)
    rt.store.upsert_closed(BTC_ID, rows)
    ws = served.client(rt)
    assert ws.subscribe(SID, supports_batch=True)["since"] is None
    got = ws.until(lambda m: m["type"] == "candles_batch")
    assert [c["candle_time"] for c in got["candles"]] == [r[0] for r in rows[-500:]]


@pytest.mark.parametrize("cause, reason", [("exchange_down", "unrecovered"), ("outage", "void")])
def test_gap_that_cannot_be_recovered_is_announced(served, exchange, cause, reason):
    rt = served(ccxt_timeout_ms=500, time_bound_s=2.0)
    rows = candles(exchange, T, T + 120)
    if cause == "outage":
        exchange.faults.outage(T + 60, T + 120)  # the exchange never had T+60 (old: confirmed void)
    else:
        exchange.faults.http_error(503, n=None)  # the exchange does not answer
    rt.store.upsert_closed(BTC_ID, rows[:1])
    ws = served.client(rt)
    ws.subscribe(SID, since=T)
    rt.ingest_closed(SID, rows[1:])
    ws.until(lambda m: m["type"] == "candle_closed")
    gap = [m for m in ws.received if m["type"] == "gap"]
    assert gap == [{"type": "gap", "series_id": SID, "expected_next_time": T + 60, "actual_time": T + 120,
                    "missing_candles": 1, "reason": reason}]
    assert events(ws.received) == [("gap", T + 60, T + 120, 1, reason), ("c", T + 120)]


def test_gap_recovered_from_the_exchange(served, exchange):
    rt = served()
    rt.store.upsert_closed(BTC_ID, candles(exchange, T))
    ws = served.client(rt)
    ws.subscribe(SID, since=T)
    exchange.reset_counts()
    rt.ingest_closed(SID, candles(exchange, T + 120))
    ws.until(lambda m: m.get("candle", {}).get("candle_time") == T + 120)
    assert events(ws.received) == [("c", T + 60), ("c", T + 120)]
    assert exchange.request_count("klines") == 1
    assert rt.store.read_between(BTC_ID, T + 60, T + 60).rows() == candles(exchange, T + 60)


@pytest.mark.parametrize("how", ["config", "env"])
def test_gap_backfill_switched_off(served, exchange, how):
    rt = served(enable_market_gap_backfill=False) if how == "config" else served(
        env={"TRADE_CANVAS_ENABLE_MARKET_GAP_BACKFILL": "0"})
    rt.store.upsert_closed(BTC_ID, candles(exchange, T))
    ws = served.client(rt)
    ws.subscribe(SID, since=T)
    exchange.reset_counts()
    rt.ingest_closed(SID, candles(exchange, T + 120))
    ws.until(lambda m: m["type"] == "candle_closed")
    assert events(ws.received) == [("gap", T + 60, T + 120, 1, "backfill_disabled"), ("c", T + 120)]
    assert exchange.request_count() == 0


def test_candle_already_in_the_store_needs_no_backfill(served, exchange):
    rt = served()
    rt.store.upsert_closed(BTC_ID, candles(exchange, T))
    ws = served.client(rt)
    ws.subscribe(SID, since=T - 60)
    ws.until(lambda m: m.get("candle", {}).get("candle_time") == T)  # the catch-up is done: cursor T
    rt.store.upsert_closed(BTC_ID, candles(exchange, T + 60))  # written without a publish
    exchange.reset_counts()
    rt.ingest_closed(SID, candles(exchange, T + 120))
    ws.until(lambda m: m.get("candle", {}).get("candle_time") == T + 120)
    assert events(ws.received) == [("c", T), ("c", T + 60), ("c", T + 120)]
    assert exchange.request_count() == 0 and rt.hub.recoveries_started == 0


def test_holes_inside_a_catch_up_and_a_batch_each_get_a_gap(served, exchange):
    rt = served()
    old = T - 10 * 60  # old enough for the exchange's answer to become a void
    exchange.faults.outage(old + 120, old + 180)
    exchange.faults.outage(T + 360, T + 420)
    rt.store.upsert_closed(BTC_ID, candles(exchange, old, old + 60, old + 180, old + 240))
    ws = served.client(rt)
    ws.subscribe(SID, since=old, supports_batch=True)
    ws.until(lambda m: m.get("candles", [{}])[-1].get("candle_time") == old + 240)
    rt.store.upsert_closed(BTC_ID, exchange.candles("BTC/USDT", "1m", old + 300, T + 240))
    rt.ingest_closed(SID, [r for r in exchange.candles("BTC/USDT", "1m", T + 300, T + 480)])
    ws.until(lambda m: m.get("candles", [{}])[-1].get("candle_time") == T + 480)
    evs = events(ws.received)
    gaps = [e for e in evs if e[0] == "gap"]
    assert gaps == [("gap", old + 120, old + 180, 1, "void"), ("gap", T + 360, T + 420, 1, "void")]
    check_guarantee(ws.received, SID, TF, old)


def test_live_candle_during_the_catch_up_read_is_delivered_once(served, exchange):
    rt = served()
    rt.store.upsert_closed(BTC_ID, candles(exchange, T, T + 60, T + 120))
    real_read = rt.store.read_after
    injected = threading.Event()

    def racing_read(series, since, limit):
        if not injected.is_set():  # a live candle lands in the store and is published mid-read
            injected.set()
            rt.ingest_closed(SID, candles(exchange, T + 180))
        out = real_read(series, since, limit)
        rt.ingest_closed(SID, candles(exchange, T + 240))  # and one right after the read
        return out

    rt.store.read_after = racing_read
    ws = served.client(rt)
    ws.subscribe(SID, since=T)
    ws.until(lambda m: m.get("candle", {}).get("candle_time") == T + 240)
    rt.ingest_closed(SID, candles(exchange, T + 300))  # one subscription, one order: a repeat comes first
    ws.until(lambda m: m.get("candle", {}).get("candle_time") == T + 300)
    assert events(ws.received) == [("c", T + 60), ("c", T + 120), ("c", T + 180), ("c", T + 240), ("c", T + 300)]


def test_fifty_clients_one_hole_one_recovery(served, exchange):
    rt = served()
    rt.store.upsert_closed(BTC_ID, candles(exchange, T))
    clients = [served.client(rt) for _ in range(50)]
    for ws in clients:
        ws.subscribe(SID, since=T)
    exchange.reset_counts()
    exchange.faults.slow(0.3, n=1)  # keep the one recovery in flight while all 50 ask for it
    rt.ingest_closed(SID, candles(exchange, T + 180))
    for ws in clients:
        ws.until(lambda m: m.get("candle", {}).get("candle_time") == T + 180)
        assert events(ws.received) == [("c", T + 60), ("c", T + 120), ("c", T + 180)]
    assert exchange.request_count("klines") == 1 and rt.hub.recoveries_started == 1


def test_slow_recovery_does_not_hold_other_series_or_clients(served, exchange, monkeypatch):
    rt = served()
    rt.store.upsert_closed(BTC_ID, candles(exchange, T))
    rt.store.upsert_closed(ETH_ID, candles(exchange, T, symbol="ETH/USDT"))
    a, b = served.client(rt), served.client(rt)
    a.subscribe(SID, since=T)
    b.subscribe(ETH, since=T)
    held, release = threading.Event(), threading.Event()
    real_gap = rt.backfill.backfill_gap

    def held_gap(series_id, expected_next_time, actual_time):
        held.set()
        release.wait(30)
        return real_gap(series_id, expected_next_time, actual_time)

    monkeypatch.setattr(rt.backfill, "backfill_gap", held_gap)
    try:
        rt.ingest_closed(SID, candles(exchange, T + 120))  # hole: BTC's recovery is held until released
        assert held.wait(10)
        rt.ingest_closed(ETH, candles(exchange, T + 60, symbol="ETH/USDT"))
        b.until(lambda m: m.get("candle", {}).get("candle_time") == T + 60)  # while BTC's is still held
    finally:
        release.set()
    a.until(lambda m: m.get("candle", {}).get("candle_time") == T + 120)
    assert events(a.received) == [("c", T + 60), ("c", T + 120)]


def test_bad_frames_get_errors_and_the_socket_stays_open(served, exchange):
    rt = served()
    rt.store.upsert_closed(BTC_ID, candles(exchange, T))
    ws = served.client(rt)
    ws.subscribe(SID, since=T - 60)
    ws.until(lambda m: m["type"] == "candle_closed")
    bad = [
        ("not json", "bad_request", "not valid JSON"),
        ("[1, 2]", "bad_request", "JSON object"),
        ({"type": "dance"}, "bad_request", "unknown type"),
        ({"type": "subscribe"}, "bad_request", "series_id"),
        ({"type": "subscribe", "series_id": "binance:spot:BTC/USDT:2w"}, "bad_request", "timeframe"),
        ({"type": "subscribe", "series_id": "nope:spot:BTC/USDT:1m"}, "bad_request", "exchange"),
        ({"type": "subscribe", "series_id": SID, "since": "5"}, "bad_request", "since"),
        ({"type": "subscribe", "series_id": SID, "since": True}, "bad_request", "since"),
        ({"type": "subscribe", "series_id": SID, "since": 1.5}, "bad_request", "since"),
        ({"type": "subscribe", "series_id": SID, "since": -1}, "bad_request", "since"),
        ({"type": "subscribe", "series_id": SID, "supports_batch": "yes"}, "bad_request", "supports_batch"),
        ({"type": "subscribe", "series_id": "binance:spot:LTC/USDT:1m"}, "unknown_series", "not configured"),
    ]
    for frame, code, text in bad:
        ws.send(frame)
        err = ws.until(lambda m: m["type"] == "error")
        assert err["code"] == code and text in err["message"], (frame, err)
    ws.send({"type": "ping"})
    assert ws.until(lambda m: m["type"] in ("pong", "error"))["type"] == "pong"
    rt.ingest_closed(SID, candles(exchange, T + 60))  # the subscription was not disturbed
    assert ws.until(lambda m: m["type"] == "candle_closed")["candle"]["candle_time"] == T + 60


def test_since_beyond_2_53_is_bad_request_and_nothing_else(served, exchange, caplog):
    """Contract section 4: since is 0..2^53-1. Beyond it (10**30 used to answer `subscribed`, then die in the
    store with an OverflowError) the answer is one `error`, and the socket and its subscriptions go on."""
    rt = served()
    rt.store.upsert_closed(BTC_ID, candles(exchange, T))
    ws = served.client(rt)
    with caplog.at_level(logging.DEBUG):
        for since in (2**53, 10**30, 2**63, 2**64):
            start = len(ws.received)
            ws.send({"type": "subscribe", "series_id": SID, "since": since})
            ws.send({"type": "ping"})
            ws.until(lambda m: m["type"] == "pong")
            got = ws.received[start:]
            assert [m["type"] for m in got] == ["error", "pong"], (since, got)
            assert got[0]["code"] == "bad_request" and got[0]["series_id"] == SID
            assert "since must be an integer from 0 to 9007199254740991" in got[0]["message"]
        too_long = '{"type": "subscribe", "series_id": "' + SID + '", "since": ' + "9" * 5000 + "}"
        for frame, says in ((too_long, "number too long"),
                            ("[" * 5000 + "]" * 5000, "nests too deeply")):
            ws.send(frame)
            err = ws.until(lambda m: m["type"] == "error")
            assert err["code"] == "bad_request" and says in err["message"], err
        assert rt.hub.subscription_count(BTC_ID) == 0
        assert ws.subscribe(SID, since=2**53 - 1)["type"] == "subscribed"  # the largest is fine
    assert "OverflowError" not in caplog.text and "Traceback" not in caplog.text


def test_too_many_subscriptions(served, exchange, monkeypatch):
    from tradecanvas_ext.hub import candle_hub

    monkeypatch.setattr(candle_hub, "MAX_SUBSCRIPTIONS", 1)
    rt = served()
    ws = served.client(rt)
    assert ws.subscribe(SID)["type"] == "subscribed"
    err = ws.subscribe(ETH)
    assert err["code"] == "too_many_subscriptions" and err["series_id"] == ETH
    assert ws.subscribe(SID)["type"] == "subscribed"  # replacing one is fine


def test_unsubscribe_and_replace(served, exchange):
    rt = served()
    rt.store.upsert_closed(BTC_ID, candles(exchange, T))
    ws = served.client(rt)
    ws.subscribe(SID, since=T)
    ws.send({"type": "unsubscribe", "series_id": SID})
    ws.send({"type": "ping"})
    ws.until(lambda m: m["type"] == "pong")  # one socket's frames are handled in order: unsubscribed now
    pong = len(ws.received)
    assert rt.hub.subscription_count(BTC_ID) == 0
    rt.ingest_closed(SID, candles(exchange, T + 60))  # reaches no subscription
    ws.subscribe(SID, since=T + 60)
    ws.subscribe(SID, since=T - 60)  # replaces: catch-up from T - 60
    assert rt.hub.subscription_count(BTC_ID) == 1
    rt.ingest_closed(SID, candles(exchange, T + 120))  # one subscription, one order: anything else is first
    ws.until(lambda m: m.get("candle", {}).get("candle_time") == T + 120)
    msgs = ws.received[pong:]
    assert [m["type"] for m in msgs] == ["subscribed", "subscribed"] + ["candle_closed"] * 3
    assert events(msgs) == [("c", T), ("c", T + 60), ("c", T + 120)]


def test_dead_and_slow_clients_do_not_hold_others_back(served, exchange):
    rt = served()
    rt.store.upsert_closed(BTC_ID, candles(exchange, T))
    dead = served.client(rt)
    dead.subscribe(SID, since=T)
    dead.ws.sock.close()  # vanished without a close frame
    slow = served.client(rt)
    slow.subscribe(SID, since=T)  # never reads again
    good = served.client(rt)
    good.subscribe(SID, since=T)
    for k in range(1, 11):
        rt.ingest_closed(SID, candles(exchange, T + 60 * k))
    good.until(lambda m: m.get("candle", {}).get("candle_time") == T + 600)
    check_guarantee(good.received, SID, TF, T)
    deadline = time.monotonic() + 5
    while rt.hub.client_count > 2 and time.monotonic() < deadline:
        rt.ingest_closed(SID, candles(exchange, T + 660))
        time.sleep(0.1)
    assert rt.hub.client_count == 2  # the dead one is gone, the slow one is still served


def test_forming_is_throttled_never_stored_and_after_the_last_closed(served, exchange, monkeypatch):
    from tradecanvas_ext.hub import candle_hub

    monkeypatch.setattr(candle_hub, "FORMING_MIN_INTERVAL_S", 3600.0)  # however slow this machine is
    rt = served()
    rt.store.upsert_closed(BTC_ID, candles(exchange, T))
    ws = served.client(rt)
    ws.subscribe(SID, since=T - 60)
    ws.until(lambda m: m["type"] == "candle_closed")
    seen = len(ws.received)
    old = {"candle_time": T, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}
    rt.ingest_forming(SID, old)  # not after the last closed one: never sent
    rt.ingest_closed(SID, candles(exchange, T + 60))  # one subscription, one order: what came before is done
    ws.until(lambda m: m["type"] == "candle_closed" and m["candle"]["candle_time"] == T + 60)
    forming = {**old, "candle_time": NOW // 60 * 60}
    for k in range(20):
        rt.ingest_forming(SID, {**forming, "close": 1.0, "volume": 1.0 + k})
    rt.ingest_closed(SID, candles(exchange, T + 120))
    ws.until(lambda m: m["type"] == "candle_closed" and m["candle"]["candle_time"] == T + 120)
    msgs = ws.received[seen:]
    assert [m["type"] for m in msgs] == ["candle_closed", "candle_forming", "candle_closed"]  # throttled
    assert msgs[1]["candle"] == {**forming, "volume": 1.0}  # the first update only
    assert rt.store.head_time(BTC_ID) == T + 120  # the forming candle was never persisted


def test_token_required_on_the_websocket(served, exchange):
    rt = served(api_token="s3cret-token-value")
    ws = served.client(rt)
    msg = ws.recv(3)
    assert msg["type"] == "error" and msg["code"] == "unauthorized"
    ok = served.client(rt, token="s3cret-token-value")
    assert ok.subscribe(SID)["type"] == "subscribed"


def test_a_client_dropped_for_a_full_queue_never_blocks_publishing(served, exchange, monkeypatch):
    """The drop path: a client whose outgoing queue is full is dropped while candles keep being published;
    every publish returns and the other clients get everything."""
    from tradecanvas_ext.hub import candle_hub

    monkeypatch.setattr(candle_hub, "MAX_PENDING_BYTES", 8192)  # ~50 candle_closed, 3 batches of 20
    rt = served()
    base = T - 400 * TF
    rt.store.upsert_closed(BTC_ID, candles(exchange, base))
    release = threading.Event()
    real_connect = rt.hub.connect

    def connect_stuck_first(send, close=None, bell=None):
        """The first socket never drains after its subscribe reply: its writer blocks in send."""
        passed = []

        def stuck_send(text):
            if passed:
                release.wait(30)
            passed.append(text)
            send(text)

        monkeypatch.setattr(rt.hub, "connect", real_connect)
        return real_connect(stuck_send, close, bell)

    monkeypatch.setattr(rt.hub, "connect", connect_stuck_first)
    try:
        stuck = served.client(rt)
        assert stuck.subscribe(SID, since=base)["type"] == "subscribed"  # 20 candle_closed per batch
        good = served.client(rt)
        assert good.subscribe(SID, since=base, supports_batch=True)["type"] == "subscribed"  # 1 per batch
        assert rt.hub.client_count == 2
        last = base + 10 * 20 * TF

        for k in range(10):  # the good client reads each batch before the next: it is never 8 KiB behind
            rows = exchange.candles("BTC/USDT", "1m", base + (20 * k + 1) * TF, base + 20 * (k + 1) * TF)
            publisher = threading.Thread(target=rt.ingest_closed, args=(SID, rows), daemon=True)
            publisher.start()
            publisher.join(20)
            assert not publisher.is_alive(), "publishing blocked behind the dropped client"
            good.until(lambda m, t=rows[-1][0]: m.get("candles", [{}])[-1].get("candle_time") == t)
        assert check_guarantee(good.received, SID, TF, base) == list(range(base + TF, last + TF, TF))
        deadline = time.monotonic() + 10
        while rt.hub.client_count != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rt.hub.client_count == 1  # the stuck one was dropped, the good one is still served
    finally:
        release.set()


# ---- client-triggered repairs share one budget (issue 12) ---------------------------------------------
HOLE = (T - 9 * TF, T - TF)  # stored: T-20tf .. T-10tf and T .. T+5tf; missing in between
OLD_SINCES = [T - (10 - k) * TF for k in range(8)]  # 8 different cursors inside or before the hole


class GatedGap:
    """The backfill service's gap repair, the first call held at a gate the test opens."""

    def __init__(self, rt, monkeypatch):
        self.real, self.calls = rt.backfill.backfill_gap, []
        self.held, self.release = threading.Event(), threading.Event()
        monkeypatch.setattr(rt.backfill, "backfill_gap", self)

    def __call__(self, series_id, expected_next_time, actual_time):
        self.calls.append((expected_next_time, actual_time))
        if len(self.calls) == 1:
            self.held.set()
            assert self.release.wait(30), "the test never opened the gate"
        return self.real(series_id, expected_next_time, actual_time)


def store_with_a_hole(rt, exchange):
    rt.store.upsert_closed(BTC_ID, exchange.candles("BTC/USDT", "1m", T - 20 * TF, HOLE[0] - TF))
    rt.store.upsert_closed(BTC_ID, exchange.candles("BTC/USDT", "1m", HOLE[1] + TF, T + 5 * TF))
    exchange.reset_counts()


def klines_starts(exchange) -> list[int]:
    """The first candle time each klines request asked for."""
    return [int(p["startTime"]) // 1000 for path, p in exchange.requests if path.endswith("klines")]


@pytest.mark.parametrize("first, queue, fetched_from", [
    # the oldest cursor first: its recovery covers everyone else's
    (0, [(HOLE[0], HOLE[1], 8)], [HOLE[0]]),
    # the newest first: the seven others wait in one queued recovery, which re-checks the store first
    # and fetches only what the first one did not
    (7, [(T - 2 * TF, HOLE[1], 1), (HOLE[0], HOLE[1], 7)], [T - 2 * TF, HOLE[0]]),
])
def test_eight_old_sinces_on_one_hole_share_one_recovery(served, exchange, monkeypatch, first, queue,
                                                         fetched_from):
    rt = served()
    store_with_a_hole(rt, exchange)
    gate = GatedGap(rt, monkeypatch)
    order = [first, *(k for k in range(8) if k != first)]
    clients = {k: served.client(rt) for k in order}
    try:
        clients[first].subscribe(SID, since=OLD_SINCES[first])
        assert gate.held.wait(10)  # the first recovery is in flight while the seven others ask for theirs
        for k in order[1:]:
            clients[k].subscribe(SID, since=OLD_SINCES[k])
        wait_for(lambda: sum(w for *_, w in rt.hub.recovery_queue(BTC_ID)) == 8, 10, interval=0.02,
                 what="all eight subscriptions waiting for a recovery")
        waiting = rt.hub.recovery_queue(BTC_ID)
    finally:
        gate.release.set()
    for k, ws in clients.items():
        ws.until(lambda m: m.get("candle", {}).get("candle_time") == T + 5 * TF)
        assert check_guarantee(ws.received, SID, TF, OLD_SINCES[k]) == list(
            range(OLD_SINCES[k] + TF, T + 6 * TF, TF))  # the hole's candles, in order, none twice, no gap
    # one request per recovery, nothing fetched twice; each page starts at the candle before its hole (the
    # stored neighbour, so one answer sees an outage there from both sides: issue 13)
    assert klines_starts(exchange) == [t - TF for t in fetched_from]
    assert rt.hub.recoveries_started == len(queue) and len(gate.calls) == len(queue)
    assert waiting == queue
    assert rt.hub.recovery_queue(BTC_ID) == []


@pytest.mark.parametrize("how", ["unsubscribe", "disconnect"])
def test_a_queued_recovery_for_a_subscription_that_is_gone_never_reaches_the_exchange(
        served, exchange, monkeypatch, how):
    rt = served()
    store_with_a_hole(rt, exchange)
    gate = GatedGap(rt, monkeypatch)
    stays, goes = served.client(rt), served.client(rt)
    try:
        stays.subscribe(SID, since=T - 3 * TF)  # recovers [T-2tf, T-tf], held at the gate
        assert gate.held.wait(10)
        goes.subscribe(SID, since=HOLE[0] - TF)  # needs [HOLE[0], T-tf]: queued behind the first
        wait_for(lambda: rt.hub.recovery_queue(BTC_ID) == [(T - 2 * TF, HOLE[1], 1), (HOLE[0], HOLE[1], 1)],
                 10, interval=0.02, what="the second recovery queued")
        if how == "unsubscribe":
            goes.send({"type": "unsubscribe", "series_id": SID})
        else:
            goes.close()
        wait_for(lambda: rt.hub.subscription_count(BTC_ID) == 1, 10, interval=0.02, what="the subscription gone")
    finally:
        gate.release.set()
    stays.until(lambda m: m.get("candle", {}).get("candle_time") == T + 5 * TF)
    assert check_guarantee(stays.received, SID, TF, T - 3 * TF) == list(range(T - 2 * TF, T + 6 * TF, TF))
    wait_for(lambda: rt.hub.recovery_queue(BTC_ID) == [], 10, interval=0.02, what="the queue to empty")
    assert gate.calls == [(T - 2 * TF, T)]  # the queued one did nothing
    assert exchange.request_count("klines") == 1
    assert rt.store.holes(BTC_ID, HOLE[0], T - 3 * TF)  # and nothing fetched it


def test_the_same_range_is_not_fetched_again_within_the_cooldown(served, exchange, clock):
    rt = served(backfill_cooldown_s=30.0)
    store_with_a_hole(rt, exchange)
    exchange.faults.http_error(400, n=None)  # the exchange refuses: the hole stays, no void is learned
    since = HOLE[0] - TF

    def subscriber():
        ws = served.client(rt)
        ws.subscribe(SID, since=since)
        ws.until(lambda m: m.get("candle", {}).get("candle_time") == T + 5 * TF)
        assert events(ws.received)[0] == ("gap", HOLE[0], T, 9, "unrecovered")
        check_guarantee(ws.received, SID, TF, since)
        ws.close()

    subscriber()
    tried = exchange.request_count("klines")
    assert tried >= 1
    clock.advance(29)  # within the cooldown (runtime clock), counted from the end of the repair
    subscriber()
    assert exchange.request_count("klines") == tried
    clock.advance(1)  # the cooldown is over: the range is tried again
    subscriber()
    assert exchange.request_count("klines") == 2 * tried
    assert rt.hub.recoveries_started == 3
