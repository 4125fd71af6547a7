"""Test helpers: an exchange emulator speaking Binance's and other exchanges' public REST dialects (never to
be used as, or against, a real exchange)."""
from __future__ import annotations

from .emulator import (
    DIALECTS,
    SPECS,
    TIMEFRAMES,
    DialectSpec,
    EmulatorProcess,
    Endpoint,
    ExchangeEmulator,
    FaultController,
    ManualClock,
    ccxt_config_for,
    dialect_spec,
    main,
)

__all__ = ["DIALECTS", "SPECS", "DialectSpec", "EmulatorProcess", "Endpoint", "ExchangeEmulator", "FaultController", "ManualClock",
           "TIMEFRAMES", "ccxt_config_for", "dialect_spec", "main"]
