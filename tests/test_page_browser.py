"""The chart page (`GET /`, contract sections 3 and 4 from the client side) in a real headless Chromium, driven
by Playwright, against a real server fed by the exchange emulator. What the page shows is read back from
`window.tradecanvas` and the DOM; each state is also saved as a screenshot: to a temporary folder, or to the
documentation's docs/screenshots/ with TRADECANVAS_WRITE_SCREENSHOTS=1 (`make screenshots`)."""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import NOW
from tradecanvas_ext.domain import SeriesId, expected_latest_closed_time

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
DOC_SHOTS = ROOT / "docs" / "screenshots"
WRITE_DOC_SHOTS = os.environ.get("TRADECANVAS_WRITE_SCREENSHOTS", "").lower() in ("1", "true", "yes")
VENDORED = ROOT / "tradecanvas_ext" / "web" / "static" / "vendor" / "lightweight-charts.standalone.production.js"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # Playwright adds --headless and a new user-data-dir
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

SID = "binance:spot:BTC/USDT:1m"
ETH = "binance:spot:ETH/USDT:1m"
TF = 60
E = expected_latest_closed_time(NOW, TF)  # the newest closed candle at NOW
VOID = (E - 150 * TF, E - 148 * TF)  # the exchange never had these: a confirmed void once backfilled
HOLE = (E - 60 * TF, E - 59 * TF)  # never stored, never asked for: a plain hole
# Chromium's own log line for a request or a WebSocket the server refused or cut (not the page's doing).
NETWORK_FAILURE = r"net::ERR_|WebSocket connection to 'ws://127\.0\.0\.1:\d+/ws/market[^']*' failed"


def require_vendored() -> None:
    if not VENDORED.exists():
        pytest.fail(f"{VENDORED.relative_to(ROOT)} is missing: run `make vendor` (make test does)")


