"""Shared-store scale benchmark on one PostgreSQL: startup sync of 150 series by 3 processes (each
configured with 50, and each configured with all 150) vs one process doing all 150 — exchange requests
and wall time — and cross-process live delivery latency (ingest in process A -> WebSocket client on
process B). Prints one JSON line.

Run: TRADECANVAS_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres \
     .venv/bin/python bench/scale_bench.py [--series 150 --candles 1000 --samples 200]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SID_FMT = "binance:spot:{}:1m"


def worker(cfg_json: str, serve: bool) -> int:
    """A runtime in its own process: `sync` runs the startup sync, `ingest` stores candles."""
    from tradecanvas_ext import Runtime, Settings

    rt = Runtime(Settings.from_config(json.loads(cfg_json), env={})).start(serve=serve, startup_sync=False)
    print(json.dumps({"url": rt.url}), flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        if msg["cmd"] == "sync":
            t0 = time.perf_counter()
            out = rt.run_startup_sync()
            print(json.dumps({"wall_s": time.perf_counter() - t0, "synced": out["series_synced"]}), flush=True)
        elif msg["cmd"] == "ingest":
            print(json.dumps({"accepted": rt.ingest_closed(msg["series"], [tuple(msg["candle"])])}), flush=True)
    rt.stop()
    return 0


class Proc:
    def __init__(self, cfg: dict, serve=False):
        self.p = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(cfg)] + (["--serve"] if serve else []),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = json.loads(self.p.stdout.readline())

    def send(self, **m):
        self.p.stdin.write(json.dumps(m) + "\n")
        self.p.stdin.flush()

    def read(self):
        return json.loads(self.p.stdout.readline())

    def close(self):
        self.send(cmd="quit")
        self.p.wait(30)


def reset(url: str) -> None:
    from sqlalchemy import create_engine, text

    e = create_engine(url)
    with e.begin() as c:
        c.execute(text("DROP TABLE IF EXISTS tc_candles, tc_voids, tc_tracker, tc_series, tc_coverage, tc_store_state, tc_write_seq, tc_unavailable, tc_reach CASCADE"))
    e.dispose()


def sync_run(url, emu, groups, candles, tmp) -> dict:
    """Start one process per series group, sync them all at once, return wall time and requests."""
    reset(url)
    procs = [Proc({"user_data_dir": tmp, "tradecanvas": {
        "enabled": True, "db_url": url, "series": g, "startup_sync_target_candles": candles,
        "ccxt_config": emu.ccxt_config()}}) for g in groups]
    emu.reset_counts()
    t0 = time.perf_counter()
    for p in procs:
        p.send(cmd="sync")
    outs = [p.read() for p in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.close()
    return {"processes": len(procs), "wall_s": round(wall, 3), "klines_requests": emu.request_count("klines"),
            "synced": [o["synced"] for o in outs]}


def latency(url, emu, samples, tmp) -> dict:
    from tests.wsclient import WS  # the same small client the tests use

    reset(url)
    sid = SID_FMT.format("BTC/USDT")
    base = {"enabled": True, "db_url": url, "series": [sid], "listen_port": 0,
            "enable_startup_kline_sync": False, "enable_market_gap_backfill": False,
            "ccxt_config": emu.ccxt_config()}
    a = Proc({"user_data_dir": tmp, "tradecanvas": base})
    b = Proc({"user_data_dir": tmp, "tradecanvas": base}, serve=True)
    now = time.time()
    first = int(now // 60) * 60 - (samples + 5) * 60
    rows = emu.candles("BTC/USDT", "1m", first, first + samples * 60)
    ws = WS(b.hello["url"])
    ws.subscribe(sid, since=first - 60)
    lat = []
    for r in rows[:samples]:
        t0 = time.perf_counter()
        a.send(cmd="ingest", series=sid, candle=r)
        ws.until(lambda m, t=r[0]: m.get("candle", {}).get("candle_time") == t)
        lat.append((time.perf_counter() - t0) * 1000)
        a.read()
    ws.close()
    a.close()
    b.close()
    lat.sort()
    return {"samples": len(lat), "p50_ms": round(lat[len(lat) // 2], 2),
            "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worker")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--series", type=int, default=150)
    ap.add_argument("--candles", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.serve)
    import tempfile

    from tradecanvas_ext.testing import ExchangeEmulator

    url = os.environ.get("TRADECANVAS_TEST_PG_URL")
    if not url:
        print("set TRADECANVAS_TEST_PG_URL to a PostgreSQL server", file=sys.stderr)
        return 2
    syms = [f"S{i:03d}/USDT" for i in range(args.series)]
    series = [SID_FMT.format(s) for s in syms]
    emu = ExchangeEmulator(seed=9, symbols=tuple(syms) + ("BTC/USDT",)).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            third = len(series) // 3
            one = sync_run(url, emu, [series], args.candles, tmp)
            disjoint = sync_run(url, emu, [series[:third], series[third:2 * third], series[2 * third:]],
                                args.candles, tmp)
            overlap = sync_run(url, emu, [series, series, series], args.candles, tmp)
            lat = latency(url, emu, args.samples, tmp)
    finally:
        emu.stop()
    print(json.dumps({
        "bench": "scale", "series": args.series, "candles_per_series": args.candles,
        "one_process": one, "three_processes_50_each": disjoint, "three_processes_all_150": overlap,
        "requests_equal": one["klines_requests"] == disjoint["klines_requests"] == overlap["klines_requests"],
        "wall_ratio_3x50_vs_1": round(disjoint["wall_s"] / one["wall_s"], 3),
        "wall_ratio_3x150_vs_1": round(overlap["wall_s"] / one["wall_s"], 3),
        "cross_process_delivery": lat,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
