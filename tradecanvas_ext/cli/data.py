"""`tradecanvas data gaps | repair`: freqtrade's selectors (--pairs with its wildcards, --timeframes,
--candle-types, --timerange, the config options), a progress bar per file and a total, the tables, Ctrl-C.
The file work is history/'s; this module only selects, shows and maps outcomes to exit codes.
"""
from __future__ import annotations

import enum
import json
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..settings import ConfigError, Settings

EXIT_OK, EXIT_UNREPAIRED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
CANDLE_TYPES = ("spot", "futures", "mark", "index", "premiumIndex", "funding_rate")
SHOWN_HOLES = 12  # holes listed per file in the table (--json lists all)


def add_data_command(sub, add_config_options) -> None:
    from ..history.files import FORMATS

    d = sub.add_parser("data", help="freqtrade's own history files: list their holes, repair them")
    dsub = d.add_subparsers(dest="data_command", required=True)
    for name, func, text in (
            ("gaps", cmd_data_gaps, "holes, voids and unavailable ranges of each history file"),
            ("repair", cmd_data_repair, "fill the holes of the history files with real candles (store, "
                                        "then the exchange), record voids; never a made-up candle")):
        c = dsub.add_parser(name, help=text, description=text)
        add_config_options(c)
        c.add_argument("-p", "--pairs", nargs="+", help="these pairs only (freqtrade's wildcards, e.g. '.*/USDT')")
        c.add_argument("-t", "--timeframes", nargs="+", help="these timeframes only (default: every one found)")
        c.add_argument("--candle-types", nargs="+", choices=CANDLE_TYPES,
                       help="these candle types only (default: every one for gaps, the market's own for repair)")
        c.add_argument("--timerange", help="only holes inside this range (freqtrade's format, e.g. 20240101-20240201)")
        c.add_argument("--trading-mode", "--tradingmode", dest="trading_mode", choices=("spot", "futures"),
                       help="default: the config's trading_mode")
        c.add_argument("--data-format-ohlcv", dest="data_format", choices=FORMATS,
                       help="default: the config's dataformat_ohlcv (feather)")
        c.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
        if name == "repair":
            c.add_argument("--dry-run", action="store_true", help="fetch and report, write nothing")
        c.set_defaults(func=func)


@dataclass(frozen=True)
class Selection:
    settings: Settings
    datadir: Path
    data_format: str
    trading_mode: str
    exchange: str
    files: tuple  # history.files.HistoryFile, in order
    window: object  # history.repair.Window


def select(args, repair: bool) -> Selection:
    from freqtrade.configuration import TimeRange
    from freqtrade.exceptions import OperationalException
    from freqtrade.plugins.pairlist.pairlist_helpers import expand_pairlist

    from ..history.files import list_files
    from ..history.repair import Window
    from .ft_config import load_settings

    settings, config = load_settings(args.config, args.userdir, args.datadir)
    if not settings.exchange or not config.get("datadir"):
        raise ConfigError("data gaps / repair need a freqtrade config with an \"exchange\" section (its name "
                          "picks the datadir and the exchange to repair from)")
    datadir = Path(config["datadir"])
    trading_mode = args.trading_mode or _value(config.get("trading_mode")) or "spot"
    data_format = args.data_format or settings.data_format
    files = list_files(datadir, data_format, trading_mode, settings.exchange)
    if args.pairs:
        try:
            wanted = set(expand_pairlist(args.pairs, sorted({f.pair for f in files})))
        except ValueError as exc:
            raise ConfigError(f"--pairs: {exc}") from None
        files = [f for f in files if f.pair in wanted]
    if args.timeframes:
        files = [f for f in files if f.timeframe in set(args.timeframes)]
    types = set(args.candle_types or ())
    if not types and repair:
        types = {"futures" if trading_mode == "futures" else "spot"}
    if types:
        files = [f for f in files if f.candle_type in types]
    window = Window()
    if args.timerange:
        try:
            tr = TimeRange.parse_timerange(args.timerange)
        except (OperationalException, ValueError) as exc:
            raise ConfigError(f"--timerange: {exc}") from None
        window = Window(tr.startts or None, (tr.stopts - 1) if tr.stopts else None)  # freqtrade's stop: exclusive
    if not files:
        raise ConfigError(f"no {data_format} history file in {datadir} matches the selection "
                          f"(trading mode {trading_mode})")
    return Selection(settings, datadir, data_format, trading_mode, settings.exchange, tuple(files), window)


