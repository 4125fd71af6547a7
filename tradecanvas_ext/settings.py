"""The `"tradecanvas"` config section, validated once at the edge into one frozen Settings object.

Only this module reads the environment or config files; everything else receives a Settings. Every number
has a range (RANGES), so nothing downstream ever sees NaN, an infinity or a cap the machine cannot serve.
"""
from __future__ import annotations

import ipaddress
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .domain import SeriesId
from .series_ids import checked, parse_series_id

ENV_PREFIX = "TRADE_CANVAS_"
# freqtrade's own override of our token (FREQTRADE__<section>__<key>); it turns a digits-only value into an int
FREQTRADE_TOKEN_ENV = "FREQTRADE__TRADECANVAS__API_TOKEN"
MIN_TOKEN_CHARS = 16
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A bad `tradecanvas` section or environment override; the message names the key."""


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    listen_ip_address: str = "127.0.0.1"
    listen_port: int = 8090
    db_url: str | None = None  # resolved against user_data_dir by from_config
    series: tuple[SeriesId, ...] | None = None  # None: the bot's whitelist x the strategy timeframe
    enable_market_gap_backfill: bool = True
    enable_market_auto_tail_backfill: bool = True
    auto_tail_backfill_max_candles: int = 2000
    enable_ccxt_backfill: bool = True
    enable_ccxt_backfill_on_read: bool = False
    ccxt_config: Mapping[str, Any] = field(default_factory=dict)
    ccxt_timeout_ms: int = 10000
    rollup_max_timeframe_s: int = 900
    enable_startup_kline_sync: bool = True
    startup_sync_target_candles: int = 2000
    backfill_cooldown_s: float = 2.0
    gap_backfill_max_candles: int = 5000
    health_backfill_recent_seconds: float = 120
    api_token: str | None = field(default=None, repr=False)  # never logged
    cors_origins: tuple[str, ...] = ()
    max_connections: int = 256  # open HTTP + WebSocket connections at once
    # Not in the user's section: taken from the surrounding freqtrade config.
    user_data_dir: str = "user_data"
    datadir: str | None = None
    data_format: str = "feather"
    exchange: str | None = None  # the bot's exchange id: its DataProvider only serves that exchange
    void_recheck_age_s: float = 86400.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Settings:
        """Build from a whole freqtrade config dict (the `tradecanvas` section plus bot context)."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"config must be a JSON object, got {type(config).__name__}")
        section = config.get("tradecanvas", {})
        if section is None:
            section = {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"tradecanvas: must be an object, got {type(section).__name__}")
        env = os.environ if env is None else env
        values = _validate_section(_token_from_freqtrade_env(section, env))
        values.update(_env_overrides(env))
        _require_token_off_loopback(values)
        user_data_dir = str(config.get("user_data_dir") or "user_data")
        values["user_data_dir"] = user_data_dir
        if config.get("datadir"):
            values["datadir"] = str(config["datadir"])
        if isinstance(config.get("dataformat_ohlcv"), str):
            values["data_format"] = config["dataformat_ohlcv"]
        exchange = config.get("exchange")
        if isinstance(exchange, Mapping) and isinstance(exchange.get("name"), str):
            values["exchange"] = exchange["name"].lower()
        if not values.get("db_url"):
            values["db_url"] = f"sqlite:///{Path(user_data_dir) / 'tradecanvas.sqlite'}"
        if values.get("series") is None:
            derived = default_series(config)
            if derived:
                values["series"] = derived
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | os.PathLike, env: Mapping[str, str] | None = None) -> Settings:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid JSON: {exc}") from None
        return cls.from_config(config, env=env)

    def with_series(self, series: tuple[SeriesId, ...]) -> Settings:
        return replace(self, series=tuple(dict.fromkeys(series)))


# Taken from the surrounding freqtrade config, not from the user's section.
_CONTEXT_KEYS = {"user_data_dir", "datadir", "data_format", "exchange"}
# `void_recheck_age_s` is our documented extension: how long a confirmed void is trusted.
_USER_KEYS = {f.name for f in fields(Settings)} - _CONTEXT_KEYS

# Inclusive range of every number key (contract section 2): INT_RANGES take integers only, FLOAT_RANGES any
# finite number (stored as a float). The caps bound one request's work (candles, time) to what one process can serve.
INT_RANGES: dict[str, tuple[int, int]] = {
    "listen_port": (0, 65535),  # 0: a free port
    "auto_tail_backfill_max_candles": (1, 100_000),
    "gap_backfill_max_candles": (1, 100_000),
    "startup_sync_target_candles": (1, 100_000),
    "ccxt_timeout_ms": (100, 120_000),
    "rollup_max_timeframe_s": (1, 86_400),  # up to 1d: 1440 minute candles per bucket
    "max_connections": (1, 10_000),
}
FLOAT_RANGES: dict[str, tuple[int, int]] = {
    "backfill_cooldown_s": (0, 3600),
    "health_backfill_recent_seconds": (0, 86_400),
    "void_recheck_age_s": (0, 30 * 86_400),
}


def _type_error(key: str, want: str, value: Any) -> ConfigError:
    return ConfigError(f"tradecanvas.{key}: expected {want}, got {json.dumps(value, default=str)}")


