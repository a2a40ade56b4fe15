# Two commands from a fresh clone; each sets up only what is missing, says what it does, then runs:
#   make run    the main job (`dvc repro`, the README's "The main job")
#   make test   the README's test command (lint, format check, pytest)
# `make setup` does the set-up alone. Nothing here downloads anything the project's files do not name.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
# Holds the sha256 of the pyproject.toml last installed: the venv is reinstalled when that file's content
# changes (a checkout that only touches its mtime costs nothing); deleting .venv starts over.
STAMP := $(VENV)/.pipelab-installed
APT_LIST := requirements-apt.txt
# dvc.yaml calls `python`: the venv's, as with an activated venv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test setup venv apt

run: venv
	dvc repro

test: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/pytest

setup: venv apt

venv:
	@want="$$(sha256sum pyproject.toml | cut -d' ' -f1)"; \
	if [ -x $(VENV)/bin/python ] && [ "$$(cat $(STAMP) 2>/dev/null)" = "$$want" ]; then \
		echo "make: $(VENV) is up to date with pyproject.toml"; \
	else \
		echo "make: installing pipelab and its dev tools into $(VENV) (pyproject.toml is new or changed; ~5 min the first time)"; \
		[ -x $(VENV)/bin/python ] || python3 -m venv $(VENV); \
		$(VENV)/bin/pip install -e '.[dev]'; \
		echo "$$want" > $(STAMP); \
	fi

# The system packages the tests need (one Debian package name a line in requirements-apt.txt, # comments):
# installed with apt-get only when dpkg says they are not, as root or through sudo (waiting up to 10 min for
# another apt to let go of its lock).
apt:
	@missing=(); \
	while read -r package _ || [ -n "$$package" ]; do \
		[ -z "$$package" ] || [[ "$$package" == \#* ]] && continue; \
		dpkg -s "$$package" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$$package"); \
	done < $(APT_LIST); \
	if [ $${#missing[@]} -eq 0 ]; then \
		echo "make: system packages present: $$(grep -v '^#' $(APT_LIST) | xargs)"; \
	else \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
		if [ -n "$$sudo" ] && ! command -v sudo >/dev/null; then \
			echo "make: missing system packages: $${missing[*]}; as root run: apt-get install -y $${missing[*]}" >&2; exit 1; \
		fi; \
		echo "make: installing system packages with apt-get: $${missing[*]}"; \
		$$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$${missing[@]}"; \
	fi
