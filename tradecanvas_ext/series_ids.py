"""Series ids at the edges (config, HTTP, WebSocket frames, CLI, database notifications): text parsed once
into a `SeriesId`, and its exchange checked against ccxt's list (contract section 1) — the one check the
pure domain cannot make without importing ccxt."""
from __future__ import annotations

from functools import lru_cache

from .domain import SeriesId


@lru_cache(maxsize=1)
def known_exchanges() -> frozenset[str]:
    import ccxt  # a constant table of the library; imported once, at the first edge that needs it

    return frozenset(ccxt.exchanges)


def checked(sid: SeriesId) -> SeriesId:
    """`sid` when ccxt knows its exchange; ValueError naming the exchange part otherwise."""
    if sid.exchange not in known_exchanges():
        raise ValueError(f"series_id: exchange {sid.exchange!r} is not a ccxt exchange id")
    return sid


def parse_series_id(text: str) -> SeriesId:
    """`exchange:market:symbol:timeframe` -> SeriesId; ValueError saying which part is wrong."""
    return checked(SeriesId.parse(text))


def as_series_id(value: SeriesId | str) -> SeriesId:
    """The Python entry points (contract section 9) take a SeriesId or its text; text is parsed here."""
    return value if isinstance(value, SeriesId) else parse_series_id(value)
