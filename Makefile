# The two commands of the README. Each builds .venv with the pinned versions when it is missing
# or older than the files that pin them.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed
PLAN   ?= plans/quick.yaml

.PHONY: sweep test venv benchmark clean-venv

sweep: $(STAMP)
	$(VENV)/bin/harness sweep --plan $(PLAN) --html results/report.html

test: $(STAMP)
	sh scripts/install-test-deps
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

benchmark: $(STAMP)
	$(VENV)/bin/python benchmarks/overhead.py

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -c constraints.txt -e '.[test,lab]'
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
