"""The emulator in a child process (`EmulatorProcess`, what the backfill bench times against) answers what the
in-process `ExchangeEmulator` of the same seed, dialect and time answers, counts its requests over the pipe,
and its oracle is that truth; and the emulator's byte-built JSON pages (`dialect.json_array`, Hyperliquid's
candleSnapshot) are exactly json.dumps of the rows."""
from __future__ import annotations

import json
import os
import urllib.request

import ccxt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradecanvas_ext.testing import EmulatorProcess, ExchangeEmulator, ManualClock
from tradecanvas_ext.testing.emulator import dialect as d
from tradecanvas_ext.testing.emulator.faults import FaultDecision

NOW = 1_700_006_400 + 30  # the 1m candle at NOW - 30 is forming
SYMBOL = {"binance": "BTC/USDT", "kraken": "BTC/USD", "hyperliquid": "BTC/USDC:USDC", "coinbase": "BTC/USD"}


def exchange(emu, dialect: str):
    return getattr(ccxt, dialect)({**emu.ccxt_config(), "enableRateLimit": False, "timeout": 10_000})


def as_truth(rows):
    return [(r[0] // 1000, *r[1:6]) for r in rows]


def raw_post_or_get(url: str, dialect: str, start: int, end: int) -> bytes:
    """The emulator's raw candle answer (no ccxt), to compare the two emulators byte for byte."""
    if dialect == "hyperliquid":
        body = json.dumps({"type": "candleSnapshot", "req": {"coin": "BTC", "interval": "1m",
                                                             "startTime": start * 1000, "endTime": end * 1000}})
        req = urllib.request.Request(url + "/info", data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    else:
        req = urllib.request.Request(f"{url}/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={start * 1000}"
                                     f"&endTime={end * 1000}&limit=1000")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


@pytest.mark.parametrize("dialect", ["binance", "kraken", "hyperliquid", "coinbase"])
def test_child_process_answers_the_in_process_emulators_candles_and_counts(dialect):
    symbol = SYMBOL[dialect]
    local = ExchangeEmulator(seed=7, clock=ManualClock(NOW), dialect=dialect).start()
    try:
        with EmulatorProcess(now=NOW, seed=7, dialect=dialect, listings={symbol.split(":")[0]: NOW - 600 * 60}
                             ) as child:
            assert child.running and child.pid != os.getpid() and child.url != local.url
            assert child.ccxt_config() == local.dialect.ccxt_config(child.url)
            ex_child, ex_local = exchange(child, dialect), exchange(local, dialect)
            ex_child.load_markets()
            ex_local.load_markets()
            assert sorted(ex_child.markets) == sorted(ex_local.markets)
            assert child.request_count() > 0
            child.reset_counts()
            assert child.request_count() == child.request_count("klines") == 0
            since = (NOW - 30 - 300 * 60) * 1000
            got = ex_child.fetch_ohlcv(symbol, "1m", since=since, limit=300)
            # the child has the listing 600 minutes back, the in-process one none: inside it, the same candles
            assert got == ex_local.fetch_ohlcv(symbol, "1m", since=since, limit=300)
            oracle = child.oracle()
            assert not oracle.running
            truth = oracle.candles(symbol, "1m", since // 1000, NOW)
            assert as_truth(got)[:len(truth)] == truth and len(truth) >= 295
            assert child.request_count("klines") == 1 and child.request_count() == 1
            assert child.requests[0][0] == local.requests[-1][0]
            # before the child's listing: nothing, where the in-process emulator (no listing) serves candles
            assert oracle.candles(symbol, "1m", NOW - 700 * 60, NOW - 601 * 60) == []
            assert local.candles(symbol, "1m", NOW - 700 * 60, NOW - 601 * 60) != []
            if dialect in ("binance", "hyperliquid"):
                a, b = NOW - 30 - 200 * 60, NOW - 90
                assert raw_post_or_get(child.url, dialect, a, b) == raw_post_or_get(local.url, dialect, a, b)
            child.reset_counts()
            child.set_time(NOW + 60)
            assert child.now == NOW + 60 and oracle.clock() == NOW + 60
            later = ex_child.fetch_ohlcv(symbol, "1m", since=(NOW - 30) * 1000, limit=5)
            assert as_truth(later)[0] == oracle.candles(symbol, "1m", NOW - 30, NOW - 30)[0]
            assert child.request_count("klines") == 1
        assert not child.running
        child.stop()  # idempotent
        with pytest.raises(RuntimeError):
            child.request_count()
    finally:
        local.stop()


def test_child_process_bad_arguments_fail_in_the_caller():
    with pytest.raises(ValueError):
        EmulatorProcess(now=NOW, dialect="nosuchexchange")
    with pytest.raises(ValueError):
        EmulatorProcess(now=NOW, max_requests_per_second=0)


def test_child_process_rate_limit_is_the_childs():
    with EmulatorProcess(now=NOW, seed=2, max_requests_per_second=2) as child:
        statuses = []
        for _ in range(4):
            try:
                with urllib.request.urlopen(child.url + "/api/v3/ping", timeout=5) as resp:
                    statuses.append(resp.status)
            except urllib.error.HTTPError as err:
                statuses.append(err.code)
        assert statuses[:2] == [200, 200] and 429 in statuses[2:]
        assert child.request_count("ping") == 4


# ---------------------------------------------------------------------------- byte-built JSON text

ints = st.integers(min_value=-(2**62), max_value=2**62)


@settings(max_examples=200, deadline=None)
@given(st.lists(ints, max_size=30))
def test_int_and_decimal_text_are_str_and_fmt_short(values):
    a = np.array(values, dtype=np.int64)
    order = list(range(len(values)))
    assert d.json_array(['"', d.int_text(a), '"'], order) == json.dumps([str(v) for v in values],
                                                                          separators=(",", ":"))
    assert d.json_array(['"', d.decimal_text(a), '"'], order) == json.dumps([d.fmt_short(v) for v in values],
                                                                              separators=(",", ":"))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**53), st.integers(0, 10**15)), max_size=20), st.randoms())
