"""A candle writer in its own process (the coverage / window tests): writes a JSON plan to one store.

argv: db_url, plan JSON ({"origin": str, "batches": [[series_id, [[t, o, h, l, c, v], ...]], ...]],
"hang_in": index or -1}). Each batch is one upsert_closed_many transaction (of every series listed in
it). With hang_in = k, batch k stops INSIDE its transaction, right after its candle INSERT ran and
before the coverage index is updated: it prints "mid" and blocks (the test SIGKILLs it there). Prints
"done" at the end.
"""
from __future__ import annotations

import json
import sys
import threading

from sqlalchemy import event

from tradecanvas_ext.domain import SeriesId
from tradecanvas_ext.store import open_store


def main() -> int:
    url, plan = sys.argv[1], json.loads(sys.argv[2])
    storage = open_store(url, origin=plan["origin"])
    hang_in, current = plan.get("hang_in", -1), [0]
    never = threading.Event()

    @event.listens_for(storage.dialect.engine, "after_cursor_execute")
    def _maybe_hang(conn, cursor, statement, *args):
        if current[0] == hang_in and statement.startswith("INSERT INTO tc_candles"):
            print("mid", flush=True)
            never.wait()  # killed here, inside the open write transaction

    for i, batch in enumerate(plan["batches"]):
        current[0] = i
        items = [(SeriesId.parse(sid), [tuple(r) for r in rows]) for sid, rows in batch]
        storage.candles.upsert_closed_many(items)
    print("done", flush=True)
    storage.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
