"""Level 1 source: closed candles from freqtrade's live DataProvider cache, then its stored history files.

It must never pass on a candle freqtrade fabricated to fill a hole, and never raise for freqtrade trouble.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..domain import CandleBatch, Hole, SeriesId, expected_latest_closed_time
from .base import SourceResult
from .rollup import times_in_holes

log = logging.getLogger(__name__)

OHLCV = ("open", "high", "low", "close", "volume")
# The live cache (freqtrade's ohlcv_to_dataframe: to_datetime(ms integers, unit="ms", utc=True)) carries the
# resolution the installed pandas gives that conversion — us under pandas 3 (freqtrade 2026.9), ns under
# pandas 2 (freqtrade 2026.1 requires pandas<3); history files carry [ms, UTC]. Strategies merge our frames
# with the live one, so we hand out its unit.
_FRAME_UNIT = pd.to_datetime(pd.Series([0], dtype="int64"), unit="ms", utc=True).dt.unit
FRAME_DATE_DTYPE = f"datetime64[{_FRAME_UNIT}, UTC]"
_MARKET_CANDLE_TYPE = {"spot": "spot", "futures": "futures"}  # freqtrade CandleType values


def default_candle_type(series: SeriesId) -> str:
    """The series' freqtrade CandleType value: its candle type (mark, index, premiumIndex, funding_rate),
    else its market's own (spot -> SPOT, futures -> FUTURES). History files then carry freqtrade's suffix."""
    return series.candle_type or _MARKET_CANDLE_TYPE[series.market]


def frame_to_batch(df: pd.DataFrame | None, tf: int, now: float | None = None,
                   drop_fillup: bool = False) -> CandleBatch:
    """freqtrade's OHLCV frame -> CandleBatch (ascending, one row per time; the last row wins).

    `date` may be any datetime64 unit (tz-aware UTC, or naive read as UTC). Rows with NaT or a sub-second
    date are dropped; with `now`, rows not closed at `now` (t + tf > now) are dropped. With `drop_fillup`,
    rows shaped like freqtrade's fill-up candles are dropped as unknown: volume == 0 and
    open == high == low == close == the close of the row one timeframe before (or with no row before it).
    Other invalid rows are kept: the caller's validation rejects and counts them.
    Raises ValueError/TypeError for a frame that is not in freqtrade's layout.
    """
    if df is None or len(df) == 0:
        return CandleBatch.empty()
    missing = [c for c in ("date", *OHLCV) if c not in df.columns]
    if missing:
        raise ValueError(f"candle frame lacks column(s) {', '.join(missing)}")
    dates = df["date"]
    if not pd.api.types.is_datetime64_any_dtype(dates.dtype):
        raise TypeError(f"candle frame 'date' must be datetime64, got {dates.dtype}")
    known = dates.notna().to_numpy()
    ms = dates.dt.as_unit("ms").to_numpy(dtype=np.int64, na_value=0)
    # column by column: df.loc[:, cols] costs ~1 ms of pandas overhead even for a 1-row frame (bot loop)
    values = np.column_stack([df[c].to_numpy(dtype=np.float64) for c in OHLCV])
    keep = known & (ms % 1000 == 0)
    t = ms // 1000
    if now is not None:
        keep &= t + tf <= now
    if not keep.all():
        t, values = t[keep], values[keep]
    if len(t) == 0:
        return CandleBatch.empty()
    b = CandleBatch(t, *values.T).dedupe_sorted()
    if drop_fillup and len(b):
        prev_close = np.concatenate(([np.nan], b.close[:-1]))
        prev_is_previous_time = np.concatenate(([True], np.diff(b.times) == tf))
        fillup = (
            (b.volume == 0) & (b.open == b.high) & (b.high == b.low) & (b.low == b.close)
            & prev_is_previous_time & (np.isnan(prev_close) | (b.open == prev_close))
        )
        if fillup.any():
            b = b.take(~fillup)
    return b


def batch_to_frame(batch: CandleBatch) -> pd.DataFrame:
    """CandleBatch -> freqtrade's layout: `date` (FRAME_DATE_DTYPE open time), open..volume (float64).

    Holes stay holes (no rows are invented); the index is a fresh RangeIndex.
    """
    b = CandleBatch.coerce(batch)
    date = pd.to_datetime(b.times, unit="s", utc=True).as_unit(_FRAME_UNIT)
    return pd.DataFrame({
        "date": pd.Series(date, dtype=FRAME_DATE_DTYPE),
        "open": b.open, "high": b.high, "low": b.low, "close": b.close, "volume": b.volume,
    })


def _closed_hole_slots(holes: list[Hole], tf: int, now: float) -> int:
    """How many aligned times inside the holes are closed at `now`."""
    last = expected_latest_closed_time(now, tf)
    return sum((min(h.end, last) - h.start) // tf + 1 for h in holes if h.start <= last)


class _HistoryCache:
    """Whole-file batches keyed by (path, mtime_ns, size): a changed file is read again. Row-bounded LRU."""

    def __init__(self, max_rows: int):
        self.max_rows = max_rows
        self._items: OrderedDict[str, tuple[tuple[int, int], CandleBatch]] = OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()

    def get(self, path: str, stamp: tuple[int, int]) -> CandleBatch | None:
        with self._lock:
            item = self._items.get(path)
            if item is None or item[0] != stamp:
                return None
            self._items.move_to_end(path)
            return item[1]

    def put(self, path: str, stamp: tuple[int, int], batch: CandleBatch) -> None:
        if len(batch) > self.max_rows:
            return
        with self._lock:
            old = self._items.pop(path, None)
            if old is not None:
                self._rows -= len(old[1])
            self._items[path] = (stamp, batch)
            self._rows += len(batch)
            while self._rows > self.max_rows and self._items:
                _, (_, dropped) = self._items.popitem(last=False)
                self._rows -= len(dropped)


class FreqtradeSource:
    """Candles for holes from freqtrade: the DataProvider's live cache first, then history files.

    `provider_getter()` returns the current DataProvider (anything with
    `ohlcv(pair, timeframe, copy=, candle_type=)`) or None; it is called on every fetch, so a reload's
    new provider is picked up. `datadir` is freqtrade's `config["datadir"]` (already ends in the exchange
    name) or None for no history files. `exchange`, when given, is the bot's exchange id: series of other
    exchanges get nothing from this source (no error), so one exchange's candles never fill another's.
    Nothing here is remote: `requests` stays 0 and `deadline` is not needed.
    """

    name = "freqtrade"

    def __init__(self, provider_getter: Callable[[], object | None], datadir: str | Path | None,
                 data_format: str = "feather",
                 candle_type_for: Callable[[SeriesId], str] = default_candle_type,
                 *, exchange: str | None = None, history_cache_rows: int = 1_000_000):
        from freqtrade.data.history.datahandlers.idatahandler import get_datahandlerclass

        try:
            get_datahandlerclass(data_format)
        except Exception as exc:
            raise ValueError(f"freqtrade source: unsupported data_format {data_format!r}: {exc}") from None
        self.provider_getter = provider_getter
        self.datadir = Path(datadir) if datadir is not None else None
        self.data_format = data_format
        self.candle_type_for = candle_type_for
        self.exchange = exchange
        self._cache = _HistoryCache(history_cache_rows)
        self._handler = None

    # ---- the CandleSource protocol ------------------------------------------------------------------
    def offers(self, series: SeriesId) -> bool:
        """A DataProvider is bound, or freqtrade's history file of the series exists."""
        if self.exchange is not None and series.exchange != self.exchange:
            return False
        try:
            if self.provider_getter() is not None:
                return True
            if self.datadir is None:
                return False
            from freqtrade.enums import CandleType

            handler = self._data_handler()
            ct = CandleType.from_string(self.candle_type_for(series))
            return handler._pair_data_filename(handler._datadir, series.symbol, series.timeframe, ct).exists()
        except Exception:
            log.debug("freqtrade: offers(%s) failed", series, exc_info=True)
            return False

    def fetch(self, series: SeriesId, holes: list[Hole], now: float,
              deadline: float | None = None) -> SourceResult:
        result = SourceResult()
        if not holes or (self.exchange is not None and series.exchange != self.exchange):
            return result
        tf = series.tf_seconds
        wanted = _closed_hole_slots(holes, tf, now)
        if wanted <= 0:
            return result
        try:
            candle_type = self.candle_type_for(series)
        except Exception as exc:
            result.errors.append(f"freqtrade: no candle type for {series}: {type(exc).__name__}: {exc}")
            return result

        live = self._from_live_cache(series, candle_type, holes, now, result)
        found = live
        if len(live) < wanted and self.datadir is not None:
            files = self._from_history(series, candle_type, holes, now, result)
            if len(files) and len(live):
                # dedupe_sorted keeps the last row: the live cache wins
                found = CandleBatch.concat([files, live]).dedupe_sorted()
            elif len(files):
                found = files
        result.candles = found
        return result

    # ---- level 1a: the live cache --------------------------------------------------------------------
    def _from_live_cache(self, series: SeriesId, candle_type: str, holes: list[Hole], now: float,
                         result: SourceResult) -> CandleBatch:
        tf = series.tf_seconds
        try:
            provider = self.provider_getter()
            if provider is None:
                # not an error: `tradecanvas serve` and the first moments of a bot have no provider
                return CandleBatch.empty()
            df = provider.ohlcv(series.symbol, series.timeframe, copy=True, candle_type=candle_type)
            batch = frame_to_batch(df, tf, now, drop_fillup=True)
        except Exception as exc:  # a source reports trouble, it never raises
            log.debug("freqtrade live cache for %s failed", series, exc_info=True)
            result.errors.append(f"freqtrade: live cache for {series} failed: {type(exc).__name__}: {exc}")
            return CandleBatch.empty()
        return batch.take(times_in_holes(batch.times, holes))

    # ---- level 1b: stored history files -----------------------------------------------------------------
    def _data_handler(self):
        if self._handler is None:
            from freqtrade.data.history.datahandlers import get_datahandler

            self._handler = get_datahandler(self.datadir, self.data_format)
        return self._handler

    def _from_history(self, series: SeriesId, candle_type: str, holes: list[Hole], now: float,
                      result: SourceResult) -> CandleBatch:
        tf = series.tf_seconds
        try:
            full = self._load_file(series, candle_type, result)
        except Exception as exc:
            log.debug("freqtrade history for %s failed", series, exc_info=True)
            result.errors.append(f"freqtrade: history file for {series} failed: {type(exc).__name__}: {exc}")
            return CandleBatch.empty()
        if full is None or len(full) == 0:
            return CandleBatch.empty()
        return full.take(times_in_holes(full.times, holes) & (full.times + tf <= now))

    def _load_file(self, series: SeriesId, candle_type: str, result: SourceResult) -> CandleBatch | None:
        """The whole file as a batch (not filtered by time), read at most once per call and cached by mtime."""
        from freqtrade.enums import CandleType

        handler = self._data_handler()
        ct = CandleType.from_string(candle_type)
        path = handler._pair_data_filename(handler._datadir, series.symbol, series.timeframe, ct)
        try:
            st = path.stat()
        except FileNotFoundError:
            log.debug("freqtrade: no history file %s", path)  # normal when download-data never ran
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._cache.get(str(path), stamp)
        if cached is not None:
            return cached
        # ohlcv_load swallows read errors (logs them and returns an empty frame): an existing, non-empty
        # file that loads empty is reported as unreadable. fill_missing=False: no fabricated candles.
        df = handler.ohlcv_load(series.symbol, series.timeframe, ct, fill_missing=False,
                                drop_incomplete=False, warn_no_data=False)
        if df is None or len(df) == 0:
            if st.st_size > 0:
                result.errors.append(f"freqtrade: history file {path} is unreadable or holds no candles")
            return None
        batch = frame_to_batch(df, series.tf_seconds, None, drop_fillup=False)
        self._cache.put(str(path), stamp, batch)
        return batch
