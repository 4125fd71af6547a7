"""freqtrade glue: the strategy base class that runs tradecanvas inside the bot (contract section 8).

`from tradecanvas_ext.bot import TradeCanvasStrategy`; everything else here is imported lazily by it.
"""
__all__ = ["TradeCanvasStrategy"]


def __getattr__(name):
    if name == "TradeCanvasStrategy":
        from .strategy import TradeCanvasStrategy

        return TradeCanvasStrategy
    raise AttributeError(name)
