"""The narrow interface every candle source implements (freqtrade, rollup, ccxt)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..domain import CandleBatch, Hole, SeriesId


@dataclass
class SourceResult:
    """What one source found for the holes it was asked about.

    `candles` are closed candles inside the asked holes only (the service still validates them);
    `voids` are inclusive (start, end) ranges the source confirmed it has no data for;
    `errors` are human-readable problems that did not stop the source; `requests` counts remote calls.
    """

    candles: CandleBatch = field(default_factory=CandleBatch.empty)
    voids: list[tuple[int, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0


class CandleSource(Protocol):
    name: str

    def fetch(self, series: SeriesId, holes: list[Hole], now: float,
              deadline: float | None = None) -> SourceResult:
        """Candles for `holes` (closed at `now`). Must not raise for source trouble: report it in errors.

        `deadline` is a `time.monotonic()` value after which no new remote request is started."""
        ...
