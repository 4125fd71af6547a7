"""Contract section 2: every key with its default, type checks, env overrides for enable_* switches."""
from __future__ import annotations

import json

import pytest

from tradecanvas_ext.settings import ConfigError, Settings

DEFAULTS = {
    "enabled": False, "listen_ip_address": "127.0.0.1", "listen_port": 8090,
    "enable_market_gap_backfill": True, "enable_market_auto_tail_backfill": True,
    "auto_tail_backfill_max_candles": 2000, "enable_ccxt_backfill": True,
    "enable_ccxt_backfill_on_read": False, "ccxt_config": {}, "ccxt_timeout_ms": 10000,
    "rollup_max_timeframe_s": 900, "enable_startup_kline_sync": True, "startup_sync_target_candles": 2000,
    "backfill_cooldown_s": 2.0, "gap_backfill_max_candles": 5000, "health_backfill_recent_seconds": 120,
    "api_token": None, "cors_origins": (),
}


def test_defaults_from_empty_section():
    s = Settings.from_config({}, env={})
    for key, value in DEFAULTS.items():
        assert getattr(s, key) == value, key
    assert s.db_url == "sqlite:///user_data/tradecanvas.sqlite"
    assert s.series is None


def test_db_url_default_follows_user_data_dir():
    s = Settings.from_config({"user_data_dir": "/srv/bot/user_data"}, env={})
    assert s.db_url == "sqlite:////srv/bot/user_data/tradecanvas.sqlite"


def test_series_default_is_whitelist_times_timeframe():
    cfg = {"timeframe": "5m", "exchange": {"name": "binance", "pair_whitelist": ["BTC/USDT", "ETH/USDT"]}}
    assert tuple(map(str, Settings.from_config(cfg, env={}).series)) == ("binance:spot:BTC/USDT:5m", "binance:spot:ETH/USDT:5m")
    cfg["trading_mode"] = "futures"
    cfg["exchange"]["pair_whitelist"] = ["BTC/USDT:USDT"]
    assert tuple(map(str, Settings.from_config(cfg, env={}).series)) == ("binance:futures:BTC/USDT:USDT:5m",)


def test_explicit_series_wins_and_is_validated():
    cfg = {"timeframe": "5m", "exchange": {"name": "binance", "pair_whitelist": ["BTC/USDT"]},
           "tradecanvas": {"series": ["binance:spot:ETH/USDT:1m"]}}
    assert tuple(map(str, Settings.from_config(cfg, env={}).series)) == ("binance:spot:ETH/USDT:1m",)
    cfg["tradecanvas"]["series"] = ["binance:spot:ETH/USDT:1w"]
    with pytest.raises(ConfigError, match="tradecanvas.series: .*timeframe"):
        Settings.from_config(cfg, env={})


@pytest.mark.parametrize(
    "section, match",
    [
        ({"listen_prot": 1}, "unknown key.*listen_prot"),
        ({"enabled": "yes"}, "tradecanvas.enabled: expected true or false"),
        ({"enabled": 1}, "tradecanvas.enabled"),
        ({"listen_port": "8090"}, "tradecanvas.listen_port"),
        ({"listen_port": 70000}, "tradecanvas.listen_port"),
        ({"listen_port": True}, "tradecanvas.listen_port"),
        ({"db_url": 5}, "tradecanvas.db_url"),
        ({"db_url": "not a url"}, "tradecanvas.db_url"),
        ({"series": "binance:spot:BTC/USDT:1m"}, "tradecanvas.series"),
        ({"series": ["binance:spot:BTC/USDT:1m", "binance:spot:BTC/USDT:1m"]}, "listed twice"),
        ({"ccxt_config": []}, "tradecanvas.ccxt_config"),
        ({"auto_tail_backfill_max_candles": 0}, "tradecanvas.auto_tail_backfill_max_candles"),
        ({"ccxt_timeout_ms": 1.5}, "tradecanvas.ccxt_timeout_ms"),
        ({"backfill_cooldown_s": -1}, "tradecanvas.backfill_cooldown_s"),
        ({"backfill_cooldown_s": "2"}, "tradecanvas.backfill_cooldown_s"),
        ({"api_token": ""}, "tradecanvas.api_token"),
        ({"cors_origins": "http://x"}, "tradecanvas.cors_origins"),
    ],
)
def test_bad_section_names_the_key(section, match):
    with pytest.raises(ConfigError, match=match):
        Settings.from_config({"tradecanvas": section}, env={})


def test_section_not_an_object():
    with pytest.raises(ConfigError, match="tradecanvas: must be an object"):
        Settings.from_config({"tradecanvas": [1]}, env={})


@pytest.mark.parametrize("raw, value", [("0", False), ("false", False), ("No", False), ("off", False),
                                        ("1", True), ("TRUE", True), ("yes", True), ("on", True)])
def test_env_overrides_every_switch(raw, value):
    switches = [k for k in DEFAULTS if k.startswith("enable_")]
    env = {f"TRADE_CANVAS_{k.upper()}": raw for k in switches}
    file_values = {k: not value for k in switches}
    s = Settings.from_config({"tradecanvas": file_values}, env=env)
    for k in switches:
        assert getattr(s, k) is value, k


def test_env_unparseable_names_the_variable():
    with pytest.raises(ConfigError, match="TRADE_CANVAS_ENABLE_MARKET_GAP_BACKFILL='maybe'"):
        Settings.from_config({}, env={"TRADE_CANVAS_ENABLE_MARKET_GAP_BACKFILL": "maybe"})


def test_from_file(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"tradecanvas": {"enabled": True, "listen_port": 0}}))
    s = Settings.from_file(p, env={})
    assert s.enabled and s.listen_port == 0


def test_from_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        Settings.from_file(tmp_path / "missing.json", env={})
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Settings.from_file(bad, env={})


def test_example_config_json_is_valid():
    s = Settings.from_file("config.json", env={})
    assert s.enabled and s.series


def test_settings_frozen_and_token_not_in_repr():
    s = Settings.from_config({"tradecanvas": {"api_token": "s3cret"}}, env={})
    assert "s3cret" not in repr(s)
    with pytest.raises(AttributeError):
        s.enabled = True  # type: ignore[misc]