def _validate_section(section: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(section) - _USER_KEYS)
    if unknown:
        raise ConfigError(f"tradecanvas: unknown key(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(sorted(_USER_KEYS))}")
    out: dict[str, Any] = {}
    for key, value in section.items():
        out[key] = _check(key, value)
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(key: str, value: Any) -> Any:
    if key == "enabled" or key.startswith("enable_"):
        if not isinstance(value, bool):
            raise _type_error(key, "true or false", value)
        return value
    if key == "listen_ip_address":
        want = "an IP address such as 127.0.0.1 or ::1 (not a host name)"
        if not isinstance(value, str):  # ip_address() would take 2130706433 as 127.0.0.1
            raise _type_error(key, want, value)
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise _type_error(key, want, value) from None
    if key == "db_url":
        if value is not None and (not isinstance(value, str) or "://" not in value):
            raise _type_error(key, "an SQLAlchemy URL string like sqlite:///path or postgresql+psycopg://...",
                              value)
        return value
    if key == "series":
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise _type_error(key, "a list of series_id strings", value)
        parsed = []
        for s in value:
            try:
                parsed.append(parse_series_id(s))
            except ValueError as exc:
                raise ConfigError(f"tradecanvas.series: {exc}") from None
        if len(set(parsed)) != len(parsed):
            raise ConfigError("tradecanvas.series: a series_id is listed twice")
        return tuple(parsed)
    if key == "ccxt_config":
        if not isinstance(value, dict):
            raise _type_error(key, "an object", value)
        return value
    if key in INT_RANGES:
        lo, hi = INT_RANGES[key]
        if not _is_int(value) or not lo <= value <= hi:
            raise _type_error(key, f"an integer from {lo} to {hi}", value)
        return value
    if key in FLOAT_RANGES:
        lo, hi = FLOAT_RANGES[key]
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not lo <= value <= hi):
            raise _type_error(key, f"a finite number from {lo} to {hi}", value)
        return float(value)
    if key == "api_token":
        return _check_token(value)
    if key == "cors_origins":
        if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
            raise _type_error(key, "a list of origin strings", value)
        return tuple(value)
    raise ConfigError(f"tradecanvas: unknown key {key}")  # pragma: no cover - guarded above


def _check_token(value: Any) -> str | None:
    """Never echoes the value: a wrong token may still be close to the real one."""
    if value is None:
        return None
    if _is_int(value) and value >= 0:  # freqtrade's env override made digits an int
        value = str(value)
    if not isinstance(value, str):
        raise ConfigError(f"tradecanvas.api_token: expected a string or null, got {type(value).__name__}")
    if value != value.strip():
        raise ConfigError("tradecanvas.api_token: must not start or end with whitespace (it could never "
                          "match a request's token)")
    if len(value) < MIN_TOKEN_CHARS:
        raise ConfigError(f"tradecanvas.api_token: must be at least {MIN_TOKEN_CHARS} characters, got "
                          f"{len(value)}")
    return value


def _token_from_freqtrade_env(section: Mapping[str, Any], env: Mapping[str, str]) -> Mapping[str, Any]:
    """freqtrade parsed FREQTRADE__TRADECANVAS__API_TOKEN into a number (losing leading zeros) or a bool:
    the variable's own text is the token."""
    value = section.get("api_token")
    if value is None or isinstance(value, str):
        return section
    raw = next((v for k, v in env.items() if k.startswith("FREQTRADE__")
                and k[len("FREQTRADE__"):].lower() == "tradecanvas__api_token"), None)
    return section if raw is None else {**section, "api_token": raw}


def _require_token_off_loopback(values: Mapping[str, Any]) -> None:
    host = values.get("listen_ip_address", Settings.listen_ip_address)
    if not ipaddress.ip_address(host).is_loopback and not values.get("api_token"):
        raise ConfigError(
            f"tradecanvas.listen_ip_address is {host}, which other machines can reach, and tradecanvas.api_token "
            "is not set: the chart server would be open to all of them, so it is not started. Set api_token "
            f"(at least {MIN_TOKEN_CHARS} characters; the environment variable {FREQTRADE_TOKEN_ENV} keeps it "
            "out of the file) or listen on 127.0.0.1")


def _env_overrides(env: Mapping[str, str]) -> dict[str, bool]:
    out = {}
    for name in sorted(_USER_KEYS):
        if not name.startswith("enable_"):
            continue
        var = ENV_PREFIX + name.upper()
        if var not in env:
            continue
        raw = str(env[var]).strip().lower()
        if raw in _TRUE:
            out[name] = True
        elif raw in _FALSE:
            out[name] = False
        else:
            raise ConfigError(f"{var}={env[var]!r}: expected one of 1/true/yes/on or 0/false/no/off")
    return out


def default_series(config: Mapping[str, Any], timeframe: str | None = None,
                   pairs: list[str] | None = None) -> tuple[SeriesId, ...] | None:
    """The bot's whitelist x the strategy timeframe, as series ids (None when not derivable)."""
    exchange = config.get("exchange") or {}
    name = exchange.get("name") if isinstance(exchange, Mapping) else None
    tf = timeframe or config.get("timeframe")
    pairs = pairs if pairs is not None else (exchange.get("pair_whitelist") if isinstance(exchange, Mapping)
                                             else None)
    if not name or not tf or not pairs:
        return None
    market = "futures" if config.get("trading_mode") == "futures" else "spot"
    out = []
    for pair in pairs:
        try:
            out.append(checked(SeriesId(str(name).lower(), market, pair, tf)))
        except ValueError as exc:
            raise ConfigError(f"tradecanvas.series (derived from the whitelist): {exc}") from None
    return tuple(dict.fromkeys(out))
