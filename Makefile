# Two commands do all set-up on a fresh machine:
#   make quickstart   venv + install + the known-truth world end to end (SEED=n for another world), report.html
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

SEED ?= 0

# Every step is a public `pv` command (printed as it runs); one torch thread per process: two threads per
# process collapse on small shared machines, and the pipeline runs two processes side by side.
quickstart: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python scripts/quickstart.py --seed $(SEED) --out runs/quickstart/seed$(SEED)

# Debian's Chromium for the survey's browser test (skipped when it cannot be installed).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y chromium chromium-driver >/dev/null; } || echo "chromium not installed: the browser test will be skipped"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider
