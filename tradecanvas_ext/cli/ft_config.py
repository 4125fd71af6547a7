"""The CLI's one config reader: freqtrade's own loader (several `--config` files, later wins; comments;
`add_config_files`; `FREQTRADE__…` variables; `--userdir` / `--datadir`), so `datadir`, the history files and a
relative `db_url` resolve exactly as in the bot. It must never parse a config file any other way.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..settings import ConfigError, Settings

DEFAULT_CONFIG = "config.json"  # freqtrade's own default when no --config is given


def load_freqtrade_config(files: Sequence[str] | None, userdir: str | None = None,
                          datadir: str | None = None) -> dict[str, Any]:
    """The merged config dict the bot would see (runmode OTHER: no exchange is contacted).

    A config without an `exchange` section (a chart server next to a bot) is not one freqtrade's pipeline
    accepts: it gets freqtrade's file loading and environment merge, plus `--userdir`, and nothing else."""
    from freqtrade.configuration import Configuration
    from freqtrade.configuration.environment_vars import environment_vars_to_dict
    from freqtrade.configuration.load_config import load_from_files
    from freqtrade.enums import RunMode
    from freqtrade.exceptions import FreqtradeException
    from freqtrade.misc import deep_merge_dicts

    files = list(files or [DEFAULT_CONFIG])
    args = {"config": files, "user_data_dir": userdir, "datadir": datadir}
    with _freqtrade_logging_contained():
        try:
            merged = deep_merge_dicts(environment_vars_to_dict(), load_from_files(files))
            if not isinstance(merged.get("exchange"), Mapping):
                if userdir:
                    merged["user_data_dir"] = userdir
                if datadir:
                    merged["datadir"] = datadir
                return merged
            return Configuration(args, RunMode.OTHER).get_config()
        except FreqtradeException as exc:
            raise ConfigError(f"config {', '.join(files)}: {exc}") from None


def load_settings(files: Sequence[str] | None, userdir: str | None = None,
                  datadir: str | None = None) -> tuple[Settings, dict[str, Any]]:
    """Settings exactly as the bot builds them from the same config (bot/glue.py: Settings.from_config)."""
    config = load_freqtrade_config(files, userdir, datadir)
    return Settings.from_config(config), config


class _freqtrade_logging_contained:
    """freqtrade's loader reconfigures the root logger (dictConfig, its console handler, a log file) and
    logs every directory it picks: the CLI keeps its own logging and prints what it resolved itself."""

    def __enter__(self):
        root = logging.getLogger()
        self._handlers, self._level = list(root.handlers), root.level
        logging.disable(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        root = logging.getLogger()
        for h in list(root.handlers):
            if h not in self._handlers:
                root.removeHandler(h)
        for h in self._handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(self._level)
        logging.disable(logging.NOTSET)
