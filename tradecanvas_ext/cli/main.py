"""`tradecanvas` command line. Reads the config once (Settings), then calls the library; no logic of its own."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from ..domain import SeriesId, expected_latest_closed_time
from ..settings import ConfigError, Settings


def _load(args) -> Settings:
    return Settings.from_file(args.config)


def cmd_check(args) -> int:
    """Validate the config, open the store and print what it holds per configured series."""
    from ..store import CandleStore

    settings = _load(args)
    store = CandleStore(settings.db_url)
    import time

    now = time.time()
    rows = []
    for sid in settings.series_ids:
        st = store.stats(sid)
        end = expected_latest_closed_time(now, sid.tf_seconds)
        holes = store.holes(sid, st["first_time"], end) if st["first_time"] is not None else []
        rows.append({"series_id": str(sid), **st, "holes": len(holes),
                     "missing_candles": sum(h.missing_candles for h in holes)})
    store.close()
    print(json.dumps({"db_url": _redact(settings.db_url), "series": rows}, indent=2))
    return 0


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def cmd_gaps(args) -> int:
    from ..store import CandleStore

    settings = _load(args)
    sid = SeriesId.parse(args.series_id)
    store = CandleStore(settings.db_url)
    import time

    start = args.start if args.start is not None else store.first_time(sid)
    end = args.end if args.end is not None else expected_latest_closed_time(time.time(), sid.tf_seconds)
    holes = [] if start is None else store.holes(sid, start, end)
    store.close()
    print(json.dumps({"series_id": str(sid), "start": start, "end": end,
                      "holes": [h.to_dict() for h in holes],
                      "missing_candles": sum(h.missing_candles for h in holes)}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tradecanvas", description="Gap-aware candle history for freqtrade")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="validate the config and show what the store holds")
    c.add_argument("--config", default="config.json")
    c.set_defaults(func=cmd_check)
    g = sub.add_parser("gaps", help="holes and voids of one series")
    g.add_argument("series_id")
    g.add_argument("--config", default="config.json")
    g.add_argument("--start", type=int)
    g.add_argument("--end", type=int)
    g.set_defaults(func=cmd_gaps)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ConfigError, ValueError) as exc:
        print(f"tradecanvas: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