def test_json_array_is_json_dumps_of_the_rows_in_the_given_order(rows, rnd):
    t = np.array([r[0] for r in rows], dtype=np.int64)
    p = np.array([r[1] for r in rows], dtype=np.int64)
    order = [rnd.randrange(len(rows)) for _ in range(len(rows) + 2)] if rows else []
    text = d.json_array(['{"t":', d.int_text(t), ',"s":"a%b\\"","p":"', d.decimal_text(p), '"}'], order)
    dicts = [{"t": rows[i][0], "s": 'a%b"', "p": d.fmt_short(rows[i][1])} for i in order]
    assert text == json.dumps(dicts, separators=(",", ":"))


@pytest.mark.parametrize("fault", [None, "duplicate", "out_of_order"])
@pytest.mark.parametrize("timeframe,tf", [("1m", 60), ("1h", 3600)])
def test_hyperliquid_page_is_json_dumps_of_its_rows(fault, timeframe, tf):
    emu = ExchangeEmulator(seed=4, clock=ManualClock(NOW), dialect="hyperliquid")
    body = {"type": "candleSnapshot", "req": {"coin": "ETH", "interval": timeframe, "startTime": 0,
                                              "endTime": NOW * 1000}}
    decision = FaultDecision(duplicate=fault == "duplicate", out_of_order=fault == "out_of_order")
    status, text, _ = emu.dialect.respond("POST", "info/candleSnapshot", "/info", {}, body, float(NOW), decision, 9)
    mk = emu.dialect.market_of_symbol("ETH/USDC:USDC")
    rows = emu.truth.rows(mk, tf, emu.reach_start(timeframe), NOW, float(NOW))  # the latest 5000, forming incl.
    dicts = [{"t": t * 1000, "T": t * 1000 + tf * 1000 - 1, "s": "ETH", "i": timeframe, "o": d.fmt_short(o),
              "c": d.fmt_short(c), "h": d.fmt_short(h), "l": d.fmt_short(lw), "v": d.fmt_short(v), "n": n}
             for t, o, h, lw, c, v, _, n in d.columns(rows)]
    assert status == 200 and len(dicts) == 5000
    assert text == json.dumps(d.apply_row_faults(dicts, decision, emu.seed, 9), separators=(",", ":"))
