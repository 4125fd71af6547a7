"""tradecanvas_ext: gap-aware candle history, backfill and live candles for freqtrade.

Entry points (contract section 9) are imported lazily so a strategy module importing us stays cheap.
"""
__version__ = "0.1.0"
__all__ = ["Runtime", "Settings", "create_app"]


def __getattr__(name):
    if name == "Runtime":
        from .runtime import Runtime

        return Runtime
    if name == "Settings":
        from .settings import Settings

        return Settings
    if name == "create_app":
        from .web.app import create_app

        return create_app
    raise AttributeError(name)
