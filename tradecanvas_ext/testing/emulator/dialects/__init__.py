"""The registry of the emulator's exchange dialects: name -> the class serving it, each one's rules as data
(`SPECS`) and `ccxt_config_for`, the ccxt URL override for a dialect at a base URL. Builds nothing else."""

from __future__ import annotations

from collections.abc import Callable

from ..dialect import Dialect, DialectSpec
from ..faults import FaultController
from ..markets import Markets
from ..routes import BINANCE_SPOT, BINANCE_USDM, BinanceRoutes
from ..truth import Truth
from .bybit import BYBIT, BybitDialect
from .coinbase import COINBASE, CoinbaseDialect
from .gate import GATE, GateDialect
from .hyperliquid import HYPERLIQUID, HyperliquidDialect
from .kraken import KRAKEN, KrakenDialect
from .okx import OKX, OkxDialect

_BUILDERS: dict[str, tuple[DialectSpec, Callable[[Truth, int], Dialect]]] = {
    "binance": (BINANCE_SPOT, lambda truth, seed: BinanceRoutes(truth, seed)),
    "binanceusdm": (BINANCE_USDM, lambda truth, seed: BinanceRoutes(truth, seed, futures=True)),
    "bybit": (BYBIT, BybitDialect),
    "okx": (OKX, OkxDialect),
    "kraken": (KRAKEN, KrakenDialect),
    "gate": (GATE, GateDialect),
    "hyperliquid": (HYPERLIQUID, HyperliquidDialect),
    "coinbase": (COINBASE, CoinbaseDialect),
}

#: Every dialect's rules (page caps, reach, order, units, omission) by dialect name.
SPECS: dict[str, DialectSpec] = {name: spec for name, (spec, _) in _BUILDERS.items()}
DIALECTS: tuple[str, ...] = tuple(_BUILDERS)


def dialect_spec(name: str) -> DialectSpec:
    """The rules of dialect `name`; ValueError for a name the emulator does not speak."""
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown emulator dialect {name!r}; known: {', '.join(_BUILDERS)}") from None


def build_dialect(name: str, truth: Truth, seed: int) -> Dialect:
    dialect_spec(name)
    return _BUILDERS[name][1](truth, seed)


def ccxt_config_for(dialect: str, base_url: str) -> dict:
    """The config to deep-merge into `getattr(ccxt, SPECS[dialect].ccxt_id)({...})` so that every REST
    call of that ccxt class goes to the emulator at `base_url` ("http://127.0.0.1:PORT"): URL overrides
    (plus, for Binance, the option that keeps load_markets to the emulated market type)."""
    probe = build_dialect(dialect, Truth(Markets(["BTC/USDT"], 0), FaultController()), 0)
    return probe.ccxt_config(base_url.rstrip("/"))
