"""Hostile clients against a real bot: a `freqtrade trade` dry-run (the sample strategy, 20 pairs of 1m candles)
against the exchange emulator on 127.0.0.1, with the extension's server inside it. Phase A: 50 normal
WebSocket clients plus 20 hostile ones (stalled readers, reconnect loops, subscribe floods, half-sent HTTP
requests); phase B: the normal clients alone. Prints one JSON line.

Loop durations are freqtrade's own: its worker logs (at DEBUG, turned on for `freqtrade.worker` only) a line
when an iteration starts and one when it ends; their timestamps (ms) give each loop's duration. Memory and
threads are the bot process's /proc/<pid>/status (VmRSS, Threads), sampled every second. A guarantee
violation is a normal client's series whose messages break contract section 4 (order, duplicates, a jump
with no `gap`) or that misses a stored candle it should have had by the end.

    python bench/chaos_bench.py                 # 5 + 5 minutes
    python bench/chaos_bench.py --phase-s 30    # a quick run while developing

The emulator runs in its own process (`python -m tradecanvas_ext.testing.emulator`, real clock), as the
remote exchange it stands for: in the bench's process it would share one interpreter with the 70 clients,
so the hostile ones would slow the exchange's answers to the bot's refresh, and phase A's loops with them
(`--emulator-in-process` for the old setup).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import websocket

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import subprocess_env  # noqa: E402
from tests.wsclient import WS, check_guarantee, events, frame, read_up_to  # noqa: E402
from tradecanvas_ext.testing import ExchangeEmulator  # noqa: E402

FREQTRADE = str(Path(sys.executable).with_name("freqtrade"))
STRATEGY_DIR = REPO / "user_data" / "strategies"
PAIRS = ("BTC/USDT", "ETH/USDT", "LTC/USDT", "BNB/USDT", "SOL/USDT", "XRP/USDT", "ADA/USDT", "DOGE/USDT",
         "DOT/USDT", "TRX/USDT", "LINK/USDT", "AVAX/USDT", "ATOM/USDT", "UNI/USDT", "XLM/USDT", "ETC/USDT",
         "FIL/USDT", "NEAR/USDT", "APT/USDT", "ARB/USDT")
TF = 60
SYNC_CANDLES = 1000
SERIES_PER_CLIENT = 4
LOOP_START = "freqtrade.worker - DEBUG - ========================================"
LOOP_END = "freqtrade.worker - DEBUG - Throttling with '_process_running()'"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (kB) and Threads of a process, from /proc/<pid>/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                out[key] = int(value.split()[0])
    return out


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


# ---- the exchange -------------------------------------------------------------------------------------------
class EmulatorCli:
    """The emulator's own command line in a child process (real clock): what the bot needs of it is its
    ccxt URL override, which the dialect builds from the URL the child prints."""

    def __init__(self, seed: int, symbols: list[str]):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tradecanvas_ext.testing.emulator", "--port", str(self.port), "--seed",
             str(seed), "--symbols", ",".join(symbols)], stdout=subprocess.PIPE, text=True,
            env=subprocess_env(PYTHONUNBUFFERED="1"))
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise SystemExit(f"the emulator did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[-1].strip()
        self._dialect = ExchangeEmulator(seed=seed, symbols=symbols).dialect  # never started: its URL rules

    def ccxt_config(self) -> dict:
        return self._dialect.ccxt_config(self.url)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---- the bot -----------------------------------------------------------------------------------------------
class Bot:
    def __init__(self, tmp: Path, emu: ExchangeEmulator | EmulatorCli, pairs: list[str], throttle_s: int, env: dict[str, str]):
        self.env = env
        self.tmp, self.port = tmp, free_port()
        self.userdir = tmp / "user_data"
        (self.userdir / "data").mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / "freqtrade.log"
        self.series = [f"binance:spot:{p}:1m" for p in pairs]
        config = json.loads((REPO / "config.json").read_text())  # the shipped example, re-pointed
        config["exchange"].update({"ccxt_config": emu.ccxt_config(), "ccxt_async_config": emu.ccxt_config(),
                                   "enable_ws": False, "only_from_ccxt": True, "pair_whitelist": list(pairs)})
        config["internals"] = {"process_throttle_secs": throttle_s, "heartbeat_interval": 0}
        config["db_url"] = f"sqlite:///{tmp / 'trades.sqlite'}"
        config["log_config"] = {  # freqtrade's own format, to a file; DEBUG for the worker's loop lines only
            "version": 1, "disable_existing_loggers": False,
            "formatters": {"standard": {"format": "%(asctime)s - %(name)s - %(levelname)s - %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "formatter": "standard",
                                  "filename": str(self.log_path)}},
            "root": {"handlers": ["file"], "level": "INFO"},
            "loggers": {"freqtrade.worker": {"level": "DEBUG", "propagate": True}},
        }
        config["tradecanvas"].update({"listen_port": self.port, "db_url": f"sqlite:///{tmp / 'tc.sqlite'}",
                                      "series": self.series, "ccxt_config": emu.ccxt_config(),
                                      "ccxt_timeout_ms": 5000, "startup_sync_target_candles": SYNC_CANDLES})
        self.config_path = tmp / "config.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Bot:
        cmd = [FREQTRADE, "trade", "--config", str(self.config_path), "--strategy", "SampleTradeCanvasStrategy",
               "--strategy-path", str(STRATEGY_DIR), "--userdir", str(self.userdir)]
        self._out = open(self.tmp / "stdout.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=self.tmp, stdout=self._out, stderr=subprocess.STDOUT,
                                     env=subprocess_env(PYTHONUNBUFFERED="1", **self.env),
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_synced(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise SystemExit(f"the bot exited:\n{self.log_tail()}")
            try:
                if get_json(self.url + "/api/market/health").get("startup_sync"):
                    return
            except Exception:
                pass
            time.sleep(1)
        raise SystemExit(f"no startup sync after {timeout}s:\n{self.log_tail()}")

    def head(self, series_id: str) -> int | None:
        return get_json(f"{self.url}/api/market/health?series_id={series_id}")["head_time"]

    def log_tail(self) -> str:
        text = ""
        for p in (self.log_path, self.tmp / "stdout.log"):
            if p.exists():
                text += p.read_text(errors="replace")[-3000:]
        return text

    def stop(self) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()
        return self.proc.returncode

    def loop_durations(self) -> list[tuple[float, float]]:
        """(start, duration) of each of freqtrade's loops, in seconds, from its own log lines."""
        def stamp(line: str) -> float:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()

        loops, start = [], None
        for line in self.log_path.read_text(errors="replace").splitlines():
            if LOOP_START in line:
                start = stamp(line)
            elif LOOP_END in line and start is not None:
                loops.append((start, stamp(line) - start))
                start = None
        return loops


