"""`tradecanvas` command line. Reads the config once (Settings), then calls the library; no logic of its own."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from ..domain import expected_latest_closed_time
from ..domain.clock import SYSTEM_CLOCK
from ..series_ids import parse_series_id
from ..settings import ConfigError, Settings


def _load(args) -> Settings:
    """The config as the bot reads it (freqtrade's loader, cli/ft_config.py)."""
    from .ft_config import load_settings

    return load_settings(args.config, args.userdir, args.datadir)[0]


def _open_store(settings: Settings):
    from ..backfill.tracker import this_owner
    from ..store import open_store

    return open_store(settings.db_url, origin=this_owner())


def cmd_check(args) -> int:
    """Validate the config, open the store and print what it holds per configured series."""
    settings = _load(args)
    storage = _open_store(settings)
    store = storage.candles
    now = SYSTEM_CLOCK()
    rows = []
    for sid in settings.series or ():
        st = store.stats(sid)
        end = expected_latest_closed_time(now, sid.tf_seconds)
        holes = store.holes(sid, st["first_time"], end) if st["first_time"] is not None else []
        rows.append({"series_id": str(sid), **st, "holes": len(holes),
                     "missing_candles": sum(h.missing_candles for h in holes)})
    storage.close()
    print(json.dumps({"db_url": _redact(settings.db_url), "series": rows}, indent=2))
    return 0


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def cmd_gaps(args) -> int:
    settings = _load(args)
    sid = parse_series_id(args.series_id)
    storage = _open_store(settings)
    store = storage.candles
    start = args.start if args.start is not None else store.first_time(sid)
    end = args.end if args.end is not None else expected_latest_closed_time(SYSTEM_CLOCK(), sid.tf_seconds)
    holes = [] if start is None else store.holes(sid, start, end)
    storage.close()
    print(json.dumps({"series_id": str(sid), "start": start, "end": end,
                      "holes": [h.to_dict() for h in holes],
                      "missing_candles": sum(h.missing_candles for h in holes)}, indent=2))
    return 0


def _runtime(settings: Settings):
    from ..runtime import Runtime

    return Runtime(settings).start(serve=False, startup_sync=False)  # the commands run it in the foreground


def run_sync_with_progress(rt, console=None) -> dict:
    """Startup sync in a worker thread; a progress bar per series from the tracker; final table."""
    import threading

    from rich.progress import BarColumn, Progress, TextColumn

    from ..backfill.startup_sync import format_table

    console = console or _console()
    done = threading.Event()
    box: dict = {}

    def work():
        try:
            box["result"] = rt.run_startup_sync()
        finally:
            done.set()

    threading.Thread(target=work, name="tc-cli-sync", daemon=True).start()
    with Progress(TextColumn("{task.description:42}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                  TextColumn("{task.fields[state]}"), console=console, transient=False) as progress:
        tasks = {s: progress.add_task(str(s), total=100, state="waiting") for s in rt.series_ids}
        while True:
            finished = done.wait(0.2)
            for sid, task in tasks.items():
                tr = rt.tracker.get(sid)
                pct = tr.get("progress_pct")
                progress.update(task, completed=pct if pct is not None else 0, state=tr.get("state") or "")
            if finished:
                break
        result = box.get("result") or {}
        by_text = {str(s): task for s, task in tasks.items()}
        for row in result.get("series_results", []):
            progress.update(by_text[row["series_id"]], completed=100 if row["status"] == "synced" else None,
                            state=row["status"])
    print(format_table(result), flush=True)
    return result


def cmd_sync(args) -> int:
    rt = _runtime(_load(args))
    try:
        result = run_sync_with_progress(rt)
    finally:
        rt.stop()
    return 0 if result.get("series_errors", 0) == 0 else 1


_COLOURS = {"green": "green", "yellow": "yellow", "red": "red"}


def _console():
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def print_health(health: dict, console=None) -> None:
    from rich.table import Table

    console = console or _console()
    table = Table(title=f"tradecanvas health: {health['status']}")
    for col in ("series", "status", "reason", "head", "lag s", "missing", "backfill", "progress"):
        table.add_column(col)
    for r in health["series"]:
        colour = _COLOURS[r["status"]]
        b = r["backfill"]
        pct = b.get("progress_pct")
        table.add_row(r["series_id"], f"[{colour}]{r['status']}[/{colour}]", r["status_reason"],
                      str(r["head_time"]), str(r["lag_seconds"]), str(r["missing_candles"]),
                      str(b.get("state")), "" if pct is None else f"{pct:.0f}%")
    console.print(table)


def cmd_health(args) -> int:
    rt = _runtime(_load(args))
    try:
        health = rt.health(now_time=args.now_time)
    finally:
        rt.stop()
    if args.json:
        print(json.dumps(health, indent=2, default=str))
    else:
        print_health(health)
    return 0


def cmd_emulator(args) -> int:
    from ..testing.emulator import main as emulator_main

    return emulator_main(args.emulator_args)


def cmd_demo(args) -> int:
    """`make run`: the emulator on the config's ccxt URL, a startup sync from it, then health."""
    from urllib.parse import urlsplit

    from ..testing import ExchangeEmulator

    settings = _load(args)
    url = (settings.ccxt_config.get("urls", {}).get("api", {}) or {}).get("public", "http://127.0.0.1:9999")
    parts = urlsplit(url)
    symbols = sorted({s.symbol for s in settings.series or ()})
    emu = ExchangeEmulator(seed=1, symbols=symbols, host=parts.hostname or "127.0.0.1",
                           port=parts.port or 9999).start()
    print(f"exchange emulator serving {', '.join(symbols)} at {emu.url}")
    rt = _runtime(settings)
    try:
        run_sync_with_progress(rt)
        print_health(rt.health())
    finally:
        rt.stop()
        emu.stop()
    return 0


def cmd_run_bot(args) -> int:
    """The emulator plus a real freqtrade dry-run bot with the extension (what `make run` does)."""
    from ..bot.demo import main as run_bot

    argv = ["--config", args.config_file, "--userdir", args.userdir, "--outage-in", args.outage_in]
    return run_bot(argv + (["--strategy", args.strategy] if args.strategy else []))


def cmd_coverage(args) -> int:
    """`verify`: 0 when the coverage index agrees with the candles, 1 (and the series named) when not, the
    store then marked so its next open rebuilds; `rebuild`: recompute it now, then verify."""
    storage = _open_store(_load(args))
    store = storage.candles
    try:
        if args.action == "rebuild":
            n = store.rebuild_coverage()
            print(f"rebuilt the coverage index of {n} series from their candles")
        bad = store.verify_coverage()
    finally:
        storage.close()
    if bad:
        print(f"the coverage index disagrees with the candles of {len(bad)} series: {', '.join(bad)}; "
              "run `tradecanvas coverage rebuild` (or the next open of the store rebuilds it)")
        return 1
    print("the coverage index agrees with the candles")
    return 0


def cmd_serve(args) -> int:
    from .serve import serve

    return serve(_load(args), poll_interval_s=args.poll_interval)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tradecanvas", description="Gap-aware candle history for freqtrade")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str, config: bool = True, **kw) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, **kw)
        if config:
            add_config_options(c)
        c.set_defaults(func=func)
        return c

    command("check", cmd_check, "validate the config and show what the store holds")
    g = command("gaps", cmd_gaps, "holes and voids of one series")
    g.add_argument("series_id")
    g.add_argument("--start", type=int)
    g.add_argument("--end", type=int)
    command("sync", cmd_sync, "run the startup sync: every configured series up to its latest candle")
    h = command("health", cmd_health, "health of every configured series")
    h.add_argument("--now-time", type=int, dest="now_time")
    h.add_argument("--json", action="store_true")
    e = command("emulator", cmd_emulator, "run the bundled exchange emulator (Binance REST format, 127.0.0.1)",
                config=False, add_help=False)
    e.add_argument("emulator_args", nargs=argparse.REMAINDER)
    sv = command("serve", cmd_serve, "HTTP + WebSocket server, startup sync and a live tail, until Ctrl-C")
    sv.add_argument("--poll-interval", type=float, default=5.0, dest="poll_interval",
                    help="seconds between two live tail top-ups from the exchange")
    cv = command("coverage", cmd_coverage, "verify the coverage index (the runs behind holes) against the "
                 "candles, or rebuild it")
    cv.add_argument("action", choices=("verify", "rebuild"))
    command("demo", cmd_demo, "emulator + startup sync + health, without a bot")
    rb = command("run-bot", cmd_run_bot, "emulator + a freqtrade dry-run bot with the extension (make run)",
                 config=False)
    rb.add_argument("--config", default="config.json", dest="config_file")
    rb.add_argument("--strategy", default=None)
    rb.add_argument("--userdir", default="user_data")
    rb.add_argument("--outage-in", dest="outage_in", default="240:120", metavar="SECONDS:DURATION",
                    help="scripted emulator outage ('none' for none)")
    from .data import add_data_command

    add_data_command(sub, add_config_options)
    return p


def add_config_options(c: argparse.ArgumentParser) -> None:
    """freqtrade's own config options: several --config (later wins), --userdir, --datadir."""
    c.add_argument("-c", "--config", action="append", metavar="PATH",
                   help="a freqtrade config file; give several to merge them, later wins (default: config.json)")
    c.add_argument("--userdir", "--user-data-dir", dest="userdir", default=None,
                   help="freqtrade's user data directory (default: the config's user_data_dir)")
    c.add_argument("-d", "--datadir", "--data-dir", dest="datadir", default=None,
                   help="freqtrade's history directory (default: <userdir>/data/<exchange>)")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["emulator"]:  # its own options (and --help) go to the emulator's parser untouched
        from ..testing.emulator import main as emulator_main

        return emulator_main(argv[1:])
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
