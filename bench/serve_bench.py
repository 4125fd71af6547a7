"""Serving: HTTP reads, WebSocket fan-out and catch-up, each against a floor measured in the same run.

Parts (one JSON line each):
- http: the covered read of 500 candles (tail check on, 0 exchange requests) vs the plain read (`since`)
  vs a floor server (a bare WSGI app on the same WebServer stack returning the same prebuilt bytes);
  requests/s with 4 client threads, each on one keep-alive connection (checked: no answer says
  `Connection: close`).
- ws: N subscribers on one series (200 and 1,000 by default), one closed candle every 0.2 s: p50 / p99 from `ingest_closed` to
  receipt, vs a floor (a bare flask-sock broadcast of the same bytes to the same number of clients);
  lost and duplicate candles counted.
- catchup: 10,000 candles to one client, with and without batches (candles/s).

Run: .venv/bin/python bench/serve_bench.py [--clients 200,1000 --candles 25 --requests 300 --parts http,catchup,ws]
"""
from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tradecanvas_ext import Runtime, Settings  # noqa: E402
from tradecanvas_ext.domain import CandleBatch, SeriesId, expected_latest_closed_time  # noqa: E402
from tradecanvas_ext.domain.clock import ManualClock  # noqa: E402
from tradecanvas_ext.web.server import WebServer  # noqa: E402

SID = SeriesId.parse("binance:spot:BTC/USDT:1m")
STORED = 10_000
NOW = 1_700_006_400 + 30


def candles(first: int, n: int) -> CandleBatch:
    t = first + np.arange(n, dtype=np.int64) * 60
    o = 100 + (t % 997) / 100
    return CandleBatch(t, o, o + 1, o - 1, o + 0.5, np.ones(n))


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(len(s) * q))] * 1000, 3)


def runtime(tmp: Path, clock: ManualClock) -> Runtime:
    section = {"enabled": True, "listen_port": 0, "series": [str(SID)], "enable_ccxt_backfill": False,
               "db_url": f"sqlite:///{tmp / 'serve.sqlite'}", "max_connections": 5000}
    rt = Runtime(Settings.from_config({"tradecanvas": section, "user_data_dir": str(tmp)}, env={}), clock)
    rt.start(serve=True, startup_sync=False)
    last = expected_latest_closed_time(clock(), 60)
    rt.store.upsert_closed(SID, candles(last - (STORED - 1) * 60, STORED))
    return rt


# ---- HTTP --------------------------------------------------------------------------------------------
def kept(r: requests.Response) -> bool:
    return r.headers.get("Connection", "").lower() != "close"


def timed_gets(urls: list[str], n: int) -> list[list[float]]:
    """n reads of each url, each on its own keep-alive connection (requests.Session reuses it while the
    server keeps it), interleaved (one of each in turn) so that the load of a shared machine weighs on
    every url alike."""
    sessions = [requests.Session() for _ in urls]
    out: list[list[float]] = [[] for _ in urls]
    try:
        for s, url in zip(sessions, urls, strict=True):
            s.trust_env = False
            for _ in range(5):  # warm-up
                s.get(url, timeout=10).raise_for_status()
        for _ in range(n):
            for s, url, times in zip(sessions, urls, out, strict=True):
                t = time.perf_counter()
                r = s.get(url, timeout=10)
                times.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text[:200]
                assert kept(r), "the server closed the connection"
    finally:
        for s in sessions:
            s.close()
    return out


def throughput(url: str, threads: int = 4, seconds: float = 5.0) -> float:
    done, stop = [0] * threads, time.perf_counter() + seconds

    def work(k: int) -> None:
        with requests.Session() as s:
            s.trust_env = False
            while time.perf_counter() < stop:
                r = s.get(url, timeout=10)
                assert r.status_code == 200 and kept(r), (r.status_code, r.headers)
                done[k] += 1

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return round(sum(done) / seconds, 1)


def http_part(rt: Runtime, n: int) -> dict:
    base = f"{rt.url}/api/market/candles?series_id={SID}&limit=500"
    head = rt.store.head_time(SID)
    covered_url, plain_url = base, f"{base}&since={head - 500 * 60}"
    body = requests.get(covered_url, timeout=10).content

    def floor_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    floor = WebServer(floor_app, "127.0.0.1", 0)
    floor.start()
    try:
        covered, plain, bare = timed_gets([covered_url, plain_url, floor.url + "/"], n)
        rps = throughput(covered_url)
    finally:
        floor.stop()
    med = {k: statistics.median(v) for k, v in (("covered", covered), ("plain", plain), ("floor", bare))}
    return {"bench": "serve", "part": "http", "requests": n, "response_bytes": len(body),
            "covered_ms_p50": pct(covered, 0.5), "covered_ms_p99": pct(covered, 0.99),
            "plain_ms_p50": pct(plain, 0.5), "floor_ms_p50": pct(bare, 0.5), "floor_ms_p99": pct(bare, 0.99),
            "ratio_covered_vs_plain": round(med["covered"] / med["plain"], 3), "goal_vs_plain": 1.05,
            "ratio_covered_vs_floor": round(med["covered"] / med["floor"], 3), "goal_vs_floor": 1.3,
            "covered_requests_per_s_4_keepalive_connections": rps}


