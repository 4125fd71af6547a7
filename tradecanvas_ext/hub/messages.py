"""Client frames in, server messages out (contract section 4), each message serialised once (orjson): a
closed candle's `candle_closed` is written once per series, whatever the number of subscribers. Pure:
parsing never raises past here; nothing here does I/O or takes a lock."""
from __future__ import annotations

import json
from dataclasses import dataclass

import orjson

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


@dataclass(frozen=True, slots=True)
class Text:
    """One server message as sent: its JSON (ASCII only, so its length is its size in bytes), its type
    and, for a gap, (series id, reason): what the metrics count."""

    type: str
    text: str
    gap: tuple[str, str] | None = None


def encode(message: dict) -> Text:
    gap = (message["series_id"], message["reason"]) if message["type"] == "gap" else None
    return Text(message["type"], _dumps(message), gap)


def _dumps(obj) -> str:
    """Compact JSON with non-ASCII escaped (the byte bound counts characters); orjson writes UTF-8, so a
    message with non-ASCII text (an error echoing a client's series id) goes through the stdlib."""
    text = orjson.dumps(obj).decode()
    return text if text.isascii() else json.dumps(obj, separators=(",", ":"))


class CandleTexts:
    """A batch of one series' closed candles with their JSON, written on first use and then shared by
    every subscription that sends them: each candle's object and its whole `candle_closed` message.
    No lock: two drains racing on a candle write the same text, and either copy is kept."""

    __slots__ = ("series", "batch", "times", "_objects", "_closed", "_closed_head")

    def __init__(self, series: str, b: CandleBatch):
        self.series, self.batch, self.times = series, b, b.times
        self._objects: list[bytes] | None = None
        self._closed: dict[int, Text] = {}
        self._closed_head = _head("candle_closed", series) + ',"candle":'

    def __len__(self) -> int:
        return len(self.times)

    def objects(self) -> list[bytes]:
        objects = self._objects
        if objects is None:
            # one orjson call for the batch, cut into its objects: a candle's JSON holds numbers only
            whole = orjson.dumps(self.batch.to_dicts())
            objects = self._objects = [] if len(whole) == 2 else [b"{%s}" % o for o in whole[2:-2].split(b"},{")]
        return objects

    def closed(self, i: int) -> Text:
        text = self._closed.get(i)
        if text is None:
            text = self._closed[i] = Text("candle_closed", f"{self._closed_head}{self.objects()[i].decode()}}}")
        return text


def _head(kind: str, series: str) -> str:
    """`{"type":kind,"series_id":series` (no closing brace): the start of a candle message."""
    return _dumps({"type": kind, "series_id": series})[:-1]


def _batch(series: str, objects) -> Text:
    return Text("candles_batch", _head("candles_batch", series) + ',"candles":[' + b",".join(objects).decode()
                + "]}")


class Outbox:
    """Collects one subscription's messages in order: runs of consecutive candles become one
    `candles_batch` (at most 1000) for batch clients; a gap ends a run."""

    def __init__(self, series: str, tf: int, supports_batch: bool):
        self.series, self.tf, self.supports_batch = series, tf, supports_batch
        self.messages: list[Text] = []
        self._run: list[tuple[CandleTexts, int]] = []  # (texts, index) of each candle in the run
        self._run_last = 0  # the run's last candle time

    def candles(self, texts: CandleTexts, lo: int = 0, hi: int | None = None) -> None:
        """texts[lo:hi], in time order, after what was added before."""
        hi = len(texts) if hi is None else hi
        if not self.supports_batch:
            self.messages.extend(texts.closed(i) for i in range(lo, hi))
            return
        times = texts.times
        for i in range(lo, hi):
            t = int(times[i])
            if self._run and (t != self._run_last + self.tf or len(self._run) >= MAX_BATCH):
                self.flush()
            self._run.append((texts, i))
            self._run_last = t

    def add(self, message: dict) -> None:
        self.flush()
        self.messages.append(encode(message))

    def flush(self) -> None:
        if not self._run:
            return
        run, self._run = self._run, []
        if len(run) == 1:
            texts, i = run[0]
            self.messages.append(texts.closed(i))
            return
        self.messages.append(_batch(self.series, (texts.objects()[i] for texts, i in run)))

    def take(self) -> list[Text]:
        self.flush()
        out, self.messages = self.messages, []
        return out
