"""Bot loop cost of the extension: 20 pairs of 1m candles, the sample strategy, extension on vs off; with
`--big`, 100 pairs of 5m candles plus each pair's 1h and 4h as informative pairs (300 series,
bench/informative_strategy.py, which reads nothing from the store: its ratio is the extension's own cost).

Each loop does what freqtrade's does without the network: one new candle per pair goes into the bot's
cache through freqtrade's own `_process_ohlcv_df` (and, when one closed, the informative timeframes' new
candle), then `bot_loop_start` and `analyze` run. "on" has the
store, the server (port 0) and the ingest; "off" has `"enabled": false`. Each mode runs in its own process,
so the memory figure is the extension's extra resident memory (its imports, store, server and hub).
Prints one JSON line.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAIRS = 20
WARM_CANDLES = 1000
LOOPS = 60
NOW0 = 1_700_006_400  # aligned
# 24 x 5m = 2 h from 1 h before a 4h close: both informative timeframes close inside the measured loops
BIG = {"pairs": 100, "timeframe": "5m", "informative": ("1h", "4h"), "loops": 24, "now0": 1_700_002_800}
TF_S = {"1m": 60, "5m": 300, "1h": 3600, "4h": 14400}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_mode(mode: str, big: bool) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from freqtrade.enums import CandleType

    from tests.botkit import (
        ccxt_rows,
        ft_config,
        load_module_from_file,
        make_strategy,
        offline_exchange,
        sample_strategy_class,
    )
    from tradecanvas_ext.bot.glue import BotGlue, replace_process_glue
    from tradecanvas_ext.testing import ManualClock

    n_pairs, timeframe, informative, loops_n, now0 = (
        (BIG["pairs"], BIG["timeframe"], BIG["informative"], BIG["loops"], BIG["now0"]) if big
        else (PAIRS, "1m", (), LOOPS, NOW0))
    tf = TF_S[timeframe]
    tmp = Path(tempfile.mkdtemp(prefix="tc-bot-bench-"))
    pairs = [f"C{i:02d}/USDT" for i in range(n_pairs)]
    clock = ManualClock(now0 + 30)
    replace_process_glue(BotGlue(clock=clock))
    cfg = ft_config(tmp, whitelist=pairs, section={"enabled": mode == "on"})
    cfg["timeframe"] = timeframe
    ex = offline_exchange(cfg)
    ex._startup_candle_count = 0
    cls = (load_module_from_file(Path(__file__).with_name("informative_strategy.py"),
                                 "informative_bench_strategy").InformativeBenchStrategy
           if big else sample_strategy_class())
    strategy = make_strategy(cls, cfg, ex)

    def put(timeframe_: str, times) -> None:
        for k, pair in enumerate(pairs):
            ex._process_ohlcv_df(pair, timeframe_, CandleType.SPOT, ccxt_rows(times, base=100.0 + k),
                                 cache=True, drop_incomplete=False, fetch_start_ms=int(clock() * 1000))

    def refresh(times):
        put(timeframe, times)
        for itf in informative:  # the informative candle that closed with this one, if any
            step = TF_S[itf]
            closed = [t + tf - step for t in times if (t + tf) % step == 0]
            if closed:
                put(itf, closed)

    from tradecanvas_ext.bot.view import TradeCanvasView

    reads: list[float] = []
    plain_candles = TradeCanvasView.annotate

    def timed_candles(self, *a, **k):  # the sample strategy's own read of the store (annotate)
        t = time.perf_counter()
        try:
            return plain_candles(self, *a, **k)
        finally:
            reads.append(time.perf_counter() - t)

    TradeCanvasView.annotate = timed_candles
    put(timeframe, list(range(now0 - WARM_CANDLES * tf, now0, tf)))
    for itf in informative:
        put(itf, list(range(now0 - WARM_CANDLES * TF_S[itf], now0, TF_S[itf])))
    rss_before = rss_mb()
    strategy.ft_bot_start()
    loops, ingests, idle = [], [], []
    for i in range(loops_n):
        clock.advance(tf)
        t0 = time.perf_counter()
        refresh([now0 + i * tf])
        t1 = time.perf_counter()
        strategy.bot_loop_start(current_time=None)
        ingests.append(time.perf_counter() - t1)
        strategy.analyze(pairs)
        loops.append(time.perf_counter() - t0)
        t2 = time.perf_counter()
        strategy.bot_loop_start(current_time=None)  # a loop in which no candle closed (most of them)
        idle.append(time.perf_counter() - t2)
    out = {"median_loop_ms": statistics.median(loops[5:]) * 1000, "mean_loop_ms": statistics.mean(loops[5:]) * 1000,
           "rss_mb": rss_mb(), "rss_before_start_mb": rss_before,
           "ingest_ms": statistics.median(ingests[5:]) * 1000, "mean_ingest_ms": statistics.mean(ingests[5:]) * 1000,
           "idle_loop_start_ms": statistics.median(idle[5:]) * 1000,
           "strategy_reads_ms": sum(reads) / loops_n * 1000}
    from tradecanvas_ext.bot.glue import current_runtime

    rt = current_runtime()
    if rt is not None:
        sid = rt.series_ids[0]
        out["series"] = len(rt.series_ids)
        out["stored_head_ok"] = rt.store.head_time(sid) == now0 + (loops_n - 1) * tf
        for itf in informative:  # the informative series were stored too, up to their last closed candle
            isid = next(s for s in rt.series_ids if s.timeframe == itf)
            step = TF_S[itf]
            out["stored_head_ok"] &= rt.store.head_time(isid) == (now0 + loops_n * tf) // step * step - step
    strategy.ft_bot_cleanup()
    return out


def main() -> None:
    big = "--big" in sys.argv[1:]
    modes = [a for a in sys.argv[1:] if a in ("on", "off")]
    if modes:
        print(json.dumps(run_mode(modes[0], big)))
        return
    res = {}
    for mode in ("off", "on", "off", "on"):  # interleaved, twice: the machine is noisy
        line = subprocess.run([sys.executable, __file__, mode, *(["--big"] if big else [])], capture_output=True,
                              text=True, check=True).stdout.strip().splitlines()[-1]
        res.setdefault(mode, []).append(json.loads(line))
    off_ms = min(r["median_loop_ms"] for r in res["off"])
    on_ms = min(r["median_loop_ms"] for r in res["on"])
    extra_mb = min(r["rss_mb"] for r in res["on"]) - min(r["rss_mb"] for r in res["off"])
    ingest_ms = min(r["ingest_ms"] for r in res["on"])
    reads_ms = min(r["strategy_reads_ms"] for r in res["on"])
    mean_off = min(r["mean_loop_ms"] for r in res["off"])
    mean_on = min(r["mean_loop_ms"] for r in res["on"])
    shape = ({"pairs": BIG["pairs"], "timeframe": BIG["timeframe"], "informative": list(BIG["informative"]),
              "series": res["on"][0].get("series"), "loops": BIG["loops"]} if big else
             {"pairs": PAIRS, "timeframe": "1m", "series": res["on"][0].get("series"), "loops": LOOPS})
    print(json.dumps({"bench": "bot", **shape, "loop_ms_off": round(off_ms, 2),
                      "loop_ms_on": round(on_ms, 2), "ratio_on_vs_off": round(on_ms / off_ms, 3),
                      "mean_loop_ms_off": round(mean_off, 2), "mean_loop_ms_on": round(mean_on, 2),
                      "ratio_mean_on_vs_off": round(mean_on / mean_off, 3),
                      "ingest_ms_per_loop": round(ingest_ms, 2),
                      "sample_strategy_store_reads_ms_per_loop": round(reads_ms, 2),
                      "ratio_ingest_only": round((off_ms + ingest_ms) / off_ms, 3),
                      "ratio_ingest_and_reads": round((off_ms + ingest_ms + reads_ms) / off_ms, 3),
                      "bot_loop_start_ms_no_new_candle": round(min(r["idle_loop_start_ms"] for r in res["on"]), 3),
                      "goal_ratio": 1.05, "extra_rss_mb": round(extra_mb, 1), "goal_extra_rss_mb": 60,
                      "ingest_ok": all(r.get("stored_head_ok") for r in res["on"]),
                      "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
