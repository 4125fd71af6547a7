"""The emulator's byte-built JSON pages (`dialect.json_array`, Hyperliquid's candleSnapshot) are exactly
json.dumps of the rows."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradecanvas_ext.testing import ExchangeEmulator, ManualClock
from tradecanvas_ext.testing.emulator import dialect as d
from tradecanvas_ext.testing.emulator.faults import FaultDecision

NOW = 1_700_006_400 + 30  # the 1m candle at NOW - 30 is forming

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
