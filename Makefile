# libvirt-vdp-hooks: the two front-door commands are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
VENV ?= .venv
SYSTEM_PYTHON ?= /usr/bin/python3
PYTEST_ARGS ?=

.PHONY: deps apt venv test lint unit-system tests-venv demo clean test-debian12 test-debian13 test-py39

deps: apt venv

# Debian packages (lldpad, libvirt, QEMU, Debian's python3-lxml/python3-pyroute2 ...); needs root.
# Skipped when every package is already installed.
APT_PACKAGES = $(shell grep -v '^\#' .ci/apt-packages)
# Packages one Debian release has and the other does not (installed where the archive has them).
APT_IF_AVAILABLE = $(shell grep -v '^\#' .ci/apt-packages-if-available)
apt:
	@if dpkg-query -W -f='$${Status}\n' $(APT_PACKAGES) 2>/dev/null | grep -vq '^install ok installed$$' \
		|| ! dpkg-query -W $(APT_PACKAGES) >/dev/null 2>&1; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	else echo "apt: all $(words $(APT_PACKAGES)) packages already installed"; fi
	@for p in $(APT_IF_AVAILABLE); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' && continue; \
		apt-cache show $$p >/dev/null 2>&1 || { apt-get update -qq; apt-cache show $$p >/dev/null 2>&1; } || continue; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$p; \
	done

# A virtualenv with the newest lxml and pyroute2 from PyPI plus the test tools; the product itself is
# installed into it as a user would (pip install .), the tests still run from the source tree.
venv: $(VENV)/.done $(VENV)/.installed
$(VENV)/.done: setup.cfg pyproject.toml
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q ".[test]"
	touch $@
# The installed copy follows the sources (tests/unit/test_installed.py runs it, not the source tree).
$(VENV)/.installed: $(VENV)/.done $(wildcard hooks/*.py vdp/*.py vdp/*/*.py)
	$(VENV)/bin/pip install -q --no-deps --force-reinstall .
	touch $@

lint: venv
	$(VENV)/bin/ruff check hooks vdp tests etc-libvirt-hooks/qemu
	$(VENV)/bin/mypy --python-version 3.9 hooks vdp

# Everything: lint, the whole suite (unit, lab, libvirt, bench) with the newest libraries, and the unit
# tests again under Debian's /usr/bin/python3 with python3-lxml and python3-pyroute2 (what hosts run).
# Then the packages: both built and linted, and the DEB installed on this machine to run the libvirt
# start / migrate / veto scenarios against the installed product instead of the source tree.
INSTALLED_SCENARIOS = start_on_a or live_migration_a_to_b or veto_at_b or enable_while_libvirtd_runs
test: lint
	$(SYSTEM_PYTHON) -m pytest -q -p no:cacheprovider tests/unit $(PYTEST_ARGS)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests $(PYTEST_ARGS)
	$(MAKE) packages-lint
	$(MAKE) packages-installed-e2e PYTEST_ARGS='-q -p no:cacheprovider -k "$(INSTALLED_SCENARIOS)"'


# The same tests with another Debian release's packages, in a tree made with debootstrap from the Debian
# mirror this machine uses and entered as / (tests/distro/tree.sh; root).  Built fresh in $(DISTRO_DIR)/
# (under build/, which the source tarball of `make packages` leaves out) and removed afterwards.
# Debian 12/13: unit, lab and libvirt tests with that release's libvirt, lldpad, QEMU, Python, lxml and
# pyroute2, then the package build and lint.  Debian 11: the unit tests under Python 3.9 (RHEL 9's) with
# lxml 4.6 and the oldest pyroute2 supported.
DISTRO_DIR ?= build/distro
DISTRO_PYTEST = /usr/bin/python3 -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
# Both steps run; the target fails if either did.
DISTRO_TEST = $(DISTRO_PYTEST) tests/unit tests/lab; rc=$$?; make packages-lint && exit $$rc
test-debian12:
	tests/distro/tree.sh test bookworm $(DISTRO_DIR)/bookworm '$(DISTRO_TEST)'
test-debian13:
	tests/distro/tree.sh test trixie $(DISTRO_DIR)/trixie '$(DISTRO_TEST)'
test-py39:
	tests/distro/tree.sh test bullseye $(DISTRO_DIR)/bullseye '$(DISTRO_PYTEST) tests/unit'

demo: deps
	$(SYSTEM_PYTHON) -m tests.lab.demo

clean:
	for d in $(DISTRO_DIR)/*/; do [ ! -d "$$d" ] || tests/distro/tree.sh remove "$$d"; done
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

-include packaging/Makefile.inc
