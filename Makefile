# The two commands of the README:  make demo  (train, export, sample)  and  make test.
# Both create .venv on first use. torch==2.13.0 is installed first and pinned: an open range
# can pull a multi-GB CUDA build, while 2.13.0 resolves to a CPU wheel.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.layerzoo-installed
RUN    ?= runs/demo

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml tests/thirdparty/extra/pyproject.toml package.json package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet -e ./tests/thirdparty/extra
	npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(RUN)
	$(BIN)/zoo train mlp-bn --out $(RUN)
	$(BIN)/zoo export $(RUN) -o $(RUN)/model.onnx
	$(BIN)/zoo sample $(RUN)/model.onnx -n 10 --seed 0
	$(BIN)/zoo check $(RUN) $(RUN)/model.onnx

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_sampling.py --loop-words 500

lint: $(STAMP)
	$(BIN)/ruff check zoo plugins export tests benchmarks data setup.py

clean:
	rm -rf $(VENV) runs build dist *.egg-info node_modules

# The documentation site, built into site/ in strict mode (a broken link or anchor, a page left
# out of the nav, fails); the reference pages are generated from the code by docs/hooks.py.
.PHONY: docs
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
