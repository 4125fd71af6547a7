"""Truth model, part 1: the emulated markets (price level, tick and lot size, hash key) and the integer
hashing every made-up number comes from. Deterministic from (seed, symbol) only: never reads a clock."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

UNIT = 10**8  # prices and volumes are integers in units of 1e-8, formatted like Binance ("%.8f")
DEFAULT_SYMBOLS = ("BTC/USDT", "ETH/USDT", "LTC/USDT", "BNB/USDT", "SOL/USDT", "XRP/USDT", "ETH/BTC")

# Rough, realistic price levels; any other base asset gets a seed-independent hash-derived level.
_BASE_PRICES = {
    "BTC": 37000.0,
    "ETH": 2000.0,
    "LTC": 70.0,
    "BNB": 230.0,
    "SOL": 55.0,
    "XRP": 0.6,
    "ADA": 0.38,
    "DOGE": 0.08,
    "DOT": 5.2,
    "TRX": 0.1,
    "LINK": 14.0,
    "AVAX": 20.0,
}
_STABLE = {"USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI", "USD"}


# --------------------------------------------------------------------------------------------- hashing

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> _S30)
    x = x * _M1
    x = x ^ (x >> _S27)
    x = x * _M2
    return x ^ (x >> _S31)


def mix_int(value: int) -> int:
    with np.errstate(over="ignore"):
        return int(mix64(np.array([value & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0])


def unit_float(h: np.ndarray, shift: int, bits: int) -> np.ndarray:
    """`bits` (<= 63) bits of uint64 `h` starting at `shift`, as floats in [0, 1)."""
    mask = np.uint64((1 << bits) - 1)
    return ((h >> np.uint64(shift)) & mask).view(np.int64).astype(np.float64) * (1.0 / (1 << bits))


# --------------------------------------------------------------------------------------------- markets


@dataclass(frozen=True)
class Market:
    symbol: str  # ccxt unified, "BTC/USDT"
    id: str  # Binance, "BTCUSDT"
    base: str
    quote: str
    base_price: float  # in the quote asset
    usd_price: float  # of the base asset, for volumes
    tick_units: int  # price tick in 1e-8 units (a power of ten)
    step_units: int  # lot step in 1e-8 units (a power of ten)
    key: int  # per (seed, symbol) 64-bit hash key
    phases: tuple[float, float, float]


def make_market(symbol: str, seed: int) -> Market:
    if not isinstance(symbol, str) or symbol.count("/") != 1 or ":" in symbol:
        raise ValueError(f"emulator symbols are spot 'BASE/QUOTE' symbols, got {symbol!r}")
    base, quote = symbol.split("/")
    if not (base.isalnum() and quote.isalnum() and base.isupper() and quote.isupper()):
        raise ValueError(f"emulator symbol {symbol!r}: base and quote must be upper-case alphanumerics")
    sym_hash = zlib.crc32(symbol.encode()) | (zlib.crc32(symbol[::-1].encode() + b"#") << 32)
    if base in _BASE_PRICES:
        base_usd = _BASE_PRICES[base]
    else:
        # 0.05 .. 500, from the symbol only, so a symbol keeps its price level whatever the seed
        base_usd = 10 ** (-1.3 + 4.0 * ((mix_int(zlib.crc32(base.encode())) >> 11) / float(1 << 53)))
    if quote in _STABLE:
        price = base_usd
    else:
        quote_usd = _BASE_PRICES.get(quote, 10 ** (-1.3 + 4.0 * ((mix_int(zlib.crc32(quote.encode())) >> 11)
                                                                 / float(1 << 53))))
        price = base_usd / quote_usd
    # ~5-6 significant digits of price; tick between 1e-8 and 0.01
    tick_exp = min(-2, max(-8, math.floor(math.log10(price)) - 5))
    step_exp = min(0, max(-8, math.floor(-math.log10(price))))
    key = mix_int(mix_int(seed) ^ sym_hash)
    ph = [((key >> s) & 0xFFFF) / 65536.0 * 2 * math.pi for s in (0, 16, 32)]
    return Market(symbol=symbol, id=base + quote, base=base, quote=quote, base_price=price, usd_price=base_usd,
                  tick_units=10 ** (8 + tick_exp), step_units=10 ** (8 + step_exp), key=key,
                  phases=(ph[0], ph[1], ph[2]))


class Markets:
    """The emulator's markets in the order configured, by ccxt symbol and by Binance id (fixed at
    construction, so readable from any thread without a lock)."""

    def __init__(self, symbols: Iterable[str], seed: int) -> None:
        by_symbol: dict[str, Market] = {}
        for sym in symbols:
            mk = make_market(sym, seed)
            by_symbol[mk.symbol] = mk
        if not by_symbol:
            raise ValueError("the emulator needs at least one symbol")
        by_id = {mk.id: mk for mk in by_symbol.values()}
        if len(by_id) != len(by_symbol):
            raise ValueError("two symbols map to the same Binance id")
        self._by_symbol = by_symbol
        self._by_id = by_id

    def __iter__(self) -> Iterator[Market]:
        return iter(self._by_symbol.values())

    @property
    def symbols(self) -> list[str]:
        return list(self._by_symbol)

    def with_id(self, binance_id: str) -> Market | None:
        """The market a request's `symbol` parameter ("BTCUSDT") names, or None."""
        return self._by_id.get(binance_id)

    def find(self, symbol: str) -> Market:
        """The market of a ccxt symbol or a Binance id (the test oracle's lookup); ValueError if unknown."""
        mk = self._by_symbol.get(symbol) or self._by_id.get(symbol)
        if mk is None:
            raise ValueError(f"unknown emulator symbol {symbol!r}; configured: {', '.join(self._by_symbol)}")
        return mk
