"""Client frames in, server messages out (contract section 4). Pure: parsing never raises past here."""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..domain import MAX_TIME, CandleBatch, SeriesId
from ..series_ids import parse_series_id

MAX_FRAME_CHARS = 64 * 1024
MAX_BATCH = 1000


class FrameError(ValueError):
    def __init__(self, code: str, message: str, series_id: str | None = None):
        super().__init__(message)
        self.code, self.message, self.series_id = code, message, series_id


@dataclass(frozen=True)
class Subscribe:
    series: SeriesId
    since: int | None
    supports_batch: bool


@dataclass(frozen=True)
class Unsubscribe:
    series: SeriesId


@dataclass(frozen=True)
class Ping:
    pass


def parse_frame(text) -> Subscribe | Unsubscribe | Ping:
    """One client frame -> a command, or FrameError(code bad_request) naming what is wrong."""
    if not isinstance(text, str):
        raise FrameError("bad_request", "binary frames are not supported; send JSON text")
    if len(text) > MAX_FRAME_CHARS:
        raise FrameError("bad_request", f"frame too large (over {MAX_FRAME_CHARS} characters)")
    try:
        msg = json.loads(text)
    except json.JSONDecodeError:
        raise FrameError("bad_request", "frame is not valid JSON") from None
    except RecursionError:
        raise FrameError("bad_request", "frame nests too deeply") from None
    except ValueError:  # an integer of more digits than Python converts
        raise FrameError("bad_request", "frame holds a number too long to read") from None
    if not isinstance(msg, dict):
        raise FrameError("bad_request", "frame must be a JSON object")
    kind = msg.get("type")
    if kind == "ping":
        return Ping()
    if kind not in ("subscribe", "unsubscribe"):
        raise FrameError("bad_request", f"unknown type {kind!r}; expected subscribe, unsubscribe or ping")
    raw_sid = msg.get("series_id")
    if not isinstance(raw_sid, str):
        raise FrameError("bad_request", "series_id must be a string")
    try:
        sid = parse_series_id(raw_sid)
    except ValueError as exc:
        raise FrameError("bad_request", str(exc), raw_sid) from None
    if kind == "unsubscribe":
        return Unsubscribe(sid)
    since = msg.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= MAX_TIME):
        shown = json.dumps(since)
        shown = shown if len(shown) <= 40 else shown[:40] + "..."
        raise FrameError("bad_request", f"since must be an integer from 0 to {MAX_TIME}, got {shown}", raw_sid)
    batch = msg.get("supports_batch", False)
    if not isinstance(batch, bool):
        raise FrameError("bad_request", "supports_batch must be true or false", raw_sid)
    return Subscribe(sid, since, batch)


def subscribed(series: str, since: int | None, head: int | None) -> dict:
    return {"type": "subscribed", "series_id": series, "since": since, "head_time": head}


def closed(series: str, candle: dict) -> dict:
    return {"type": "candle_closed", "series_id": series, "candle": candle}


def batch(series: str, candles: list[dict]) -> dict:
    return {"type": "candles_batch", "series_id": series, "candles": candles}


def forming(series: str, candle: dict) -> dict:
    return {"type": "candle_forming", "series_id": series, "candle": candle}


def gap(series: str, expected_next: int, actual: int, tf: int, reason: str) -> dict:
    return {"type": "gap", "series_id": series, "expected_next_time": expected_next, "actual_time": actual,
            "missing_candles": (actual - expected_next) // tf, "reason": reason}


def error(code: str, message: str, series_id: str | None = None) -> dict:
    out = {"type": "error", "code": code, "message": message}
    if series_id is not None:
        out["series_id"] = series_id
    return out


class Outbox:
    """Collects one subscription's messages in order: runs of consecutive candles become one
    `candles_batch` (at most 1000) for batch clients; a gap ends a run."""

    def __init__(self, series: str, tf: int, supports_batch: bool):
        self.series, self.tf, self.supports_batch = series, tf, supports_batch
        self.messages: list[dict] = []
        self._run: list[dict] = []

    def candles(self, b: CandleBatch) -> None:
        for d in b.to_dicts():
            self.candle(d)

    def candle(self, d: dict) -> None:
        if not self.supports_batch:
            self.messages.append(closed(self.series, d))
            return
        if self._run and (d["candle_time"] != self._run[-1]["candle_time"] + self.tf
                          or len(self._run) >= MAX_BATCH):
            self.flush()
        self._run.append(d)

    def add(self, message: dict) -> None:
        self.flush()
        self.messages.append(message)

    def flush(self) -> None:
        if not self._run:
            return
        if len(self._run) == 1:
            self.messages.append(closed(self.series, self._run[0]))
        else:
            self.messages.append(batch(self.series, self._run))
        self._run = []

    def take(self) -> list[dict]:
        self.flush()
        out, self.messages = self.messages, []
        return out