def _missing(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser test must run in CI, not be skipped)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        _missing(f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is missing: pip install -e '.[dev]'")
    require_vendored()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


class BrowserLog:
    """Console errors and uncaught page errors. Chromium's own lines about refused connections are tolerated
    only inside `expect()` (when a test stops the server or sends a wrong token on purpose)."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        self.tolerated: list[str] = []
        self._allowed: re.Pattern | None = None
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, msg) -> None:
        if msg.type not in ("error", "assert"):
            return
        text = f"console.{msg.type}: {msg.text}"
        if self._allowed is not None and self._allowed.search(msg.text):
            self.tolerated.append(text)
        else:
            self.errors.append(f"{text} at {msg.location.get('url')}:{msg.location.get('lineNumber')}")

    @contextmanager
    def expect(self, pattern: str):
        self._allowed = re.compile(pattern)
        try:
            yield
        finally:
            self.page.evaluate("1")  # delivers the events the browser sent before this point
            self._allowed = None

    def assert_clean(self) -> None:
        self.page.evaluate("1")
        assert self.errors == [], "errors in the browser console:\n" + "\n".join(self.errors)


@pytest.fixture
def open_page(browser):
    contexts = []

    def open_(url: str):
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        log = BrowserLog(page)
        page.goto(url)
        return page, log

    yield open_
    for ctx in contexts:
        ctx.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(rt, path: str, token: str | None = None) -> dict:
    req = urllib.request.Request(rt.url + path)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def seed(rt, exchange) -> None:
    """BTC: 240 candles up to E with a confirmed void (from a real backfill against an outage) and a plain
    hole; ETH: 30 candles behind (red)."""
    exchange.faults.outage(VOID[0], VOID[1] + TF)
    rt.backfill.ensure_tail_coverage(SeriesId.parse(SID), target=140, to_time=E - 100 * TF)
    exchange.faults.clear_outages()
    rows = exchange.candles("BTC/USDT", "1m", E - 99 * TF, E)
    rt.store.upsert_closed(SeriesId.parse(SID), [r for r in rows if not HOLE[0] <= r[0] <= HOLE[1]])
    rt.store.upsert_closed(SeriesId.parse(ETH), exchange.candles("ETH/USDT", "1m", E - 200 * TF, E - 30 * TF))


def live(rt, clock, exchange, *times) -> None:
    """The clock moves on and each candle is ingested the moment it closes (store, then the hub)."""
    for t in times:
        clock.set(max(clock(), t + TF + 30))
        assert rt.ingest_closed(SID, exchange.candles("BTC/USDT", "1m", t, t)) == 1


def state(page) -> dict:
    return page.evaluate("""() => { const tc = window.tradecanvas;
        return {candles: tc.candles, full: tc.candles.map((t) => tc.candle(t)), holes: tc.holes, bands: tc.bands,
                wsState: tc.wsState, subscribed: tc.subscribed, stats: tc.stats, message: tc.message}; }""")


def wait(page, js: str, what: str, timeout_s: float = 15) -> None:
    try:
        page.wait_for_function(js, timeout=timeout_s * 1000)
    except Exception as exc:
        raise AssertionError(f"the page never showed {what}; its state: {json.dumps(state(page))[:1500]}") from exc


def wait_live(page) -> None:
    wait(page, "() => window.tradecanvas && tradecanvas.ready && tradecanvas.subscribed", "live candles")


def wait_candle(page, t: int) -> None:
    wait(page, f"() => tradecanvas.candles.includes({t})", f"the candle at {t}")


def wait_health(page, series_id: str, head_time: int) -> None:
    wait(page, f"() => (tradecanvas.health?.series || []).some((r) => r.series_id === '{series_id}' && "
               f"r.head_time === {head_time})", f"the health of {series_id} at head {head_time}")


def assert_matches_api(page, rt, token: str | None = None) -> dict:
    """The chart holds exactly the candles (and holes) the HTTP API returns for the same range."""
    s = state(page)
    body = api(rt, f"/api/market/candles?series_id={SID}&since={s['candles'][0] - TF}&limit=5000", token)
    assert s["candles"] == [c["candle_time"] for c in body["candles"]]
    assert s["full"] == body["candles"]
    assert [{**{k: h[k] for k in ("start", "end", "missing_candles", "void")}, "unavailable": h.get("unavailable", False)}
            for h in s["holes"]] == body["holes"]  # a hole the page made from a WebSocket gap has no flag
    assert s["stats"]["wsDuplicates"] == 0
    return s


@pytest.fixture(scope="module")
def shots_dir(tmp_path_factory) -> Path:
    """docs/screenshots/ only when asked (`make screenshots`): a test run leaves tracked files alone."""
    if WRITE_DOC_SHOTS:
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        return DOC_SHOTS
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def shot(shots_dir):
    def take(page, name: str) -> None:
        page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
        path = shots_dir / name
        page.screenshot(path=str(path))
        assert path.stat().st_size > 0

    return take


# ---- the page and its assets (no browser needed) ----------------------------------------------------------

def test_page_and_assets_are_served_from_the_package_without_the_token(make_runtime):
    require_vendored()
    rt = make_runtime(serve=True, api_token="s3cret-token-value")
    with urllib.request.urlopen(rt.url + "/", timeout=10) as resp:
        html = resp.read().decode()
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]  # nothing from the internet
    assert '<meta name="tradecanvas-token-required" content="true">' in html
    assert "s3cret-token-value" not in html
    for asset, kind in [("app.js", "javascript"), ("app.css", "text/css"), ("favicon.svg", "image/svg+xml"),
                        ("vendor/lightweight-charts.standalone.production.js", "javascript")]:
        assert f"/assets/{asset}" in html
        with urllib.request.urlopen(f"{rt.url}/assets/{asset}", timeout=10) as resp:
            assert kind in resp.headers["Content-Type"] and resp.read()
    with pytest.raises(urllib.error.HTTPError) as refused:  # the API itself still needs the token
        api(rt, "/api/market/series")
    assert refused.value.code == 401


# ---- the promised behaviours, in the browser --------------------------------------------------------------

def test_chart_shows_the_candles_and_holes_the_api_returns(make_runtime, exchange, open_page, shot):
    rt = make_runtime(serve=True, series=[SID, ETH])
    seed(rt, exchange)
    page, log = open_page(rt.url + "/")
    wait_live(page)
    s = assert_matches_api(page, rt)
    assert s["candles"][-1] == E and len(s["candles"]) == 240 - 3 - 2
    assert [(h["start"], h["end"], h["reason"]) for h in s["holes"]] == [
        (VOID[0], VOID[1], "void"), (HOLE[0], HOLE[1], "missing")]
    wait(page, "() => tradecanvas.bands.length === 2 && tradecanvas.bands.every((b) => b.visible)", "two bands")
    void_band, hole_band = state(page)["bands"]
    assert "3 missing candles" in void_band["title"] and "the exchange confirmed it has no data" in void_band["title"]
    assert "2 missing candles" in hole_band["title"]
    box = page.locator(f'.band[data-start="{HOLE[0]}"]').bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # the reason, in a tooltip
    wait(page, "() => !document.querySelector('#tooltip').hidden", "the hole's tooltip")
    assert "2 missing candles" in page.inner_text("#tooltip")
    assert page.get_attribute("#series-picker", "disabled") is None
    assert page.eval_on_selector_all("#series-picker option", "os => os.map((o) => o.value)") == [SID, ETH]
    shot(page, "chart.png")
    log.assert_clean()


def test_a_hole_appearing_live_is_marked_and_live_candles_keep_arriving(make_runtime, clock, exchange, open_page, shot):
    rt = make_runtime(serve=True, series=[SID, ETH], ccxt_timeout_ms=500)
    seed(rt, exchange)
    page, log = open_page(rt.url + "/?refresh=1")
    wait_live(page)
    live(rt, clock, exchange, E + TF)
    wait_candle(page, E + TF)

    exchange.faults.http_error(503, n=None)  # the exchange cannot fill E+2tf: the hub's recovery fails
    live(rt, clock, exchange, E + 3 * TF)
    wait(page, f"() => tradecanvas.bands.some((b) => b.start === {E + 2 * TF} && b.visible)", "the live hole")
    exchange.faults.clear()
    live(rt, clock, exchange, E + 4 * TF, E + 5 * TF)
    wait_candle(page, E + 5 * TF)

    s = assert_matches_api(page, rt)
    assert s["candles"][-4:] == [E + TF, E + 3 * TF, E + 4 * TF, E + 5 * TF]
    assert s["holes"][-1] == {"start": E + 2 * TF, "end": E + 2 * TF, "missing_candles": 1, "void": False,
                              "unavailable": False, "reason": "unrecovered"}
    assert s["stats"]["gaps"] == 1 and s["stats"]["rereads"] == 1
    band = next(b for b in s["bands"] if b["start"] == E + 2 * TF)
    assert band["reason"] == "unrecovered" and "could not" in band["title"]
    page.evaluate(f"() => tradecanvas.chart.timeScale().setVisibleRange({{from: {E - 90 * TF}, to: {E + 8 * TF}}})")
    wait_health(page, SID, E + 5 * TF)
    shot(page, "live-gap.png")
    log.assert_clean()


def test_server_restart_resumes_without_duplicates(make_runtime, clock, exchange, open_page, shot):
    from tradecanvas_ext.web.app import create_app
    from tradecanvas_ext.web.server import WebServer

    port = free_port()
    rt = make_runtime(serve=True, series=[SID, ETH], listen_port=port)
    seed(rt, exchange)
    received: list[int] = []  # every candle time in every frame, over every connection

    def on_frame(payload):
        msg = json.loads(payload)
        if msg.get("type") == "candle_closed":
            received.append(msg["candle"]["candle_time"])
        elif msg.get("type") == "candles_batch":
            received.extend(c["candle_time"] for c in msg["candles"])

    page, log = open_page("about:blank")
    page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
    page.goto(f"http://127.0.0.1:{port}/?refresh=1")
    wait_live(page)
    live(rt, clock, exchange, E + TF)
    wait_candle(page, E + TF)

    with log.expect(NETWORK_FAILURE):
        rt.server.stop()
        wait(page, "() => tradecanvas.wsState !== 'open'", "the lost connection")
        live(rt, clock, exchange, E + 2 * TF, E + 3 * TF)  # stored while no server is listening
        attempts = page.evaluate("() => tradecanvas.stats.wsAttempts")
        wait(page, f"() => tradecanvas.stats.wsAttempts >= {attempts + 1} && tradecanvas.wsState === 'closed'",
             "a refused reconnection attempt, then the next one scheduled (backoff)")
        wait(page, "() => tradecanvas.healthError !== null", "the health panel marked stale")
        shot(page, "reconnecting.png")
        assert "reconnecting" in page.inner_text("#message")
        rt.server = WebServer(create_app(rt), "127.0.0.1", port).start()  # same port, like a restarted bot
        wait(page, "() => tradecanvas.subscribed && tradecanvas.stats.reconnects === 1", "the reconnection")
        wait_candle(page, E + 3 * TF)
    live(rt, clock, exchange, E + 4 * TF)
    wait_candle(page, E + 4 * TF)

    s = assert_matches_api(page, rt)
    assert received == [E + TF, E + 2 * TF, E + 3 * TF, E + 4 * TF]  # resumed from the last candle: no repeat
    assert s["stats"]["gaps"] == 0 and s["wsState"] == "open" and s["message"] is None
    log.assert_clean()


def test_health_panel_is_yellow_during_a_backfill_then_green(make_runtime, exchange, open_page, shot):
    rt = make_runtime(serve=True, series=[SID, ETH], ccxt_timeout_ms=5000)
    seed(rt, exchange)
    page, log = open_page(rt.url + "/?refresh=1")
    wait_live(page)
    row = f'#health-table tr[data-series-id="{ETH}"]'
    wait(page, f"() => document.querySelector('{row}')?.dataset.status === 'red'", "ETH red (30 behind)")
    assert page.inner_text(f"{row} .missing") == "30"

    exchange.faults.slow(3.0, n=1)  # the exchange answers slowly: the repair stays running for a while
    repair = threading.Thread(target=rt.backfill.ensure_tail_coverage, args=(SeriesId.parse(ETH),),
                              kwargs={"target": 200, "to_time": E}, daemon=True)
    repair.start()
    wait(page, f"() => document.querySelector('{row}').dataset.status === 'yellow'", "ETH yellow")
    assert "backfill_running" in page.inner_text(f"{row} .status-text")
    assert page.get_attribute(f"{row} .progress", "data-state") == "running"
    assert page.is_visible(f"{row} .progress .bar")
    colour = page.eval_on_selector(f"{row} .dot", "d => getComputedStyle(d).backgroundColor")
    assert colour == "rgb(245, 197, 66)"  # the panel's yellow
    shot(page, "health-backfill.png")

    repair.join(20)
    assert not repair.is_alive()
    wait(page, f"() => document.querySelector('{row}').dataset.status === 'green'", "ETH green")
    assert page.inner_text(f"{row} .missing") == "0"
    assert page.get_attribute("#health-overall", "data-status") == "green"
    assert page.eval_on_selector(f"{row} .dot", "d => getComputedStyle(d).backgroundColor") == "rgb(38, 166, 154)"
    shot(page, "health-green.png")
    log.assert_clean()


def test_api_token_is_asked_once_and_kept_for_the_session(make_runtime, exchange, open_page, shot):
    rt = make_runtime(serve=True, series=[SID, ETH], api_token="s3cret-token-value")
    seed(rt, exchange)
    page, log = open_page(rt.url + "/")
    page.wait_for_selector("#token-form", state="visible")  # asked before any refused request
    wait(page, "() => document.querySelectorAll('#health-table tbody tr').length === 2", "health (no token)")

    with log.expect(r"status of 401"):
        page.fill("#token-input", "wrong")
        page.click("#token-form button")
        wait(page, "() => !document.querySelector('#token-form').hidden && "
                   "document.querySelector('#token-message').dataset.level === 'error'", "the refusal")
    assert "401 unauthorized" in page.inner_text("#token-message")
    assert "401 unauthorized" in page.inner_text("#message")
    shot(page, "token-refused.png")

    page.fill("#token-input", "s3cret-token-value")
    page.click("#token-form button")
    wait_live(page)  # HTTP with the bearer header, the WebSocket with ?token=
    assert page.evaluate("() => sessionStorage.getItem('tradecanvas.api_token')") == "s3cret-token-value"
    assert_matches_api(page, rt, token="s3cret-token-value")

    page.reload()  # kept for the session: not asked again
    wait_live(page)
    assert page.is_hidden("#token-form")
    log.assert_clean()


def test_an_unavailable_range_has_its_own_band_and_tooltip(make_runtime, exchange, open_page):
    # issue 13: a hole older than the exchange's history reach is drawn as "unavailable", never as a void
    rt = make_runtime(serve=True, series=[SID])
    seed(rt, exchange)
    rt.store.record_unavailable(SeriesId.parse(SID), [HOLE], "ccxt", checked_at=E)
    page, log = open_page(rt.url + "/")
    wait_live(page)
    s = assert_matches_api(page, rt)
    assert [(h["start"], h["end"], h["reason"]) for h in s["holes"]] == [
        (VOID[0], VOID[1], "void"), (HOLE[0], HOLE[1], "unavailable")]
    wait(page, "() => tradecanvas.bands.length === 2 && tradecanvas.bands.every((b) => b.visible)", "two bands")
    band = page.locator(f'.band[data-start="{HOLE[0]}"]')
    assert "unavailable" in band.get_attribute("class") and "void" not in band.get_attribute("class")
    assert "older than the exchange serves" in state(page)["bands"][1]["title"]
