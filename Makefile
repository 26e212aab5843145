# DoubleU-Net Segment: `make demo` sets everything up and runs the shipped models on the sample data;
# `make test` sets everything up and runs the tests. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test bench bench-quick export lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m doubleunet_segment.release.demo

# Two pytest-xdist workers, one thread each (tests/conftest.py), work-stealing: the suite on 2 cores in about
# half the time of one worker. The 15 slowest tests are listed at the end: CI has 20 minutes, the suite takes 16.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist worksteal --durations=15

# The benchmarks time the authors' Keras original beside ours: the optional `keras` extra (TensorFlow, CPU build).
# Where it cannot be installed, they report against the Keras figure recorded in issue 18, labelled so.
KERAS_STAMP := $(VENV)/.keras-stamp
$(KERAS_STAMP): $(STAMP)
	-$(PY) -m pip install --quiet -e '.[test,keras]' && touch $(KERAS_STAMP)

bench: $(STAMP) $(KERAS_STAMP)
	$(PY) benchmarks/bench_inference.py
	$(PY) benchmarks/bench_whole_head.py
	$(PY) benchmarks/bench_views.py --views 1,0,2
	$(PY) benchmarks/bench_training.py --steps 10

# 512 x 512 batch 1 per path and the engine's own choice, in a few minutes: benchmarks/results/bench_quick.json
bench-quick: $(STAMP) $(KERAS_STAMP)
	$(PY) benchmarks/bench_inference.py --paths-only

# Float32 TorchScript exports of the shipped models, monai_bundle/<model>/models/model.ts (built, not committed:
# git ignores them; torch.jit.load(path) runs on float32 input). `python -m doubleunet_segment.release.ship`
# refreshes a bundle's export when its new weights ship.
export: $(STAMP)
	$(PY) -m doubleunet_segment.release.torchscript_export --model polyp
	$(PY) -m doubleunet_segment.release.torchscript_export --model hippocampus

lint: $(STAMP)
	$(VENV)/bin/ruff check monai_bundle tests DoubleUNetSegment benchmarks

clean:
	rm -rf outputs runs .pytest_cache
