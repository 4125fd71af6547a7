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
    "api_token": None, "cors_origins": (), "max_connections": 256,
}
TOKEN = "a-token-of-16-ch"


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
    cfg["tradecanvas"]["series"] = ["binance:spot:ETH/USDT:1M"]  # months are refused (1w is a timeframe: issue 13)
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
        ({"api_token": ""}, "tradecanvas.api_token: must be at least 16 characters, got 0"),
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
    s = Settings.from_config({"tradecanvas": {"api_token": TOKEN}}, env={})
    assert TOKEN not in repr(s)
    with pytest.raises(AttributeError):
        s.enabled = True  # type: ignore[misc]


# ---- ranges, addresses, tokens (contract section 2) -------------------------------------------------------

RANGES = [  # key, smallest, largest, integer
    ("listen_port", 0, 65535, True),
    ("auto_tail_backfill_max_candles", 1, 100_000, True),
    ("gap_backfill_max_candles", 1, 100_000, True),
    ("startup_sync_target_candles", 1, 100_000, True),
    ("ccxt_timeout_ms", 100, 120_000, True),
    ("rollup_max_timeframe_s", 1, 86_400, True),
    ("max_connections", 1, 10_000, True),
    ("backfill_cooldown_s", 0, 3600, False),
    ("health_backfill_recent_seconds", 0, 86_400, False),
    ("void_recheck_age_s", 0, 2_592_000, False),
]


def _refused(section: dict, env: dict | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        Settings.from_config({"tradecanvas": section}, env=env or {})
    return str(err.value)


@pytest.mark.parametrize("key, lo, hi, integer", RANGES)
def test_every_number_has_a_range_named_in_the_message(key, lo, hi, integer):
    want = f"tradecanvas.{key}: expected {'an integer' if integer else 'a finite number'} from {lo} to {hi}, got "
    for bad in (lo - 1, hi + 1, 10**30, -(10**30)):
        assert _refused({key: bad}) == want + json.dumps(bad)
    for good in (lo, hi):
        assert getattr(Settings.from_config({"tradecanvas": {key: good}}, env={}), key) == good


@pytest.mark.parametrize("key", [k for k, *_ in RANGES])
@pytest.mark.parametrize("bad, shown", [(float("nan"), "NaN"), (float("inf"), "Infinity"),
                                        (float("-inf"), "-Infinity")])
def test_nan_and_infinities_are_refused(key, bad, shown):
    assert _refused({key: bad}).startswith(f"tradecanvas.{key}: expected ")
    assert _refused({key: bad}).endswith(f", got {shown}")


def test_nan_read_from_a_json_file_is_refused(tmp_path):
    """Python's json reads the bare NaN freqtrade's files may carry: it must not turn the cooldown off."""
    p = tmp_path / "config.json"
    p.write_text('{"tradecanvas": {"backfill_cooldown_s": NaN}}')
    with pytest.raises(ConfigError, match=r"tradecanvas.backfill_cooldown_s: expected a finite number from 0 "
                                          r"to 3600, got NaN"):
        Settings.from_file(p, env={})


def test_the_caps_of_the_contract():
    assert "from 1 to 100000, got 100001" in _refused({"auto_tail_backfill_max_candles": 100_001})
    assert "from 1 to 100000, got 100001" in _refused({"gap_backfill_max_candles": 100_001})
    assert "from 100 to 120000, got 1000000000000.0" in _refused({"ccxt_timeout_ms": 1e12})


def test_max_connections_is_stored():
    assert Settings.from_config({"tradecanvas": {"max_connections": 10}}, env={}).max_connections == 10
    assert "tradecanvas.max_connections: expected an integer" in _refused({"max_connections": 2.5})


@pytest.mark.parametrize("bad", ["localhost", "my-host.example", "127.0.0.256", "", " 127.0.0.1", "1.2.3",
                                 2130706433, None, ["127.0.0.1"]])
def test_listen_ip_address_must_be_an_ip_address(bad):
    assert _refused({"listen_ip_address": bad}) == (
        "tradecanvas.listen_ip_address: expected an IP address such as 127.0.0.1 or ::1 (not a host name), "
        f"got {json.dumps(bad)}")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.5.6.7", "::1"])
def test_loopback_addresses_need_no_token(host):
    assert Settings.from_config({"tradecanvas": {"listen_ip_address": host}}, env={}).listen_ip_address == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "fe80::1"])
