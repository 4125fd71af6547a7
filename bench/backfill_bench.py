"""Backfill benchmark: startup sync of 20 series x 1 day of missing 1m candles against the emulator, vs the
floor implied by the emulator's rate limit and ceil(N/1000) klines per series; then the same repair done
by `freqtrade download-data` pointed at the emulator. Prints one JSON line, with the burst floor (the emulator's token bucket) and the
steady-rate floor (every request at the exchange's rate: (requests) / rate).

With `--dialect NAME` (or `all`) instead: per emulator dialect, the repair of N missing 1m candles of one
series through real ccxt (CcxtSource, the one range walk) at the emulator's rate limit, one JSON line each:
requests vs ceil(N / the page limit the walk uses there), wall time vs the steady-rate floor (requests / rate).
The emulator runs in its own process (`EmulatorProcess`), as the remote exchange it stands for: building and
serialising its pages does not hold this process's GIL while ccxt parses (the truth it is compared with is an
unstarted emulator of the same seed, dialect and time here). Each dialect's repair is run `--repeat K` times
(default 3), each on fresh state (a new ccxt object, pool and CcxtSource, the emulator's counts reset and its
bucket refilled, the previous repeats' garbage collected before the clock starts); the line reports the
median wall of the K (`walls_s`: all of them) and its ratio to the floor — the median of K runs is the usual
way to report a wall time that one-off pauses (a first call, the machine) would otherwise decide. Requests must
equal ceil(N / page) on every repeat: `requests` is their maximum, `requests_each` each.

Run: .venv/bin/python bench/backfill_bench.py [--series 20 --rate 10 --skip-freqtrade] [--dialect all [--repeat 3]]
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tradecanvas_ext import Runtime, Settings
from tradecanvas_ext.domain import Hole, SeriesId
from tradecanvas_ext.sources.base import SourceResult
from tradecanvas_ext.sources.ccxt_source import CcxtSource, ExchangePool, price_params
from tradecanvas_ext.sources.exchange_facts import ExchangeFacts
from tradecanvas_ext.testing import EmulatorProcess, ExchangeEmulator, ManualClock

DAY = 1440


def symbols(n: int) -> list[str]:
    return [f"C{i:02d}/USDT" for i in range(n)]


def klines_cost() -> float:
    import ccxt

    return float(ccxt.binance().api["public"]["get"]["klines"]["cost"])


def run_ours(emu: ExchangeEmulator, syms: list[str], rate: float, workdir: Path) -> dict:
    cfg = {"user_data_dir": str(workdir), "tradecanvas": {
        "enabled": True, "series": [f"binance:spot:{s}:1m" for s in syms],
        "startup_sync_target_candles": DAY, "db_url": f"sqlite:///{workdir / 'bench.sqlite'}",
        # the exchange's published limit, as a user would set it: ccxt throttles rateLimit x cost per
        # call, and binance's klines cost is 0.4, so this is one klines request per 1/rate seconds
        "ccxt_config": {**emu.ccxt_config(), "rateLimit": math.ceil(1000 / rate / klines_cost())},
    }}
    rt = Runtime(Settings.from_config(cfg, env={})).start(serve=False, startup_sync=False)
    emu.reset_counts()
    t0 = time.perf_counter()
    out = rt.run_startup_sync()
    wall = time.perf_counter() - t0
    retries = rt.backfill.levels["ccxt"].retries
    rt.stop()
    klines = emu.request_count("klines")
    return {"wall_s": round(wall, 3), "klines_requests": klines, "all_requests": emu.request_count(),
            "retries_after_429": retries, "synced": out["series_synced"], "errors": out["series_errors"]}


def run_freqtrade(emu: ExchangeEmulator, syms: list[str], workdir: Path) -> dict:
    url = emu.url + "/api/v3"
    override = emu.ccxt_config()
    config = {
        "exchange": {"name": "binance", "key": "", "secret": "", "only_from_ccxt": True,
                     "ccxt_config": override, "ccxt_async_config": override, "pair_whitelist": syms},
        "stake_currency": "USDT", "dry_run": True, "trading_mode": "spot", "user_data_dir": str(workdir),
        "dataformat_ohlcv": "feather", "pairlists": [{"method": "StaticPairList"}],
    }
    (workdir / "ft.json").write_text(json.dumps(config))
    emu.reset_counts()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("freqtrade")), "download-data", "-c", str(workdir / "ft.json"),
         "--userdir", str(workdir), "-t", "1m", "--days", "1", "--pairs", *syms],
        capture_output=True, text=True, timeout=900, env={**os.environ, "NO_COLOR": "1"})
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 3), "klines_requests": emu.request_count("klines"),
            "all_requests": emu.request_count(), "exit_code": proc.returncode, "url": url}


# Per dialect: (emulator dialect, series, N missing 1m candles, how many candles before the newest closed one
# the hole ends, what bounds N). N is inside what the dialect serves; OKX twice, one hole per endpoint.
NOW = 1_700_006_400 + 30  # the emulator's clock: the 1m candle at NOW - 30 is forming
TF = 60
LATEST = NOW - 30 - TF  # the newest closed 1m candle
DIALECT_RUNS: dict[str, tuple[str, str, int, int, str]] = {
    "binance": ("binance", "binance:spot:BTC/USDT:1m", 3500, 0, "all history served"),
    "binanceusdm": ("binanceusdm", "binanceusdm:futures:BTC/USDT:USDT:1m", 5250, 0, "all history served"),
    "bybit": ("bybit", "bybit:spot:BTC/USDT:1m", 3500, 0, "all history served"),
    "okx-candles": ("okx", "okx:spot:BTC/USDT:1m", 1400, 0,
                    "/market/candles serves only the latest 1440: a recent hole"),
    "okx-history-candles": ("okx", "okx:spot:BTC/USDT:1m", 3500, 3000,
                            "/market/history-candles: a hole older than 1439 bars"),
    "kraken": ("kraken", "kraken:spot:BTC/USD:1m", 719, 0,
               "Kraken serves the latest 720 (the forming one included): 719 closed"),
    "gate": ("gate", "gate:spot:BTC/USDT:1m", 3500, 0, "Gate serves the latest 10000 points"),
    "hyperliquid": ("hyperliquid", "hyperliquid:futures:BTC/USDC:USDC:1m", 4999, 0,
                    "Hyperliquid serves the latest 5000 (the forming one included): 4999 closed"),
    "coinbase": ("coinbase", "coinbase:spot:BTC/USD:1m", 1000, 0, "all history served"),
}


def candle_cost(emu: ExchangeEmulator | EmulatorProcess, sid: SeriesId, start: int, end: int) -> tuple[float, int, float]:
    """ccxt's rate-limiter cost of one candle page of this walk (the class's own table, read from the call
    it makes), the page limit the walk uses for the hole, and the time one such page takes to be answered
    and parsed with ccxt's throttle off (best of 3): what even a single request cannot beat."""
    pool = ExchangePool(emu.ccxt_config(), timeout_ms=10_000)
    try:
        ex = pool.get(sid.exchange, sid.market).exchange
        ex.load_markets()
        facts = ExchangeFacts.of(ex, sid.symbol, sid.market)
        page = facts.page_limit(start, NOW, TF)
        costs: list[float] = []
        measure = ex.calculate_rate_limiter_cost

        def recorded(*args, **kwargs):
            costs.append(float(measure(*args, **kwargs)))
            return costs[-1]

        ex.calculate_rate_limiter_cost = recorded  # the bench's probe only
        last = min(end, start + (page - 1) * TF)
        facts.fetch(ex, sid.symbol, sid.timeframe, start, last, page, NOW, TF, price_params(sid))
        ex.enableRateLimit = False
        answer = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            facts.fetch(ex, sid.symbol, sid.timeframe, start, last, page, NOW, TF, price_params(sid))
            answer = min(answer, time.perf_counter() - t0)
        return costs[0], page, answer
    finally:
        pool.close()


