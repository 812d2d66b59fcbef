PYTHON ?= python3
RUN ?= runs/demo

.PHONY: install data demo test test-slow

install:
	PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip install -e ".[dev]"

# Debian ships Fashion-MNIST; install it when missing (needs root, as on the project machines).
data:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)

demo: install data
	RUN=$(RUN) bash scripts/demo.sh

test:
	$(PYTHON) -m pytest -q

test-slow:
	$(PYTHON) -m pytest -q -m slow