# ---- WebSocket fan-out -------------------------------------------------------------------------------
class Receiver:
    """One client thread: records when each candle_closed arrives (by candle time)."""

    def __init__(self, ws_url: str, subscribe: dict | None):
        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.got: dict[int, list[float]] = {}
        if subscribe is not None:
            self.ws.send(json.dumps(subscribe))
            while json.loads(self.ws.recv())["type"] != "subscribed":
                pass
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                raw = self.ws.recv()
                at = time.perf_counter()
                msg = json.loads(raw)
                if msg.get("type") == "candle_closed":
                    self.got.setdefault(msg["candle"]["candle_time"], []).append(at)
        except Exception:
            return

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def latencies(receivers: list[Receiver], sent: dict[int, float]) -> dict:
    lat, lost, dup = [], 0, 0
    for r in receivers:
        for t, at in sent.items():
            got = r.got.get(t, [])
            lost += not got
            dup += max(0, len(got) - 1)
            if got:
                lat.append(got[0] - at)
    return {"p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "lost": lost, "duplicates": dup}


def wait_all(receivers: list[Receiver], t: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(t in r.got for r in receivers):
        time.sleep(0.005)


def ws_part(rt: Runtime, clock: ManualClock, clients: int, n: int) -> dict:
    ws_url = rt.url.replace("http://", "ws://") + "/ws/market"
    head = rt.store.head_time(SID)
    threads_before = threading.active_count()
    ours = [Receiver(ws_url, {"type": "subscribe", "series_id": str(SID), "since": head}) for _ in range(clients)]
    # the server's threads per socket (this process runs both sides: one receiver thread per client)
    per_client = round((threading.active_count() - threads_before) / clients - 1, 2)
    sent: dict[int, float] = {}
    t = head
    for _ in range(n):
        clock.advance(60)
        t += 60
        batch = candles(t, 1)
        sent[t] = time.perf_counter()
        rt.ingest_closed(SID, batch)
        time.sleep(0.2)
    wait_all(ours, t)
    mine = latencies(ours, sent)
    for r in ours:
        r.close()

    # the floor: a bare flask-sock broadcast of the same bytes, on the same server stack
    from flask import Flask
    from flask_sock import Sock

    app, outs, lock = Flask("floor"), [], threading.Lock()
    sock = Sock(app)

    @sock.route("/ws/market")
    def broadcast(ws):
        q: queue.Queue = queue.Queue()
        with lock:
            outs.append(q)
        while (item := q.get()) is not None:
            ws.send(item)

    floor = WebServer(app, "127.0.0.1", 0, max_connections=5000)
    floor.start()
    try:
        theirs = [Receiver(floor.url.replace("http://", "ws://") + "/ws/market", None) for _ in range(clients)]
        while True:
            with lock:
                if len(outs) == clients:
                    break
            time.sleep(0.01)
        sent_floor: dict[int, float] = {}
        for _ in range(n):
            t += 60
            text = json.dumps({"type": "candle_closed", "series_id": str(SID), "candle": candles(t, 1).to_dicts()[0]},
                              separators=(",", ":"))
            sent_floor[t] = time.perf_counter()
            with lock:
                for q in outs:
                    q.put(text)
            time.sleep(0.2)
        wait_all(theirs, t)
        bare = latencies(theirs, sent_floor)
        for r in theirs:
            r.close()
        with lock:
            for q in outs:
                q.put(None)
    finally:
        floor.stop()
    return {"bench": "serve", "part": "ws", "clients": clients, "candles": n, "interval_s": 0.2,
            "server_threads_per_client": per_client, "ours": mine, "floor": bare,
            "ratio_p50_vs_floor": round(mine["p50_ms"] / max(bare["p50_ms"], 1e-6), 2),
            "ratio_p99_vs_floor": round(mine["p99_ms"] / max(bare["p99_ms"], 1e-6), 2), "goal_p99_vs_floor": 1.5}


# ---- catch-up ----------------------------------------------------------------------------------------
def catchup_part(rt: Runtime) -> dict:
    ws_url = rt.url.replace("http://", "ws://") + "/ws/market"
    head = rt.store.head_time(SID)
    since = head - STORED * 60
    out = {"bench": "serve", "part": "catchup", "candles": STORED}
    for batch in (True, False):
        ws = websocket.create_connection(ws_url, timeout=30)
        t0 = time.perf_counter()
        ws.send(json.dumps({"type": "subscribe", "series_id": str(SID), "since": since, "supports_batch": batch}))
        n, last = 0, None
        while last != head:
            msg = json.loads(ws.recv())
            if msg["type"] == "candles_batch":
                n += len(msg["candles"])
                last = msg["candles"][-1]["candle_time"]
            elif msg["type"] == "candle_closed":
                n += 1
                last = msg["candle"]["candle_time"]
        took = time.perf_counter() - t0
        ws.close()
        out["batch" if batch else "no_batch"] = {"received": n, "seconds": round(took, 3),
                                                 "candles_per_s": round(n / took)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", default="200,1000", help="WebSocket subscribers, one ws line each")
    ap.add_argument("--candles", type=int, default=25)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--parts", default="http,catchup,ws", help="which parts to run, comma-separated")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory() as d:
        clock = ManualClock(NOW)
        rt = runtime(Path(d), clock)
        try:
            if "http" in parts:
                print(json.dumps(http_part(rt, args.requests)), flush=True)
            if "catchup" in parts:
                print(json.dumps(catchup_part(rt)), flush=True)
            if "ws" in parts:
                for clients in (int(c) for c in args.clients.split(",")):
                    print(json.dumps(ws_part(rt, clock, clients, args.candles)), flush=True)
        finally:
            rt.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
