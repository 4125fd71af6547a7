"""Cross-process live delivery: the candle-write notification (channel and payload, in this one place) and
the PostgreSQL LISTEN thread that hands other processes' writes to a callback. No extra broker.

The NOTIFY is sent by the PostgreSQL dialect inside the writing transaction, so a listener reads what was
committed. A dropped connection is re-established; candles written meanwhile reach clients through the
hub's gap recovery from the store, never silently. The listener holds no lock: `_stop` and `_ready` are
events, the callback runs on the listener's thread.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from sqlalchemy.engine import make_url

from ..domain import SeriesId

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "tc_candles"

OnWrite = Callable[[str, int, int], None]  # (series id text, first_time, last_time) by another origin


def notification_payload(sid: SeriesId, first_time: int, last_time: int, origin: str) -> str:
    return json.dumps({"s": str(sid), "a": int(first_time), "b": int(last_time), "o": origin})


def psycopg_conninfo(db_url: str) -> str:
    return make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)


class NoListener:
    """SQLite: no other process notifies, so there is nothing to listen to."""

    def start(self, wait_s: float = 10.0) -> NoListener:
        return self

    def stop(self) -> None:
        pass


class CandleListener:
    def __init__(self, db_url: str, origin: str, on_write: OnWrite):
        """`on_write(series_id, first_time, last_time)` for writes of OTHER origins; the text is parsed
        by the callback (an edge)."""
        self._conninfo = psycopg_conninfo(db_url)
        self._origin, self._on_write = origin, on_write
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tc-pg-listen", daemon=True)

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
            self._on_write(msg["s"], int(msg["a"]), int(msg["b"]))
        except Exception:
            log.exception("bad candle notification %r", payload[:200])