class Sampler(threading.Thread):
    """VmRSS and Threads of the bot every second: (time, rss kB, threads)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                s = proc_status(self.pid)
            except OSError:
                return
            self.samples.append((time.time(), s["VmRSS"], s["Threads"]))
            self.stop.wait(1.0)

    def between(self, t0: float, t1: float) -> list[tuple[float, int, int]]:
        return [s for s in self.samples if t0 <= s[0] <= t1]


# ---- normal clients ----------------------------------------------------------------------------------------
class Normal(threading.Thread):
    """Subscribes to a few series with a `since` (a catch-up, then live), reads every message as it comes.
    A connection the server closes is counted, and the client resumes with `since` = the last candle."""

    def __init__(self, url: str, series: list[str], since: dict[str, int], batch: bool):
        super().__init__(daemon=True)
        self.url, self.series, self.batch = url, series, batch
        self.segments: list[tuple[dict[str, int], list[dict]]] = []  # (since per series, messages)
        self.since = dict(since)
        self.stop, self.drops = threading.Event(), 0
        self.ws: WS | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            msgs: list[dict] = []
            self.segments.append((dict(self.since), msgs))
            try:
                self.ws = WS(self.url)
                for s in self.series:
                    self.ws.send({"type": "subscribe", "series_id": s, "since": self.since[s],
                                  "supports_batch": self.batch})
                while not self.stop.is_set():
                    self.ws.ws.settimeout(1.0)
                    try:
                        raw = self.ws.ws.recv()
                    except websocket.WebSocketTimeoutException:
                        continue
                    if not raw:
                        raise ConnectionError("closed")
                    msgs.append(json.loads(raw))
            except Exception:
                if self.stop.is_set():
                    return
                self.drops += 1
                for s in self.series:  # resume after the last candle received
                    got = [e[1] for e in events(msgs, s) if e[0] == "c"]
                    if got:
                        self.since[s] = got[-1]
                time.sleep(1)

    def last_time(self, series_id: str) -> int | None:
        got = [e[1] for _, msgs in self.segments for e in events(list(msgs), series_id) if e[0] == "c"]
        return got[-1] if got else None

    def violations(self, heads: dict[str, int]) -> list[str]:
        """Contract section 4 on each subscription; `heads`: what each series must have reached."""
        out = []
        for since, msgs in self.segments:
            for s in self.series:
                try:
                    check_guarantee(msgs, s, TF, since[s])
                except AssertionError as exc:
                    out.append(f"{s}: {exc}")
        for s in self.series:
            last = self.last_time(s)
            if heads.get(s) is not None and (last is None or last < heads[s]):
                out.append(f"{s}: never received {heads[s]} (last {last})")
        return out

    def close(self) -> None:
        self.stop.set()
        if self.ws is not None:
            self.ws.close()
        self.join(10)


# ---- hostile clients ---------------------------------------------------------------------------------------
def raw_upgrade(port: int, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET /ws/market HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        b = s.recv(1)
        if not b:
            raise ConnectionError(f"closed during the handshake: {head!r}")
        head += b
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head[:40])
    return s


class Hostile(threading.Thread):
    """One hostile client of `kind`, until stopped; counts what it did."""

    def __init__(self, kind: str, port: int, series: list[str], reconnect_pause_s: float, flood_per_s: float):
        super().__init__(daemon=True, name=f"hostile-{kind}")
        self.kind, self.port, self.series = kind, port, series
        self.pause, self.flood_per_s = reconnect_pause_s, flood_per_s
        self.stop = threading.Event()
        self.connections = self.frames = self.errors = 0
        self.open: list[socket.socket] = []

    def _subscribe_all(self, s: socket.socket, since: int = 0, batch: bool = False) -> None:
        s.sendall(b"".join(frame({"type": "subscribe", "series_id": sid, "since": since, "supports_batch": batch})
                           for sid in self.series))
        self.frames += len(self.series)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                getattr(self, f"_{self.kind}")()
            except Exception:
                self.errors += 1
                self.stop.wait(self.pause)
        for s in self.open:
            s.close()

    def _stalled(self) -> None:
        """Subscribes to every series from 0 and never reads; a fresh one every 60 s."""
        s = raw_upgrade(self.port, rcvbuf=4096)
        self.connections += 1
        self.open.append(s)
        self._subscribe_all(s, since=0, batch=random.random() < 0.5)
        self.stop.wait(60)
        self.open.remove(s)
        s.close()

    def _reconnect(self) -> None:
        """Connect, subscribe to every series from 0, read a few KB of the catch-up, hang up (half of the
        time with a reset), again."""
        s = raw_upgrade(self.port)
        self.connections += 1
        self._subscribe_all(s, since=0, batch=random.random() < 0.5)
        read_up_to(s, random.randint(0, 64 * 1024))
        if random.random() < 0.5:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        self.stop.wait(self.pause)

    def _flood(self) -> None:
        """Subscribes, re-subscribes (each replacing the last, each from 0), sends garbage and unknown
        series, `flood_per_s` frames a second, reading (and dropping) what comes back."""
        s = raw_upgrade(self.port)
        self.connections += 1
        s.settimeout(0.0)
        junk = ["{", '{"type":"subscribe","series_id":"binance:spot:NOPE/USDT:1m"}',
                '{"type":"subscribe","series_id":"binance:spot:BTC/USDT:1m","since":-1}', '{"type":"nope"}']
        try:
            while not self.stop.is_set():
                if random.random() < 0.8:
                    msg = {"type": "subscribe", "series_id": random.choice(self.series), "since": 0,
                           "supports_batch": random.random() < 0.5}
                    s.setblocking(True)
                    s.sendall(frame(msg))
                else:
                    s.setblocking(True)
                    s.sendall(frame(random.choice(junk)))
                self.frames += 1
                s.setblocking(False)
                try:
                    while s.recv(1 << 16):
                        pass
                    raise ConnectionError("closed by the server")
                except BlockingIOError:
                    pass
                self.stop.wait(1.0 / self.flood_per_s)
        finally:
            s.close()

    def _half_sent(self) -> None:
        """An HTTP request that never ends (a header line, then one byte a second) until the server cuts it."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.connections += 1
        try:
            s.sendall(f"GET /api/market/health HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nX-Slow: ".encode())
            while not self.stop.is_set():
                self.stop.wait(1.0)
                s.sendall(b"x")
        finally:
            s.close()