def repair_once(emu: EmulatorProcess, sid: SeriesId, start: int, end: int, n: int, rate: float, cost: float
                ) -> tuple[float, int, int, SourceResult]:
    """One repair of the hole on fresh state (a new ccxt object, pool and CcxtSource; the emulator's counts
    reset and its bucket refilled): (wall seconds, candle requests, all requests, the result)."""
    time.sleep(1.0)  # the emulator's bucket refills after the previous requests
    # the exchange's published rate as a user sets it: ccxt sleeps rateLimit x cost before a call, so
    # this is one candle request per 1/rate seconds
    pool = ExchangePool({**emu.ccxt_config(), "rateLimit": 1000.0 / rate / cost}, timeout_ms=10_000)
    try:
        pool.get(sid.exchange, sid.market).exchange.load_markets()
        time.sleep(max(1.0, 2.0 / rate))  # the markets load (several requests on some) long done, as in a bot
        emu.reset_counts()
        # the garbage of the previous repeats (their ccxt objects, 5000-row pages) collected before the clock
        # starts, not in it: a full collection of this process's heap (ccxt's classes) takes ~0.1 s. GC stays
        # on: what the walk itself allocates is collected inside the clock.
        gc.collect()
        t0 = time.perf_counter()
        res = CcxtSource(pool, ManualClock(NOW)).fetch(sid, [Hole(start, end, n)], NOW)
        wall = time.perf_counter() - t0
    finally:
        pool.close()
    return wall, emu.request_count("klines"), emu.request_count(), res


