"""Startup sync (contract section 6): bring every configured series up to its latest closed candle.

Series run concurrently in a small pool; the exchange's own rate limit (one throttled ccxt object per
exchange) bounds the request rate, and one series' failure never stops the others.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..domain import SeriesId, expected_latest_closed_time
from ..sources.exchange_facts import late_candle_grace_s

log = logging.getLogger(__name__)

MAX_WORKERS = 4


def sync_one(runtime, sid: SeriesId, target: int | None = None) -> dict:
    """One series up to its latest closed candle over `target` candles (startup_sync_target_candles). In
    the late-candle grace after a close, that is the candle before: the just-closed one may still change,
    so no path stores it yet (it comes live, or with the next read) and the sync does not wait for it."""
    target = runtime.settings.startup_sync_target_candles if target is None else target
    tf = sid.tf_seconds
    target_time = expected_latest_closed_time(runtime.clock() - late_candle_grace_s(tf), tf)
    row = {"series_id": str(sid), "target_time": target_time, "before_head_time": None,
           "after_head_time": None, "covered_candles": 0, "error": None, "status": "errors"}
    try:
        row["before_head_time"] = runtime.store.head_time(sid)
        res = runtime.backfill.ensure_tail_coverage(sid, target, to_time=target_time)
        row["after_head_time"] = runtime.store.head_time(sid)
        row["covered_candles"] = res.covered
        head = row["after_head_time"]
        if head is not None and head >= target_time and (
                res.complete or (not res.errors and _history_starts_inside(runtime, sid, res))):
            row["status"] = "synced"
        elif res.errors:
            row["error"] = "; ".join(res.errors)[:1000]
        else:
            row["status"] = "lagging"
    except Exception as exc:  # one series never stops the others
        log.exception("%s: startup sync failed", sid)
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def _history_starts_inside(runtime, sid: SeriesId, res) -> bool:
    """A pair listed inside the window: the exchange was asked this time (the range level ran) and every
    hole left is before the series' first candle. Its empty answer there is not evidence of a void
    (contract section 5), so the holes stay holes; but the series is up to its latest closed candle with
    nothing missing after its start, which is what "synced" tells a user. Without the exchange's answer
    (ccxt off, a cooldown) the same holes leave it lagging."""
    if "ccxt" not in res.sources:
        return False
    first = runtime.store.first_time(sid)
    return first is not None and all(h.settled or h.end < first for h in res.holes)


def run_startup_kline_sync(runtime, on_result: Callable[[dict], None] | None = None) -> dict:
    started = time.monotonic()
    series = list(runtime.series_ids)
    if not runtime.settings.enable_startup_kline_sync:
        return {"enabled": False, "series_total": len(series), "series_synced": 0, "series_lagging": 0,
                "series_errors": 0, "duration_ms": 0, "series_results": []}
    results: list[dict] = []
    # 1m series first: a derived timeframe can then be rebuilt locally (rollup) instead of fetched.
    waves = [[s for s in series if s.tf_seconds == 60], [s for s in series if s.tf_seconds != 60]]
    for wave in waves:
        if not wave:
            continue
        with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(wave)), thread_name_prefix="tc-sync") as pool:
            for row in pool.map(lambda s: sync_one(runtime, s), wave):
                results.append(row)
                if on_result is not None:
                    on_result(row)
    order = {str(s): i for i, s in enumerate(series)}
    results.sort(key=lambda r: order[r["series_id"]])
    out = {
        "enabled": True, "series_total": len(series),
        "series_synced": sum(r["status"] == "synced" for r in results),
        "series_lagging": sum(r["status"] == "lagging" for r in results),
        "series_errors": sum(r["status"] == "errors" for r in results),
        "duration_ms": int((time.monotonic() - started) * 1000),
        "series_results": results,
    }
    log.info("startup sync: %d series, %d synced, %d lagging, %d errors in %d ms", out["series_total"],
             out["series_synced"], out["series_lagging"], out["series_errors"], out["duration_ms"])
    return out


def format_table(result: dict) -> str:
    """A plain-text table for logs and the CLI."""
    lines = [f"{'series':42} {'status':8} {'before':>11} {'after':>11} {'covered':>8}  error"]
    for r in result.get("series_results", []):
        lines.append(f"{r['series_id']:42} {r['status']:8} {r['before_head_time'] or '-':>11} "
                     f"{r['after_head_time'] or '-':>11} {r['covered_candles']:>8}  {r['error'] or ''}")
    lines.append(f"synced {result.get('series_synced', 0)} / lagging {result.get('series_lagging', 0)} / "
                 f"errors {result.get('series_errors', 0)} in {result.get('duration_ms', 0)} ms")
    return "\n".join(lines)
