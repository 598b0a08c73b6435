# tcpweave: the two commands are `make demo` and `make test` (see README.md).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := demo

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pip re-installs when pyproject.toml is newer than this stamp.
STAMP := $(VENV)/.installed-from-pyproject
SAMPLE := examples/sample-http.pcap

# numba's on-disk kernel cache stays inside this checkout (not beside the sources
# of an installed package, not shared between checkouts).
export NUMBA_CACHE_DIR := $(CURDIR)/.numba_cache

.PHONY: venv demo test lint fmt system-tools

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	    $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	        echo "tcpweave needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) --version 2>&1)" >&2; \
	        exit 1; }; \
	    echo "creating $(VENV) with $$($(PYTHON) --version)"; \
	    $(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

# The demo extracts every TCP session of the bundled capture (recorded from real
# traffic, see examples/README.md) into out/demo and prints the session table.
demo: venv
	rm -rf out/demo
	$(BIN)/tcpweave extract $(SAMPLE) -o out/demo
	$(BIN)/tcpweave streams $(SAMPLE)

# tshark, tcpdump and tcpflow are oracles and drivers for the tests, chromium the
# browser of the report's tests; install
# them when one is missing (as root; otherwise the script says what is missing
# and the tests that need them skip).
system-tools:
	@if ! command -v tshark >/dev/null || ! command -v tcpdump >/dev/null \
	        || ! command -v tcpflow >/dev/null || ! command -v ip >/dev/null \
	        || ! command -v ethtool >/dev/null || ! command -v chromium >/dev/null; then \
	    bash scripts/install-system-tools.sh; \
	fi

lint: venv
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: venv
	$(BIN)/ruff check --fix
	$(BIN)/ruff format

# The quick subset runs with the JIT off (the plain-Python path of every
# kernel); it comes before the full suite so that the run ends on the full
# suite's summary line. pytest's exit code 5 means "no test collected": that
# is fine for the quick subset (no test marked quick yet), never for the suite.
test: venv system-tools lint
	@rc=0; NUMBA_DISABLE_JIT=1 $(BIN)/pytest -m quick || rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	    echo "quick subset: no test is marked quick, nothing to run with NUMBA_DISABLE_JIT=1"; \
	elif [ $$rc -ne 0 ]; then \
	    exit $$rc; \
	fi
	$(BIN)/pytest
