# VISA Hub: `make demo` runs the demo hub, `make test` runs every test. Both set up what they need.
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
STATE ?= /var/lib/visahub/demo
PY := $(VENV)/bin/python

.PHONY: setup demo demo-data test test-fast bench clean-demo

setup:
	bash scripts/setup.sh

demo-data: setup
	$(VENV)/bin/visa-make-demo-data --catalogue hub_config/demo/catalogue.yaml --out $(STATE)/data

demo: demo-data
	@echo "VISA Hub demo on http://127.0.0.1:8000 (accounts listed on the login page); Ctrl-C stops it."
	cd $(STATE) && VISA_STATE_DIR=$(STATE) $(VENV)/bin/jupyterhub -f $(CURDIR)/hub_config/demo/jupyterhub_config.py

test: setup
	$(VENV)/bin/pytest -q -rfE

test-fast: setup
	$(VENV)/bin/pytest -q -m fast

bench: setup
	$(PY) bench/spawn_latency.py

clean-demo:
	rm -rf $(STATE)
