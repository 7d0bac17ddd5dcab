# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= etc/sip.yaml

.PHONY: venv run run-relay test test-debian print-debian-packages lint check bench clean deb

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
	$(VENV)/bin/mypy

test: $(STAMP)
	$(VENV)/bin/ruff check sipserver tests bench twisted debian/manpage_from_markdown.py
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -p no:cacheprovider

# The whole suite again on Debian bookworm's own stack, what the .deb runs on: /usr/bin/python3 with
# Twisted 22.4, attrs, PyYAML, pyOpenSSL, psycopg2, pytest and hypothesis from apt (DEBIAN_PACKAGES;
# .ci/run installs them), this tree installed over them and nothing from PyPI. `make test` runs the
# newest PyPI Twisted; the two together are the two Twisteds the code supports.
DEBIAN_VENV ?= .venv-debian
DEBIAN_STAMP := $(DEBIAN_VENV)/.installed
DEBIAN_PACKAGES := python3-venv python3-twisted python3-attr python3-yaml python3-openssl python3-service-identity \
	python3-psycopg2 python3-pytest python3-pytest-timeout python3-hypothesis

$(DEBIAN_STAMP): setup.cfg pyproject.toml
	@/usr/bin/python3 -c 'import twisted, attr, yaml, psycopg2, pytest, pytest_timeout, hypothesis' 2>/dev/null \
		|| { echo "make test-debian: needs Debian's packages: apt-get install -y $(DEBIAN_PACKAGES)" >&2; exit 1; }
	rm -rf $(DEBIAN_VENV)
	/usr/bin/python3 -m venv --system-site-packages $(DEBIAN_VENV)
	$(DEBIAN_VENV)/bin/python -m pip install -q --no-index --no-deps --no-build-isolation -e .
	printf '#!%s\nimport sys\nfrom twisted.scripts.twistd import run\nsys.exit(run())\n' \
		"$(abspath $(DEBIAN_VENV))/bin/python" >$(DEBIAN_VENV)/bin/twistd
	chmod +x $(DEBIAN_VENV)/bin/twistd
	touch $(DEBIAN_STAMP)

print-debian-packages:
	@echo $(DEBIAN_PACKAGES)

test-debian: $(DEBIAN_STAMP)
	$(DEBIAN_VENV)/bin/python -c 'import os, twisted, sipserver; \
		assert os.path.dirname(os.path.dirname(sipserver.__file__)) == os.getcwd(), sipserver.__file__; \
		print("Twisted", twisted.__version__, "from", twisted.__file__)'
	@# The console's browser tests need Playwright, which Debian does not package: `make test` runs them.
	$(DEBIAN_VENV)/bin/python -m pytest -q -p no:cacheprovider --ignore=tests/test_console_browser.py

bench: $(STAMP)
	$(PY) bench/codec.py
	$(PY) bench/load.py
	$(PY) bench/backends.py
	$(PY) bench/relay.py

clean:
	rm -rf $(VENV) $(DEBIAN_VENV) build *.egg-info .pytest_cache .hypothesis twisted/plugins/dropin.cache var

# The Debian package, built from a copy of the working tree (tracked and untracked files, not ignored
# ones) with Debian's own tools: dist/sipserver_<version>_all.deb. Needs the build dependencies
# (as root: apt-get build-dep ./). The full install-and-run test is .ci/deb-smoke.sh (root).
deb:
	bash .ci/deb-smoke.sh --build-only --worktree --outdir dist
