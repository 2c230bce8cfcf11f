# The two set-up commands for a newcomer are `make demo` and `make test`; both install what
# they need first (Debian packages as root, then a virtual environment in .venv).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LAB ?= $(CURDIR)/.lab/demo

DEB_PACKAGES := pebble bind9 bind9-utils bind9-dnsutils unbound libnss3-tools libreswan \
                nginx iproute2 nftables procps openssl ca-certificates python3-venv systemd \
                libfaketime

.PHONY: deps deb-deps venv demo test lint typecheck unit lab-up lab-down bench clean

deps: deb-deps venv

# Idempotent: installs only what is missing, so repeated runs cost a dpkg query.
deb-deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root to install Debian packages" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check oeagent lab tests bench
typecheck: venv
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict --explicit-package-bases bench

test: deps lint typecheck
	$(VENV)/bin/pytest -q -ra tests

# umask 022 (demo, lab-up, bench; tests/conftest.py sets its own): the lab writes configs
# group and others cannot write, which oeagent requires (they name commands it runs as
# root), whatever the caller's umask.
lab-up: deps
	umask 022 && $(PY) -m lab up $(LAB)

lab-down: venv
	$(PY) -m lab down $(LAB)

demo: deps
	umask 022 && bash scripts/demo.sh $(LAB)

# The benchmarks in bench/ (each starts its own lab; minutes, not part of `make test`).
# BENCH picks which (default: all): enroll discovery policy_scale startup renewal_disruption
# idle_cost. BENCH_ARGS goes to each picked script; all of them take --smoke, --output and
# --lab, the rest are per script, so pick one for those:
#   make bench BENCH_ARGS=--smoke
#   make bench BENCH=enroll BENCH_ARGS="--pairs 10 --output enroll.md"
BENCHMARKS := $(filter-out common pyspy_summary,$(basename $(notdir $(wildcard bench/*.py))))
BENCH ?= $(BENCHMARKS)
bench: deps
	@set -e; for name in $(BENCH); do \
	  script=bench/$$name.py; \
	  case " $(BENCHMARKS) " in *" $$name "*) ;; *) \
	    echo "no benchmark bench/$$name.py (BENCH: $(BENCHMARKS))" >&2; exit 2;; esac; \
	  echo "== $$script"; (umask 022 && $(PY) $$script $(BENCH_ARGS)); done

clean:
	rm -rf $(VENV) .lab .bench .pytest_cache .mypy_cache .ruff_cache
