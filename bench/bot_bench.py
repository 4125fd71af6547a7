"""Bot loop cost of the extension: 20 pairs of 1m candles, the sample strategy, extension on vs off.

Each loop does what freqtrade's does without the network: one new candle per pair goes into the bot's
cache through freqtrade's own `_process_ohlcv_df`, then `bot_loop_start` and `analyze` run. "on" has the
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


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_mode(mode: str) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from freqtrade.enums import CandleType

    from tests.botkit import ccxt_rows, ft_config, make_strategy, offline_exchange, sample_strategy_class
    from tradecanvas_ext.bot.glue import BotGlue, replace_process_glue
    from tradecanvas_ext.testing import ManualClock

    tmp = Path(tempfile.mkdtemp(prefix="tc-bot-bench-"))
    pairs = [f"C{i:02d}/USDT" for i in range(PAIRS)]
    clock = ManualClock(NOW0 + 30)
    replace_process_glue(BotGlue(clock=clock))
    cfg = ft_config(tmp, whitelist=pairs, section={"enabled": mode == "on"})
    ex = offline_exchange(cfg)
    ex._startup_candle_count = 0
    strategy = make_strategy(sample_strategy_class(), cfg, ex)

    def refresh(times):
        for k, pair in enumerate(pairs):
            ex._process_ohlcv_df(pair, "1m", CandleType.SPOT, ccxt_rows(times, base=100.0 + k), cache=True,
                                 drop_incomplete=False, fetch_start_ms=int(clock() * 1000))

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
    refresh(list(range(NOW0 - WARM_CANDLES * 60, NOW0, 60)))
    rss_before = rss_mb()
    strategy.ft_bot_start()
    loops, ingests, idle = [], [], []
    for i in range(LOOPS):
        clock.advance(60)
        t0 = time.perf_counter()
        refresh([NOW0 + i * 60])
        t1 = time.perf_counter()
        strategy.bot_loop_start(current_time=None)
        ingests.append(time.perf_counter() - t1)
        strategy.analyze(pairs)
        loops.append(time.perf_counter() - t0)
        t2 = time.perf_counter()
        strategy.bot_loop_start(current_time=None)  # a loop in which no candle closed (most of them)
        idle.append(time.perf_counter() - t2)
    out = {"median_loop_ms": statistics.median(loops[5:]) * 1000, "rss_mb": rss_mb(),
           "rss_before_start_mb": rss_before, "ingest_ms": statistics.median(ingests[5:]) * 1000,
           "idle_loop_start_ms": statistics.median(idle[5:]) * 1000,
           "strategy_reads_ms": sum(reads) / LOOPS * 1000}
    from tradecanvas_ext.bot.glue import current_runtime

    rt = current_runtime()
    if rt is not None:
        sid = rt.series_ids[0]
        out["stored_head_ok"] = rt.store.head_time(sid) == NOW0 + (LOOPS - 1) * 60
    strategy.ft_bot_cleanup()
    return out


def main() -> None:
    if len(sys.argv) > 1:
        print(json.dumps(run_mode(sys.argv[1])))
        return
    res = {}
    for mode in ("off", "on", "off", "on"):  # interleaved, twice: the machine is noisy
        line = subprocess.run([sys.executable, __file__, mode], capture_output=True, text=True,
                              check=True).stdout.strip().splitlines()[-1]
        res.setdefault(mode, []).append(json.loads(line))
    off_ms = min(r["median_loop_ms"] for r in res["off"])
    on_ms = min(r["median_loop_ms"] for r in res["on"])
    extra_mb = min(r["rss_mb"] for r in res["on"]) - min(r["rss_mb"] for r in res["off"])
    ingest_ms = min(r["ingest_ms"] for r in res["on"])
    reads_ms = min(r["strategy_reads_ms"] for r in res["on"])
    print(json.dumps({"bench": "bot", "pairs": PAIRS, "loops": LOOPS, "loop_ms_off": round(off_ms, 2),
                      "loop_ms_on": round(on_ms, 2), "ratio_on_vs_off": round(on_ms / off_ms, 3),
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
