"""tradecanvas_ext: gap-aware candle history, backfill and live candles for freqtrade."""
__version__ = "0.1.0"
