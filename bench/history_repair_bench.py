"""History repair benchmark: 20 pairs x 30 days of 1m history files (freqtrade's feather, written through its
data handler from the emulator) with 1 % of the candles cut in holes of 1-50, repaired by `data repair`'s
library path; requests vs the floor (one page per hole, fewer where holes share a page) and wall time vs the
rate-limit floor; side by side `freqtrade download-data --erase` over the same files (the only way freqtrade
itself gets those candles back). Prints one JSON line.

Run: .venv/bin/python bench/history_repair_bench.py [--pairs 20 --days 30 --rate 10 --skip-freqtrade]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one
from tradecanvas_ext.history.files import list_files
from tradecanvas_ext.history.repair import Job, Repair, Window, open_levels, series_for
from tradecanvas_ext.settings import Settings
from tradecanvas_ext.testing import ExchangeEmulator

PAGE = 1000  # binance's klines limit (ccxt's features)


def symbols(n: int) -> list[str]:
    return [f"H{i:02d}/USDT" for i in range(n)]


def klines_cost() -> float:
    import ccxt

    return float(ccxt.binance().api["public"]["get"]["klines"]["cost"])


def cut_holes(n: int, share: float, rng: random.Random) -> list[tuple[int, int]]:
    """Non-overlapping [a, b) row ranges of 1-50 rows covering `share` of n rows, none at the file's ends."""
    want, taken, out = int(n * share), set(), []
    while sum(b - a for a, b in out) < want:
        size = min(rng.randint(1, 50), want - sum(b - a for a, b in out))
        a = rng.randrange(2, n - size - 2)
        if any(i in taken for i in range(a - 1, a + size + 1)):
            continue
        taken.update(range(a, a + size))
        out.append((a, a + size))
    return sorted(out)


def page_floor(holes: list[tuple[int, int]]) -> int:
    """Fewest pages of PAGE consecutive candles covering every hole row (greedy interval cover: optimal)."""
    pages, covered_to = 0, -1
    for a, b in holes:
        start = a
        while start < b:
            if start > covered_to:
                pages += 1
                covered_to = start + PAGE - 1
            start = covered_to + 1
    return pages


def make_files(emu, syms, datadir: Path, start: int, end: int, rng: random.Random) -> tuple[int, int, int]:
    from freqtrade.data.history.datahandlers import get_datahandler
    from freqtrade.enums import CandleType

    handler = get_datahandler(datadir, "feather")
    holes = cut = floor = 0
    for s in syms:
        df = pd.DataFrame(emu.candles(s, "1m", start, end), columns=["t", "open", "high", "low", "close", "volume"])
        df.insert(0, "date", pd.to_datetime(df.pop("t"), unit="s", utc=True))
        ranges = cut_holes(len(df), 0.01, rng)
        drop = [i for a, b in ranges for i in range(a, b)]
        handler.ohlcv_store(s, "1m", df.drop(index=drop).reset_index(drop=True), CandleType.SPOT)
        holes, cut, floor = holes + len(ranges), cut + len(drop), floor + page_floor(ranges)
    return holes, cut, floor


def run_ours(emu, datadir: Path, workdir: Path, rate: float) -> dict:
    cfg = {"exchange": {"name": "binance"}, "user_data_dir": str(workdir), "datadir": str(datadir),
           "tradecanvas": {"db_url": f"sqlite:///{workdir / 'none.sqlite'}",
                           "ccxt_config": {**emu.ccxt_config(), "rateLimit": math.ceil(1000 / rate / klines_cost())}}}
    levels = open_levels(Settings.from_config(cfg, env={}))
    repair = Repair(levels)
    emu.reset_counts()
    t0 = time.perf_counter()
    jobs = [Job(f, series_for(f, "binance", "spot"), str(series_for(f, "binance", "spot")))
            for f in list_files(datadir, "feather", "spot", "binance")]
    reports = repair.run_all(jobs, Window(), False)
    wall = time.perf_counter() - t0
    levels.close()
    return {"wall_s": round(wall, 3), "klines_requests": emu.request_count("klines"),
            "all_requests": emu.request_count(), "filled": sum(r.filled["ccxt"] for r in reports),
            "complete_files": sum(r.complete for r in reports)}


def run_erase(emu, syms, datadir: Path, workdir: Path, start: int, end: int) -> dict:
    override = emu.ccxt_config()
    config = {"exchange": {"name": "binance", "key": "", "secret": "", "only_from_ccxt": True,
                           "ccxt_config": override, "ccxt_async_config": override, "pair_whitelist": syms},
              "stake_currency": "USDT", "dry_run": True, "trading_mode": "spot", "user_data_dir": str(workdir),
              "dataformat_ohlcv": "feather", "pairlists": [{"method": "StaticPairList"}]}
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    (workdir / "ft.json").write_text(json.dumps(config))
    emu.reset_counts()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("freqtrade")), "download-data", "-c", str(workdir / "ft.json"),
         "--userdir", str(workdir), "--datadir", str(datadir), "-t", "1m", "--erase",
         "--timerange", f"{start}-{end}", "--pairs", *syms],
        capture_output=True, text=True, timeout=3600, env={**os.environ, "NO_COLOR": "1"})
    wall = time.perf_counter() - t0
    rows = sum(len(pd.read_feather(f.path)) for f in list_files(datadir, "feather", "spot", "binance"))
    return {"wall_s": round(wall, 3), "klines_requests": emu.request_count("klines"),
            "all_requests": emu.request_count(), "exit_code": proc.returncode, "rows_after": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--rate", type=float, default=10.0, help="emulator rate limit, requests per second")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-freqtrade", action="store_true")
    args = ap.parse_args(argv)
    syms = symbols(args.pairs)
    rng = random.Random(args.seed)
    end = int(time.time() // 86400) * 86400
    start = end - args.days * 86400
    emu = ExchangeEmulator(seed=3, symbols=syms, max_requests_per_second=args.rate).start()  # real clock
    try:
        with tempfile.TemporaryDirectory() as d:
            work = Path(d)
            datadir = work / "data" / "binance"
            datadir.mkdir(parents=True)
            holes, cut, floor = make_files(emu, syms, datadir, start, end - 60, rng)
            erase_dir = work / "erase" / "binance"
            shutil.copytree(datadir, erase_dir)
            ours = run_ours(emu, datadir, work, args.rate)
            # markets once + the floor's pages, at the exchange's steady rate after its burst of `rate`
            floor_s = max(0.0, floor + 1 - args.rate) / args.rate
            steady_floor_s = (floor + 1) / args.rate
            result = {"bench": "history_repair", "pairs": args.pairs, "days": args.days, "rate_limit_rps": args.rate,
                      "holes": holes, "cut_candles": cut, "requests_floor": floor, "ours": ours,
                      "requests_vs_floor": round(ours["klines_requests"] / floor, 3),
                      "floor_s": round(floor_s, 3), "steady_floor_s": round(steady_floor_s, 3),
                      "wall_vs_floor": round(ours["wall_s"] / floor_s, 3) if floor_s else None,
                      "wall_vs_steady_floor": round(ours["wall_s"] / steady_floor_s, 3)}
            if not args.skip_freqtrade:
                ft = run_erase(emu, syms, erase_dir, work / "ft", start, end)
                result["freqtrade_download_data_erase"] = ft
                result["requests_ratio_erase_vs_ours"] = round(ft["klines_requests"] / max(1, ours["klines_requests"]), 3)
                result["wall_ratio_erase_vs_ours"] = round(ft["wall_s"] / ours["wall_s"], 3)
    finally:
        emu.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
