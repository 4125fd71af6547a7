"""A runtime in its own process, driven by JSON lines on stdin (for the shared-store tests).

Commands: {"cmd": "cover", "series", "target", "to_time"} -> CoverageResult dict;
{"cmd": "ingest", "series", "candles"} -> accepted; {"cmd": "owner"}; {"cmd": "quit"}.
The first line printed is {"ready": true, "url": ..., "owner": ...}.
"""
from __future__ import annotations

import json
import sys

from tradecanvas_ext import Runtime, Settings
from tradecanvas_ext.domain import SeriesId


def main() -> int:
    cfg = json.loads(sys.argv[1])
    serve = sys.argv[2] == "serve"
    rt = Runtime(Settings.from_config(cfg, env={})).start(serve=serve, startup_sync=False)
    print(json.dumps({"ready": True, "url": rt.url, "owner": rt.tracker.owner}), flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        if cmd == "quit":
            break
        if cmd == "cover":
            res = rt.backfill.ensure_tail_coverage(SeriesId.parse(msg["series"]), msg["target"], to_time=msg["to_time"])
            out = res.to_dict()
        elif cmd == "ingest":
            out = {"accepted": rt.ingest_closed(SeriesId.parse(msg["series"]), [tuple(c) for c in msg["candles"]])}
        else:
            out = {"owner": rt.tracker.owner}
        print(json.dumps(out), flush=True)
    rt.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
