"""SeriesId: `exchange:market:symbol:timeframe[:candle_type]`, where the symbol itself may contain ':'.

The shape is checked here; whether ccxt knows the exchange is checked at the edges (series_ids.py)."""
from __future__ import annotations

from dataclasses import dataclass

from .timeframe import exchange_grid, timeframe_to_seconds

MARKETS = ("spot", "futures")
# freqtrade's non-default candle types of a futures market (its CandleType values); without one a series
# holds the market's own candles
CANDLE_TYPES = ("mark", "index", "premiumIndex", "funding_rate")
SIGNED_CANDLE_TYPES = ("premiumIndex", "funding_rate")  # values that may be zero or negative


def _is_timeframe(text: str) -> bool:
    try:
        timeframe_to_seconds(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class SeriesId:
    exchange: str
    market: str
    symbol: str
    timeframe: str
    candle_type: str | None = None

    def __post_init__(self) -> None:
        for name in ("exchange", "market", "symbol", "timeframe"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"series_id: the {name} part is empty")
        if self.market not in MARKETS:
            raise ValueError(f"series_id: market {self.market!r} must be one of {', '.join(MARKETS)}")
        if any(not p.strip() for p in self.symbol.split(":")):
            raise ValueError(f"series_id: symbol {self.symbol!r} has an empty part")
        base, _, quote = self.symbol.split(":")[0].partition("/")
        if not base.strip() or not quote.strip():
            raise ValueError(f"series_id: symbol {self.symbol!r} must be a ccxt unified symbol like BTC/USDT")
        try:
            exchange_grid(self.exchange, self.timeframe)
        except ValueError as exc:
            raise ValueError(f"series_id: {exc}") from None
        if self.candle_type is not None:
            if self.candle_type not in CANDLE_TYPES:
                raise ValueError(f"series_id: candle type {self.candle_type!r} must be one of "
                                 f"{', '.join(CANDLE_TYPES)}")
            if self.market != "futures":
                raise ValueError(f"series_id: candle type {self.candle_type!r} needs the futures market, "
                                 f"not {self.market!r}")

    @classmethod
    def parse(cls, text: str) -> SeriesId:
        if not isinstance(text, str):
            raise ValueError(f"series_id must be a string, got {type(text).__name__}")
        parts = text.split(":")
        if len(parts) < 4:
            raise ValueError(
                f"series_id {text!r} must have 4 parts 'exchange:market:symbol:timeframe', got {len(parts)}"
            )
        if len(parts) >= 5 and (parts[-1] in CANDLE_TYPES
                                or (not _is_timeframe(parts[-1]) and _is_timeframe(parts[-2]))):
            return cls(parts[0], parts[1], ":".join(parts[2:-2]), parts[-2], parts[-1])
        return cls(parts[0], parts[1], ":".join(parts[2:-1]), parts[-1])

    @property
    def tf_seconds(self) -> int:
        """The timeframe on this exchange's grid (a `Grid` where it is offset, e.g. Binance's 3d)."""
        return exchange_grid(self.exchange, self.timeframe)

    @property
    def signed_prices(self) -> bool:
        """premiumIndex and funding_rate values may be zero or negative (and a funding rate is one value)."""
        return self.candle_type in SIGNED_CANDLE_TYPES

    def __str__(self) -> str:
        base = f"{self.exchange}:{self.market}:{self.symbol}:{self.timeframe}"
        return base if self.candle_type is None else f"{base}:{self.candle_type}"
