# The README's commands. Each target installs what it needs on a fresh Debian 12 host.
VENV ?= .venv
PY := $(VENV)/bin/python
SITE ?= examples/site.yaml

.PHONY: host venv demo test lint bench clean

host:
	bash scripts/setup-host.sh

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,fast-yaml]'
	touch $@

venv: host $(VENV)/.installed

DEMO ?= examples/demo.yaml

# The main job on the shipped examples: check and render the reference site, then converge the
# demo site on this host (a Debian container built from the host's apt sources and a busybox
# one, on an isolated network). `.venv/bin/virtmix destroy examples/demo.yaml --yes` undoes it.
demo: venv
	bash scripts/make-busybox-rootfs.sh /srv/rootfs/busybox
	$(VENV)/bin/virtmix validate $(SITE)
	$(VENV)/bin/virtmix render $(SITE) --out build/rendered
	$(VENV)/bin/virtmix plan $(DEMO) || test $$? -eq 10
	$(VENV)/bin/virtmix apply $(DEMO) --yes
	$(VENV)/bin/virtmix ls

# The suite runs on TEST_JOBS pytest-xdist workers (tests/conftest.py groups the modules
# that share state), then the `exclusive` tests (they kill libvirtd or run a second one)
# alone. Both parts always run; either failing fails the target.
TEST_JOBS ?= 2

test: venv
	$(VENV)/bin/pytest -q -n $(TEST_JOBS) --dist loadscope --no-loadscope-reorder \
		-m "not exclusive"; parallel=$$?; \
	$(VENV)/bin/pytest -q -m exclusive; alone=$$?; \
	test $$parallel -eq 0 && test $$alone -eq 0

lint: venv
	$(VENV)/bin/ruff check virtmix tests benchmarks
	$(VENV)/bin/mypy --strict virtmix/backend virtmix/hosts virtmix/util
	$(VENV)/bin/mypy --strict virtmix/domain virtmix/converge

bench: venv
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build .pytest_cache
