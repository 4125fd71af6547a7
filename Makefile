# Everything a fresh machine with Python 3.11+ needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint install clean bench screenshots

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -e '.[dev,postgres]'
	touch $(STAMP)

install: $(STAMP)

# The chart page's one front-end dependency (lightweight-charts, pinned by package-lock.json), copied into the
# package so the page works with no internet. Idempotent: npm runs only when the lockfile changed, from the
# npm cache first (--prefer-offline); the copy only when the vendored file is missing or older.
NPM_STAMP := node_modules/.package-lock.json
VENDOR := tradecanvas_ext/web/static/vendor
LWC := $(VENDOR)/lightweight-charts.standalone.production.js
.PHONY: vendor

$(NPM_STAMP): package.json package-lock.json
	npm ci --prefer-offline --no-audit --no-fund
	touch $(NPM_STAMP)

$(LWC): $(NPM_STAMP)
	mkdir -p $(VENDOR)
	cp node_modules/lightweight-charts/LICENSE $(VENDOR)/lightweight-charts.LICENSE
	cp node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js $(LWC)

vendor: $(LWC)

$(STAMP): | $(LWC)

lint: $(STAMP)
	$(VENV)/bin/ruff check tradecanvas_ext tests bench user_data

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# the documentation's docs/screenshots/*.png, regenerated on purpose by the browser test (a plain test run writes
# its screenshots to a temporary folder and leaves the tracked files alone)
screenshots: $(STAMP)
	TRADECANVAS_WRITE_SCREENSHOTS=1 $(PY) -m pytest tests/test_page_browser.py -p no:cacheprovider $(PYTEST_ARGS)

# the exchange emulator (scripted outage 4 min in) + a real freqtrade dry-run bot with the extension; Ctrl-C stops both
run: $(STAMP)
	$(PY) -m tradecanvas_ext.bot.demo --config config.json --userdir user_data

bench: $(STAMP)
	$(PY) bench/store_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
