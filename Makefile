# Two commands do all set-up on a fresh machine:
#   make quickstart   venv + install + train a small decoder on the embedded photos, write a PV figure
#   make test         venv + install + the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: quickstart test browser install

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/pv fit --config configs/quickstart.yaml

# Debian's Chromium for the survey's browser test (skipped when it cannot be installed).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y chromium chromium-driver >/dev/null; } || echo "chromium not installed: the browser test will be skipped"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider
