"""SeriesId: `exchange:market:symbol:timeframe`, where the symbol itself may contain ':'.

The shape is checked here; whether ccxt knows the exchange is checked at the edges (series_ids.py)."""
from __future__ import annotations

from dataclasses import dataclass

from .timeframe import timeframe_to_seconds

MARKETS = ("spot", "futures")


@dataclass(frozen=True, slots=True)
class SeriesId:
    exchange: str
    market: str
    symbol: str
    timeframe: str

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
            timeframe_to_seconds(self.timeframe)
        except ValueError as exc:
            raise ValueError(f"series_id: {exc}") from None

    @classmethod
    def parse(cls, text: str) -> SeriesId:
        if not isinstance(text, str):
            raise ValueError(f"series_id must be a string, got {type(text).__name__}")
        parts = text.split(":")
        if len(parts) < 4:
            raise ValueError(
                f"series_id {text!r} must have 4 parts 'exchange:market:symbol:timeframe', got {len(parts)}"
            )
        return cls(parts[0], parts[1], ":".join(parts[2:-1]), parts[-1])

    @property
    def tf_seconds(self) -> int:
        return timeframe_to_seconds(self.timeframe)

    def __str__(self) -> str:
        return f"{self.exchange}:{self.market}:{self.symbol}:{self.timeframe}"
