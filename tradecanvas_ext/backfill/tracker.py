"""Progress tracker (contract section 7): one row per series, persisted in the store, crash-safe.

A `running` row whose owner process is gone reads as `failed` / `interrupted`. `_lock` serialises this
process's read-modify-write of tracker rows; the store makes each write atomic.
"""
from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable

from ..domain import SeriesId
from ..store import TrackerRows

PUBLIC_FIELDS = ("state", "started_at", "updated_at", "finished_at", "start_missing_seconds",
                 "start_missing_candles", "current_missing_seconds", "current_missing_candles",
                 "progress_pct", "reason", "note", "error", "owner")

_INSTANCE = uuid.uuid4().hex[:12]  # tells this process from an earlier one that had the same pid


def this_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_INSTANCE}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_is_gone(owner: str | None, me: str) -> bool:
    """True when the process that wrote a `running` row cannot still be running it."""
    if not owner:
        return True
    if owner == me:
        return False
    try:
        host, pid, instance = owner.rsplit(":", 2)
    except ValueError:
        return True
    if host != socket.gethostname():
        return False  # another machine (shared store): it may well be alive
    if int(pid) == os.getpid():
        return instance != _INSTANCE
    return not _pid_alive(int(pid))


def idle_state() -> dict:
    out = dict.fromkeys(PUBLIC_FIELDS)
    out["state"] = "idle"
    return out


def progress_pct(start_missing: int | None, current_missing: int | None) -> float | None:
    if start_missing is None or current_missing is None:
        return None
    if start_missing <= 0:
        return 100.0
    return round(max(0.0, min(100.0, 100.0 * (start_missing - current_missing) / start_missing)), 2)


class ProgressTracker:
    def __init__(self, rows: TrackerRows, clock: Callable[[], float], owner: str | None = None):
        self._rows = rows
        self._clock = clock
        self.owner = owner or this_owner()
        self._lock = threading.Lock()

    def begin(self, series: SeriesId, missing_seconds: int, missing_candles: int,
              reason: str) -> None:
        now = self._clock()
        with self._lock:
            self._rows.tracker_put(series, {
                "state": "running", "run_id": uuid.uuid4().hex, "owner": self.owner,
                "started_at": now, "updated_at": now, "finished_at": None,
                "start_missing_seconds": int(missing_seconds), "start_missing_candles": int(missing_candles),
                "current_missing_seconds": int(missing_seconds),
                "current_missing_candles": int(missing_candles),
                "progress_pct": progress_pct(missing_candles, missing_candles), "ran_levels": 0,
                "reason": reason, "note": None, "error": None,
            })

    def progress(self, series: SeriesId, missing_seconds: int, missing_candles: int, ran_levels: int) -> None:
        with self._lock:
            row = self._rows.tracker_get(series) or {}
            self._rows.tracker_put(series, {
                "updated_at": self._clock(), "current_missing_seconds": int(missing_seconds),
                "current_missing_candles": int(missing_candles), "ran_levels": int(ran_levels),
                "progress_pct": progress_pct(row.get("start_missing_candles"), missing_candles),
            })

    def finish(self, series: SeriesId, ok: bool, note: str, missing_seconds: int, missing_candles: int,
               ran_levels: int, error: str | None = None) -> None:
        now = self._clock()
        with self._lock:
            row = self._rows.tracker_get(series) or {}
            self._rows.tracker_put(series, {
                "state": "succeeded" if ok else "failed", "updated_at": now, "finished_at": now,
                "current_missing_seconds": int(missing_seconds),
                "current_missing_candles": int(missing_candles),
                "progress_pct": progress_pct(row.get("start_missing_candles"), missing_candles),
                "ran_levels": int(ran_levels), "note": note, "error": error,
            })

    def get(self, series: SeriesId) -> dict:
        """The public view; a `running` row of a dead process shows as failed / interrupted."""
        row = self._rows.tracker_get(series)
        if row is None:
            return idle_state()
        if row["state"] == "running" and owner_is_gone(row.get("owner"), self.owner):
            row = {**row, "state": "failed", "error": "interrupted"}
        return row

    def recover_interrupted(self) -> list[SeriesId]:
        """At start-up: persist failed/interrupted for running rows whose process is gone."""
        fixed = []
        with self._lock:
            for sid, row in self._rows.tracker_all().items():
                if row["state"] == "running" and owner_is_gone(row.get("owner"), self.owner):
                    self._rows.tracker_put(sid, {"state": "failed", "error": "interrupted",
                                                 "updated_at": self._clock()})
                    fixed.append(sid)
        return fixed
