"""Backfill benchmark: startup sync of 20 series x 1 day of missing 1m candles against the emulator, vs the
floor implied by the emulator's rate limit and ceil(N/1000) klines per series; then the same repair done
by `freqtrade download-data` pointed at the emulator. Prints one JSON line, with the burst floor (the emulator's token bucket) and the
steady-rate floor (every request at the exchange's rate: (requests) / rate).

Run: .venv/bin/python bench/backfill_bench.py [--series 20 --rate 10 --skip-freqtrade]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tradecanvas_ext import Runtime, Settings
from tradecanvas_ext.testing import ExchangeEmulator

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--series", type=int, default=20)
    ap.add_argument("--rate", type=float, default=10.0, help="emulator rate limit, requests per second")
    ap.add_argument("--skip-freqtrade", action="store_true")
    args = ap.parse_args(argv)
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