def _value(v) -> str | None:
    """freqtrade's loader leaves the trading mode a string or makes it its enum."""
    if v is None:
        return None
    return str(v.value) if isinstance(v, enum.Enum) else str(v)


# ---------------------------------------------------------------------------------------------- gaps
def cmd_data_gaps(args) -> int:
    from ..history.repair import scan, series_text

    sel = select(args, repair=False)
    scans = [scan(f, series_text(f, sel.exchange, sel.trading_mode), sel.window) for f in sel.files]
    if args.json:
        print(json.dumps({**_header(sel), "files": [s.to_dict() for s in scans], "total": _gap_total(scans)},
                         indent=2))
    else:
        print_gaps(sel, scans)
    return EXIT_OK


def _header(sel: Selection) -> dict:
    return {"datadir": str(sel.datadir), "data_format": sel.data_format, "trading_mode": sel.trading_mode,
            "exchange": sel.exchange}


def _gap_total(scans) -> dict:
    from ..history import plan

    gaps = [g for s in scans for g in s.gaps]
    return {"files": len(scans), "candles": sum(s.candles for s in scans),
            "holes": sum(1 for g in gaps if g.kind == plan.MISSING),
            "missing_candles": plan.covered(gaps, plan.MISSING), "void_candles": plan.covered(gaps, plan.VOID),
            "unavailable_candles": plan.covered(gaps, plan.UNAVAILABLE)}


def when(t: int | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def _console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 160)


def print_gaps(sel: Selection, scans) -> None:
    from rich.table import Table

    from ..history import plan

    console = _console()
    table = Table(title=f"history holes in {sel.datadir} ({sel.data_format})")
    for col in ("file", "candles", "first", "last", "holes", "missing", "void", "unavailable"):
        table.add_column(col, justify="right" if col in ("candles", "holes", "missing", "void", "unavailable")
                         else "left")
    for s in scans:
        table.add_row(s.file.name, str(s.candles), when(s.first_time), when(s.last_time),
                      str(sum(1 for g in s.gaps if g.kind == plan.MISSING)), str(plan.covered(s.gaps, plan.MISSING)),
                      str(plan.covered(s.gaps, plan.VOID)), str(plan.covered(s.gaps, plan.UNAVAILABLE)))
    t = _gap_total(scans)
    table.add_section()
    table.add_row(f"total ({t['files']} files)", str(t["candles"]), "", "", str(t["holes"]), str(t["missing_candles"]),
                  str(t["void_candles"]), str(t["unavailable_candles"]))
    console.print(table)
    for s in scans:
        if not s.gaps:
            continue
        console.print(f"{s.file.name}:")
        for g in s.gaps[:SHOWN_HOLES]:
            console.print(f"  {when(g.start)} .. {when(g.end)}  {g.missing_candles:>6} candle(s)  {g.kind}")
        if len(s.gaps) > SHOWN_HOLES:
            console.print(f"  … {len(s.gaps) - SHOWN_HOLES} more (--json lists every one)")


# ---------------------------------------------------------------------------------------------- repair
class _StopOnCtrlC:
    """The first Ctrl-C asks the repair to stop after the request in flight (what was fetched is written);
    a second one interrupts at once."""

    def __init__(self, stop: threading.Event, console):
        self.stop, self.console = stop, console

    def __enter__(self):
        self._old = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, *_):
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        self.console.print("[yellow]stopping after the request in flight; what was fetched is written "
                           "(Ctrl-C again to abort at once)[/yellow]")

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._old)


