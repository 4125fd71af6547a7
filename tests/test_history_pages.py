"""`data repair`'s requests against the emulator, through its library path: holes are asked by the range
source's own page (one page per hole, fewer where holes share one), files are rewritten while the next
file's requests run, and ranges older than the exchange's reach are recorded in the side-car as unavailable.
"""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from freqtrade.data.history.datahandlers import get_datahandler
from freqtrade.enums import CandleType

from tests.historykit import secs
from tradecanvas_ext.history import plan
from tradecanvas_ext.history import sidecar as sc
from tradecanvas_ext.history.files import list_files, read_frame
from tradecanvas_ext.history.repair import Job, Repair, Window, open_levels, scan, series_for
from tradecanvas_ext.settings import Settings
from tradecanvas_ext.testing import ExchangeEmulator

M = 60


def write_file(datadir: Path, emu, pair: str, start: int, end: int, cut: list[tuple[int, int]]) -> list[tuple]:
    """A 1m feather file of the emulator's candles [start, end] without the inclusive time ranges `cut`;
    returns the full truth."""
    rows = emu.candles(pair, "1m", start, end)
    keep = [r for r in rows if not any(a <= r[0] <= b for a, b in cut)]
    df = pd.DataFrame(keep, columns=["t", "open", "high", "low", "close", "volume"])
    df.insert(0, "date", pd.to_datetime(df.pop("t"), unit="s", utc=True))
    get_datahandler(datadir, "feather").ohlcv_store(pair, "1m", df, CandleType.SPOT)
    return rows


def levels_for(tmp_path: Path, emu, exchange: str):
    cfg = {"exchange": {"name": exchange}, "user_data_dir": str(tmp_path), "datadir": str(tmp_path / exchange),
           "tradecanvas": {"db_url": f"sqlite:///{tmp_path / 'none.sqlite'}",
                           "ccxt_config": {**emu.ccxt_config(), "enableRateLimit": False}}}
    return open_levels(Settings.from_config(cfg, env={}))


def jobs(datadir: Path, exchange: str) -> list[Job]:
    out = []
    for f in list_files(datadir, "feather", "spot", exchange):
        sid = series_for(f, exchange, "spot")
        out.append(Job(f, sid, str(sid)))
    return out


def file_rows(f) -> list[tuple]:
    df = read_frame(f)
    return list(zip(secs(df).tolist(), *(df[c].tolist() for c in ("open", "high", "low", "close", "volume")),
                    strict=True))


@pytest.fixture
def binance():
    e = ExchangeEmulator(seed=7, symbols=("BTC/USDT", "ETH/USDT")).start()  # real clock: files end near now
    yield e
    e.stop()


