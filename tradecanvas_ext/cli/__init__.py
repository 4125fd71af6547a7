"""Command line: `tradecanvas sync | gaps | health | serve | emulator | check`."""