def test_a_non_loopback_address_without_a_token_is_a_start_up_error(host):
    message = _refused({"listen_ip_address": host})
    assert message.startswith(f"tradecanvas.listen_ip_address is {host}, which other machines can reach, and "
                              "tradecanvas.api_token is not set: the chart server would be open to all of them, "
                              "so it is not started.")
    assert "FREQTRADE__TRADECANVAS__API_TOKEN" in message
    assert _refused({"listen_ip_address": host, "api_token": None}) == message
    s = Settings.from_config({"tradecanvas": {"listen_ip_address": host, "api_token": TOKEN}}, env={})
    assert (s.listen_ip_address, s.api_token) == (host, TOKEN)


@pytest.mark.parametrize("token, message", [
    ("x", "tradecanvas.api_token: must be at least 16 characters, got 1"),
    ("a" * 15, "tradecanvas.api_token: must be at least 16 characters, got 15"),
    (" " + TOKEN, "tradecanvas.api_token: must not start or end with whitespace (it could never match a "
                  "request's token)"),
    (TOKEN + "\n", "tradecanvas.api_token: must not start or end with whitespace"),
    (TOKEN + " ", "tradecanvas.api_token: must not start or end with whitespace"),
    (1.5, "tradecanvas.api_token: expected a string or null, got float"),
    (True, "tradecanvas.api_token: expected a string or null, got bool"),
    (["x" * 16], "tradecanvas.api_token: expected a string or null, got list"),
])
def test_api_token_rules(token, message):
    got = _refused({"api_token": token})
    assert got.startswith(message)
    assert not isinstance(token, str) or token.strip() not in got  # never echoed


def test_api_token_of_16_characters_with_inner_spaces_is_accepted():
    assert Settings.from_config({"tradecanvas": {"api_token": "a b c d e f g h "[:-1] + "i"}},
                                env={}).api_token == "a b c d e f g hi"


def test_a_digits_only_token_from_freqtrades_environment_is_taken_as_its_digits():
    """freqtrade turns FREQTRADE__TRADECANVAS__API_TOKEN=0012345678901234567 into the int 12345678901234567:
    the variable's own text is the token, leading zeros and all."""
    raw = "0012345678901234567"
    s = Settings.from_config({"tradecanvas": {"api_token": int(raw)}}, env={"FREQTRADE__TRADECANVAS__API_TOKEN": raw})
    assert s.api_token == raw
    # without the variable (a Settings built from an already merged dict) the number's digits are the token
    assert Settings.from_config({"tradecanvas": {"api_token": 12345678901234567}}, env={}).api_token == \
        "12345678901234567"
    assert _refused({"api_token": 1234}, env={}) == "tradecanvas.api_token: must be at least 16 characters, got 4"
    # freqtrade made the text a float or a bool: the variable's text still wins, and is checked like any token
    assert Settings.from_config({"tradecanvas": {"api_token": 1.5e20}},
                                env={"FREQTRADE__TRADECANVAS__API_TOKEN": "1.5e20-and-more-x"}).api_token \
        == "1.5e20-and-more-x"
    assert _refused({"api_token": True}, env={"FREQTRADE__TRADECANVAS__API_TOKEN": "true"}) == \
        "tradecanvas.api_token: must be at least 16 characters, got 4"


def test_a_token_through_freqtrades_own_config_loading(tmp_path, monkeypatch):
    """End to end through freqtrade's environment loader: the digits survive as a string."""
    from freqtrade.configuration.environment_vars import environment_vars_to_dict

    raw = "0098765432109876543"
    monkeypatch.setenv("FREQTRADE__TRADECANVAS__API_TOKEN", raw)
    loaded = environment_vars_to_dict()
    assert loaded["tradecanvas"]["api_token"] == int(raw)  # what freqtrade hands the strategy
    s = Settings.from_config({"tradecanvas": {"listen_ip_address": "0.0.0.0", **loaded["tradecanvas"]}})
    assert s.api_token == raw and s.listen_ip_address == "0.0.0.0"
