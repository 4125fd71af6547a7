"""A deterministic, fault-injecting emulator of Binance's public spot REST API on 127.0.0.1, for tests and
demos: truth model (`markets`, `candles`), `faults`, HTTP side (`routes`, `server`) and `cli`. Its market
data is made up: never use it as a real exchange, and never point it (or its faults) at one."""

from ...domain.clock import ManualClock  # re-exported: tests build the emulator's clock from here
from .candles import TIMEFRAMES
from .cli import main
from .faults import FaultController, FaultDecision
from .server import ExchangeEmulator

__all__ = ["ExchangeEmulator", "FaultController", "FaultDecision", "ManualClock", "TIMEFRAMES", "main"]
