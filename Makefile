# Everything a fresh machine with Python 3.11+ needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint install clean bench screenshots wheel test-freqtrade-range

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

# The wheel users install next to their freqtrade (a venv, the Docker image of docs/Dockerfile): built after
# vendoring, so it carries the chart script and its licence; the build fails when either is missing from it.
WHEEL_DIR := dist
wheel: $(STAMP) $(LWC)
	rm -rf build *.egg-info $(WHEEL_DIR)/tradecanvas_ext-*.whl  # stale ones would hide a missing file
	$(PY) -m pip wheel --no-deps --no-build-isolation -w $(WHEEL_DIR) .
	$(PY) -c "import sys, zipfile, glob; names = set(zipfile.ZipFile(sorted(glob.glob('$(WHEEL_DIR)/tradecanvas_ext-*.whl'))[-1]).namelist()); \
	  need = {'tradecanvas_ext/web/static/vendor/lightweight-charts.standalone.production.js', 'tradecanvas_ext/web/static/vendor/lightweight-charts.LICENSE'}; \
	  sys.exit(f'the wheel lacks {sorted(need - names)}') if need - names else print('wheel ok: chart script and licence inside')"

# `make test` and `make test-freqtrade-range` on two workers (pytest-xdist), each test file whole in one of
# them (module fixtures and the order inside a file stay as written); each worker has its own PostgreSQL
# database (tests/conftest.py). Most of the suite waits (real processes, sockets, the clock), so two workers
# fit two cores. The files with slow tests go first (tests/conftest.py), in that order (--no-loadscope-reorder:
# xdist would start the files with the most tests first, and the few long end-to-end ones last). TEST_JOBS=0
# runs them in one process.
TEST_JOBS ?= 2
XDIST_ARGS := $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder)

# The oldest and the newest freqtrade of setup.cfg's range, each in its own venv (.venv-ft-<version>, kept between
# runs) with the built wheel, running the bot end-to-end tests. Kept cheap for CI: plain freqtrade (no hyperopt
# extras) and only the test tools those tests import; pip's own cache is reused. A version's pip constraints, when
# its declared dependencies no longer work today, are in tests/freqtrade_constraints/<version>.txt.
FT_OLDEST ?= 2026.1
FT_NEWEST ?= 2026.9
FT_E2E ?= tests/test_e2e_bot.py tests/test_e2e_follow.py tests/test_e2e_futures_mark.py
FT_TEST_TOOLS := "pytest>=8" pytest-timeout "pytest-socket>=0.7" "pytest-xdist>=3" "websocket-client>=1.7"
test-freqtrade-range: wheel
	set -e; main=$$($(PY) -c 'import freqtrade; print(freqtrade.__version__)'); \
	for v in $(FT_OLDEST) $(FT_NEWEST); do \
	  if [ "$$v" = "$$main" ] && [ -z "$(FT_RANGE_ALL)" ]; then \
	    echo "== freqtrade $$v is the main venv's: its end-to-end tests are part of make test (FT_RANGE_ALL=1 runs them here too)"; \
	    continue; fi; \
	  venv=.venv-ft-$$v; constraints=tests/freqtrade_constraints/$$v.txt; t0=$$(date +%s); \
	  [ -x $$venv/bin/python ] || $(PYTHON) -m venv $$venv; \
	  $$venv/bin/python -m pip install -q --upgrade pip; \
	  $$venv/bin/python -m pip install -q $$([ -f $$constraints ] && echo "-c $$constraints") "freqtrade==$$v" \
	    "$$(ls $(WHEEL_DIR)/tradecanvas_ext-*.whl | tail -n 1)" $(FT_TEST_TOOLS); \
	  echo "== freqtrade $$($$venv/bin/python -c 'import freqtrade; print(freqtrade.__version__)') installed in $$(($$(date +%s) - t0)) s"; \
	  $$venv/bin/python -m pytest -p no:cacheprovider $(XDIST_ARGS) -m slow $(FT_E2E) $(PYTEST_ARGS); \
	  echo "== freqtrade $$v: $$(($$(date +%s) - t0)) s in all"; \
	done

$(STAMP): | $(LWC)

lint: $(STAMP)
	$(VENV)/bin/ruff check tradecanvas_ext tests bench user_data

test: lint
	$(PY) -m pytest $(XDIST_ARGS) $(PYTEST_ARGS)

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
	rm -rf $(VENV) .venv-ft-* build dist *.egg-info
