# Every target installs what it needs into a local .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deepsynth-installed

EVAL_STAMP := $(VENV)/.deepsynth-eval-installed
WEB_STAMP  := $(VENV)/.deepsynth-web-installed

.PHONY: demo test test-all lint bench clean eval-deps web-deps serve

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  (echo "DeepSynth needs Python 3.11+ (set PYTHON=python3.11)"; exit 1)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-deps tinysoundfont==0.3.7
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# the transcriber for `deepsynth evaluate` (basic-pitch's declared dependencies pull TensorFlow
# and an old resampy; it runs its ONNX model without them)
$(EVAL_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,eval]'
	$(PY) -m pip install --quiet --no-deps basic-pitch==0.4.0
	touch $(EVAL_STAMP)

eval-deps: $(EVAL_STAMP)

# the web page (Gradio) and its browser test: Playwright drives the system's Chromium (Debian's
# package; no browser is downloaded)
$(WEB_STAMP): $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)
	$(PY) -m pip install --quiet -e '.[dev,webtest]'
	touch $(WEB_STAMP)

web-deps: $(WEB_STAMP)

serve: $(WEB_STAMP)
	$(VENV)/bin/deepsynth serve

demo: $(STAMP)
	$(VENV)/bin/deepsynth demo -o demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/simulate.py

clean:
	rm -rf $(VENV) demo build *.egg-info src/*.egg-info .pytest_cache
