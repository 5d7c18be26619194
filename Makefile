# The README's two commands: `make demo` and `make test`. Both set everything up
# themselves on a machine that has only Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

RUNTIME_VENV := .venv-runtime
RUNTIME_STAMP := $(RUNTIME_VENV)/.installed

.PHONY: install browser demo test clean runtime-venv

install: $(STAMP)

# torch goes in first, and only where the venv has none, so that a CUDA build that is
# already there is kept; everything else comes from requirements.txt.
$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$$(grep '^torch==' requirements.txt)"
	grep -v '^torch==' requirements.txt | $(PY) -m pip install -q -r /dev/stdin
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# A venv with only what a deployed model folder needs (requirements-runtime.txt: numpy,
# onnxruntime, sentencepiece; no torch, no fairseq): the tests run g2lstm-translate in it
# to show that the runtime works where the training stack cannot be imported.
runtime-venv: $(RUNTIME_STAMP)

$(RUNTIME_STAMP): requirements-runtime.txt
	test -x $(RUNTIME_VENV)/bin/python || $(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/python -m pip install -q -r requirements-runtime.txt
	touch $@

# The web page's browser test drives Debian's headless Chromium. Installed where apt-get
# can (root); elsewhere that one test is skipped and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium and chromium-driver for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "WARNING: no chromium/chromedriver and no root apt-get: the browser test will be skipped"; fi

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

test: $(STAMP) browser $(RUNTIME_STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q tests

clean:
	rm -rf demo build *.egg-info $(RUNTIME_VENV)
