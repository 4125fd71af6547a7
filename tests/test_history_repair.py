"""`tradecanvas data gaps | repair` on files made by a real `freqtrade download-data` against the emulator
(1m and 5m, two pairs, one real outage), with holes cut through freqtrade's own data handler, in each of
the four formats: gaps lists exactly the cut holes and the outage; a dry run writes nothing; the repair fills
exactly the cut rows with the exchange's candles, records the outage as a void, changes no other row, and
the file loads without duplicates and backtests; a second repair asks the exchange for nothing.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from freqtrade.data.history import load_pair_history
from freqtrade.enums import CandleType

from tests.botkit import STRATEGY_DIR
from tests.conftest import subprocess_env
from tests.historykit import FREQTRADE, PAIRS, TIMEFRAMES, History, runs, secs, tree
from tradecanvas_ext.testing import ExchangeEmulator

TF = {"1m": 60, "5m": 300}
# rows cut per file (positions [a, b) of the downloaded file): single candles, runs, one of 50
CUTS = {
    ("BTC/USDT", "1m"): [(10, 13), (100, 150), (400, 401)],
    ("ETH/USDT", "1m"): [(150, 151), (650, 655)],
    ("BTC/USDT", "5m"): [(20, 22)],
    ("ETH/USDT", "5m"): [(5, 6), (60, 64), (120, 121)],
}
FORMATS = ["feather", pytest.param("json", marks=pytest.mark.slow),
           pytest.param("jsongz", marks=pytest.mark.slow), pytest.param("parquet", marks=pytest.mark.slow)]


@pytest.fixture
def emu():
    e = ExchangeEmulator(seed=11, symbols=PAIRS).start()  # real clock: freqtrade runs as a subprocess
    yield e
    e.stop()


def file_holes(doc: dict) -> dict[tuple[str, str], list[tuple[int, int, bool]]]:
    return {(f["pair"], f["timeframe"]): [(h["start"], h["end"], h["void"]) for h in f["holes"]]
            for f in doc["files"]}


def outage_range(h: History, tf: int) -> tuple[int, int]:
    """The grid times of the outage (a candle whose open time is inside it does not exist)."""
    first = -(-h.outage_start // tf) * tf
    last = (h.outage_end - 1) // tf * tf
    return first, last


def frame_rows(df) -> list[tuple]:
    return list(zip(secs(df).tolist(), *(df[c].tolist() for c in
                                                                    ("open", "high", "low", "close", "volume")),
                    strict=True))


@pytest.mark.parametrize("data_format", FORMATS)
def test_repair_fills_exactly_the_cut_rows_and_records_the_outage(tmp_path, emu, data_format):
    h = History(tmp_path, emu, data_format)
    h.download()
    original = {(p, tf): h.load(p, tf) for p in PAIRS for tf in TIMEFRAMES}
    for (_pair, tf), df in original.items():  # download-data left the outage as a hole, nothing else
        times = secs(df).to_numpy()
        first, last = outage_range(h, TF[tf])
        assert not ((times >= first) & (times <= last)).any()
        assert len(times) == (times[-1] - times[0]) // TF[tf] + 1 - ((last - first) // TF[tf] + 1)
    cut = {key: h.cut(*key, ranges) for key, ranges in CUTS.items()}

    # gaps: exactly the cut holes and the outage, none of them known yet
    code, gaps = h.tc_json("gaps")
    assert code == 0
    for key, times in cut.items():
        tf = TF[key[1]]
        first, last = outage_range(h, tf)
        want = [(a, b, False) for a, b in runs(times + list(range(first, last + tf, tf)), tf)]
        assert file_holes(gaps)[key] == want, key

    # --dry-run: nothing written, byte for byte (files, no side-car, no scratch)
    before = tree(h.datadir)
    code, dry = h.tc_json("repair", "--dry-run")
    assert code == 0, dry
    assert tree(h.datadir) == before
    assert not (h.datadir / ".tradecanvas").exists()

    # repair: every cut row back with the exchange's values, the outage a void, nothing else touched
    emu.reset_counts()
    code, rep = h.tc_json("repair")
    assert code == 0, json.dumps(rep)[:3000]
    assert emu.request_count("klines") == rep["total"]["requests"] > 0
    for key, df in original.items():
        pair, tf = key
        repaired = h.load(pair, tf)
        assert frame_rows(repaired) == frame_rows(df), key  # identical to the download: every row, every field
        assert not repaired["date"].duplicated().any()
        exch = [c for c in emu.candles(pair, tf, min(cut[key]), max(cut[key])) if c[0] in set(cut[key])]
        got = [r for r in frame_rows(repaired) if r[0] in set(cut[key])]
        assert [r[0] for r in got] == [c[0] for c in exch] == cut[key]
        # the exchange's values, as the format stores them (json keeps 10 decimals, like download-data's rows)
        exact = data_format in ("feather", "parquet")
        assert np.allclose(got, exch, rtol=0 if exact else 1e-12, atol=0 if exact else 1e-10), key
        side = json.loads((h.datadir / ".tradecanvas" / (h.path(pair, tf).name + ".voids")).read_text())
        assert [(v["start"], v["end"], v["source"]) for v in side["voids"]] == [(*outage_range(h, TF[tf]), "ccxt")]
        assert side["series_id"] == f"binance:spot:{pair}:{tf}" and side["unavailable"] == []
        loaded = load_pair_history(pair, tf, h.datadir, fill_up_missing=False, data_format=data_format,
                                   candle_type=CandleType.SPOT)
        assert len(loaded) == len(df) and loaded["date"].is_unique and loaded["date"].is_monotonic_increasing
    files = {(f["before"]["pair"], f["before"]["timeframe"]): f for f in rep["files"]}
    for key, times in cut.items():
        assert files[key]["filled"] == {"store": 0, "rollup": 0, "ccxt": len(times)}
        assert files[key]["still_missing"] == 0 and files[key]["complete"]

    # gaps again: only the outage, now a void; a second repair trusts the side-car (no request, no write)
    code, gaps = h.tc_json("gaps")
    for key in cut:
        assert file_holes(gaps)[key] == [(*outage_range(h, TF[key[1]]), True)]
    after = tree(h.datadir)
    emu.reset_counts()
    code, again = h.tc_json("repair")
    assert code == 0 and emu.request_count("klines") == 0 and again["total"]["requests"] == 0
    assert tree(h.datadir) == after

    # freqtrade backtests on the repaired files
    bt = subprocess.run(
        [FREQTRADE, "backtesting", "--config", str(h.config), "--userdir", str(h.userdir), "--strategy",
         "SampleTradeCanvasStrategy", "--strategy-path", str(STRATEGY_DIR), "--timerange", f"{h.start}-{h.end}",
         "--data-format-ohlcv", data_format, "--export", "none", "--cache", "none"],
        capture_output=True, text=True, timeout=300, env=subprocess_env(), cwd=tmp_path)
    assert bt.returncode == 0, bt.stdout[-3000:] + bt.stderr[-3000:]
    assert "BACKTESTING REPORT" in bt.stdout


def test_repair_takes_what_the_store_holds_first_without_a_request(tmp_path, emu):
    """The bot's store (read-only) fills a hole before the exchange is asked; the store is not written."""
    from tradecanvas_ext.domain import CandleBatch, SeriesId
    from tradecanvas_ext.store import open_store

    h = History(tmp_path, emu, "feather", hours=4)
    h.download()
    original = h.load("BTC/USDT", "1m")
    cut = h.cut("BTC/USDT", "1m", [(30, 40)])
    sid = SeriesId("binance", "spot", "BTC/USDT", "1m")
    store = open_store(f"sqlite:///{tmp_path / 'tc.sqlite'}", "test")
    store.candles.upsert_closed(sid, CandleBatch.from_rows(emu.candles("BTC/USDT", "1m", cut[0], cut[-1])))
    known, count = store.candles.known_series(), store.candles.count_between(sid, 0, 2**40)
    store.close()
    emu.reset_counts()
    code, rep = h.tc_json("repair", "--pairs", "BTC/.*", "-t", "1m")
    assert code == 0
    (f,) = rep["files"]
    assert f["filled"] == {"store": 10, "rollup": 0, "ccxt": 0}
    assert f["requests"] == 1  # the outage only: the store had no word on it
    assert emu.request_count("klines") == 1
    assert frame_rows(h.load("BTC/USDT", "1m")) == frame_rows(original)
    store = open_store(f"sqlite:///{tmp_path / 'tc.sqlite'}", "test", create=False)
    assert store.candles.known_series() == known and store.candles.count_between(sid, 0, 2**40) == count
    store.close()


