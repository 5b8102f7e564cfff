# Everything a fresh clone needs: `make train`, `make test`. Nothing here assumes a tool
# installed by hand: Poetry itself is bootstrapped into .tools/ on first use.
SHELL := /bin/bash
PYTHON ?= python3
TOOLS := .tools
POETRY := $(TOOLS)/bin/poetry
# KAGGLE=1 (make install/train/test/test-kaggle KAGGLE=1): a second workstation env, .venv-kaggle,
# with Kaggle's Python and exactly the versions of src/hpa/kaggle/kaggle_image.txt (torch's CUDA
# build included) instead of the lock's, so what is validated here is what Kaggle scores.
KAGGLE ?=
ifeq ($(KAGGLE),1)
VENV := .venv-kaggle
else
VENV := .venv
endif
STAMP := $(VENV)/.hpa-installed
# Poetry reaches the package index through poetry-plugin-pypi-mirror; the URL is read from
# pip's own configuration at run time and never written into a file.
MIRROR_URL = $(shell $(PYTHON) scripts/index_url.py)
RUN := NO_ALBUMENTATIONS_UPDATE=1 $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
# Unbuffered, so a run that dies (a native crash in CI) still shows how far it got.
export PYTHONUNBUFFERED := 1

.PHONY: install train test test-fast test-kaggle lint format docs lock build clean chromium

install: $(STAMP)

$(POETRY):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --upgrade pip
	$(TOOLS)/bin/pip install -q "poetry>=2.1,<3" "poetry-plugin-pypi-mirror>=0.6"

ifeq ($(KAGGLE),1)
# pip, not Poetry: the lock holds other versions. The image's pins and the lock's dev tools
# (scripts/kaggle_env.py workstation), then hpa with its extras resolved under those pins: a pin
# that hpa's ranges refuse stops the install with pip's reason.
$(STAMP): pyproject.toml poetry.lock src/hpa/kaggle/kaggle_image.txt scripts/kaggle_env.py
	@[ -x $(VENV)/bin/python ] || "$$($(PYTHON) scripts/kaggle_env.py python)" -m venv $(VENV)
	$(PYTHON) scripts/kaggle_env.py workstation > $(VENV)/kaggle-workstation.txt
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -r $(VENV)/kaggle-workstation.txt -e ".[external,sweep]"
else
$(STAMP): $(POETRY) pyproject.toml poetry.lock
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	@# --compile: bytecode written once here. Where PYTHONDONTWRITEBYTECODE is set (this CI's
	@# machines set it) Python never caches what it compiles, so without it every process (the
	@# suite starts hundreds) recompiled torch, Lightning and timm from source: ~20 s each.
	POETRY_PYPI_MIRROR_URL="$(MIRROR_URL)" $(POETRY) install --no-interaction --with dev --all-extras --compile
endif
	@# The doctor imports the native stack in a child process: a broken install (two versions of
	@# one package sharing files, a library built for another CPU) stops here with its name,
	@# not later as a bare "Illegal instruction" in the middle of a test run.
	@$(RUN) -m hpa.doctor || { echo "make install: the environment above is broken;" \
		"rm -rf $(VENV) && make install rebuilds it from the lock" >&2; exit 1; }
	@touch $(STAMP)

lock: $(POETRY)
	POETRY_PYPI_MIRROR_URL="$(MIRROR_URL)" $(POETRY) lock --no-interaction

train: install
	$(RUN) -m hpa.train $(ARGS)

lint: install
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

format: install
	$(VENV)/bin/ruff format src tests scripts
	$(VENV)/bin/ruff check --fix src tests scripts

# The manual: docs/ + mkdocs.yml -> site/ (open site/index.html). --strict fails the build on a
# broken link or anchor and on a page missing from the nav; scripts/docs_hooks.py generates the
# option reference from src/hpa/configs while it builds.
docs: install
	NO_MKDOCS_2_WARNING=1 $(RUN) -m mkdocs build --strict --site-dir site

# The whole suite, lint and the manual included: this is what CI runs. Test files run in
# TEST_WORKERS processes (pytest-xdist, one file per process so module fixtures are built once):
# on 2 cores the suite waits on subprocesses and I/O half the time, which a second process fills.
# Each process gets one torch thread so that the two do not fight over the cores. Files start
# longest first (tests/conftest.py LONGEST_FIRST), not in xdist's order by number of tests.
# TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: install lint docs chromium
	@$(RUN) -m compileall -q src  # hpa's own bytecode, for the same reason as install's --compile
	OMP_NUM_THREADS=1 $(RUN) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The HTML reports' tests open them in a real headless browser: Debian's chromium, installed
# when missing (CI runs as root; elsewhere the tests that need it skip).
chromium:
	@[ -x /usr/bin/chromium ] || { apt-get update && apt-get install -y chromium; }

# The Kaggle-shaped environment test, for today's image (Python 3.12, kaggle_image.txt) and the
# next one announced (Python 3.13, torch 2.11, OpenCV 5; scripts/kaggle_env.py): the bundle
# installed offline, the doctor (and the standalone one a failed install runs), and the Kaggle
# notebooks run there with papermill. The first run builds each env (~3 GB download, cached under
# ~/.cache/hpa); later runs reuse them. One image: make test-kaggle KAGGLE_IMAGES=next.
KAGGLE_IMAGES ?= current next
test-kaggle: install
	HPA_KAGGLE_IMAGES="$(KAGGLE_IMAGES)" $(RUN) -m pytest -q -m kaggle_env tests/test_kaggle_env.py $(PYTEST_ARGS)

test-fast: install
	$(RUN) -m pytest -q -m "not slow and not kaggle_env" $(PYTEST_ARGS)

build: install
	$(POETRY) build --no-interaction

clean:
	rm -rf dist build site .pytest_cache outputs
