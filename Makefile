# Two commands do all set-up on a fresh machine:
#   make quickstart   venv + install + the known-truth world end to end (SEED=n for another world), report.html
#   make test         venv + install + the test suite
# Then, for the real pretrained model (needs the shared ImageNet photos, or ROOT=a folder whose file i is class i):
#   make real         the EfficientNet-Lite0 study end to end (PRESET=demo|full, SEED=n, OUT=runs/real), report.html
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: quickstart real test browser install

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

# The real-model study (scripts/real.py): M = the packaged ImageNet EfficientNet-Lite0, observers Lite1 and Lite2.
# Resumable: run it again with the same OUT to continue a killed run.
PRESET ?= demo
OUT ?= runs/real
ROOT ?= ../shared/data/imagenet_samples
real: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python scripts/real.py --preset $(PRESET) --seed $(SEED) --out $(OUT) --root $(ROOT)

# Debian's Chromium for the survey's browser test (skipped when it cannot be installed).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y chromium chromium-driver >/dev/null; } || echo "chromium not installed: the browser test will be skipped"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider
