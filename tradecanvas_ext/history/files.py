"""freqtrade's own history files, through its data handler only (feather, json, jsongz, parquet): listed as
freqtrade lists them, read WITHOUT fill-up, rewritten whole and atomically in their own format (atomic.py).
It must never change a row a file holds, nor write a file in place.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..domain import CandleBatch, exchange_grid, timeframe_to_seconds
from ..sources.freqtrade_source import batch_to_frame, frame_to_batch
from .atomic import remove_stale_scratch, replace_atomically

FORMATS = ("feather", "json", "jsongz", "parquet")
OHLCV_CANDLE_TYPES = ("spot", "futures", "mark", "index", "premiumIndex")  # files with OHLCV rows


@dataclass(frozen=True)
class HistoryFile:
    """One pair / timeframe / candle type file of a datadir, in one format."""

    datadir: Path
    data_format: str
    pair: str
    timeframe: str
    candle_type: str  # freqtrade's CandleType value: spot, futures, mark, index, premiumIndex, funding_rate
    exchange: str  # whose candle grid the file's times are on (Binance's 3d is not the epoch's)

    @property
    def path(self) -> Path:
        # freqtrade's own rule for the name (pair_to_filename, the futures/ folder, 1M -> 1Mo)
        return handler_class(self.data_format)._pair_data_filename(self.datadir, self.pair, self.timeframe,
                                                                   _candle_type(self.candle_type))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def tf_seconds(self) -> int:
        """The timeframe on the exchange's grid: every hole of the file steps on it."""
        return exchange_grid(self.exchange, self.timeframe)

    @property
    def is_ohlcv(self) -> bool:
        return self.candle_type in OHLCV_CANDLE_TYPES


def handler_class(data_format: str):
    from freqtrade.data.history.datahandlers.idatahandler import get_datahandlerclass

    if data_format not in FORMATS:
        raise ValueError(f"data format {data_format!r}: expected one of {', '.join(FORMATS)}")
    return get_datahandlerclass(data_format)


def _candle_type(value: str):
    from freqtrade.enums import CandleType

    return CandleType.from_string(value)


def list_files(datadir: Path, data_format: str, trading_mode: str, exchange: str) -> list[HistoryFile]:
    """Every candle file freqtrade's handler lists in `datadir` for the trading mode (as `list-data` does),
    of `exchange` (the config's: freqtrade's datadir is one exchange's)."""
    from freqtrade.enums import TradingMode

    found = handler_class(data_format).ohlcv_get_available_data(Path(datadir), TradingMode(trading_mode))
    files = {HistoryFile(Path(datadir), data_format, pair, tf, str(ct.value), exchange) for pair, tf, ct in found}
    return sorted(files, key=lambda f: (f.pair, f.candle_type, timeframe_seconds_or_zero(f.timeframe)))


def timeframe_seconds_or_zero(timeframe: str) -> int:
    try:
        return timeframe_to_seconds(timeframe)
    except ValueError:
        return 0


def read_frame(f: HistoryFile) -> pd.DataFrame:
    """The file's rows as freqtrade loads them, but without fill-up and with every row kept."""
    from freqtrade.data.history.datahandlers import get_datahandler

    return get_datahandler(f.datadir, f.data_format).ohlcv_load(
        f.pair, f.timeframe, _candle_type(f.candle_type), timerange=None, fill_missing=False,
        drop_incomplete=False, warn_no_data=False)


def frame_times(df: pd.DataFrame) -> np.ndarray:
    """Open times (unix seconds, int64) of a loaded frame, ascending as freqtrade sorts them."""
    if df.empty:
        return np.empty(0, dtype=np.int64)
    return df["date"].dt.as_unit("ms").to_numpy(dtype=np.int64) // 1000


def read_candles(f: HistoryFile) -> CandleBatch:
    return frame_to_batch(read_frame(f), f.tf_seconds)


def merged_frame(existing: pd.DataFrame, new: CandleBatch) -> pd.DataFrame:
    """The existing rows, untouched, plus the new candles (at times the file does not hold), by date."""
    if not len(new):
        return existing
    add = batch_to_frame(new)
    add["date"] = add["date"].astype(existing["date"].dtype)
    out = pd.concat([existing, add.loc[:, list(existing.columns)]], ignore_index=True)
    return out.sort_values("date", kind="stable").reset_index(drop=True)


def write_frame(f: HistoryFile, df: pd.DataFrame) -> None:
    """Rewrite the whole file in its own format through freqtrade's handler: written into a scratch
    datadir beside the file, then renamed over it (atomic.py)."""
    from freqtrade.data.history.datahandlers import get_datahandler

    target = f.path
    remove_stale_scratch(target.parent)
    relative = target.relative_to(f.datadir)

    def write(scratch: Path) -> Path:
        get_datahandler(scratch, f.data_format).ohlcv_store(f.pair, f.timeframe, df,
                                                             _candle_type(f.candle_type))
        return scratch / relative

    replace_atomically(target, write)
