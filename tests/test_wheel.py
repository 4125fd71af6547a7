"""Install next to the user's freqtrade (issue 14 item 6): the wheel built from this checkout carries the chart
script and its licence, installs with pip into a fresh venv that already holds freqtrade (its dependencies are
found there, nothing is downloaded: the same `pip install` the Dockerfile runs on freqtrade's image), and that
install's `tradecanvas serve` serves the page and its chart script. No network but 127.0.0.1."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.botkit import REPO

pytestmark = pytest.mark.slow

VENDOR = "tradecanvas_ext/web/static/vendor/"
SCRIPT, LICENCE = VENDOR + "lightweight-charts.standalone.production.js", VENDOR + "lightweight-charts.LICENSE"


def build_wheel(out: Path) -> Path:
    """`make wheel`'s build command on a fresh checkout of this one after `make vendor` (its tracked files
    plus the vendored folder), so no build/ or egg-info left in the working tree can hide a gap."""
    if not (REPO / SCRIPT).exists():
        pytest.fail(f"{SCRIPT} is missing: run `make vendor` first (the wheel would ship no chart script)")
    src = out / "src"
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], check=True, capture_output=True,
                             text=True).stdout.split("\0")
    for rel in [f for f in tracked if f] + [VENDOR + p.name for p in (REPO / VENDOR).iterdir()]:
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(out), str(src)], check=True, cwd=out, timeout=300, capture_output=True)
    (wheel,) = out.glob("tradecanvas_ext-*.whl")
    return wheel


def venv_next_to_freqtrade(where: Path) -> Path:
    """A fresh venv whose site-packages already hold freqtrade and every other dependency: the test venv's
    packages, linked in one by one, minus tradecanvas_ext itself (so only the wheel can provide it)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    ours = Path(sysconfig.get_paths()["purelib"])
    farm = where / "freqtrade-site"
    farm.mkdir()
    for entry in ours.iterdir():
        name = entry.name.lower()
        if name.startswith(("tradecanvas", "__editable__")) or name.endswith(".pth"):
            continue
        (farm / entry.name).symlink_to(entry)
    site = next((where / "lib").glob("python3*/site-packages"))
    (site / "zz-freqtrade-site.pth").write_text(str(farm) + "\n")
    return where / "bin" / "python"


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_the_wheel_installs_next_to_freqtrade_and_serves_the_page(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {SCRIPT, LICENCE} <= names, sorted(n for n in names if "static" in n)

    py = venv_next_to_freqtrade(tmp_path / "venv")
    env = clean_env()
    probe = "import freqtrade, sys; print(freqtrade.__version__); import tradecanvas_ext"
    before = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert before.returncode != 0 and "No module named 'tradecanvas_ext'" in before.stderr, before
    # the Dockerfile's command: dependencies already there (freqtrade and the rest), nothing downloaded
    subprocess.run([str(py), "-m", "pip", "--version"], check=True, env=env, cwd=tmp_path, capture_output=True)
    install = subprocess.run([str(py), "-m", "pip", "install", "--no-index", "--no-cache-dir", str(wheel)],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    where = subprocess.run([str(py), "-c", "import tradecanvas_ext; print(tradecanvas_ext.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout.strip()
    assert where.startswith(str(tmp_path / "venv")), where  # the wheel's copy, not the checkout

    cfg = {"user_data_dir": str(tmp_path / "ud"), "tradecanvas": {
        "enabled": True, "listen_port": 0, "series": ["binance:spot:BTC/USDT:1m"],
        "enable_startup_kline_sync": False, "enable_ccxt_backfill": False}}
    (tmp_path / "ud").mkdir()
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen([str(tmp_path / "venv" / "bin" / "tradecanvas"), "serve", "--config",
                             str(tmp_path / "config.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert "tradecanvas serving 1 series at http://127.0.0.1:" in line, proc.stderr.read()
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url + "/", timeout=10) as r:
            page = r.read().decode()
        assert "/assets/vendor/lightweight-charts.standalone.production.js" in page
        with urllib.request.urlopen(url + "/assets/vendor/lightweight-charts.standalone.production.js",
                                    timeout=10) as r:
            assert r.status == 200 and r.read() == (REPO / SCRIPT).read_bytes()
    finally:
        proc.terminate()
        proc.wait(20)
