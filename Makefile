# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= etc/sip.yaml

.PHONY: venv run run-relay test lint check bench clean deb

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,tls,bench]' psycopg2-binary
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	mkdir -p var
	$(VENV)/bin/twistd -n --pidfile= sip -c $(CONFIG)

# A second daemon in front of the one `make run` starts (etc/relay.yaml; docs/upstream.md).
run-relay: $(STAMP)
	SIP_GATEWAY_PASSWORD=gatewaypass $(VENV)/bin/twistd -n --pidfile= sip -c etc/relay.yaml

check: $(STAMP)
	$(VENV)/bin/twistd -n --pidfile= sip -c $(CONFIG) --check

lint: $(STAMP)
	$(VENV)/bin/ruff check sipserver tests bench twisted debian/manpage_from_markdown.py

test: $(STAMP)
	$(VENV)/bin/ruff check sipserver tests bench twisted debian/manpage_from_markdown.py
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) bench/codec.py
	$(PY) bench/load.py
	$(PY) bench/backends.py
	$(PY) bench/relay.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis twisted/plugins/dropin.cache var

# The Debian package, built from a copy of the working tree (tracked and untracked files, not ignored
# ones) with Debian's own tools: dist/sipserver_<version>_all.deb. Needs the build dependencies
# (as root: apt-get build-dep ./). The full install-and-run test is .ci/deb-smoke.sh (root).
deb:
	bash .ci/deb-smoke.sh --build-only --worktree --outdir dist
