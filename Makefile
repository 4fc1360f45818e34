# VISA Hub: `make demo` runs the demo hub, `make test` runs every test. Both set up what they need.
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
STATE ?= /var/lib/visahub/demo
PY := $(VENV)/bin/python
# the analysis image (images/): built once per recipe change, cached on the machine
IMAGE_CACHE ?= /var/cache/visahub/images
IMAGE_DIR := $(IMAGE_CACHE)/debian-bookworm

# setup: everything (tests, benchmarks, VM backend); setup-demo: only what `make demo` runs (docs/demo.md)
.PHONY: setup setup-demo image demo demo-data test test-fast bench bench-vm bench-burst bench-scale bench-instrument bench-desktop bench-classroom clean-demo

setup:
	bash scripts/setup.sh all

setup-demo:
	bash scripts/setup.sh demo

image: setup
	$(PY) images/build.py --cache-dir $(IMAGE_CACHE)
	$(PY) images/build.py --cache-dir $(IMAGE_CACHE) --extra openstack

demo-data: setup-demo
	$(VENV)/bin/visa-make-demo-data --catalogue hub_config/demo/catalogue.yaml --out $(STATE)/data

demo: demo-data
	@echo "VISA Hub demo on http://127.0.0.1:8000 (accounts listed on the login page); Ctrl-C stops it."
	cd $(STATE) && VISA_STATE_DIR=$(STATE) VISA_IMAGE_DIR=$(IMAGE_DIR) $(VENV)/bin/jupyterhub -f $(CURDIR)/hub_config/demo/jupyterhub_config.py

test: setup image
	VISA_IMAGE_DIR=$(IMAGE_DIR) $(VENV)/bin/pytest -q -rfE --durations=15

test-fast: setup
	$(VENV)/bin/pytest -q -m fast

bench: setup
	$(PY) bench/spawn_latency.py

bench-vm: setup image
	VISA_IMAGE_DIR=$(IMAGE_DIR) $(PY) bench/vm_boot.py

bench-burst: setup
	$(PY) bench/burst.py

bench-scale: setup
	$(PY) bench/scale.py

bench-instrument: setup
	$(PY) bench/instrument.py

# the desktop in Chromium through the hub vs straight on Xvnc's socket (issue 16): W1 input latency, W2 panning
bench-desktop: setup
	$(PY) bench/desktop.py

# 30 participants reach Lab with the course's warm pool and without it, same run (issue 19)
bench-classroom: setup
	$(PY) bench/classroom.py

clean-demo:
	rm -rf $(STATE)
