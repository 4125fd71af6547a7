"""A process that rewrites one history file over and over through history.files.write_frame, alternating
between two versions (for the SIGKILL tests). argv: datadir, data format, rows. Prints "ready" once the
loop runs."""
from __future__ import annotations

import sys
from pathlib import Path

from tests.history_frames import frames
from tradecanvas_ext.history.files import HistoryFile, write_frame


def main() -> int:
    datadir, data_format, rows = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    f = HistoryFile(datadir, data_format, "BTC/USDT", "1m", "spot", "binance")
    a, b = frames(rows)
    from freqtrade.data.history.datahandlers import get_datahandler  # the imports, before "ready"

    get_datahandler(datadir, data_format)
    print("ready", flush=True)
    while True:
        write_frame(f, b)
        write_frame(f, a)


if __name__ == "__main__":
    raise SystemExit(main())
