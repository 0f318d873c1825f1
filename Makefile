# The two set-up commands (README): `make demo` and `make test`. Both install first.
# torch is pinned to the CPU wheel this machine type carries; never let pip choose torch freely
# (it would pull several GB of CUDA packages).
PY      ?= python3
TORCH   ?= torch==2.13.0   # override with the torch requirement (and pip options) your machine needs
TF_OLD  ?= transformers==4.46.3
VENV_OLD = .venv-tf4

.PHONY: install demo test test-new test-old clean

install:
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"

demo: install
	HF_HUB_OFFLINE=1 $(PY) -m dynashape demo

# Whole suite on the newest transformers, then the integration tests again on transformers 4.46.3
# (its eager attention caps GPT-2 at 1023 positions: the planner must still serve 1..1024).
test: install test-new test-old

test-new:
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not gpu"

$(VENV_OLD)/ok:
	$(PY) -m venv --system-site-packages $(VENV_OLD)
	$(VENV_OLD)/bin/pip install -q --disable-pip-version-check "$(TF_OLD)"
	touch $@

test-old: $(VENV_OLD)/ok
	HF_HUB_OFFLINE=1 PYTHONPATH=src $(VENV_OLD)/bin/python -m pytest -q -m "integration and not gpu and not slow" -p no:cacheprovider

clean:
	rm -rf $(VENV_OLD) build src/*.egg-info engines
