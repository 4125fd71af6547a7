"""The CLI reads a config the way the bot does (contract section 8): freqtrade's own loader, so comments,
several --config files, add_config_files, FREQTRADE__ variables and --userdir give the same datadir, db_url
and series as in `freqtrade trade`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import subprocess_env
from tradecanvas_ext.cli.ft_config import load_settings
from tradecanvas_ext.settings import ConfigError, Settings

BIN = str(Path(sys.executable).with_name("tradecanvas"))
TOKEN = "0012345678901234567"  # digits only, leading zeros: freqtrade's env parsing would make it an int

FIRST = """{
  // the bot's config, with comments (freqtrade reads them)
  "exchange": {"name": "binance", "key": "", "secret": "", "pair_whitelist": ["BTC/USDT"]},
  "stake_currency": "USDT", "stake_amount": 10, "dry_run": true,
  "timeframe": "1m",
  "entry_pricing": {"price_side": "same"}, "exit_pricing": {"price_side": "same"},
  /* the extension's section */
  "tradecanvas": {"enabled": true, "db_url": "sqlite:///relative/tc.sqlite"},
  "add_config_files": ["extra.json"]
}
"""
EXTRA = """{"tradecanvas": {"enabled": true, "db_url": "sqlite:///relative/tc.sqlite", "listen_port": 8123}}"""
SECOND = """{
  // later wins: the whitelist of the second file
  "exchange": {"name": "binance", "pair_whitelist": ["ETH/USDT", "BTC/USDT"]}
}
"""
ENV = {"FREQTRADE__TIMEFRAME": "5m", "FREQTRADE__TRADECANVAS__API_TOKEN": TOKEN}


@pytest.fixture
def two_configs(tmp_path, monkeypatch):
    (tmp_path / "first.json").write_text(FIRST)
    (tmp_path / "extra.json").write_text(EXTRA)
    (tmp_path / "second.json").write_text(SECOND)
    userdir = tmp_path / "ud"
    (userdir / "data" / "binance").mkdir(parents=True)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    return tmp_path, userdir


def bot_view(files: list[Path], userdir: Path) -> tuple[Settings, dict]:
    """What `freqtrade trade -c … -c … --userdir …` builds: its own argument parser, its Configuration,
    then the extension's Settings.from_config as bot/glue.py calls it on strategy.config."""
    from freqtrade.commands import Arguments
    from freqtrade.configuration import Configuration

    argv = ["trade", *(x for f in files for x in ("-c", str(f))), "--userdir", str(userdir)]
    config = Configuration(Arguments(argv).get_parsed_arg(), None).get_config()
    return Settings.from_config(config), config


def test_cli_resolves_the_same_datadir_db_url_and_series_as_the_bot(two_configs):
    tmp, userdir = two_configs
    files = [tmp / "first.json", tmp / "second.json"]
    bot, bot_config = bot_view(files, userdir)
    assert bot.api_token == TOKEN and bot.listen_port == 8123  # add_config_files and the env reached the bot
    assert [str(s) for s in bot.series] == ["binance:spot:ETH/USDT:5m", "binance:spot:BTC/USDT:5m"]

    # the CLI, as a real process in the same directory with the same environment
    args = [x for f in files for x in ("-c", str(f))] + ["--userdir", str(userdir)]
    handler_file = Path(bot_config["datadir"]) / "BTC_USDT-5m.feather"
    pd.DataFrame({"date": pd.to_datetime([0, 300], unit="s", utc=True), "open": [1.0, 1.0], "high": [1.0, 1.0],
                  "low": [1.0, 1.0], "close": [1.0, 1.0], "volume": [1.0, 1.0]}).to_feather(handler_file)
    env = subprocess_env(**ENV)
    check = subprocess.run([BIN, "check", *args], capture_output=True, text=True, timeout=120, env=env, cwd=tmp)
    assert check.returncode == 0, check.stderr
    shown = json.loads(check.stdout)
    assert shown["db_url"] == bot.db_url == "sqlite:///relative/tc.sqlite"
    assert [r["series_id"] for r in shown["series"]] == [str(s) for s in bot.series]
    assert (tmp / "relative" / "tc.sqlite").is_file()  # the relative URL resolved against the bot's cwd
    gaps = subprocess.run([BIN, "data", "gaps", *args, "--json"], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp)
    assert gaps.returncode == 0, gaps.stderr
    assert json.loads(gaps.stdout)["datadir"] == str(bot_config["datadir"]) == str(userdir / "data" / "binance")

    # and in process: the loader's Settings are the bot's, the digits-only token kept as its text
    cli, cli_config = load_settings([str(f) for f in files], str(userdir))
    assert cli == bot and cli.api_token == TOKEN
    assert cli_config["datadir"] == bot_config["datadir"] and cli.datadir == bot.datadir


def test_datadir_option_wins_like_freqtrades(two_configs):
    tmp, userdir = two_configs
    other = tmp / "elsewhere"
    other.mkdir()
    settings, config = load_settings([str(tmp / "first.json")], str(userdir), str(other))
    assert Path(config["datadir"]) == other and settings.datadir == str(other)


def test_config_errors_are_config_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_settings([str(tmp_path / "missing.json")])
    (tmp_path / "bad.json").write_text('{"exchange": {"name": "binance"},, }')
    with pytest.raises(ConfigError, match="bad.json"):
        load_settings([str(tmp_path / "bad.json")])


def test_a_chart_server_config_without_an_exchange_still_loads(tmp_path, monkeypatch):
    """`tradecanvas serve` next to a bot may use a config with only the tradecanvas section."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.json").write_text('{"tradecanvas": {"enabled": true}, // comment\n "user_data_dir": "ud"}')
    monkeypatch.setenv("FREQTRADE__TRADECANVAS__LISTEN_PORT", "8124")
    settings, _ = load_settings([str(tmp_path / "c.json")])
    assert settings.listen_port == 8124 and settings.db_url == "sqlite:///ud/tradecanvas.sqlite"