def cmd_data_repair(args) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..history.repair import Job, Repair, open_levels, scan, series_for, series_text

    sel = select(args, repair=True)
    levels = open_levels(sel.settings)
    stop = threading.Event()
    repair = Repair(levels, stop=stop)
    err = _console(stderr=True)
    jobs, wanted = [], {}
    for f in sel.files:
        text = series_text(f, sel.exchange, sel.trading_mode)
        jobs.append(Job(f, series_for(f, sel.exchange, sel.trading_mode), text))
        wanted[f] = sum(h.missing_candles for h in repair.todo(scan(f, text, sel.window)))
    try:
        with _StopOnCtrlC(stop, err), Progress(TextColumn("{task.description:40}"), BarColumn(),
                                                MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                                                transient=False, disable=args.json) as progress:
            total = progress.add_task("total (candles looked for)", total=sum(wanted.values()) or 1)
            tasks = {}

            def begin(f):
                tasks[f] = task = progress.add_task(f.name, total=wanted[f] or 1)

                def advance(n: int) -> None:
                    progress.advance(task, n)
                    progress.advance(total, n)

                return advance

            def done(report) -> None:
                f = report.before.file
                progress.update(tasks[f], completed=wanted[f] or 1)

            reports = repair.run_all(jobs, sel.window, args.dry_run, begin, done)
    finally:
        levels.close()
    interrupted = stop.is_set()
    if args.json:
        print(json.dumps({**_header(sel), "dry_run": args.dry_run, "interrupted": interrupted,
                          "files": [r.to_dict() for r in reports], "total": _repair_total(reports)}, indent=2))
    else:
        print_repair(sel, reports, args.dry_run, interrupted)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if all(r.complete for r in reports) else EXIT_UNREPAIRED


def _repair_total(reports) -> dict:
    from ..history import plan

    def total(key):
        return sum(key(r) for r in reports)

    return {"files": len(reports), "complete": total(lambda r: r.complete),
            "missing_before": total(lambda r: plan.covered(r.before.gaps, plan.MISSING)),
            "filled": {k: total(lambda r, k=k: r.filled[k]) for k in ("store", "rollup", "ccxt")},
            "void_candles": total(lambda r: plan.covered((r.after or r.before).gaps, plan.VOID)),
            "unavailable_candles": total(lambda r: plan.covered((r.after or r.before).gaps, plan.UNAVAILABLE)),
            "still_missing": total(lambda r: r.remaining), "requests": total(lambda r: r.requests)}


def print_repair(sel: Selection, reports, dry_run: bool, interrupted: bool) -> None:
    from rich.table import Table

    from ..history import plan

    console = _console()
    title = f"history repair in {sel.datadir} ({sel.data_format})" + (" — dry run, nothing written" if dry_run else "")
    table = Table(title=title)
    for col in ("file", "before", "missing", "store", "rollup", "exchange", "void", "unavailable", "after",
                "left", "why"):
        table.add_column(col, justify="left" if col in ("file", "why") else "right")
    for r in reports:
        after = r.after or r.before
        table.add_row(r.before.file.name, str(r.before.candles), str(plan.covered(r.before.gaps, plan.MISSING)),
                      str(r.filled["store"]), str(r.filled["rollup"]), str(r.filled["ccxt"]),
                      str(plan.covered(after.gaps, plan.VOID)), str(plan.covered(after.gaps, plan.UNAVAILABLE)),
                      str(after.candles), str(r.remaining), r.why())
    t = _repair_total(reports)
    table.add_section()
    f = t["filled"]
    table.add_row(f"total: {t['files']} files", "", str(t["missing_before"]), str(f["store"]), str(f["rollup"]),
                  str(f["ccxt"]), str(t["void_candles"]), str(t["unavailable_candles"]), "", str(t["still_missing"]),
                  "interrupted" if interrupted else f"{t['requests']} requests")
    console.print(table)
