"""Test helpers: a Binance-format exchange emulator (never to be used as, or against, a real exchange)."""
from __future__ import annotations

__all__ = ["ExchangeEmulator", "FaultController", "ManualClock", "TIMEFRAMES"]


def __getattr__(name: str):
    # lazy, so that `python -m tradecanvas_ext.testing.emulator` does not import the module twice
    if name in __all__:
        from tradecanvas_ext.testing import emulator

        return getattr(emulator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
