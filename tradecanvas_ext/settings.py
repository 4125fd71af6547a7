"""The `"tradecanvas"` config section, validated once at the edge into one frozen Settings object.

Only this module reads the environment or config files; everything else receives a Settings.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .domain import SeriesId
from .series_ids import checked, parse_series_id

ENV_PREFIX = "TRADE_CANVAS_"
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
    max_connections: int = 256
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
        values = _validate_section(section)
        values.update(_env_overrides(os.environ if env is None else env))
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
    if key in ("listen_ip_address",):
        if not isinstance(value, str) or not value:
            raise _type_error(key, "an IP address string", value)
        return value
    if key == "listen_port":
        if not _is_int(value) or not 0 <= value <= 65535:
            raise _type_error(key, "an integer port 0-65535", value)
        return value
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
    if key in ("auto_tail_backfill_max_candles", "startup_sync_target_candles", "gap_backfill_max_candles",
               "ccxt_timeout_ms", "rollup_max_timeframe_s", "max_connections"):
        if not _is_int(value) or value < 1:
            raise _type_error(key, "a positive integer", value)
        return value
    if key in ("backfill_cooldown_s", "health_backfill_recent_seconds", "void_recheck_age_s"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise _type_error(key, "a number >= 0", value)
        return float(value)
    if key == "api_token":
        if value is not None and (not isinstance(value, str) or not value):
            raise _type_error(key, "a non-empty string or null", value)
        return value
    if key == "cors_origins":
        if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
            raise _type_error(key, "a list of origin strings", value)
        return tuple(value)
    raise ConfigError(f"tradecanvas: unknown key {key}")  # pragma: no cover - guarded above


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