def test_holes_are_asked_by_the_exchange_page_not_a_fixed_span(tmp_path, binance):
    """Binance pages 1000 candles: two holes 600 candles apart share one request (a 500-candle range would
    need two), a hole of 1500 candles takes two, a far one its own: 4 requests, the page floor."""
    end = int(time.time() // 3600) * 3600 - 3600
    start = end - 6000 * M
    holes = [(start + 100 * M, start + 104 * M), (start + 700 * M, start + 700 * M),
             (start + 2000 * M, start + 3499 * M), (start + 5000 * M, start + 5009 * M)]
    datadir = tmp_path / "binance"
    truth = write_file(datadir, binance, "BTC/USDT", start, end, holes)
    levels = levels_for(tmp_path, binance, "binance")
    try:
        binance.reset_counts()
        [report] = Repair(levels).run_all(jobs(datadir, "binance"), Window(), False)
    finally:
        levels.close()
    assert report.complete and report.errors == []
    assert report.filled["ccxt"] == 5 + 1 + 1500 + 10
    assert binance.request_count("klines") == report.requests == 4
    assert file_rows(report.before.file) == [tuple(r) for r in truth]


def test_each_file_is_rewritten_while_the_next_one_is_fetched(tmp_path, binance, monkeypatch):
    """The first file's rewrite waits for the second file's first request: a repair that wrote each file
    before fetching the next would never get there (the wait gives up, the test fails)."""
    from tradecanvas_ext.history import files as hf

    end = int(time.time() // 3600) * 3600 - 3600
    start = end - 600 * M
    datadir = tmp_path / "binance"
    truth = {p: write_file(datadir, binance, p, start, end, [(start + 50 * M, start + 52 * M)])
             for p in ("BTC/USDT", "ETH/USDT")}
    todo = jobs(datadir, "binance")
    levels = levels_for(tmp_path, binance, "binance")
    ccxt = levels.ccxt
    second_fetching = threading.Event()
    overlapped: list[tuple[str, bool]] = []
    real_write = hf.write_frame

    def write_frame(f, df):
        overlapped.append((f.pair, second_fetching.wait(10.0) if f.pair == "BTC/USDT" else True))
        real_write(f, df)

    class WatchingSource:
        """The real ccxt level, telling when the second file's requests start."""

        name = ccxt.name
        offers = ccxt.offers
        page_limit = ccxt.page_limit

        def fetch(self, series, holes, now=None, deadline=None):
            if series.symbol == "ETH/USDT":
                second_fetching.set()
            return ccxt.fetch(series, holes, now, deadline)

    monkeypatch.setattr(hf, "write_frame", write_frame)
    try:
        reports = Repair(replace(levels, ccxt=WatchingSource())).run_all(todo, Window(), False)
    finally:
        levels.close()
    assert overlapped == [("BTC/USDT", True), ("ETH/USDT", True)]
    assert [r.complete for r in reports] == [True, True]
    for j, r in zip(todo, reports, strict=True):
        assert r.before.file == j.file and file_rows(j.file) == [tuple(x) for x in truth[j.file.pair]]


def test_ranges_older_than_the_reach_go_to_the_side_car_as_unavailable(tmp_path):
    """Kraken serves only its latest 720 candles: a hole older than that is unavailable (no request for
    it), recorded in the side-car with its source and time, shown as unavailable by `gaps` and not asked
    again by the next repair; a recent hole is filled."""
    with ExchangeEmulator(seed=7, dialect="kraken") as kraken:
        end = int(time.time() // M) * M - 10 * M
        start = end - 1500 * M
        old, recent = (start + 100 * M, start + 109 * M), (end - 200 * M, end - 198 * M)
        datadir = tmp_path / "kraken"
        truth = write_file(datadir, kraken, "BTC/USD", start, end, [old, recent])
        levels = levels_for(tmp_path, kraken, "kraken")
        try:
            kraken.reset_counts()
            [report] = Repair(levels).run_all(jobs(datadir, "kraken"), Window(), False)
            assert report.filled["ccxt"] == 3 and report.unavailable_learned == 10
            assert report.complete and report.errors == []
            f = report.before.file
            side = sc.load(f.path, report.before.series_id)
            assert [(u.start, u.end, u.source) for u in side.unavailable] == [(*old, "ccxt")]
            assert side.voids == () and time.time() - side.unavailable[0].checked_at < 300
            again = scan(f, report.before.series_id, Window())
            assert [(g.start, g.end, g.kind) for g in again.gaps] == [(*old, plan.UNAVAILABLE)]
            assert again.to_dict()["unavailable_candles"] == 10 and again.to_dict()["missing_candles"] == 0
            assert file_rows(f) == [tuple(r) for r in truth if not old[0] <= r[0] <= old[1]]
            kraken.reset_counts()
            [second] = Repair(levels).run_all(jobs(datadir, "kraken"), Window(), False)
            assert second.complete and kraken.request_count() == 0 and not second.written
        finally:
            levels.close()


def test_a_binance_3d_file_is_repaired_on_binances_grid(tmp_path, binance):
    """Binance's 3d candles open at t % 3d == 1d (the exchange's grid, not the epoch's): the file's holes
    are found on that grid and filled with exactly the exchange's candles; on the epoch's grid every time
    of the file would look unaligned and no hole could be named."""
    d3 = 3 * 86400
    end = (int(time.time()) - 86400) // d3 * d3 + 86400 - 2 * d3  # two grid steps back: closed
    assert end % d3 == 86400
    start = end - 60 * d3
    cut = [(start + 10 * d3, start + 11 * d3), (start + 40 * d3, start + 40 * d3)]
    rows = binance.candles("BTC/USDT", "3d", start, end)
    assert [r[0] % d3 for r in rows] == [86400] * 61
    keep = [r for r in rows if not any(a <= r[0] <= b for a, b in cut)]
    df = pd.DataFrame(keep, columns=["t", "open", "high", "low", "close", "volume"])
    df.insert(0, "date", pd.to_datetime(df.pop("t"), unit="s", utc=True))
    datadir = tmp_path / "binance"
    get_datahandler(datadir, "feather").ohlcv_store("BTC/USDT", "3d", df, CandleType.SPOT)
    [job] = jobs(datadir, "binance")
    before = scan(job.file, job.series_id, Window())
    assert [(g.start, g.end) for g in before.gaps] == cut
    levels = levels_for(tmp_path, binance, "binance")
    try:
        [report] = Repair(levels).run_all([job], Window(), False)
    finally:
        levels.close()
    assert report.complete and report.errors == [] and report.filled["ccxt"] == 3
    assert file_rows(job.file) == [tuple(r) for r in rows]
