"""Cross-process live delivery on PostgreSQL: LISTEN for candle writes of other processes (NOTIFY sent by
CandleStore.upsert_closed in the writing transaction) and hand them to a callback. No extra broker.
A dropped connection is re-established; candles written meanwhile reach clients through the hub's gap
recovery from the store, never silently."""
from __future__ import annotations

import json
import logging
import threading

from sqlalchemy.engine import make_url

from .candle_store import NOTIFY_CHANNEL

log = logging.getLogger(__name__)


def psycopg_conninfo(db_url: str) -> str:
    return make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)


class CandleListener:
    def __init__(self, db_url: str, origin: str, on_write):
        """`on_write(series_id: str, first_time: int, last_time: int)` for writes of OTHER origins."""
        self._conninfo = psycopg_conninfo(db_url)
        self._origin, self._on_write = origin, on_write
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tc-pg-listen", daemon=True)
        self.received = 0

    def start(self, wait_s: float = 10.0) -> CandleListener:
        self._thread.start()
        self._ready.wait(wait_s)  # LISTEN is active before the runtime reports itself started
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._ready.set()
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=0.5):
                            self._dispatch(n.payload)
            except Exception:
                if self._stop.is_set():
                    return
                log.warning("PostgreSQL LISTEN connection lost; reconnecting", exc_info=True)
                self._stop.wait(1.0)

    def _dispatch(self, payload: str) -> None:
        try:
            msg = json.loads(payload)
            if msg.get("o") == self._origin:
                return
            self.received += 1
            self._on_write(msg["s"], int(msg["a"]), int(msg["b"]))
        except Exception:
            log.exception("bad candle notification %r", payload[:200])