def run_dialect(name: str, rate: float, repeat: int) -> dict:
    dialect, series, n, back, bound = DIALECT_RUNS[name]
    sid = SeriesId.parse(series)
    end = LATEST - back * TF
    start = end - (n - 1) * TF
    # the exchange in its own process, as the remote exchange it stands for (its page building does not
    # take this process's GIL from ccxt's parse); the truth from an unstarted emulator of the same seed,
    # dialect and time here (the truth is a function of those only)
    emu = EmulatorProcess(now=NOW, seed=5, dialect=dialect, max_requests_per_second=rate).start()
    truth = emu.oracle().candles(sid.symbol, sid.timeframe, start, end)
    try:
        cost, page, answer_s = candle_cost(emu, sid, start, end)
        runs = [repair_once(emu, sid, start, end, n, rate, cost) for _ in range(repeat)]
    finally:
        emu.stop()
    walls = [r[0] for r in runs]
    wall = statistics.median(walls)
    each = [r[1] for r in runs]
    requests = max(each)
    results = [r[3] for r in runs]
    expected = math.ceil(n / page)
    steady = requests / rate
    # requests at the exchange's rate, the first at once, plus the last page's own answer time
    answer_floor = (requests - 1) / rate + answer_s
    return {"bench": "backfill_dialect", "dialect": name, "series": series, "missing": n, "n_bound": bound,
            "page_limit": page, "rate_limit_rps": rate, "ccxt_cost_per_page": cost, "repeat": repeat,
            "requests": requests, "requests_each": each, "all_requests": max(r[2] for r in runs),
            "ceil_n_over_page": expected, "requests_vs_ceil": round(requests / expected, 3),
            "requests_equal_ceil_every_repeat": all(r == expected for r in each),
            "wall_s": round(wall, 3), "walls_s": [round(w, 3) for w in walls],
            "steady_floor_s": round(steady, 3), "wall_vs_steady_floor": round(wall / steady, 3),
            "goal_vs_steady_floor": 1.05, "page_answer_s": round(answer_s, 4),
            "answer_floor_s": round(answer_floor, 3), "wall_vs_answer_floor": round(wall / answer_floor, 3),
            "filled_equals_truth": all(r.candles.rows() == truth for r in results),
            "errors": sorted({str(e) for r in results for e in r.errors}),
            "voids": max(len(r.voids) for r in results), "unavailable": max(len(r.unavailable) for r in results),
            "retries": max(r.retries for r in results), "emulator": "child process"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--series", type=int, default=20)
    ap.add_argument("--rate", type=float, default=10.0, help="emulator rate limit, requests per second")
    ap.add_argument("--skip-freqtrade", action="store_true")
    ap.add_argument("--dialect", action="append", choices=[*DIALECT_RUNS, "all"],
                    help="per-dialect repair through real ccxt (repeatable; 'all' for every one)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="--dialect: repairs per dialect, each on fresh state; the line reports their median")
    args = ap.parse_args(argv)
    if args.dialect:
        if args.repeat < 1:
            ap.error("--repeat must be >= 1")
        names = list(DIALECT_RUNS) if "all" in args.dialect else args.dialect
        for name in names:
            print(json.dumps(run_dialect(name, args.rate, args.repeat)), flush=True)
        return 0
    syms = symbols(args.series)
    # real clock: freqtrade in a subprocess reads the system time too
    emu = ExchangeEmulator(seed=3, symbols=syms, max_requests_per_second=args.rate).start()
    try:
        with tempfile.TemporaryDirectory() as d:
            ours = run_ours(emu, syms, args.rate, Path(d))
        expected_klines = args.series * math.ceil(DAY / 1000)
        # markets load once + the klines, at the exchange's rate after its burst allowance of `rate`
        # requests (the emulator's token bucket): the wall-time floor
        floor_s = max(0.0, expected_klines + 1 - args.rate) / args.rate
        # the steady-rate floor (issue 16): every request at the exchange's rate, no burst
        steady_floor_s = (expected_klines + 1) / args.rate
        result = {"bench": "backfill", "series": args.series, "missing_per_series": DAY,
                  "rate_limit_rps": args.rate, "ours": ours, "expected_klines": expected_klines,
                  "floor_s": round(floor_s, 3), "ours_vs_floor": round(ours["wall_s"] / floor_s, 3),
                  "steady_floor_s": round(steady_floor_s, 3),
                  "ours_vs_steady_floor": round(ours["wall_s"] / steady_floor_s, 3), "goal_vs_steady_floor": 1.05}
        if not args.skip_freqtrade:
            with tempfile.TemporaryDirectory() as d:
                ft = run_freqtrade(emu, syms, Path(d))
            result["freqtrade_download_data"] = ft
            result["requests_ratio_freqtrade_vs_ours"] = round(
                ft["klines_requests"] / max(1, ours["klines_requests"]), 3)
            result["wall_ratio_freqtrade_vs_ours"] = round(ft["wall_s"] / ours["wall_s"], 3)
    finally:
        emu.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
