/* The tradecanvas chart page: candles over HTTP, then live over /ws/market; holes and voids drawn as bands;
 * every series' health. Vanilla JS, no build step. Its state is on `window.tradecanvas` for tests and for
 * anyone poking at it from the devtools console. It never logs to the console on expected failures (a server
 * that went away, a refused token): those are shown on the page instead. */
(function () {
  'use strict';

  const params = new URLSearchParams(location.search);
  const intParam = (name, lo, hi, dflt) => {
    const v = Number.parseInt(params.get(name) || '', 10);
    return Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : dflt;
  };
  const CONFIG = {
    limit: intParam('limit', 1, 5000, 1000),            // candles read over HTTP on load
    healthMs: intParam('refresh', 1, 3600, 3) * 1000,   // health panel refresh (seconds in the URL)
    maxCandles: 50000,                                  // oldest ones are dropped past this
    maxWhitespacePerHole: 1000,                         // a longer hole is drawn compressed
    reconnectFirstMs: 500,
    reconnectMaxMs: 10000,
    pingMs: 20000,
  };
  const TOKEN_KEY = 'tradecanvas.api_token';
  const REASONS = {
    void: 'void: the exchange confirmed it has no data here',
    unavailable: 'unavailable: older than the exchange serves (its history reach); it may have had candles',
    unrecovered: 'unrecovered: the server tried to fetch these candles and could not',
    backfill_disabled: 'not backfilled: gap backfill is switched off (enable_market_gap_backfill)',
    missing: 'hole: no candle stored here (not confirmed empty by a source)',
  };

  const $ = (sel) => document.querySelector(sel);
  const el = {
    picker: $('#series-picker'), wsState: $('#ws-state'), summary: $('#summary'), message: $('#message'),
    chart: $('#chart'), bands: $('#bands'), tooltip: $('#tooltip'), legend: $('#legend'),
    health: $('.health'), healthBody: $('#health-table tbody'), healthOverall: $('#health-overall'),
    healthUpdated: $('#health-updated'), tokenForm: $('#token-form'), tokenInput: $('#token-input'),
    tokenMessage: $('#token-message'),
  };
  const tokenRequired = ($('meta[name="tradecanvas-token-required"]') || {}).content === 'true';

  // ---- state ------------------------------------------------------------------------------------------
  const byTime = new Map();   // candle_time -> candle (closed candles of the chosen series)
  let times = [];             // ascending candle times
  let holeInfo = [];          // what the server told us about holes: {start, end, void, unavailable, reason}
  let holes = [];             // holes between the candles shown, derived from `times` + holeInfo
  let forming = null;
  let generation = 0;         // bumped when the series changes: late answers for the old one are dropped

  const tc = {
    seriesId: null,
    tf: null,
    ready: false,             // the HTTP load of the chosen series is done
    wsState: 'idle',          // idle | connecting | open | closed
    subscribed: false,
    health: null,             // the last /api/market/health answer
    healthError: null,
    message: null,
    stats: { httpCandles: 0, wsCandles: 0, wsDuplicates: 0, gaps: 0, rereads: 0, wsAttempts: 0, wsOpened: 0,
      reconnects: 0, renders: 0 },
    get candles() { return times.slice(); },
    get holes() { return holes.map((h) => Object.assign({}, h)); },
    get forming() { return forming && Object.assign({}, forming); },
    get bands() {
      return Array.from(el.bands.children).map((b) => ({
        start: Number(b.dataset.start), end: Number(b.dataset.end), reason: b.dataset.reason,
        title: b.title, visible: b.dataset.visible === 'true',
      }));
    },
    candle(t) { const c = byTime.get(t); return c && Object.assign({}, c); },
    lastCandle() { return times.length ? Object.assign({}, byTime.get(times[times.length - 1])) : null; },
  };
  window.tradecanvas = tc;
  Object.defineProperty(tc, 'chart', { get: () => chart });  // the lightweight-charts object, for debugging

  // ---- messages -----------------------------------------------------------------------------------------
  function showMessage(text, level) {
    tc.message = text ? { text, level: level || 'info' } : null;
    el.message.hidden = !text;
    el.message.textContent = text || '';
    el.message.dataset.level = level || 'info';
  }

  // ---- token --------------------------------------------------------------------------------------------
  let token = sessionStorage.getItem(TOKEN_KEY) || null;
  let tokenPrompt = null; // one pending question, shared by every caller that needs the token

  function askToken(text, isError) {
    if (!tokenPrompt) {
      tokenPrompt = new Promise((resolve) => {
        el.tokenMessage.textContent = text;
        el.tokenMessage.dataset.level = isError ? 'error' : 'info';
        el.tokenForm.hidden = false;
        el.tokenInput.value = '';
        el.tokenInput.focus();
        el.tokenForm.onsubmit = (ev) => {
          ev.preventDefault();
          const value = el.tokenInput.value.trim();
          if (!value) return;
          token = value;
          sessionStorage.setItem(TOKEN_KEY, value);
          el.tokenForm.hidden = true;
          tokenPrompt = null;
          resolve(value);
        };
      });
    }
    return tokenPrompt;
  }

  function refuseToken(serverMessage) {
    const had = token;
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    const text = had
      ? `401 unauthorized: the server refused this token${serverMessage ? ` (${serverMessage})` : ''}. ` +
        'Enter the value of tradecanvas.api_token from the bot\'s config.json.'
      : 'This server needs its API token (tradecanvas.api_token in the bot\'s config.json).';
    showMessage(had ? '401 unauthorized: the API token was refused — enter the right one.'
      : 'The API token is needed to read candles.', had ? 'error' : 'warn');
    return askToken(text, Boolean(had));
  }

  // ---- HTTP ---------------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, body) {
      const err = body && body.error;
      super(err ? `${status} ${err.code}: ${err.message}` : `HTTP ${status}`);
      this.status = status;
      this.code = err && err.code;
    }
  }

  /** GET a JSON route. `open` routes (health) never wait for the token; others ask for it first when the
   * page knows one is needed, and again after a 401. A network failure rejects with a TypeError. */
  async function api(path, open) {
    for (;;) {
      if (!open && tokenRequired && !token) {
        await askToken('This server needs its API token (tradecanvas.api_token).');
      }
      const headers = { Accept: 'application/json' };
      if (token) headers.Authorization = `Bearer ${token}`;
      const res = await fetch(path, { headers, cache: 'no-store' });
      let body = null;
      try { body = await res.json(); } catch (_) { body = null; }
      if (res.status === 401) {
        await refuseToken(body && body.error && body.error.message);
        continue;
      }
      if (!res.ok) throw new ApiError(res.status, body);
      return body;
    }
  }

  const enc = encodeURIComponent;
  const candlesUrl = (sid, since, limit) =>
    `/api/market/candles?series_id=${enc(sid)}&limit=${limit}${since == null ? '' : `&since=${since}`}`;

  // ---- chart --------------------------------------------------------------------------------------------
  const LWC = window.LightweightCharts;
  let chart = null;
  let candleSeries = null;
  let volumeSeries = null;
  let lastPointTime = null;  // time of the last point given to the series (closed, forming or whitespace)

  function createChart() {
    if (!LWC) {
      showMessage('lightweight-charts is missing from the package (static/vendor): run `make vendor`.', 'error');
      return;
    }
    chart = LWC.createChart(el.chart, {
      autoSize: true,
      layout: { background: { type: 'solid', color: '#131722' }, textColor: '#d1d4dc' },
      grid: { vertLines: { color: '#1f2330' }, horzLines: { color: '#1f2330' } },
      timeScale: { timeVisible: true, secondsVisible: false, borderColor: '#2a2e39', rightOffset: 4 },
      rightPriceScale: { borderColor: '#2a2e39' },
      crosshair: { mode: LWC.CrosshairMode.Normal },
    });
    candleSeries = chart.addSeries(LWC.CandlestickSeries, {
      upColor: '#26a69a', downColor: '#ef5350', borderVisible: false,
      wickUpColor: '#26a69a', wickDownColor: '#ef5350',
    });
    volumeSeries = chart.addSeries(LWC.HistogramSeries, {
      priceFormat: { type: 'volume' }, priceScaleId: 'volume', lastValueVisible: false, priceLineVisible: false,
    });
    chart.priceScale('volume').applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    chart.timeScale().subscribeVisibleLogicalRangeChange(scheduleBands);
    chart.timeScale().subscribeSizeChange(scheduleBands);
    chart.subscribeCrosshairMove(onCrosshair);
  }

  const bar = (c) => ({ time: c.candle_time, open: c.open, high: c.high, low: c.low, close: c.close });
  const vol = (c) => ({ time: c.candle_time, value: c.volume,
    color: c.close >= c.open ? 'rgba(38,166,154,0.45)' : 'rgba(239,83,80,0.45)' });

  /** All points, with whitespace at hole times so a hole takes room on the time axis. */
  function buildPoints() {
    const bars = [];
    const vols = [];
    const tf = tc.tf;
    let h = 0;
    for (let i = 0; i < times.length; i++) {
      const t = times[i];
      if (i > 0) {
        const prev = times[i - 1];
        if (t - prev > tf) {
          const missing = (t - prev) / tf - 1;
          if (missing <= CONFIG.maxWhitespacePerHole) {
            for (let w = prev + tf; w < t; w += tf) bars.push({ time: w });
          } else {  // compressed: its first and last time only
            bars.push({ time: prev + tf });
            bars.push({ time: t - tf });
          }
          h++;
        }
      }
      const c = byTime.get(t);
      bars.push(bar(c));
      vols.push(vol(c));
    }
    if (forming && (!times.length || forming.candle_time > times[times.length - 1])) {
      const last = times.length ? times[times.length - 1] : null;
      if (last != null && forming.candle_time > last + tf) bars.push({ time: last + tf });
      bars.push(bar(forming));
      vols.push(vol(forming));
    }
    return { bars, vols, holes: h };
  }

  function deriveHoles() {
    const tf = tc.tf;
    const out = [];
    for (let i = 1; i < times.length; i++) {
      const prev = times[i - 1];
      const t = times[i];
      if (t - prev <= tf) continue;
      const start = prev + tf;
      const end = t - tf;
      let info = null;
      for (let k = holeInfo.length - 1; k >= 0; k--) {  // the newest word on it wins
        const hi = holeInfo[k];
        if (hi.start <= end && hi.end >= start) { info = hi; break; }
      }
      const reason = info ? info.reason : 'missing';
      out.push({ start, end, missing_candles: (end - start) / tf + 1, void: reason === 'void',
        unavailable: reason === 'unavailable', reason });
    }
    holes = out;
  }

  function render() {
    if (!chart) return;
    deriveHoles();
    const { bars, vols } = buildPoints();
    candleSeries.setData(bars);
    volumeSeries.setData(vols);
    lastPointTime = bars.length ? bars[bars.length - 1].time : null;
    tc.stats.renders++;
    scheduleBands();
    renderSummary();
  }

  /** Everything loaded when it fits at a readable bar width, else the newest part. */
  function showInitialRange() {
    if (!chart) return;
    const n = times.length ? (times[times.length - 1] - times[0]) / tc.tf + 1 : 0;
    if (n > 0 && n <= chart.paneSize().width / 5) chart.timeScale().fitContent();
    else chart.timeScale().scrollToRealTime();
  }

  /** A live closed candle right after the last one: update instead of redrawing everything. */
  function renderAppend(c) {
    if (!chart) return;
    if (lastPointTime != null && c.candle_time < lastPointTime) { render(); return; }
    candleSeries.update(bar(c));
    volumeSeries.update(vol(c));
    lastPointTime = c.candle_time;
    renderSummary();
  }

  function renderSummary() {
    const n = times.length;
    const missing = holes.reduce((s, h) => s + h.missing_candles, 0);
    const voids = holes.filter((h) => h.void).length;
    el.summary.textContent = n
      ? `${n} candles · ${holes.length} hole${holes.length === 1 ? '' : 's'} (${missing} missing` +
        `${voids ? `, ${voids} void` : ''}) · last ${fmtTime(times[n - 1])} UTC`
      : (tc.ready ? 'no candles stored yet' : '');
  }

  // ---- hole bands -------------------------------------------------------------------------------------
  let bandsQueued = false;
  function scheduleBands() {
    if (bandsQueued) return;
    bandsQueued = true;
    requestAnimationFrame(() => { bandsQueued = false; placeBands(); });
  }

  function holeTitle(h) {
    const span = h.start === h.end ? `${fmtTime(h.start)}` : `${fmtTime(h.start)} – ${fmtTime(h.end)}`;
    return `${h.missing_candles} missing candle${h.missing_candles === 1 ? '' : 's'} (${span} UTC)\n` +
      (REASONS[h.reason] || h.reason);
  }

  function placeBands() {
    const layer = el.bands;
    if (!chart) return;
    const ts = chart.timeScale();
    const pane = chart.paneSize();
    const existing = new Map(Array.from(layer.children).map((b) => [b.dataset.key, b]));
    for (const h of holes) {
      const key = `${h.start}-${h.end}-${h.reason}`;
      let b = existing.get(key);
      existing.delete(key);
      if (!b) {
        b = document.createElement('div');
        b.dataset.key = key;
        b.dataset.start = String(h.start);
        b.dataset.end = String(h.end);
        b.dataset.reason = h.reason;
        b.className = `band ${h.void ? 'void' : (h.unavailable ? 'unavailable' : 'hole')}`;
        b.title = holeTitle(h);
        b.setAttribute('role', 'img');
        b.setAttribute('aria-label', b.title);
        const label = document.createElement('span');
        label.className = 'label';
        label.textContent = h.void ? 'void' : h.unavailable ? 'unavailable'
          : (h.reason === 'missing' ? 'hole' : h.reason.replace('_', ' '));
        b.appendChild(label);
        layer.appendChild(b);
      }
      // integer logical indexes only: lightweight-charts answers 0 for a fractional one
      const i0 = ts.timeToIndex(h.start, false);
      const i1 = ts.timeToIndex(h.end, false);
      const c0 = i0 == null ? null : ts.logicalToCoordinate(i0);
      const c1 = i1 == null ? null : ts.logicalToCoordinate(i1);
      const c2 = i1 == null ? null : ts.logicalToCoordinate(i1 + 1);
      const half = c1 != null && c2 != null ? (c2 - c1) / 2 : 0;
      const x0 = c0 == null ? null : c0 - half;
      const x1 = c1 == null ? null : c1 + half;
      if (x0 == null || x1 == null || x1 < 0 || x0 > pane.width) {
        b.style.display = 'none';
        b.dataset.visible = 'false';
        continue;
      }
      const left = Math.max(0, x0);
      const right = Math.min(pane.width, x1);
      b.style.display = '';
      b.style.left = `${left}px`;
      b.style.width = `${Math.max(2, right - left)}px`;
      b.style.height = `${pane.height}px`;
      b.dataset.visible = 'true';
      b.querySelector('.label').hidden = right - left < 8;  // the label may overflow a narrow band
    }
    for (const b of existing.values()) b.remove();
  }

  function holeAt(t) {
    if (t == null) return null;
    return holes.find((h) => h.start <= t && t <= h.end) || null;
  }

  function onCrosshair(param) {
    const t = param && param.time;
    const h = holeAt(typeof t === 'number' ? t : null);
    if (h && param.point) {
      el.tooltip.textContent = holeTitle(h);
      el.tooltip.hidden = false;
      const w = el.chart.clientWidth;
      const x = Math.min(param.point.x + 14, w - 350);
      el.tooltip.style.left = `${Math.max(4, x)}px`;
      el.tooltip.style.top = `${Math.max(30, param.point.y - 10)}px`;
    } else {
      el.tooltip.hidden = true;
    }
    const c = typeof t === 'number' ? (byTime.get(t) || (forming && forming.candle_time === t ? forming : null)) : null;
    el.legend.textContent = c
      ? `${fmtTime(c.candle_time)}  O ${c.open}  H ${c.high}  L ${c.low}  C ${c.close}  V ${fmtNum(c.volume)}` +
        (c === forming ? '  (forming)' : '')
      : (tc.seriesId || '');
  }

  // ---- candles in ---------------------------------------------------------------------------------------
  function validCandle(c) {
    return c && Number.isInteger(c.candle_time) && tc.tf && c.candle_time % tc.tf === 0;
  }

  /** Adds a closed candle; returns 'append' (right after the last one), 'insert', or null (known already). */
  function addClosed(c) {
    if (!validCandle(c)) return null;
    const t = c.candle_time;
    const known = byTime.has(t);
    byTime.set(t, c);
    if (known) return null;
    const n = times.length;
    let how = 'insert';
    if (!n || t > times[n - 1]) {
      how = n && t === times[n - 1] + tc.tf ? 'append' : 'insert';
      times.push(t);
    } else {
      let lo = 0;
      let hi = n;
      while (lo < hi) { const mid = (lo + hi) >> 1; if (times[mid] < t) lo = mid + 1; else hi = mid; }
      times.splice(lo, 0, t);
    }
    if (forming && forming.candle_time <= t) forming = null;
    if (times.length > CONFIG.maxCandles) {
      for (const old of times.splice(0, times.length - CONFIG.maxCandles)) byTime.delete(old);
      how = 'insert';
    }
    return how;
  }

  function addHoleInfo(start, end, reason) {
    holeInfo.push({ start, end, void: reason === 'void', unavailable: reason === 'unavailable', reason });
    if (holeInfo.length > 5000) holeInfo = holeInfo.slice(-2500);
  }

  function applyCandlesResponse(body) {
    for (const c of body.candles || []) addClosed(c);
    for (const h of body.holes || []) {
      addHoleInfo(h.start, h.end, h.void ? 'void' : (h.unavailable ? 'unavailable' : 'missing'));
    }
    tc.stats.httpCandles += (body.candles || []).length;
  }

  // ---- series -------------------------------------------------------------------------------------------
  let seriesList = [];

  async function loadSeriesList() {
    for (let attempt = 0; ; attempt++) {
      let body;
      try {
        body = await api('/api/market/series');
      } catch (e) {
        showMessage(`Cannot list the series: ${describe(e)} — retrying.`, 'error');
        await sleep(backoffMs(attempt));
        continue;
      }
      seriesList = body.series || [];
      break;
    }
    el.picker.textContent = '';
    for (const s of seriesList) {
      const o = document.createElement('option');
      o.value = s.series_id;
      o.textContent = s.series_id;
      el.picker.appendChild(o);
    }
    el.picker.disabled = seriesList.length === 0;
    if (!seriesList.length) {
      showMessage('No series is configured (tradecanvas.series).', 'warn');
      return;
    }
    const wanted = params.get('series');
    const first = seriesList.find((s) => s.series_id === wanted) || seriesList[0];
    el.picker.value = first.series_id;
    selectSeries(first.series_id);
  }

  function selectSeries(sid) {
    if (sid === tc.seriesId) return;
    const row = seriesList.find((s) => s.series_id === sid);
    if (!row) return;
    const previous = tc.seriesId;
    generation++;
    byTime.clear();
    times = [];
    holeInfo = [];
    holes = [];
    forming = null;
    tc.seriesId = sid;
    tc.tf = row.timeframe_seconds;
    tc.ready = false;
    tc.subscribed = false;
    el.picker.value = sid;
    const url = new URL(location.href);
    url.searchParams.set('series', sid);
    history.replaceState(null, '', url);
    if (previous && ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: 'unsubscribe', series_id: previous }));
    }
    subscribedTo = null;
    render();
    el.legend.textContent = sid;
    markSelectedHealthRow();
    loadCandles(generation);
  }

  async function loadCandles(gen) {
    for (let attempt = 0; gen === generation; attempt++) {
      let body;
      try {
        body = await api(candlesUrl(tc.seriesId, null, CONFIG.limit));
      } catch (e) {
        if (gen !== generation) return;
        showMessage(`Cannot read the candles of ${tc.seriesId}: ${describe(e)} — retrying.`, 'error');
        await sleep(backoffMs(attempt));
        continue;
      }
      if (gen !== generation) return;
      applyCandlesResponse(body);
      tc.ready = true;
      render();
      showInitialRange();
      if (tc.message && tc.message.level !== 'info') showMessage(null);
      subscribeCurrent();
      return;
    }
  }

  /** After a `gap`: read the hole's range again over HTTP (a repair may have stored part of it since). */
  async function reread(gen, expectedNext, missing) {
    tc.stats.rereads++;
    const since = expectedNext - tc.tf;
    let body;
    try {
      body = await api(candlesUrl(tc.seriesId, since, Math.max(1, Math.min(missing, 5000))));
    } catch (e) {
      if (gen === generation) showMessage(`Could not re-read a hole: ${describe(e)}`, 'warn');
      return;
    }
    if (gen !== generation) return;
    const before = times.length;
    applyCandlesResponse(body);
    if (times.length !== before || (body.holes || []).length) render();
  }

  // ---- WebSocket ----------------------------------------------------------------------------------------
  let ws = null;
  let subscribedTo = null;
  let attempt = 0;
  let reconnectTimer = null;
  let pingTimer = null;
  let authRefused = false;

  function setWsState(state) {
    tc.wsState = state;
    el.wsState.dataset.state = state;
    el.wsState.textContent = { idle: 'idle', connecting: 'connecting…', open: 'live', closed: 'disconnected' }[state];
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (ws) return;
    if (tokenRequired && !token) {
      askToken('This server needs its API token (tradecanvas.api_token).').then(connect);
      return;
    }
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    tc.stats.wsAttempts++;
    const sock = new WebSocket(`${scheme}://${location.host}/ws/market${token ? `?token=${enc(token)}` : ''}`);
    ws = sock;
    setWsState('connecting');
    let opened = false;
    sock.onopen = () => {
      if (ws !== sock) return;
      opened = true;
      tc.stats.wsOpened++;
      if (tc.stats.wsOpened > 1) tc.stats.reconnects++;
      setWsState('open');
      subscribeCurrent();
      clearInterval(pingTimer);
      pingTimer = setInterval(() => {
        if (ws === sock && sock.readyState === WebSocket.OPEN) sock.send('{"type":"ping"}');
      }, CONFIG.pingMs);
    };
    sock.onmessage = (ev) => {
      if (ws !== sock) return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      onMessage(msg);
    };
    sock.onerror = () => {};  // onclose follows with the code; the browser already noted the failure
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = null;
      subscribedTo = null;
      tc.subscribed = false;
      clearInterval(pingTimer);
      setWsState('closed');
      if (authRefused) {
        authRefused = false;
        refuseToken('the WebSocket was refused').then(connect);
        return;
      }
      const delay = backoffMs(attempt++);
      const why = !opened ? 'Cannot reach the server' : ev.code === 1001 ? 'The server went away'
        : `Live updates lost (WebSocket closed, code ${ev.code})`;
      const resume = times.length ? `after ${fmtTime(times[times.length - 1])} UTC` : 'from the start';
      showMessage(`${why}; reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${attempt}), ` +
        `then resuming ${resume}.`, 'warn');
      reconnectTimer = setTimeout(connect, delay);
    };
  }

  function subscribeCurrent() {
    if (!ws || ws.readyState !== WebSocket.OPEN || !tc.ready || subscribedTo === tc.seriesId) return;
    const msg = { type: 'subscribe', series_id: tc.seriesId, supports_batch: true };
    if (times.length) msg.since = times[times.length - 1];  // resume right after the last candle shown
    subscribedTo = tc.seriesId;
    ws.send(JSON.stringify(msg));
  }

  function onMessage(msg) {
    if (msg.type === 'error') {
      if (msg.code === 'unauthorized') { authRefused = true; return; }
      showMessage(`Server: ${msg.code}: ${msg.message}`, 'error');
      return;
    }
    if (msg.type === 'pong' || msg.series_id !== tc.seriesId) return;
    switch (msg.type) {
      case 'subscribed':
        tc.subscribed = true;
        attempt = 0;
        if (tc.message && tc.message.level === 'warn') showMessage(null);
        break;
      case 'candle_closed':
        onClosed([msg.candle]);
        break;
      case 'candles_batch':
        onClosed(msg.candles || []);
        break;
      case 'candle_forming': {
        const c = msg.candle;
        const last = times.length ? times[times.length - 1] : -Infinity;
        if (validCandle(c) && c.candle_time > last) {
          forming = c;
          const next = times.length && c.candle_time === last + tc.tf;  // no hole between them
          if (next && lastPointTime != null && c.candle_time >= lastPointTime) {
            candleSeries.update(bar(c));
            volumeSeries.update(vol(c));
            lastPointTime = c.candle_time;
          } else {
            render();
          }
        }
        break;
      }
      case 'gap':
        tc.stats.gaps++;
        addHoleInfo(msg.expected_next_time, msg.actual_time - tc.tf, msg.reason);
        reread(generation, msg.expected_next_time, msg.missing_candles);
        break;
      default:
        break;
    }
  }

  function onClosed(candles) {
    let redraw = false;
    let appended = null;
    for (const c of candles) {
      tc.stats.wsCandles++;
      if (validCandle(c) && byTime.has(c.candle_time)) tc.stats.wsDuplicates++;
      const how = addClosed(c);
      if (how === 'append' && candles.length === 1 && !redraw) appended = c;
      else if (how) redraw = true;
    }
    if (redraw || (appended && lastPointTime != null && appended.candle_time < lastPointTime)) render();
    else if (appended) renderAppend(appended);
  }

  // ---- health -------------------------------------------------------------------------------------------
  async function refreshHealth() {
    let body = null;
    try {
      body = await api('/api/market/health', true);
    } catch (e) {
      tc.healthError = describe(e);
      el.health.dataset.stale = 'true';
      el.healthUpdated.textContent = `${tc.healthError}; showing the last answer`;
    }
    setTimeout(refreshHealth, CONFIG.healthMs);  // the next one after this one: never piled up
    if (!body) return;
    tc.health = body;
    tc.healthError = null;
    renderHealth(body);
  }

  function renderHealth(body) {
    el.health.dataset.stale = 'false';
    el.healthOverall.dataset.status = body.status || '';
    el.healthOverall.title = `overall: ${body.status}`;
    const asOf = body.series && body.series.length ? body.series[0].now_time : null;
    el.healthUpdated.textContent = (asOf == null ? '' : `as of ${fmtTime(asOf, true)} UTC (server clock)`) +
      (body.startup_sync ? ` · startup sync: ${body.startup_sync.series_synced}/${body.startup_sync.series_total} synced` : '');
    const rows = body.series || [];
    const tbody = el.healthBody;
    const old = new Map(Array.from(tbody.children).map((tr) => [tr.dataset.seriesId, tr]));
    for (const r of rows) {
      let tr = old.get(r.series_id);
      old.delete(r.series_id);
      if (!tr) {
        tr = document.createElement('tr');
        tr.dataset.seriesId = r.series_id;
        tr.innerHTML = '<td class="sid"></td><td><span class="dot"></span><span class="status-text"></span></td>' +
          '<td class="head"></td><td class="lag"></td><td class="missing"></td>' +
          '<td><span class="progress"><span class="bar"><span class="fill"></span></span>' +
          '<span class="progress-text"></span></span></td>';
        tr.querySelector('.sid').textContent = r.series_id;
        tr.addEventListener('click', () => selectSeries(r.series_id));
        tbody.appendChild(tr);
      }
      tr.dataset.status = r.status;
      tr.querySelector('.dot').dataset.status = r.status;
      tr.querySelector('.status-text').textContent = `${r.status} · ${r.status_reason}`;
      tr.querySelector('.head').textContent = r.head_time == null ? '—' : fmtTime(r.head_time);
      tr.querySelector('.lag').textContent = r.lag_seconds == null ? '—' : fmtDuration(r.lag_seconds);
      tr.querySelector('.missing').textContent = r.missing_candles == null ? '—' : String(r.missing_candles);
      const bf = r.backfill || {};
      const state = bf.state || 'idle';
      const pct = typeof bf.progress_pct === 'number' ? bf.progress_pct : null;
      const prog = tr.querySelector('.progress');
      prog.dataset.state = state;
      prog.querySelector('.bar').hidden = state !== 'running';
      prog.querySelector('.fill').style.width = `${state === 'running' ? (pct || 0) : 0}%`;
      prog.querySelector('.progress-text').textContent = state === 'running'
        ? `backfill ${pct == null ? '' : `${Math.round(pct)}% · `}${bf.current_missing_candles ?? '?'} missing`
        : `${state}${bf.note ? ` · ${bf.note}` : ''}${bf.error ? ` · ${bf.error}` : ''}`;
      prog.title = bf.error || bf.note || state;
    }
    for (const tr of old.values()) tr.remove();
    markSelectedHealthRow();
  }

  function markSelectedHealthRow() {
    for (const tr of el.healthBody.children) {
      tr.setAttribute('aria-selected', String(tr.dataset.seriesId === tc.seriesId));
    }
  }

  // ---- helpers ------------------------------------------------------------------------------------------
  function backoffMs(n) {
    const base = Math.min(CONFIG.reconnectMaxMs, CONFIG.reconnectFirstMs * 2 ** Math.min(n, 10));
    return Math.round(base * (0.75 + Math.random() * 0.5));
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  function describe(e) {
    if (e instanceof ApiError) return e.message;
    if (e instanceof TypeError && /fetch|network/i.test(e.message)) return 'the server is unreachable';
    return String((e && e.message) || e);
  }
  const pad = (n) => String(n).padStart(2, '0');
  function fmtTime(t, seconds) {
    const d = new Date(t * 1000);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}${seconds ? `:${pad(d.getUTCSeconds())}` : ''}`;
  }
  function fmtDuration(s) {
    if (s < 120) return `${s} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
    return `${Math.round(s / 86400)} d`;
  }
  function fmtNum(v) {
    return v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : v >= 1e3 ? `${(v / 1e3).toFixed(2)}k` : String(v);
  }

  // ---- start --------------------------------------------------------------------------------------------
  el.picker.addEventListener('change', () => selectSeries(el.picker.value));
  createChart();
  refreshHealth();
  loadSeriesList().then(connect);
}());
