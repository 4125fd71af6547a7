"""`tradecanvas serve`: the chart server next to a bot (or alone): store, HTTP + WebSocket, startup sync,
and a live tail from the exchange. Runs until SIGINT / SIGTERM."""
from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)


def serve(settings, poll_interval_s: float = 5.0, ready=None) -> int:
    from ..backfill.live_poller import LivePoller
    from ..runtime import Runtime

    rt = Runtime(settings).start(serve=True)  # with enable_startup_kline_sync on, the sync runs in the background
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"tradecanvas serving {len(rt.series_ids)} series at {rt.url} "
          f"(WebSocket {rt.url.replace('http', 'ws', 1)}/ws/market)", flush=True)
    poller = LivePoller(rt, interval_s=poll_interval_s).start()
    if ready is not None:
        ready(rt)
    try:
        stop.wait()
    finally:
        poller.stop()
        rt.stop()
    return 0
