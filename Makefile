# The two set-up commands of the README: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= runs/demo

.PHONY: setup demo test fuzz bench clean

$(VENV)/.bootstrapped: setup.cfg pyproject.toml constraints.txt scripts/bootstrap.sh
	VENV=$(VENV) bash scripts/bootstrap.sh
	touch $@

setup: $(VENV)/.bootstrapped

# Main job: train a 3D GAN on the built-in head-phantom distribution (CPU, a few minutes),
# synthesize volumes, and write NIfTI files, a side-by-side picture and the figures.
demo: setup
	$(PY) -m napari_medgan demo --out $(DEMO_OUT)

# Whole test suite, GUI tests included, under a virtual display (pytest-xvfb starts Xvfb).
test: setup
	$(PY) -m pytest -v

# Hostile inputs (every volume format, DICOM, checkpoints, configs) under a memory limit,
# all of them; the default test run only samples them.
fuzz: setup
	$(PY) -m pytest -v -m fuzz tests/fuzz

bench: setup
	$(PY) benchmarks/train_throughput.py --quick

clean:
	rm -rf $(VENV) runs build *.egg-info
