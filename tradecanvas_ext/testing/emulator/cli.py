"""`python -m tradecanvas_ext.testing.emulator` / `tradecanvas emulator`: parse the options, run an
`ExchangeEmulator` until SIGINT/SIGTERM. Binds where told (127.0.0.1 by default); never a real exchange."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from .dialects import DIALECTS
from .markets import DEFAULT_SYMBOLS
from .server import ExchangeEmulator


def _parse_pair(text: str, what: str) -> tuple[float, float]:
    try:
        a, b = text.split(":")
        return float(a), float(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be A:B with two numbers, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT/SIGTERM; print one line with its URL."""
    parser = argparse.ArgumentParser(
        prog="tradecanvas emulator",
        description="Binance-format public REST emulator with made-up candles (tests and demos only; "
                    "never use it as, or against, a real exchange).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dialect", default="binance", choices=DIALECTS,
                        help="the exchange whose REST API is emulated (default: %(default)s)")
    parser.add_argument("--symbols", default=None,
                        help="comma separated ccxt spot symbols (default: the dialect's, for binance "
                             f"{','.join(DEFAULT_SYMBOLS)})")
    parser.add_argument("--outage", action="append", default=[], metavar="START:END",
                        type=lambda s: _parse_pair(s, "--outage"),
                        help="candles with open time in [START, END) (unix seconds) do not exist; repeatable")
    parser.add_argument("--outage-in", action="append", default=[], metavar="SECONDS:DURATION",
                        type=lambda s: _parse_pair(s, "--outage-in"),
                        help="a scripted outage SECONDS after start-up lasting DURATION: requests get 503 "
                             "-1001 meanwhile and its candles never exist; repeatable")
    parser.add_argument("--rate-limit", type=float, default=None, metavar="N",
                        help="answer 429 above N requests per second")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    symbols = None if args.symbols is None else [s.strip() for s in args.symbols.split(",") if s.strip()]
    try:
        emu = ExchangeEmulator(seed=args.seed, symbols=symbols, port=args.port, host=args.host,
                               max_requests_per_second=args.rate_limit, dialect=args.dialect)
        for start, end in args.outage:
            emu.faults.outage(start, end)
        t0 = emu.clock()
        for offset, duration in args.outage_in:
            emu.faults.outage(t0 + offset, t0 + offset + duration)
            emu.faults.downtime(t0 + offset, t0 + offset + duration)
        emu.start()
    except (ValueError, OSError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _on_signal(signum, frame):
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"exchange emulator ({args.dialect} format, seed {args.seed}) listening on {emu.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
