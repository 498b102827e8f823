# The two commands of the README:  make demo  (train, export, sample)  and  make test.
# Both create .venv on first use. torch==2.13.0 is installed first and pinned: an open range
# can pull a multi-GB CUDA build, while 2.13.0 resolves to a CPU wheel.
# make demo installs only what it runs (torch, the package); make test adds the test extras,
# the third-party test plugin (tests/thirdparty/extra) and onnxruntime-web from npm.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_STAMP := $(VENV)/.layerzoo-demo
TEST_STAMP := $(VENV)/.layerzoo-test
PYTEST := $(BIN)/python -m pytest -q
FAST   := -m "not slow"
RUN    ?= runs/demo

.PHONY: demo test test-fast test-slow lint bench clean

$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e .
	touch $(DEMO_STAMP)

$(TEST_STAMP): $(DEMO_STAMP) pyproject.toml tests/thirdparty/extra/pyproject.toml package.json \
		package-lock.json
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet -e ./tests/thirdparty/extra
	npm ci --no-audit --no-fund --loglevel=error
	touch $(TEST_STAMP)

demo: $(DEMO_STAMP)
	rm -rf $(RUN)
	$(BIN)/zoo train mlp-bn --out $(RUN)
	$(BIN)/zoo export $(RUN) -o $(RUN)/model.onnx
	$(BIN)/zoo sample $(RUN)/model.onnx -n 10 --seed 0
	$(BIN)/zoo check $(RUN) $(RUN)/model.onnx

# Two lanes: the fast one (everything not marked slow), then the slow one (several processes,
# SIGKILL, the browser, long training). Both run even if the first fails, so CI shows every
# failure; the status is a failure if either failed.
test: $(TEST_STAMP)
	$(PYTEST) $(FAST); fast=$$?; $(PYTEST) -m slow; slow=$$?; test $$fast = 0 && test $$slow = 0

test-fast: $(TEST_STAMP)
	$(PYTEST) $(FAST)

test-slow: $(TEST_STAMP)
	$(PYTEST) -m slow

bench: $(DEMO_STAMP)
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_sampling.py --loop-words 500

lint: $(TEST_STAMP)
	$(BIN)/ruff check zoo plugins export tests benchmarks data setup.py

clean:
	rm -rf $(VENV) runs build dist site *.egg-info node_modules

# The documentation site, built into site/ in strict mode (a broken link or anchor, a page left
# out of the nav, fails); the reference pages are generated from the code by docs/hooks.py.
.PHONY: docs
docs: $(TEST_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
