"""A deterministic, fault-injecting emulator of exchanges' public REST APIs on 127.0.0.1, for tests and
demos: one truth model (`markets`, `candles`, `truth`), `faults`, the exchange dialects (`dialect`,
`routes` for Binance, `dialects/` for the others), the HTTP side (`server`) and `cli`. Its market data is
made up: never use it as a real exchange, and never point it (or its faults) at one."""

from ...domain.clock import ManualClock  # re-exported: tests build the emulator's clock from here
from .candles import TIMEFRAMES
from .cli import main
from .dialect import DialectSpec, Endpoint
from .dialects import DIALECTS, SPECS, ccxt_config_for, dialect_spec
from .faults import FaultController, FaultDecision
from .process import EmulatorProcess
from .server import ExchangeEmulator

__all__ = ["DIALECTS", "SPECS", "DialectSpec", "EmulatorProcess", "Endpoint", "ExchangeEmulator", "FaultController", "FaultDecision",
           "ManualClock", "TIMEFRAMES", "ccxt_config_for", "dialect_spec", "main"]
