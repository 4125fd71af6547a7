"""`make run`: the bundled exchange emulator plus a real `freqtrade trade` dry-run bot with the extension.

The emulator runs only when config.json points the bot's exchange at 127.0.0.1 (its made-up candles must
never stand in for a real exchange); Ctrl-C stops the bot, then the emulator.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_OUTAGE = "240:120"  # a scripted exchange outage 4 minutes in, lasting 2 minutes


def _emulator_address(config: dict) -> tuple[str, int] | None:
    """host, port of the exchange URL the bot is pointed at, when it is a loopback address."""
    ccxt_config = (config.get("exchange") or {}).get("ccxt_config") or {}
    url = ((ccxt_config.get("urls") or {}).get("api") or {}).get("public")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    return parts.hostname, parts.port or 80


def _symbols(config: dict) -> list[str]:
    out = list((config.get("exchange") or {}).get("pair_whitelist") or [])
    for sid in (config.get("tradecanvas") or {}).get("series") or []:
        parts = sid.split(":")
        if len(parts) >= 4:
            out.append(":".join(parts[2:-1]))
    return sorted({s for s in out if "/" in s and ":" not in s})


def _freqtrade_command() -> list[str]:
    exe = Path(sys.executable).with_name("freqtrade")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("freqtrade")
    return [found] if found else [sys.executable, "-m", "freqtrade"]


def _port_busy(host: str, port: int) -> bool:
    from .glue import port_in_use

    return port_in_use(host, port)


def _stop(proc: subprocess.Popen | None, sig: int, wait_s: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    except OSError:
        pass


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tradecanvas run-bot",
                                description="The exchange emulator (when config.json points at 127.0.0.1) and a "
                                            "freqtrade dry-run bot with the tradecanvas extension")
    p.add_argument("--config", default="config.json")
    p.add_argument("--strategy", default=None, help="default: the config's \"strategy\"")
    p.add_argument("--userdir", default="user_data")
    p.add_argument("--outage-in", default=DEFAULT_OUTAGE, metavar="SECONDS:DURATION",
                   help="scripted emulator outage (default %(default)s; 'none' for none)")
    args, extra = p.parse_known_args(argv)
    try:
        config = json.loads(Path(args.config).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"run-bot: cannot read {args.config}: {exc}", file=sys.stderr)
        return 2
    strategy = args.strategy or config.get("strategy") or "SampleTradeCanvasStrategy"
    tc = config.get("tradecanvas") or {}
    web = f"http://{tc.get('listen_ip_address', '127.0.0.1')}:{tc.get('listen_port', 8090)}"

    emulator = None
    address = _emulator_address(config)
    if address is not None:
        host, port = address
        if _port_busy(host, port):
            print(f"run-bot: {host}:{port} is already in use (another emulator?); stop it first", file=sys.stderr)
            return 2
        cmd = [sys.executable, "-m", "tradecanvas_ext.testing.emulator", "--host", host, "--port", str(port),
               "--symbols", ",".join(_symbols(config))]
        if args.outage_in and args.outage_in != "none":
            cmd += ["--outage-in", args.outage_in]
        emulator = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
        line = emulator.stdout.readline().strip() if emulator.stdout else ""
        if emulator.poll() is not None or "listening" not in line:
            print(f"run-bot: the emulator did not start: {line}", file=sys.stderr)
            _stop(emulator, signal.SIGTERM, 5)
            return 2
        print(f"run-bot: {line}", flush=True)
        if args.outage_in and args.outage_in != "none":
            start, _, duration = args.outage_in.partition(":")
            print(f"run-bot: scripted exchange outage in {start} s for {duration} s: its candles never exist, "
                  "so watch the hole appear and get reported (void) or repaired", flush=True)
    else:
        print("run-bot: the bot's exchange is not a local emulator: using it as configured", flush=True)

    print(f"run-bot: chart {web}/  health {web}/api/market/health  candles {web}/api/market/candles?"
          f"series_id=...  live ws://{web.split('://', 1)[1]}/ws/market  (Ctrl-C stops everything)", flush=True)
    bot_cmd = [*_freqtrade_command(), "trade", "--config", args.config, "--strategy", strategy,
               "--userdir", args.userdir, *extra]
    bot = subprocess.Popen(bot_cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    stopping = threading.Event()

    def on_term(signum, frame):  # forward a TERM to the bot, which then cleans up
        stopping.set()
        _stop(bot, signal.SIGINT, 30)

    previous = signal.signal(signal.SIGTERM, on_term)
    code = 1
    try:
        while True:
            try:
                code = bot.wait()
                break
            except KeyboardInterrupt:  # the terminal sent SIGINT to the bot too: let it shut down
                stopping.set()
                try:
                    code = bot.wait(30)
                except (subprocess.TimeoutExpired, KeyboardInterrupt):
                    _stop(bot, signal.SIGKILL, 5)
                    code = bot.returncode if bot.returncode is not None else 1
                break
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(emulator, signal.SIGTERM, 10)
        if emulator is not None:
            print("run-bot: emulator stopped", flush=True)
    return 0 if stopping.is_set() and code in (0, 130, -signal.SIGINT) else code


if __name__ == "__main__":
    raise SystemExit(main())
