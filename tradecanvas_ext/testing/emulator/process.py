"""An `ExchangeEmulator` in a child process, as the remote exchange it stands for: its HTTP threads, its
building and serialising of candle rows, do not compete with the caller's process for the GIL (a bench
that times ccxt against an in-process emulator times the emulator too).

The child runs the emulator at a fixed time (a `ManualClock`, settable through `set_time`) and answers a
few calls over a `multiprocessing` Pipe: its URL and `ccxt_config`, `request_count(kind)`,
`reset_counts()`, `requests`. The truth stays in the caller's process: `oracle()` is an unstarted
`ExchangeEmulator` with the same seed, symbols, dialect, listings and time, whose candles are the child's
(the truth is a pure function of those: markets from the seed, candles from the market's hash). Faults are
not forwarded: a child emulator serves the fault-free truth. Tests and benches only; never a real exchange.
"""
from __future__ import annotations

import copy
import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ...domain.clock import ManualClock
from .server import ExchangeEmulator

START_TIMEOUT_S = 60.0  # the child imports numpy and the emulator (a new interpreter: nothing inherited)


def _child_main(fd: int) -> None:
    """The child's main (its own interpreter): read the emulator's arguments from the pipe on `fd`, start it,
    report its URL, answer calls until "stop" or the pipe closes (the parent gone)."""
    conn = Connection(fd)
    kwargs, now = conn.recv()
    clock = ManualClock(now)
    try:
        emu = ExchangeEmulator(clock=clock, **kwargs).start()
    except Exception as exc:  # reported to the parent, which raises it
        conn.send(("err", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ok", (emu.url, emu.ccxt_config())))
    calls = {
        "request_count": emu.request_count,
        "reset_counts": emu.reset_counts,
        "requests": lambda: emu.requests,
        "set_time": clock.set,
    }
    try:
        while True:
            try:
                name, args = conn.recv()
            except (EOFError, OSError):
                break
            if name == "stop":
                break
            try:
                conn.send(("ok", calls[name](*args)))
            except Exception as exc:
                conn.send(("err", f"{type(exc).__name__}: {exc}"))
    finally:
        emu.stop()
        try:
            conn.send(("ok", None))
        except (OSError, ValueError):
            pass
        conn.close()


class EmulatorProcess:
    """An `ExchangeEmulator(seed, symbols, dialect, max_requests_per_second, listings)` served by a child
    process (a new interpreter) at the fixed time `now`.

    >>> with EmulatorProcess(seed=5, dialect="kraken", now=NOW, max_requests_per_second=10) as emu:
    ...     ex = ccxt.kraken(emu.ccxt_config())
    ...     ex.fetch_ohlcv("BTC/USD", "1m") == ...emu.oracle().candles("BTC/USD", "1m", a, b)...
    ...     emu.request_count("klines")
    """

    def __init__(self, now: float, seed: int = 1, symbols: Iterable[str] | None = None, dialect: str = "binance",
                 max_requests_per_second: float | None = None, listings: dict[str, float] | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self._kwargs: dict[str, Any] = {
            "seed": int(seed), "symbols": None if symbols is None else list(symbols), "dialect": dialect,
            "max_requests_per_second": max_requests_per_second, "listings": dict(listings or {}),
            "host": host, "port": int(port)}
        self._oracle_clock = ManualClock(now)
        self._oracle = ExchangeEmulator(clock=self._oracle_clock, **self._kwargs)  # validates the arguments too
        self._now = float(now)
        self._conn = None
        self._proc: subprocess.Popen | None = None
        self._url: str | None = None
        self._ccxt_config: dict | None = None
        self._lock = threading.Lock()  # one call on the pipe at a time

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EmulatorProcess:
        if self._proc is not None:
            return self
        parent, child = multiprocessing.Pipe()
        # a fresh interpreter that imports the emulator only (not the caller's __main__, as multiprocessing's
        # spawn would, nor a fork of a process with threads), handed its end of the pipe as an inherited fd
        root = str(Path(__file__).resolve().parents[3])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        proc = subprocess.Popen(
            [sys.executable, "-c", f"from {__name__} import _child_main; _child_main({child.fileno()})"],
            pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL)
        child.close()
        try:
            parent.send((self._kwargs, self._now))
            if not parent.poll(START_TIMEOUT_S):
                raise RuntimeError("the emulator child process did not start")
            status, value = parent.recv()
        except (OSError, EOFError, RuntimeError) as exc:
            proc.kill()
            proc.wait()
            parent.close()
            raise RuntimeError(f"the emulator child process failed to start: {exc}") from exc
        if status != "ok":
            proc.wait(timeout=10)
            parent.close()
            raise RuntimeError(f"the emulator child process failed: {value}")
        self._conn, self._proc = parent, proc
        self._url, self._ccxt_config = value
        return self

    def stop(self) -> None:
        """Stop the emulator and its process. Idempotent."""
        with self._lock:
            proc, conn = self._proc, self._conn
            self._proc = self._conn = None
            if proc is None:
                return
            try:
                conn.send(("stop", ()))
                if conn.poll(10):
                    conn.recv()
            except (OSError, EOFError):
                pass
            conn.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    # ------------------------------------------------------------------ the child's emulator
    def _call(self, name: str, *args):
        with self._lock:
            if self._conn is None:
                raise RuntimeError("the emulator process is not running")
            self._conn.send((name, args))
            status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"emulator process: {name}: {value}")
        return value

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the emulator process has not been started")
        return self._url

    def ccxt_config(self) -> dict:
        """The child emulator's `ccxt_config()` (a copy)."""
        if self._ccxt_config is None:
            raise RuntimeError("the emulator process has not been started")
        return copy.deepcopy(self._ccxt_config)

    def request_count(self, kind: str | None = None) -> int:
        """The child emulator's `request_count(kind)`."""
        return int(self._call("request_count", kind))

    def reset_counts(self) -> None:
        self._call("reset_counts")

    @property
    def requests(self) -> list[tuple[str, dict]]:
        return self._call("requests")

    @property
    def now(self) -> float:
        return self._now

    def set_time(self, now: float) -> None:
        """Move the child's clock (and the oracle's) to `now`."""
        self._call("set_time", float(now))
        self._now = float(now)
        self._oracle_clock.set(self._now)

    # ------------------------------------------------------------------ the truth, in this process
    def oracle(self) -> ExchangeEmulator:
        """An unstarted `ExchangeEmulator` with the child's seed, symbols, dialect, listings and time: its
        `candles`/`served`/`forming`/`reach_start` are what the child serves (never start it)."""
        return self._oracle
