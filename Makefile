# Two commands do all the set-up on a fresh Debian machine (as root, or with sudo):
#   make demo   -- mount the bucket `demo` of the embedded default cluster at ./mnt
#   make test   -- run the whole test suite
# and one puts r2fs on PATH and its mount helper where mount(8) looks (for fstab):
#   make install  (make uninstall removes both links)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages, one variable per area so that changes to one area do not collide.
APT_CORE := gcc python3-dev python3-venv pkg-config
APT_FUSE := fuse3  # fusermount3 only: r2fs speaks the FUSE protocol itself (r2fs/fuse/kernel/)
APT_TOOLS := rsync git sqlite3 tar rclone strace  # strace: tests/fuse (fsync of a directory)
APT_S3 := chromium
APT_META := postgresql postgresql-15 iproute2
APT_OPS :=
APT_DURABILITY :=
APT_FILEMODEL := borgbackup  # tests/filemodel: borg create/check/extract on the mount
APT_PACKAGES := $(APT_CORE) $(APT_FUSE) $(APT_TOOLS) $(APT_S3) $(APT_META) $(APT_OPS) $(APT_DURABILITY) $(APT_FILEMODEL)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

# `make install`: links to this checkout's virtualenv (its scripts name their Python by
# absolute path, so neither needs PATH; mount(8) searches only /sbin for helpers).
BINDIR ?= /usr/local/bin
SBINDIR ?= /sbin

.PHONY: demo test test-pg deps system-deps clean bench install uninstall

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# Node.js + npm for the AWS JS SDK test (some images ship them outside Debian's packages)
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; }

$(STAMP): pyproject.toml | system-deps
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat  # a path in a .pth: no import hook at every start (~20-40 ms)
	@if [ -f tests/s3/js/package.json ]; then cd tests/s3/js && npm install --silent --no-audit --no-fund; fi
	@touch $(STAMP)

deps: system-deps $(STAMP)

# CI's PostgreSQL pass (the whole of it: make test-pg): the store, the file model and a mount
# following other writers, with every cluster's metadata in PostgreSQL (~1-2 min)
PG_CORE := tests/engine/test_store.py tests/engine/test_filemodel.py \
  tests/fuse/test_semantics.py::test_cross_interface_and_invalidation \
  tests/fuse/test_kernel.py::test_negative_entries_give_way_to_other_writers

# Two pytest-xdist workers: most of the suite waits on mounts, servers and subprocesses,
# so two overlap well even on 2 cores (measured: 700 s -> 433 s at load 4). Each test file
# is one group on one worker (tests/conftest.py; the machine-wide ones share one group).
# PYTEST_WORKERS=0 runs everything in this one process.
PYTEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

test: deps
	$(PY) -m pytest -q $(XDIST) $(PYTEST_ARGS)
	@if [ -z "$(PYTEST_ARGS)" ]; then set -x; R2FS_TEST_META=postgresql $(PY) -m pytest -q $(XDIST) $(PG_CORE); fi

# the engine, uploads and cache suites again with every cluster's metadata in PostgreSQL
test-pg: deps
	R2FS_TEST_META=postgresql $(PY) -m pytest -q tests/engine tests/uploads tests/cache $(PYTEST_ARGS)

demo: deps
	$(VENV)/bin/r2fs demo $(DEMO_ARGS)

install: deps
	$(SUDO) ln -sfn $(CURDIR)/$(VENV)/bin/r2fs $(BINDIR)/r2fs
	$(SUDO) ln -sfn $(CURDIR)/$(VENV)/bin/mount.fuse.r2fs $(SBINDIR)/mount.fuse.r2fs
	@echo "installed: $(BINDIR)/r2fs and $(SBINDIR)/mount.fuse.r2fs (links into $(CURDIR)/$(VENV))"

uninstall:
	@for link in $(BINDIR)/r2fs $(SBINDIR)/mount.fuse.r2fs; do \
	  case "$$(readlink $$link)" in $(CURDIR)/$(VENV)/*) $(SUDO) rm -f $$link; echo "removed $$link";; esac; \
	done

APT_BENCH := gocryptfs  # the peer of `tools/bench mount`

bench: deps
	@for p in $(APT_BENCH); do dpkg -s $$p >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$p >/dev/null; }; done
	$(PY) tools/bench $(WORKLOAD)

clean:
	rm -rf $(VENV) build *.egg-info
