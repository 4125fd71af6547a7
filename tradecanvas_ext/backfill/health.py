"""Health rules (contract section 3): pure functions, plus a thin service that gathers their inputs."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from ..domain import SeriesId, expected_latest_closed_time, merge_ranges

_RANK = {"green": 0, "yellow": 1, "red": 2}


def settled_after(head: int, expected: int, tf: int, ranges: Iterable[tuple[int, int]]) -> int:
    """How many grid times after `head`, up to `expected`, lie in the given ranges (recorded voids, and the
    young times an exchange that omits no-trade candles answered without): they are not missing."""
    lo, hi = head + tf, expected
    clipped = [(max(s, lo), min(e, hi)) for s, e in ranges if e >= lo and s <= hi]
    return sum((e - s) // tf + 1 for s, e in merge_ranges(clipped, tf))


def health_status(tf: int, head: int | None, now: float, tracker: dict, runtime_now: float,
                  recent_seconds: float, settled: int = 0) -> tuple[str, str]:
    """(status, reason): the contract's rules, first match wins. `settled`: grid times after the head that
    do not count as missing (see `settled_after`)."""
    if head is None:
        return "red", "missing_head"
    expected = expected_latest_closed_time(now, tf)
    if head > expected:
        return "yellow", "head_ahead_of_closed_window"
    if expected - head - settled * tf <= 0:
        return "green", "up_to_date"
    if tracker.get("state") == "running":
        return "yellow", "backfill_running"
    finished = tracker.get("finished_at")
    if (finished is not None and (tracker.get("ran_levels") or 0) > 0
            and runtime_now - finished <= recent_seconds):
        return "yellow", "backfill_recent"
    return "red", "lagging_no_recent_backfill"


def worst(statuses) -> str:
    statuses = list(statuses)
    return max(statuses, key=_RANK.__getitem__) if statuses else "green"


def series_health(series: SeriesId, head: int | None, now: float, tracker: dict, runtime_now: float,
                  recent_seconds: float, settled: int = 0) -> dict:
    tf = series.tf_seconds
    expected = expected_latest_closed_time(now, tf)
    status, reason = health_status(tf, head, now, tracker, runtime_now, recent_seconds, settled)
    lag = missing = missing_candles = None
    if head is not None:
        lag = max(0, int(now) - head)
        missing = max(0, expected - head - settled * tf)
        missing_candles = missing // tf
    return {
        "series_id": str(series), "timeframe_seconds": tf, "now_time": int(now),
        "expected_latest_closed_time": expected, "head_time": head, "lag_seconds": lag,
        "missing_seconds": missing, "missing_candles": missing_candles, "status": status,
        "status_reason": reason, "backfill": {k: v for k, v in tracker.items() if k not in ("run_id",)},
    }


INACTIVE = "inactive"


def as_inactive(row: dict) -> dict:
    """A series the bot no longer trades: listed with its history's figures, status `inactive`, not counted."""
    return {**row, "status": INACTIVE, "status_reason": "not_traded", "active": False}


# Error texts and process names (hostname:pid): left out for a caller without the token (contract section 3).
PRIVATE_TRACKER_FIELDS = ("error", "owner")


def status_only(doc: dict) -> dict:
    """A health document (one series or all) with its status fields only."""
    def one(row: dict) -> dict:
        return {**row, "backfill": {k: v for k, v in row["backfill"].items() if k not in PRIVATE_TRACKER_FIELDS}}

    if "series" not in doc:
        return one(doc)
    out = {**doc, "series": [one(r) for r in doc["series"]]}
    sync = doc.get("startup_sync")
    if sync is not None:
        out["startup_sync"] = {**sync, "series_results": [{k: v for k, v in r.items() if k != "error"}
                                                          for r in sync.get("series_results", ())]}
    return out


def _nothing_answered(sid: SeriesId, now: float) -> list[tuple[int, int]]:
    return []


class HealthService:
    """`answered_without(sid, now)`: the young times an exchange that omits no-trade candles answered
    without (the backfill service's `answered_without`)."""

    def __init__(self, store, tracker, settings, clock,
                 answered_without: Callable[[SeriesId, float], list[tuple[int, int]]] = _nothing_answered):
        self._store, self._tracker, self._settings, self._clock = store, tracker, settings, clock
        self._answered_without = answered_without

    def one(self, sid: SeriesId, now_time: float | None = None) -> dict:
        runtime_now = self._clock()
        now = runtime_now if now_time is None else now_time
        head = self._store.head_time(sid)
        settled = 0
        if head is not None:
            tf = sid.tf_seconds
            expected = expected_latest_closed_time(now, tf)
            if expected > head:
                ranges = [(v.start, v.end) for v in self._store.voids(sid, head + tf, expected)]
                ranges += self._answered_without(sid, runtime_now)
                settled = settled_after(head, expected, tf, ranges)
        return series_health(sid, head, now, self._tracker.get(sid), runtime_now,
                             self._settings.health_backfill_recent_seconds, settled)

    def all(self, series_ids, now_time: float | None = None, startup_sync: dict | None = None,
            inactive=()) -> dict:
        """The active series make the overall status; the inactive ones are listed after them."""
        rows = [{**self.one(s, now_time), "active": True} for s in series_ids]
        status = worst(r["status"] for r in rows)
        rows += [as_inactive(self.one(s, now_time)) for s in inactive]
        return {"status": status, "series": rows, "startup_sync": startup_sync}