def test_repair_exits_1_when_a_hole_cannot_be_filled(tmp_path, emu):
    """The exchange failing every request: the hole stays, the reason is printed, exit 1, file unchanged."""
    h = History(tmp_path, emu, "feather", hours=3)
    h.download()
    h.cut("ETH/USDT", "5m", [(3, 5)])
    before = tree(h.datadir)
    emu.faults.http_error(400, n=None, body={"code": -1100, "msg": "Illegal characters found in parameter"})
    out = h.tc("repair", "--pairs", "ETH/USDT", "-t", "5m")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "ETH_USDT-5m.feather" in out.stdout and "error" in out.stdout
    assert tree(h.datadir) == before


@pytest.mark.slow
def test_selectors_follow_freqtrade(tmp_path, emu):
    h = History(tmp_path, emu, "feather", hours=2)
    h.download()
    code, doc = h.tc_json("gaps", "--pairs", "ETH/.*", "--timeframes", "5m")
    assert [(f["pair"], f["timeframe"]) for f in doc["files"]] == [("ETH/USDT", "5m")]
    code, doc = h.tc_json("gaps", "--pairs", ".*/USDT")
    assert sorted((f["pair"], f["timeframe"]) for f in doc["files"]) == sorted(
        (p, t) for p in PAIRS for t in TIMEFRAMES)
    # --timerange (freqtrade's, end exclusive): only the holes inside it
    cut = h.cut("BTC/USDT", "1m", [(10, 12), (80, 85)])
    code, doc = h.tc_json("gaps", "-t", "1m", "--pairs", "BTC/USDT")
    assert [(x["start"], x["end"]) for x in doc["files"][0]["holes"]] == [(cut[0], cut[1]), (cut[2], cut[-1])]
    code, doc = h.tc_json("gaps", "-t", "1m", "--pairs", "BTC/USDT", "--timerange", f"{cut[2] + 120}-{cut[-1]}")
    assert [(x["start"], x["end"]) for x in doc["files"][0]["holes"]] == [(cut[2] + 120, cut[-1] - 60)]
    out = h.tc("gaps", "--pairs", "DOGE/USDT")
    assert out.returncode == 2 and "matches" in out.stderr
    out = h.tc("gaps", "--pairs", "*/USDT")
    assert out.returncode == 2 and "--pairs" in out.stderr