# ---- the run -----------------------------------------------------------------------------------------------
def py_spy(binary: str | None, pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """py-spy sampling the threads that hold the GIL for `seconds` (where the interpreter's time goes);
    non-blocking: the bot is not paused for each sample."""
    if binary is None:
        return None
    return subprocess.Popen([binary, "record", "--pid", str(pid), "--gil", "--threads", "--nonblocking",
                             "--format", "raw", "--rate", "50", "--duration", str(max(1, int(seconds) - 2)), "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q / 100 * len(v) + 0.5)) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase-s", type=float, default=300.0, help="length of each phase (default 300)")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--normal", type=int, default=50, help="normal WebSocket clients")
    ap.add_argument("--hostile", type=int, default=20, help="hostile clients, a quarter of each kind")
    ap.add_argument("--throttle-s", type=int, default=2, help="freqtrade's internals.process_throttle_secs")
    ap.add_argument("--reconnect-pause-s", type=float, default=0.5, help="pause of a reconnect loop")
    ap.add_argument("--flood-per-s", type=float, default=20.0, help="frames a second of a subscribe flood")
    ap.add_argument("--settle-s", type=float, default=120.0,
                    help="wait after the startup sync before anything is measured (default 120)")
    ap.add_argument("--malloc-arena-max", type=int, default=None,
                    help="MALLOC_ARENA_MAX for the bot process (glibc; default: glibc's own, 8 per core)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ap.add_argument("--emulator-in-process", action="store_true",
                    help="run the exchange emulator in the bench's process (default: its own process)")
    ap.add_argument("--py-spy", default=None, metavar="PATH",
                    help="a py-spy binary: record the bot's GIL-holding stacks in each phase (raw, collapsed) "
                         "to pyspy_a.txt and pyspy_b.txt in the temporary directory (implies --keep)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tc-chaos-bench-"))
    pairs = list(PAIRS[:args.pairs])
    emu = (ExchangeEmulator(seed=11, symbols=pairs).start() if args.emulator_in_process
           else EmulatorCli(seed=11, symbols=pairs))
    env = {} if args.malloc_arena_max is None else {"MALLOC_ARENA_MAX": str(args.malloc_arena_max)}
    bot = Bot(tmp, emu, pairs, args.throttle_s, env).start()
    normals: list[Normal] = []
    hostiles: list[Hostile] = []
    sampler = None
    try:
        bot.wait_synced()
        sampler = Sampler(bot.proc.pid)
        sampler.start()
        time.sleep(args.settle_s)  # the sync's aftermath (first loops, lag checks) settles before measuring
        heads = {s: bot.head(s) for s in bot.series}
        rng = random.Random(5)
        for i in range(args.normal):  # each: a few series, a catch-up of 100 to 900 candles, then live
            series = [bot.series[(i * SERIES_PER_CLIENT + k) % len(bot.series)] for k in range(SERIES_PER_CLIENT)]
            since = {s: heads[s] - TF * rng.randint(100, 900) for s in series}
            normals.append(Normal(bot.url, series, since, batch=i % 2 == 0))
            normals[-1].start()
        deadline = time.monotonic() + 120
        while any(n.last_time(s) is None or n.last_time(s) < heads[s] for n in normals for s in n.series):
            if time.monotonic() > deadline:
                raise SystemExit("the normal clients never caught up")
            time.sleep(0.5)
        time.sleep(10)
        t_base = time.time()
        rss_base = proc_status(bot.proc.pid)["VmRSS"]

        kinds = ["stalled", "reconnect", "flood", "half_sent"]
        for i in range(args.hostile):
            h = Hostile(kinds[i % 4], bot.port, bot.series, args.reconnect_pause_s, args.flood_per_s)
            hostiles.append(h)
            h.start()
        t_a0 = time.time()
        spy = py_spy(args.py_spy, bot.proc.pid, args.phase_s, tmp / "pyspy_a.txt")
        time.sleep(args.phase_s)
        t_a1 = time.time()
        if spy is not None:
            spy.wait()
        for h in hostiles:
            h.stop.set()
        for h in hostiles:
            h.join(15)
        t_b0 = time.time()
        spy = py_spy(args.py_spy, bot.proc.pid, args.phase_s, tmp / "pyspy_b.txt")
        time.sleep(args.phase_s)
        t_b1 = time.time()
        if spy is not None:
            spy.wait()
        final_heads = {s: bot.head(s) for s in bot.series}
        time.sleep(10)  # what was stored by then has reached every normal client
        violations = [v for n in normals for v in n.violations(final_heads)]
        alive = bot.alive()
    finally:
        for n in normals:
            n.close()
        for h in hostiles:
            h.stop.set()
        if sampler is not None:
            sampler.stop.set()
        code = bot.stop()
        emu.stop()

    loops = bot.loop_durations()
    a = [d * 1000 for t, d in loops if t_a0 <= t < t_a1]
    b = [d * 1000 for t, d in loops if t_b0 <= t < t_b1]
    samples = sampler.between(t_base, t_b1)
    rss_max = max(s[1] for s in samples)
    out = {
        "bench": "chaos", "phase_s": args.phase_s, "pairs": len(pairs), "normal_clients": args.normal,
        "hostile_clients": {k: sum(h.kind == k for h in hostiles) for k in kinds},
        "process_throttle_secs": args.throttle_s, "reconnect_pause_s": args.reconnect_pause_s,
        "flood_frames_per_s": args.flood_per_s,
        "loops_a": len(a), "loops_b": len(b),
        "loop_p50_ms_a": round(pct(a, 50), 1), "loop_p99_ms_a": round(pct(a, 99), 1),
        "loop_p50_ms_b": round(pct(b, 50), 1), "loop_p99_ms_b": round(pct(b, 99), 1),
        "loop_mean_ms_a": round(statistics.fmean(a), 1), "loop_mean_ms_b": round(statistics.fmean(b), 1),
        "ratio_p50_a_vs_b": round(pct(a, 50) / pct(b, 50), 3), "ratio_p99_a_vs_b": round(pct(a, 99) / pct(b, 99), 3),
        "goal_ratio": 1.10,
        "rss_base_mb": round(rss_base / 1024, 1), "rss_max_mb": round(rss_max / 1024, 1),
        "rss_growth_mb": round((rss_max - rss_base) / 1024, 1),
        "rss_end_mb": round(samples[-1][1] / 1024, 1), "goal_rss_growth_mb": 50,
        "rss_mb_every_30s": [round(s[1] / 1024) for s in samples[::30]],
        "rss_end_a_mb": round(sampler.between(t_a0, t_a1)[-1][1] / 1024, 1),
        "malloc_arena_max": args.malloc_arena_max,
        "max_threads": max(s[2] for s in sampler.samples),
        "threads_end": samples[-1][2],
        "max_threads_a": max(s[2] for s in sampler.between(t_a0, t_a1)),
        "max_threads_b": max(s[2] for s in sampler.between(t_b0, t_b1)),
        "guarantee_violations": len(violations), "goal_violations": 0,
        "violation_examples": violations[:5],
        "normal_reconnects": sum(n.drops for n in normals),
        "hostile_connections": sum(h.connections for h in hostiles),
        "hostile_frames": sum(h.frames for h in hostiles),
        "hostile_refused_or_cut": sum(h.errors for h in hostiles),
        "bot_alive_until_stop": alive, "bot_exit_code": code,
        "emulator": "in-process" if args.emulator_in_process else "own process", "python": sys.version.split()[0],
    }
    if args.keep or args.py_spy:
        out["tmp"] = str(tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
