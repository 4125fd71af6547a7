"""Test helpers: a Binance-format exchange emulator (never to be used as, or against, a real exchange)."""
from __future__ import annotations

from .emulator import TIMEFRAMES, ExchangeEmulator, FaultController, ManualClock, main

__all__ = ["ExchangeEmulator", "FaultController", "ManualClock", "TIMEFRAMES", "main"]
