"""`annotate`: mark which rows of a strategy's dataframe are real candles (`tc_real`) and which lie inside a
confirmed exchange outage (`tc_void`). Vectorised: one read of stored times and voids, a join on time.
It adds two columns and never touches another column or row."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..domain import SeriesId
from ..sources.freqtrade_source import default_candle_type as candle_type_of

REAL, VOID = "tc_real", "tc_void"


def epoch_seconds(dates: pd.Series) -> np.ndarray:
    """freqtrade `date` (tz-aware, us or ms) -> int64 unix seconds."""
    return dates.dt.as_unit("s").astype("int64").to_numpy()


def mark(times: np.ndarray, real_times: np.ndarray, voids: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Pure: 1 where `times` is in `real_times`; 1 where it lies inside an inclusive void range."""
    real = np.isin(times, real_times).astype(np.int8)
    void = np.zeros(len(times), dtype=np.int8)
    if len(voids):
        starts = np.array([s for s, _ in voids], dtype=np.int64)
        ends = np.array([e for _, e in voids], dtype=np.int64)
        order = np.argsort(starts)
        starts, ends = starts[order], np.maximum.accumulate(ends[order])
        i = np.searchsorted(starts, times, side="right") - 1  # the last void starting at or before t
        inside = (i >= 0) & (times <= ends[np.clip(i, 0, None)])
        void[inside & (real == 0)] = 1  # a real candle is never in a void
    return real, void


def annotate_frame(df: pd.DataFrame, real_times: np.ndarray, voids: Sequence[tuple[int, int]]) -> pd.DataFrame:
    """Add `tc_real` / `tc_void` to `df` in place (and return it)."""
    if len(df) == 0:
        df[REAL] = pd.Series(dtype="int8")
        df[VOID] = pd.Series(dtype="int8")
        return df
    real, void = mark(epoch_seconds(df["date"]), np.asarray(real_times, dtype=np.int64), voids)
    df[REAL] = real
    df[VOID] = void
    return df


def from_store(store, sid: SeriesId, df: pd.DataFrame) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Stored candle times and voids over the frame's span (two indexed range reads)."""
    if len(df) == 0:
        return np.empty(0, dtype=np.int64), []
    t = epoch_seconds(df["date"])
    first, last = int(t.min()), int(t.max())
    return store.times_between(sid, first, last), [(v.start, v.end) for v in store.voids(sid, first, last)]


def recorded_voids(db_url: str | None, sid: SeriesId, first: int, last: int) -> list[tuple[int, int]]:
    """The voids a repair recorded in the store over [first, last], read without writing anything (no
    table, no series row is created): backtesting's `tc_void`. Empty when the store or the series is not
    there. A SQLite file is opened read-only; another database is only read."""
    from sqlalchemy import and_, select

    from ..store.schema import series as S
    from ..store.schema import voids as V

    engine = _readonly_engine(db_url)
    if engine is None:
        return []
    q = (select(V.c.start_time, V.c.end_time).select_from(V.join(S, S.c.series_key == V.c.series_key))
         .where(and_(S.c.series_id == str(sid), V.c.start_time <= int(last), V.c.end_time >= int(first)))
         .order_by(V.c.start_time))
    try:
        with engine.connect() as conn:
            return [(int(a), int(b)) for a, b in conn.execute(q)]
    except Exception:  # no tables yet, or a store we may not read: no recorded void
        return []


_ENGINES: dict[str, object] = {}  # db_url -> read-only engine (one per process: hyperopt calls annotate often)


def _readonly_engine(db_url: str | None):
    from pathlib import Path

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    if not db_url:
        return None
    if db_url in _ENGINES:
        return _ENGINES[db_url]
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        if not url.database or not path.is_file():
            return None  # never create a store here
        engine = create_engine(f"sqlite:///file:{path.resolve()}?mode=ro&uri=true")
    else:
        engine = create_engine(db_url, pool_pre_ping=True)
    _ENGINES[db_url] = engine
    return engine


_HISTORY_CACHE: dict[tuple, np.ndarray] = {}  # (path, mtime_ns, size) -> times; a few files at most


def from_history(config, sid: SeriesId) -> np.ndarray:
    """Times of the candles freqtrade downloaded for this series (its history file, read with
    fill_missing=False, so freqtrade's fill-up candles are not among them). Backtesting's source of truth."""
    from freqtrade.data.history.datahandlers import get_datahandler
    from freqtrade.enums import CandleType

    datadir = config.get("datadir")
    if not datadir:
        return np.empty(0, dtype=np.int64)
    handler = get_datahandler(datadir, config.get("dataformat_ohlcv") or "feather")
    ct = CandleType.from_string(candle_type_of(sid))
    path = handler._pair_data_filename(handler._datadir, sid.symbol, sid.timeframe, ct)
    try:
        st = path.stat()
    except OSError:
        return np.empty(0, dtype=np.int64)
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _HISTORY_CACHE:
        df = handler.ohlcv_load(sid.symbol, sid.timeframe, candle_type=ct, fill_missing=False,
                                warn_no_data=False)
        if len(_HISTORY_CACHE) > 32:
            _HISTORY_CACHE.clear()
        _HISTORY_CACHE[key] = epoch_seconds(df["date"]) if len(df) else np.empty(0, dtype=np.int64)
    return _HISTORY_CACHE[key]


def offline_voids(config, sid: SeriesId, df: pd.DataFrame) -> list[tuple[int, int]]:
    """Backtesting and hyperopt: the voids recorded for the frame's span, from the store the section names
    (read-only, when it exists); the history files' own records are `sidecar_voids`."""
    from ..settings import ConfigError, Settings

    if len(df) == 0:
        return []
    try:
        db_url = Settings.from_config(config).db_url
    except (ConfigError, ValueError):  # the bot reports a bad section where it matters (live, dry-run)
        return []
    t = epoch_seconds(df["date"])
    return recorded_voids(db_url, sid, int(t.min()), int(t.max()))


def sidecar_voids(config, sid: SeriesId, df: pd.DataFrame) -> list[tuple[int, int]]:
    """Backtesting and hyperopt: the voids `tradecanvas data repair` recorded beside the series' history
    file (`.tradecanvas/<file>.voids`, contract section 10) over the frame's span."""
    from ..history.files import HistoryFile
    from ..history.sidecar import voids_over

    datadir = config.get("datadir")
    if not datadir or len(df) == 0:
        return []
    t = epoch_seconds(df["date"])
    f = HistoryFile(Path(datadir), config.get("dataformat_ohlcv") or "feather", sid.symbol, sid.timeframe,
                    candle_type_of(sid), sid.exchange)
    return voids_over(f.path, int(t.min()), int(t.max()))
